//! One image through a recipe: sniff, decode under limits, auto-orient, run each
//! output's operations, encode. Bytes in, bytes out; no I/O.

use crate::error::{ErrorCode, ImageError};
use crate::limits::Limits;
use crate::recipe::{Fit, Format, Operation, OutputSpec, Recipe};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::io::Cursor;
use std::time::{Duration, Instant};

/// What the pipeline made of one source image.
#[derive(Debug)]
pub struct Processed {
    pub source: SourceInfo,
    pub outputs: Vec<EncodedOutput>,
    pub timings: Timings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// The format detected from the bytes, e.g. `jpeg`.
    pub format: &'static str,
    /// Width and height as stored, before auto-orientation.
    pub width: u32,
    pub height: u32,
}

#[derive(Debug)]
pub struct EncodedOutput {
    pub name: String,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub decode: Duration,
    pub transform: Duration,
    pub encode: Duration,
}

/// Runs `recipe` on `bytes`. Every failure is permanent for these bytes and carries
/// a stable [`ErrorCode`].
pub fn process(bytes: &[u8], recipe: &Recipe, limits: &Limits) -> Result<Processed, ImageError> {
    let started = Instant::now();
    let (source, image) = decode(bytes, limits)?;
    let mut timings = Timings {
        decode: started.elapsed(),
        ..Timings::default()
    };

    let mut resizer = Resizer::new();
    let mut outputs = Vec::with_capacity(recipe.outputs.len());
    for spec in &recipe.outputs {
        let started = Instant::now();
        let pixels = transform(&image, spec, &mut resizer)?;
        timings.transform += started.elapsed();

        let started = Instant::now();
        let encoded = encode(&pixels, spec)?;
        timings.encode += started.elapsed();
        outputs.push(EncodedOutput {
            name: spec.name.clone(),
            format: spec.format,
            width: pixels.width(),
            height: pixels.height(),
            bytes: encoded,
        });
    }
    Ok(Processed {
        source,
        outputs,
        timings,
    })
}

/// Formats minilab decodes. Anything else, whatever its name or Content-Type says,
/// is `unsupported-format`.
const ACCEPTED: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
];

/// Detects the format from the bytes, checks the header against `limits`, then
/// decodes and applies the EXIF orientation.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(SourceInfo, DynamicImage), ImageError> {
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
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| ACCEPTED.contains(f))
        .ok_or_else(|| {
            ImageError::new(
                ErrorCode::UnsupportedFormat,
                "the file is not a JPEG, PNG, WebP or GIF image",
            )
        })?;

    if format == ImageFormat::Jpeg {
        check_jpeg_is_complete(bytes)?;
    }

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
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    let info = SourceInfo {
        format: format.extensions_str().first().copied().unwrap_or("image"),
        width,
        height,
    };
    Ok((info, image))
}

/// The JPEG decoder fills a truncated scan with grey instead of failing, which would
/// publish a damaged photo as a success. A complete JPEG has an EOI marker after its
/// first scan; inside entropy-coded data `0xFF` is always stuffed, so `FF D9` there
/// can only be the EOI. Segments before the scan (EXIF, with its own thumbnail and
/// EOI) are skipped by their lengths.
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
    if bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(truncated())
    }
}

fn check_dimensions(width: u32, height: u32, limits: &Limits) -> Result<(), ImageError> {
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

/// Runs one output's operations on the oriented source.
fn transform(
    source: &DynamicImage,
    spec: &OutputSpec,
    resizer: &mut Resizer,
) -> Result<DynamicImage, ImageError> {
    let mut image = normalize(source);
    for op in &spec.operations {
        image = match *op {
            Operation::Resize { width, height, fit } => {
                resize(&image, width, height, fit, resizer)?
            }
            Operation::Grayscale => {
                if image.color().has_alpha() {
                    DynamicImage::ImageLumaA8(image.to_luma_alpha8())
                } else {
                    DynamicImage::ImageLuma8(image.to_luma8())
                }
            }
        };
    }
    Ok(image)
}

/// 8 bits per channel, keeping alpha and grey where the source has them.
fn normalize(image: &DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) | DynamicImage::ImageLuma8(_) => {
            image.clone()
        }
        DynamicImage::ImageLumaA8(_) => DynamicImage::ImageRgba8(image.to_rgba8()),
        _ if image.color().has_alpha() => DynamicImage::ImageRgba8(image.to_rgba8()),
        _ if image.color().has_color() => DynamicImage::ImageRgb8(image.to_rgb8()),
        _ => DynamicImage::ImageLuma8(image.to_luma8()),
    }
}

/// The size `fit` gives a `width`×`height` source in a `box_w`×`box_h` box, never
/// larger than the source.
pub fn fitted_size(width: u32, height: u32, box_w: u32, box_h: u32, fit: Fit) -> (u32, u32) {
    let (w, h) = (f64::from(width), f64::from(height));
    let scale = match fit {
        Fit::Fit => (f64::from(box_w) / w).min(f64::from(box_h) / h),
        Fit::Cover => (f64::from(box_w) / w).max(f64::from(box_h) / h),
    }
    .min(1.0);
    let scaled = |v: f64| ((v * scale).round() as u32).max(1);
    match fit {
        Fit::Fit => (scaled(w), scaled(h)),
        Fit::Cover => (scaled(w).min(box_w), scaled(h).min(box_h)),
    }
}

fn resize(
    image: &DynamicImage,
    box_w: u32,
    box_h: u32,
    fit: Fit,
    resizer: &mut Resizer,
) -> Result<DynamicImage, ImageError> {
    let (w, h) = fitted_size(image.width(), image.height(), box_w, box_h, fit);
    if (w, h) == (image.width(), image.height()) {
        return Ok(image.clone());
    }
    let mut out = DynamicImage::new(w, h, image.color());
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .fit_into_destination(Some((0.5, 0.5)));
    resizer
        .resize(image, &mut out, &options)
        .map_err(|e| ImageError::new(ErrorCode::EncodeFailed, format!("resizing failed: {e}")))?;
    Ok(out)
}

fn encode(image: &DynamicImage, spec: &OutputSpec) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let result = match spec.format {
        Format::Jpeg => {
            // JPEG has no alpha: flatten onto white, as a browser shows a transparent image.
            let flat = if image.color().has_alpha() {
                flatten_on_white(image)
            } else {
                image.clone()
            };
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, spec.quality);
            flat.write_with_encoder(encoder)
        }
        Format::Png => image.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out)),
        Format::Webp => {
            image.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
        }
    };
    result.map_err(|e| {
        ImageError::new(
            ErrorCode::EncodeFailed,
            format!("encoding {} failed: {e}", spec.name),
        )
    })?;
    Ok(out)
}

fn flatten_on_white(image: &DynamicImage) -> DynamicImage {
    let grey = !image.color().has_color();
    let mut rgba = image.to_rgba8();
    for pixel in rgba.pixels_mut() {
        let alpha = u32::from(pixel[3]);
        for c in &mut pixel.0[..3] {
            *c = ((u32::from(*c) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        }
    }
    let rgb = DynamicImage::ImageRgba8(rgba).to_rgb8();
    if grey {
        DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb).to_luma8())
    } else {
        DynamicImage::ImageRgb8(rgb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::RecipeBook;

    #[test]
    fn fit_keeps_aspect_and_never_enlarges() {
        assert_eq!(fitted_size(4000, 3000, 1024, 1024, Fit::Fit), (1024, 768));
        assert_eq!(fitted_size(3000, 4000, 1024, 1024, Fit::Fit), (768, 1024));
        assert_eq!(fitted_size(200, 100, 1024, 1024, Fit::Fit), (200, 100));
        assert_eq!(fitted_size(4000, 3000, 256, 256, Fit::Cover), (256, 256));
        assert_eq!(fitted_size(100, 50, 256, 256, Fit::Cover), (100, 50));
        assert_eq!(fitted_size(10_000, 1, 100, 100, Fit::Fit), (100, 1));
    }

    fn png(width: u32, height: u32, color: image::ColorType) -> Vec<u8> {
        let image = DynamicImage::new(width, height, color);
        let mut out = Vec::new();
        image
            .write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
            .unwrap();
        out
    }

    #[test]
    fn web_recipe_makes_both_sizes_as_jpeg() {
        let recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        let processed = process(
            &png(2000, 1000, image::ColorType::Rgba8),
            &recipe,
            &Limits::default(),
        )
        .unwrap();
        let sizes: Vec<_> = processed
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.width, o.height))
            .collect();
        assert_eq!(sizes, [("large", 1024, 512), ("thumb", 256, 128)]);
        for output in &processed.outputs {
            let decoded =
                image::load_from_memory_with_format(&output.bytes, ImageFormat::Jpeg).unwrap();
            assert_eq!(
                (decoded.width(), decoded.height()),
                (output.width, output.height)
            );
        }
        assert_eq!(processed.source.format, "png");
    }

    #[test]
    fn grayscale_output_has_no_colour() {
        let recipe = RecipeBook::builtin().get("grayscale").cloned().unwrap();
        let processed = process(
            &png(300, 200, image::ColorType::Rgb8),
            &recipe,
            &Limits::default(),
        )
        .unwrap();
        let decoded = image::load_from_memory(&processed.outputs[0].bytes).unwrap();
        assert!(!decoded.color().has_color());
    }

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
}

#[cfg(test)]
mod photo_tests {
    use super::*;
    use crate::recipe::RecipeBook;
    use std::path::PathBuf;

    fn photo(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/images")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_truncated_photo_is_corrupt_not_half_grey() {
        let recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        let whole = photo("photo-small.jpg");
        let err = process(&whole[..whole.len() * 2 / 3], &recipe, &Limits::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::CorruptImage, "{err}");
    }

    #[test]
    fn exif_orientation_is_applied() {
        let bytes = photo("photo-exif-rotate6.jpg");
        let stored = image::load_from_memory(&bytes).unwrap();
        let (info, oriented) = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!((info.width, info.height), (stored.width(), stored.height()));
        // Orientation 6 is a quarter turn: width and height swap.
        assert_eq!(
            (oriented.width(), oriented.height()),
            (stored.height(), stored.width())
        );
    }
}
