//! What the bytes are, checked before any pixel is decoded: their size, the format
//! (sniffed from the bytes, never taken from a name or Content-Type), a JPEG's
//! completeness, what a PNG's colour profile inflates to, an animation's frames and
//! the header's dimensions.

use crate::error::{ErrorCode, ImageError};
use crate::limits::Limits;
use image::ImageFormat;

/// Formats minilab decodes. Anything else, whatever its name or Content-Type says,
/// is `unsupported-format`.
const ACCEPTED: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
];

/// What the bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sniffed {
    /// A format the `image` crate reads, and its frames (1 unless animated).
    Image(ImageFormat, u32),
    /// HEIC (HEVC in HEIF), read by libheif.
    Heic,
}

/// The format of `bytes`, once their size, completeness and frame count are within
/// `limits`.
pub(super) fn probe(bytes: &[u8], limits: &Limits) -> Result<Sniffed, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::new(ErrorCode::EmptyFile, "the file is empty"));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageError::new(
            ErrorCode::FileTooLarge,
            format!(
                "the file has {} bytes; the limit is {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    if minilab_heif::is_heic(bytes) {
        return if minilab_heif::AVAILABLE {
            Ok(Sniffed::Heic)
        } else {
            Err(ImageError::new(
                ErrorCode::UnsupportedFormat,
                "HEIC photos need a build of minilab with libheif (its `heif` cargo \
                 feature; the container image has it)",
            ))
        };
    }
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| ACCEPTED.contains(f))
        .ok_or_else(|| {
            ImageError::new(
                ErrorCode::UnsupportedFormat,
                "the file is not a JPEG, PNG, WebP, GIF or HEIC image",
            )
        })?;

    match format {
        ImageFormat::Jpeg => check_jpeg_is_complete(bytes)?,
        ImageFormat::Png => check_png_profile(bytes)?,
        _ => {}
    }
    let frames = match format {
        ImageFormat::Gif => count_gif_frames(bytes, limits)?,
        ImageFormat::WebP => count_webp_frames(bytes),
        _ => 1,
    };
    if frames > u64::from(limits.max_frames) {
        return Err(ImageError::new(
            ErrorCode::TooManyFrames,
            format!(
                "the animation has {frames} frames; the limit is {}",
                limits.max_frames
            ),
        ));
    }
    // Within `max_frames`, a u32.
    Ok(Sniffed::Image(format, frames as u32))
}

/// The `ANMF` (animation frame) chunks of a WebP, counted by walking the RIFF
/// chunks by their lengths, without decoding; a still WebP has none and counts 1.
fn count_webp_frames(bytes: &[u8]) -> u64 {
    let mut at = 12; // "RIFF", size, "WEBP"
    let mut frames = 0;
    while let (Some(id), Some(len)) = (bytes.get(at..at + 4), bytes.get(at + 4..at + 8)) {
        if id == b"ANMF" {
            frames += 1;
        }
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        at = at
            .saturating_add(8)
            .saturating_add(len)
            .saturating_add(len & 1);
    }
    frames.max(1)
}

/// Counts a GIF's image descriptors by walking its blocks, without decoding any
/// (a damaged file counts what it has; the decoder reports the damage), and checks
/// each frame's own size against the limits: a frame may claim more than the canvas.
fn count_gif_frames(bytes: &[u8], limits: &Limits) -> Result<u64, ImageError> {
    let color_table = |flags: u8| {
        if flags & 0x80 != 0 {
            3usize << ((flags & 0x07) + 1)
        } else {
            0
        }
    };
    let skip_sub_blocks = |mut at: usize| {
        while let Some(&len) = bytes.get(at) {
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        at
    };
    let Some(&screen_flags) = bytes.get(10) else {
        return Ok(0);
    };
    let mut at = 13 + color_table(screen_flags);
    let mut frames = 0;
    loop {
        match bytes.get(at) {
            Some(0x21) => at = skip_sub_blocks(at + 2),
            Some(0x2C) => {
                frames += 1;
                let Some(descriptor) = bytes.get(at + 5..at + 10) else {
                    return Ok(frames);
                };
                let width = u16::from_le_bytes([descriptor[0], descriptor[1]]);
                let height = u16::from_le_bytes([descriptor[2], descriptor[3]]);
                check_dimensions(u32::from(width), u32::from(height), limits)?;
                at = skip_sub_blocks(at + 10 + color_table(descriptor[4]) + 1);
            }
            _ => return Ok(frames),
        }
    }
}

/// The most a PNG's colour profile (its zlib-compressed `iCCP` chunk) may inflate to.
/// Real profiles are kilobytes (the largest printer profiles a few megabytes); the
/// PNG decoder would inflate and copy one of up to its whole allocation limit while
/// reading the header, before any pixel limit applies.
pub const MAX_PNG_PROFILE_BYTES: usize = 10 << 20;

/// Walks a PNG's chunks by their lengths up to the first `IDAT` and inflates the
/// `iCCP` profile, if any, with [`MAX_PNG_PROFILE_BYTES`] as its bound: a profile
/// that inflates to more is refused (`too-many-pixels`: decoding it would need too
/// much memory). A damaged chunk is left to the decoder to report.
fn check_png_profile(bytes: &[u8]) -> Result<(), ImageError> {
    let mut at = 8; // the signature
    while let (Some(length), Some(kind)) = (bytes.get(at..at + 4), bytes.get(at + 4..at + 8)) {
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let data = at + 8;
        match kind {
            b"IDAT" | b"IEND" => return Ok(()),
            b"iCCP" => {
                let Some(chunk) = bytes.get(data..data.saturating_add(length)) else {
                    return Ok(());
                };
                // name (1-79 bytes), NUL, compression method (0: zlib), the profile.
                let Some(compressed) = chunk
                    .iter()
                    .position(|&b| b == 0)
                    .and_then(|nul| chunk.get(nul + 2..))
                else {
                    return Ok(());
                };
                return match fdeflate::decompress_to_vec_bounded(compressed, MAX_PNG_PROFILE_BYTES)
                {
                    Err(fdeflate::BoundedDecompressionError::OutputTooLarge { .. }) => {
                        Err(ImageError::new(
                            ErrorCode::TooManyPixels,
                            format!(
                                "the PNG's colour profile inflates to more than {} MiB",
                                MAX_PNG_PROFILE_BYTES >> 20
                            ),
                        ))
                    }
                    _ => Ok(()),
                };
            }
            _ => at = data.saturating_add(length).saturating_add(4), // and its CRC
        }
    }
    Ok(())
}

/// The JPEG decoder fills a truncated scan with grey instead of failing, which would
/// publish a damaged photo as a success. A complete JPEG has an EOI marker after its
/// first scan; inside entropy-coded data `0xFF` is always stuffed, so `FF D9` there
/// can only be the EOI. Segments before the scan (EXIF, with its own thumbnail and
/// EOI) are skipped by their lengths. The scans before the EOI are counted
/// ([`MAX_JPEG_SCANS`]).
fn check_jpeg_is_complete(bytes: &[u8]) -> Result<(), ImageError> {
    let truncated = || {
        ImageError::new(
            ErrorCode::CorruptImage,
            "the JPEG is truncated (no end-of-image marker)",
        )
    };
    let mut at = 2; // after SOI
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        match (bytes.get(at), bytes.get(at + 1)) {
            (Some(0xFF), Some(0xDA)) => break,
            (Some(0xFF), Some(0xD9)) => {
                return Err(ImageError::new(
                    ErrorCode::CorruptImage,
                    "the JPEG has no image data",
                ));
            }
            (Some(0xFF), Some(marker)) if (0xD0..=0xD7).contains(marker) || *marker == 0x01 => {
                at += 2
            }
            (Some(0xFF), Some(_)) => {
                let len = bytes.get(at + 2..at + 4).ok_or_else(truncated)?;
                at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
            (None, _) | (_, None) => return Err(truncated()),
            _ => {
                return Err(ImageError::new(
                    ErrorCode::CorruptImage,
                    "the JPEG's segments are damaged",
                ));
            }
        }
    }
    // Inside entropy-coded data every 0xFF is followed by 0x00 or a restart marker:
    // `FF DA` can only start a scan, `FF D9` only end the image.
    // memchr finds the 0xFF bytes with SIMD: a byte-pair scan of a 24 MP photo's
    // 7 MB took 2 % of its whole processing.
    let data = &bytes[at..];
    let mut scans = 0usize;
    for ff in memchr::memchr_iter(0xFF, data) {
        match data.get(ff + 1) {
            Some(0xDA) => scans += 1,
            Some(0xD9) => return Ok(()),
            _ => continue,
        }
        if scans > MAX_JPEG_SCANS {
            return Err(ImageError::new(
                ErrorCode::TooManyFrames,
                format!("the progressive JPEG has more than {MAX_JPEG_SCANS} scans"),
            ));
        }
    }
    Err(truncated())
}

/// The most scans a JPEG may have. Each scan of a progressive JPEG is a pass over
/// the whole image: encoders write about 10 (libjpeg's default script),
/// mozjpeg up to a few dozen; 100,000 tiny ones tie a worker for hours. libvips
/// and ImageMagick refuse beyond a few hundred as well.
pub const MAX_JPEG_SCANS: usize = 256;

/// Refuses a header whose dimensions exceed `limits` (before any pixel is decoded).
pub(super) fn check_dimensions(width: u32, height: u32, limits: &Limits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::new(
            ErrorCode::CorruptImage,
            "the image has no pixels",
        ));
    }
    if width > limits.max_width || height > limits.max_height {
        return Err(ImageError::new(
            ErrorCode::DimensionsTooLarge,
            format!(
                "the image is {width}×{height}; the limit is {}×{}",
                limits.max_width, limits.max_height
            ),
        ));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ImageError::new(
            ErrorCode::TooManyPixels,
            format!(
                "the image has {pixels} pixels; the limit is {}",
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;
    use crate::limits::Limits;
    use crate::pipeline::process;
    use crate::pipeline::testing::{png, test_photo};
    use crate::recipe::RecipeBook;

    #[test]
    fn limits_are_checked_before_decoding() {
        let recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        let small = Limits {
            max_width: 100,
            ..Limits::default()
        };
        let err = process(&png(101, 10, image::ColorType::L8), &recipe, &small).unwrap_err();
        assert_eq!(err.code, ErrorCode::DimensionsTooLarge);
        let few = Limits {
            max_pixels: 99,
            ..Limits::default()
        };
        let err = process(&png(10, 10, image::ColorType::L8), &recipe, &few).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyPixels);
        let tiny = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            process(&png(1, 1, image::ColorType::L8), &recipe, &tiny)
                .unwrap_err()
                .code,
            ErrorCode::FileTooLarge
        );
    }

    #[test]
    fn non_images_and_damaged_images_have_distinct_codes() {
        let recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        let limits = Limits::default();
        assert_eq!(
            process(b"", &recipe, &limits).unwrap_err().code,
            ErrorCode::EmptyFile
        );
        let html = b"<!doctype html><html><body>not a photo</body></html>";
        assert_eq!(
            process(html, &recipe, &limits).unwrap_err().code,
            ErrorCode::UnsupportedFormat
        );
        let whole = png(64, 64, image::ColorType::Rgb8);
        let truncated = &whole[..whole.len() / 2];
        assert_eq!(
            process(truncated, &recipe, &limits).unwrap_err().code,
            ErrorCode::CorruptImage
        );
    }

    #[test]
    fn a_jpeg_with_more_scans_than_any_encoder_writes_is_refused_before_decoding() {
        let recipe = RecipeBook::builtin().get("thumbnail").cloned().unwrap();
        let photo = test_photo("photo-8mp-progressive.jpg");
        assert!(process(&photo, &recipe, &Limits::default()).is_ok());
        // The photo's scans, then empty ones (a header for one component and no
        // entropy-coded data) up to one past the bound, before the end of the image.
        let scan = [0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x01, 0x01, 0x00];
        let mut many = photo[..photo.len() - 2].to_vec();
        for _ in 0..super::MAX_JPEG_SCANS {
            many.extend(scan);
        }
        many.extend([0xFF, 0xD9]);
        let err = process(&many, &recipe, &Limits::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyFrames, "{err}");
        assert!(err.message.contains("scans"), "{err}");
    }

    #[test]
    fn a_gif_frame_larger_than_the_limits_is_refused_whatever_the_canvas() {
        let recipe = RecipeBook::builtin().get("thumbnail").cloned().unwrap();
        // A 1×1 GIF: header, screen (a 2-colour table), the frame's descriptor at 19,
        // its pixels, the trailer.
        let mut gif = vec![
            0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0xFF,
            0xFF, 0xFF, 0x00, 0x00, 0x00, 0x2C, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
            0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B,
        ];
        assert!(process(&gif, &recipe, &Limits::default()).is_ok());
        // The same 1×1 canvas whose one frame claims 60000×60000 pixels.
        gif[24..28].copy_from_slice(&[0x60, 0xEA, 0x60, 0xEA]);
        let err = process(&gif, &recipe, &Limits::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::DimensionsTooLarge, "{err}");
    }

    #[test]
    fn a_truncated_photo_is_corrupt_not_half_grey() {
        let recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        let whole = test_photo("photo-small.jpg");
        let err = process(&whole[..whole.len() * 2 / 3], &recipe, &Limits::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::CorruptImage, "{err}");
    }
}
