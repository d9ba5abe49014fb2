//! Pixels from probed bytes: JPEGs through libjpeg-turbo when the build has it, at
//! a DCT scale when the recipe needs less than the full size; everything else
//! through the `image` crate, under an allocation limit; then the EXIF orientation.

use super::SourceInfo;
use super::colour::Profile;
use super::geometry;
use super::probe::{Sniffed, check_dimensions, probe};
use crate::error::{ErrorCode, ImageError};
use crate::limits::Limits;
use crate::recipe::{Colorspace, Recipe};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::io::Cursor;
use std::sync::OnceLock;

/// Detects the format from the bytes, checks the header against `limits`, then
/// decodes at full size and applies the EXIF orientation.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(SourceInfo, DynamicImage), ImageError> {
    decode_scaled(bytes, limits, 1.0)
}

/// Like [`decode`], but a JPEG may be decoded at a DCT scale (1/2, 1/4, 1/8) as long
/// as the result keeps at least `scale` of the source's width and height.
pub fn decode_scaled(
    bytes: &[u8],
    limits: &Limits,
    scale: f64,
) -> Result<(SourceInfo, DynamicImage), ImageError> {
    let decoded = decode_in(bytes, limits, scale, Colorspace::Srgb, Conversion::AtDecode)?;
    Ok((decoded.info, decoded.image))
}

/// The width and height `bytes` declare, once probed (an output's: no orientation).
pub(super) fn dimensions(bytes: &[u8], limits: &Limits) -> Result<(u32, u32), ImageError> {
    let Sniffed::Image(format, _) = probe(bytes, limits)? else {
        return Err(ImageError::new(
            ErrorCode::UnsupportedFormat,
            "outputs are never HEIC",
        ));
    };
    ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(decode_error)
}

/// A decoded, oriented source.
pub(super) struct Decoded {
    pub info: SourceInfo,
    pub image: DynamicImage,
    /// The ICC profile the pixels are in, when `Colorspace::Keep` kept them so (and
    /// only for RGB profiles); `None` means sRGB.
    pub icc: Option<Vec<u8>>,
    /// The profile the pixels are still in when their conversion to sRGB was left
    /// for each output, after its geometry ([`Profile::to_srgb`] on fewer pixels).
    pub pending: Option<Profile>,
}

/// When a profile's conversion to sRGB happens: at decoding, or on each output after
/// its geometry (what libvips's thumbnail does: a 12 MP photo's 1024 px output has a
/// twelfth of its pixels), which only geometric operations allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Conversion {
    AtDecode,
    PerOutput,
}

/// [`decode_scaled`] with the recipe's colour space: `Srgb` converts the pixels
/// through their embedded profile; `Keep` leaves RGB pixels and hands the profile
/// on (CMYK becomes sRGB either way).
pub(super) fn decode_in(
    bytes: &[u8],
    limits: &Limits,
    scale: f64,
    colorspace: Colorspace,
    conversion: Conversion,
) -> Result<Decoded, ImageError> {
    let (format, frames) = match probe(bytes, limits)? {
        Sniffed::Image(format, frames) => (format, frames),
        Sniffed::Heic => return decode_heic(bytes, limits, colorspace),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    // Width, height and pixels are checked against the header below, with codes of
    // their own; this bounds what any decoder may allocate: the pixels (up to 8 bytes
    // each for 16-bit RGBA) plus the decoder's own buffers.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits);

    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let icc = decoder.icc_profile().ok().flatten();
    let profile = icc.as_deref().and_then(Profile::parse);
    let cmyk = profile.as_ref().filter(|p| p.is_cmyk());
    let scaled = match format {
        ImageFormat::Jpeg => match uses_libjpeg_turbo()
            .then(|| decode_jpeg_turbo(bytes, width, height, scale))
            .flatten()
        {
            Some(image) => Some(image),
            None if scale <= 0.5 || cmyk.is_some() => {
                decode_jpeg_scaled(bytes, width, height, scale, cmyk)?
            }
            None => None,
        },
        _ => None,
    };
    let image = match scaled {
        Some(image) => image,
        None => normalize(DynamicImage::from_decoder(decoder).map_err(decode_error)?),
    };
    let later = conversion == Conversion::PerOutput && colorspace == Colorspace::Srgb;
    let (profile, pending) = match profile {
        Some(p) if later && p.is_rgb() => (None, Some(p)),
        other => (other, None),
    };
    let (mut image, kept) = apply_profile(image, profile, icc, colorspace);
    image.apply_orientation(orientation);
    let info = SourceInfo {
        format: format.extensions_str().first().copied().unwrap_or("image"),
        width,
        height,
        frames,
    };
    Ok(Decoded {
        info,
        image,
        icc: kept,
        pending,
    })
}

/// A decoder's output must have the header's dimensions (or them swapped, by an
/// orientation the decoder applied) and fit the limits, else it is refused.
fn check_decoded_size(
    header: (u32, u32),
    decoded: (u32, u32),
    limits: &Limits,
) -> Result<(), ImageError> {
    if decoded != header && decoded != (header.1, header.0) {
        return Err(ImageError::new(
            ErrorCode::CorruptImage,
            format!(
                "the image decoded to {}×{} pixels; its header says {}×{}",
                decoded.0, decoded.1, header.0, header.1
            ),
        ));
    }
    check_dimensions(decoded.0, decoded.1, limits)
}

/// The pixels in the recipe's colour space: `Srgb` converts them through their
/// embedded profile; `Keep` leaves RGB pixels and hands the profile on.
fn apply_profile(
    image: DynamicImage,
    profile: Option<Profile>,
    icc: Option<Vec<u8>>,
    colorspace: Colorspace,
) -> (DynamicImage, Option<Vec<u8>>) {
    match profile {
        Some(profile) if colorspace == Colorspace::Keep && profile.is_rgb() => (image, icc),
        Some(profile) => (profile.to_srgb(image), None),
        None => (image, None),
    }
}

/// A HEIC through libheif: the header (size with its transforms applied, profile)
/// checked first, then the pixels, already turned as the file's `irot`/`imir` say
/// (HEIF's transforms, not EXIF, orient a HEIC).
fn decode_heic(
    bytes: &[u8],
    limits: &Limits,
    colorspace: Colorspace,
) -> Result<Decoded, ImageError> {
    let heif_error = |e: minilab_heif::Error| {
        if e.over_limit {
            ImageError::new(
                ErrorCode::DimensionsTooLarge,
                format!("the HEIC image is larger than allowed: {e}"),
            )
        } else {
            ImageError::new(
                ErrorCode::CorruptImage,
                format!("the HEIC image does not decode: {e}"),
            )
        }
    };
    let file =
        minilab_heif::open(bytes, limits.max_width.max(limits.max_height)).map_err(heif_error)?;
    let header = file.header().map_err(heif_error)?;
    check_dimensions(header.width, header.height, limits)?;
    let decoded = file.decode().map_err(heif_error)?;
    let (width, height) = (decoded.width, decoded.height);
    // The header's size was checked; the decode is what memory holds. Anything else
    // than the header's size (a grid, a transform the header leaves out) is checked
    // again, and refused unless it is the header's size turned by 90°.
    check_decoded_size((header.width, header.height), (width, height), limits)?;
    let image = if decoded.alpha {
        image::RgbaImage::from_raw(width, height, decoded.pixels).map(DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(width, height, decoded.pixels).map(DynamicImage::ImageRgb8)
    }
    .ok_or_else(|| {
        ImageError::new(
            ErrorCode::CorruptImage,
            "the HEIC image decoded to fewer pixels than it declares",
        )
    })?;
    let profile = header.icc.as_deref().and_then(Profile::parse);
    let (image, icc) = apply_profile(image, profile, header.icc, colorspace);
    Ok(Decoded {
        info: SourceInfo {
            format: "heic",
            width: header.width,
            height: header.height,
            frames: 1,
        },
        image,
        icc,
        pending: None,
    })
}

/// Whether JPEGs are decoded (and encoded) by the system's libjpeg-turbo: when the
/// build found it (see turbojpeg/build.rs), unless `MINILAB_JPEG_DECODER=rust` asks
/// for the pure-Rust codecs (to compare them, or to test them in a build that has
/// both).
pub fn uses_libjpeg_turbo() -> bool {
    static TURBO: OnceLock<bool> = OnceLock::new();
    *TURBO.get_or_init(|| {
        minilab_turbojpeg::AVAILABLE
            && std::env::var("MINILAB_JPEG_DECODER").map_or(true, |decoder| decoder != "rust")
    })
}

/// Decodes a JPEG through libjpeg-turbo at the smallest DCT scale that keeps `scale`
/// of its size. `None` when the build has no libjpeg-turbo, for CMYK and YCCK
/// sources, and for anything libjpeg-turbo refuses: the pure-Rust decoders then take
/// the image, so errors keep their codes and messages whichever decoder runs.
fn decode_jpeg_turbo(bytes: &[u8], width: u32, height: u32, scale: f64) -> Option<DynamicImage> {
    let at_least = |side: u32| ((f64::from(side) * scale).ceil() as u32).clamp(1, side);
    let decoded = minilab_turbojpeg::decode(bytes, at_least(width), at_least(height)).ok()?;
    if decoded.gray {
        image::GrayImage::from_raw(decoded.width, decoded.height, decoded.pixels)
            .map(DynamicImage::ImageLuma8)
    } else {
        image::RgbImage::from_raw(decoded.width, decoded.height, decoded.pixels)
            .map(DynamicImage::ImageRgb8)
    }
}

/// Decodes a JPEG at the smallest DCT scale that keeps `scale` of its size, or
/// `None` for pixel formats the fast path does not take (16-bit grey, CMYK without
/// a CMYK profile to convert it through).
fn decode_jpeg_scaled(
    bytes: &[u8],
    width: u32,
    height: u32,
    scale: f64,
    cmyk: Option<&Profile>,
) -> Result<Option<DynamicImage>, ImageError> {
    let jpeg_error = |e: jpeg_decoder::Error| match e {
        jpeg_decoder::Error::Unsupported(what) => ImageError::new(
            ErrorCode::UnsupportedFormat,
            format!("unsupported JPEG: {what:?}"),
        ),
        other => ImageError::new(
            ErrorCode::CorruptImage,
            format!("the image does not decode: {other}"),
        ),
    };
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(jpeg_error)?;
    let requested = |side: u32| {
        u16::try_from((f64::from(side) * scale).ceil() as u32)
            .unwrap_or(u16::MAX)
            .max(1)
    };
    let (w, h) = decoder
        .scale(requested(width), requested(height))
        .map_err(jpeg_error)?;
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (w, h) = (u32::from(w), u32::from(h));
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            let pixels = decoder.decode().map_err(jpeg_error)?;
            image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        }
        jpeg_decoder::PixelFormat::L8 => {
            let pixels = decoder.decode().map_err(jpeg_error)?;
            image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        }
        jpeg_decoder::PixelFormat::CMYK32 => match cmyk {
            Some(profile) => {
                let pixels = decoder.decode().map_err(jpeg_error)?;
                profile
                    .cmyk_to_srgb(w, h, &pixels)
                    .map(DynamicImage::ImageRgb8)
            }
            None => None,
        },
        jpeg_decoder::PixelFormat::L16 => None,
    };
    match image {
        Some(image) => Ok(Some(image)),
        None if matches!(
            info.pixel_format,
            jpeg_decoder::PixelFormat::RGB24 | jpeg_decoder::PixelFormat::L8
        ) =>
        {
            Err(ImageError::new(
                ErrorCode::CorruptImage,
                "the JPEG decoded to fewer pixels than it declares",
            ))
        }
        None => Ok(None),
    }
}

/// The share of the source's size the recipe needs: the largest scale any output's
/// first resize asks for (1 when an output keeps the full size).
pub(super) fn needed_scale(recipe: &Recipe, bytes: &[u8]) -> f64 {
    // A DCT-scaled decode needs a margin for the resampler after it. With 1.2× the
    // output's size per side (a 256 px cover of 8 MP at 1/8), SSIM against a
    // full-size Lanczos3 resize drops to 0.988; from 1.4× (24 MP → 1024 at 1/4: 1.46×)
    // it stays at 0.995 or better, as good as vipsthumbnail (core's quality tests).
    const MARGIN: f64 = 1.4;
    let Ok(mut reader) = ImageReader::new(Cursor::new(bytes)).with_guessed_format() else {
        return 1.0;
    };
    // The header only: whatever a decoder allocates to read it (a PNG's colour
    // profile, say) stays small; more means a full-size decode, where probe's
    // checks apply first.
    let mut header_only = image::Limits::default();
    header_only.max_alloc = Some(16 << 20);
    reader.limits(header_only);
    let Ok((width, height)) = reader.into_dimensions() else {
        return 1.0;
    };
    recipe
        .outputs
        .iter()
        .map(|spec| geometry::first_share(spec, width, height))
        .fold(0.0, f64::max)
        * MARGIN
}

/// 8 bits per channel, keeping alpha and grey where the source has them.
fn normalize(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) | DynamicImage::ImageLuma8(_) => {
            image
        }
        DynamicImage::ImageLumaA8(_) => DynamicImage::ImageRgba8(image.to_rgba8()),
        _ if image.color().has_alpha() => DynamicImage::ImageRgba8(image.to_rgba8()),
        _ if image.color().has_color() => DynamicImage::ImageRgb8(image.to_rgb8()),
        _ => DynamicImage::ImageLuma8(image.to_luma8()),
    }
}

/// The code for a decoder's failure.
fn decode_error(err: image::ImageError) -> ImageError {
    use image::ImageError as E;
    match err {
        E::Limits(e) => ImageError::new(
            ErrorCode::TooManyPixels,
            format!("decoding would exceed the limits: {e}"),
        ),
        E::Unsupported(e) => ImageError::new(
            ErrorCode::UnsupportedFormat,
            format!("unsupported image: {e}"),
        ),
        E::Decoding(e) => ImageError::new(
            ErrorCode::CorruptImage,
            format!("the image does not decode: {e}"),
        ),
        E::IoError(e) => ImageError::new(
            ErrorCode::CorruptImage,
            format!("the image is truncated or damaged: {e}"),
        ),
        E::Parameter(e) => ImageError::new(
            ErrorCode::CorruptImage,
            format!("the image is damaged: {e}"),
        ),
        E::Encoding(e) => ImageError::new(ErrorCode::EncodeFailed, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::test_photo;

    #[test]
    fn exif_orientation_is_applied() {
        let bytes = test_photo("photo-exif-rotate6.jpg");
        let stored = image::load_from_memory(&bytes).unwrap();
        let (info, oriented) = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!((info.width, info.height), (stored.width(), stored.height()));
        // Orientation 6 is a quarter turn: width and height swap.
        assert_eq!(
            (oriented.width(), oriented.height()),
            (stored.height(), stored.width())
        );
    }

    #[test]
    fn a_decode_larger_than_its_header_is_refused() {
        let limits = Limits {
            max_width: 1000,
            max_height: 1000,
            max_pixels: 100_000,
            ..Limits::default()
        };
        assert!(check_decoded_size((200, 100), (200, 100), &limits).is_ok());
        assert!(check_decoded_size((200, 100), (100, 200), &limits).is_ok());
        let grown = check_decoded_size((200, 100), (1000, 1000), &limits).unwrap_err();
        assert_eq!(grown.code, ErrorCode::CorruptImage, "{grown}");
        // Even a swap is checked against the limits again.
        let tall = Limits {
            max_height: 150,
            ..limits
        };
        let swapped = check_decoded_size((200, 100), (100, 200), &tall).unwrap_err();
        assert_eq!(swapped.code, ErrorCode::DimensionsTooLarge, "{swapped}");
    }
}

/// libjpeg-turbo (what the container image ships) against the pure-Rust decoders on
/// the real photos: the same sizes at every DCT scale and the same picture (their
/// IDCTs and chroma upsampling differ in rounding only). Skipped, saying so, in a
/// build without libjpeg-turbo; `./tests/run` installs it and builds the `turbojpeg`
/// feature, which fails the build where it is missing.
#[cfg(test)]
mod turbojpeg_tests {
    use super::*;
    use crate::pipeline::testing::{ssim, test_photo};

    fn linked() -> bool {
        if !minilab_turbojpeg::AVAILABLE {
            eprintln!("skipped: this build has no libjpeg-turbo");
        }
        minilab_turbojpeg::AVAILABLE
    }

    #[test]
    fn libjpeg_turbo_decodes_the_photos_as_the_rust_decoders_do() {
        if !linked() {
            return;
        }
        for name in [
            "photo-12mp.jpg",
            "photo-8mp-progressive.jpg",
            "photo-exif-rotate6.jpg",
        ] {
            let bytes = test_photo(name);
            let header = minilab_turbojpeg::header(&bytes).unwrap();
            let (w, h) = (header.width, header.height);
            for scale in [1.0, 0.5, 0.3, 0.2, 0.1] {
                let turbo = decode_jpeg_turbo(&bytes, w, h, scale).expect("turbo decodes");
                let rust = if scale <= 0.5 {
                    decode_jpeg_scaled(&bytes, w, h, scale, None)
                        .unwrap()
                        .unwrap()
                } else {
                    let reader = ImageReader::with_format(Cursor::new(&bytes), ImageFormat::Jpeg);
                    normalize(reader.decode().unwrap())
                };
                assert_eq!(
                    (turbo.width(), turbo.height()),
                    (rust.width(), rust.height()),
                    "{name} at {scale}"
                );
                assert!(
                    f64::from(turbo.width()) >= f64::from(w) * scale
                        && f64::from(turbo.height()) >= f64::from(h) * scale,
                    "{name} at {scale}: {}×{} is smaller than asked",
                    turbo.width(),
                    turbo.height()
                );
                let similarity = ssim(&turbo.to_luma8(), &rust.to_luma8());
                assert!(similarity >= 0.98, "{name} at {scale}: SSIM {similarity}");
            }
        }
    }

    #[test]
    fn cmyk_and_damaged_jpegs_are_left_to_the_rust_decoders() {
        if !linked() {
            return;
        }
        let mut cmyk = Vec::new();
        jpeg_encoder::Encoder::new(&mut cmyk, 90)
            .encode(&[0u8; 16 * 16 * 4], 16, 16, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
        assert!(decode_jpeg_turbo(&cmyk, 16, 16, 1.0).is_none());
        let photo = test_photo("photo-small.jpg");
        let header = minilab_turbojpeg::header(&photo).unwrap();
        assert!(decode_jpeg_turbo(&photo[..200], header.width, header.height, 1.0).is_none());
    }
}
