//! One image through a recipe: sniff, decode under limits, auto-orient, run each
//! output's operations, encode. Bytes in, bytes out; no I/O.

use crate::error::{ErrorCode, ImageError};
use crate::limits::Limits;
use crate::recipe::{Direction, Fit, Format, Gravity, Operation, OutputSpec, Recipe};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::io::Cursor;
use std::sync::OnceLock;
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
///
/// Where the time goes: a JPEG much larger than every output is decoded at 1/2, 1/4
/// or 1/8 scale (DCT scaling: less entropy decoding and no full-size buffer); the
/// largest resized output is made from the source and smaller ones from it; resizing
/// is SIMD (fast_image_resize) and JPEG encoding is SIMD (jpeg-encoder).
pub fn process(bytes: &[u8], recipe: &Recipe, limits: &Limits) -> Result<Processed, ImageError> {
    let started = Instant::now();
    let (source, image) = decode_scaled(bytes, limits, needed_scale(recipe, bytes))?;
    let mut timings = Timings {
        decode: started.elapsed(),
        ..Timings::default()
    };

    // The largest output first: its resized pixels can serve the smaller ones.
    let mut order: Vec<usize> = (0..recipe.outputs.len()).collect();
    order.sort_by(|&a, &b| {
        first_resize_scale(&recipe.outputs[b], &image)
            .total_cmp(&first_resize_scale(&recipe.outputs[a], &image))
    });
    let budget = Duration::from_millis(limits.time_budget_ms);
    let within_budget = || {
        if started.elapsed() > budget {
            Err(ImageError::new(
                ErrorCode::TimeBudgetExceeded,
                format!("processing took over {} ms", limits.time_budget_ms),
            ))
        } else {
            Ok(())
        }
    };
    within_budget()?;
    let mut resizer = Resizer::new();
    let mut derived: Option<DynamicImage> = None;
    let mut outputs: Vec<Option<EncodedOutput>> = (0..recipe.outputs.len()).map(|_| None).collect();
    for index in order {
        let spec = &recipe.outputs[index];
        let started = Instant::now();
        let pixels = transform(&image, spec, &mut resizer, &mut derived)?;
        timings.transform += started.elapsed();

        let started = Instant::now();
        let encoded = encode(&pixels, spec)?;
        timings.encode += started.elapsed();
        within_budget()?;
        outputs[index] = Some(EncodedOutput {
            name: spec.name.clone(),
            format: spec.format,
            width: pixels.width(),
            height: pixels.height(),
            bytes: encoded,
        });
    }
    Ok(Processed {
        source,
        outputs: outputs.into_iter().flatten().collect(),
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
    let frames = match format {
        ImageFormat::Gif => count_gif_frames(bytes),
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
    let scaled = match format {
        ImageFormat::Jpeg => match uses_libjpeg_turbo()
            .then(|| decode_jpeg_turbo(bytes, width, height, scale))
            .flatten()
        {
            Some(image) => Some(image),
            None if scale <= 0.5 => decode_jpeg_scaled(bytes, width, height, scale)?,
            None => None,
        },
        _ => None,
    };
    let mut image = match scaled {
        Some(image) => image,
        None => normalize(DynamicImage::from_decoder(decoder).map_err(decode_error)?),
    };
    image.apply_orientation(orientation);
    let info = SourceInfo {
        format: format.extensions_str().first().copied().unwrap_or("image"),
        width,
        height,
    };
    Ok((info, image))
}

/// Whether JPEGs are decoded by the system's libjpeg-turbo: when the build found it
/// (see turbojpeg/build.rs), unless `MINILAB_JPEG_DECODER=rust` asks for the
/// pure-Rust decoders (to compare them, or to test them in a build that has both).
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
/// `None` for pixel formats the fast path does not take (CMYK, 16-bit grey).
fn decode_jpeg_scaled(
    bytes: &[u8],
    width: u32,
    height: u32,
    scale: f64,
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
        jpeg_decoder::PixelFormat::L16 | jpeg_decoder::PixelFormat::CMYK32 => None,
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
fn needed_scale(recipe: &Recipe, bytes: &[u8]) -> f64 {
    // A DCT-scaled decode needs a margin for the resampler after it. With 1.2× the
    // output's size per side (a 256 px cover of 8 MP at 1/8), SSIM against a
    // full-size Lanczos3 resize drops to 0.988; from 1.4× (24 MP → 1024 at 1/4: 1.46×)
    // it stays at 0.995 or better, as good as vipsthumbnail (core's quality tests).
    const MARGIN: f64 = 1.4;
    let Ok(reader) = ImageReader::new(Cursor::new(bytes)).with_guessed_format() else {
        return 1.0;
    };
    let Ok((width, height)) = reader.into_dimensions() else {
        return 1.0;
    };
    recipe
        .outputs
        .iter()
        .map(|spec| resize_scale(spec, width, height))
        .fold(0.0, f64::max)
        * MARGIN
}

/// The scale an output's first operation applies to a `width`×`height` source
/// (either orientation: a box is tried both ways, so EXIF rotation cannot shrink the
/// decode below what is needed).
fn resize_scale(spec: &OutputSpec, width: u32, height: u32) -> f64 {
    match spec.operations.first() {
        Some(&Operation::Resize {
            width: bw,
            height: bh,
            fit,
            ..
        }) => {
            let scale = |w: u32, h: u32| {
                let (sx, sy) = (f64::from(bw) / f64::from(w), f64::from(bh) / f64::from(h));
                match fit {
                    Fit::Fit | Fit::Contain => sx.min(sy),
                    Fit::Cover | Fit::Fill => sx.max(sy),
                }
            };
            scale(width, height).max(scale(height, width)).min(1.0)
        }
        _ => 1.0,
    }
}

fn first_resize_scale(spec: &OutputSpec, image: &DynamicImage) -> f64 {
    resize_scale(spec, image.width(), image.height())
}

/// Counts a GIF's image descriptors by walking its blocks, without decoding any
/// (a damaged file counts what it has; the decoder reports the damage).
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

fn count_gif_frames(bytes: &[u8]) -> u64 {
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
        return 0;
    };
    let mut at = 13 + color_table(screen_flags);
    let mut frames = 0;
    loop {
        match bytes.get(at) {
            Some(0x21) => at = skip_sub_blocks(at + 2),
            Some(0x2C) => {
                frames += 1;
                let Some(&flags) = bytes.get(at + 9) else {
                    return frames;
                };
                at = skip_sub_blocks(at + 10 + color_table(flags) + 1);
            }
            _ => return frames,
        }
    }
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

/// Runs one output's operations on the oriented source. An output whose first
/// operation is a resize starts from `derived` (the largest output's resized pixels)
/// when that is at least as large as it needs; the first such resize is kept there.
fn transform(
    source: &DynamicImage,
    spec: &OutputSpec,
    resizer: &mut Resizer,
    derived: &mut Option<DynamicImage>,
) -> Result<DynamicImage, ImageError> {
    let mut operations = spec.operations.iter();
    let mut image = match spec.operations.first() {
        Some(&Operation::Resize {
            width,
            height,
            fit,
            enlarge,
        }) => {
            operations.next();
            let (need_w, need_h) =
                presized(source.width(), source.height(), width, height, fit, enlarge);
            let start = match derived.as_ref() {
                Some(d) if d.width() >= need_w && d.height() >= need_h => d,
                _ => source,
            };
            let resized = resize(start, width, height, fit, enlarge, spec.background, resizer)?;
            // Only a downscaled fit serves smaller outputs (an enlarged one has no
            // more detail than the source).
            if derived.is_none()
                && fit == Fit::Fit
                && resized.width() <= source.width()
                && resized.height() <= source.height()
            {
                *derived = Some(resized.clone());
            }
            resized
        }
        _ => source.clone(),
    };
    for op in operations {
        image = match *op {
            Operation::Resize {
                width,
                height,
                fit,
                enlarge,
            } => resize(
                &image,
                width,
                height,
                fit,
                enlarge,
                spec.background,
                resizer,
            )?,
            Operation::Grayscale => {
                if image.color().has_alpha() {
                    DynamicImage::ImageLumaA8(image.to_luma_alpha8())
                } else {
                    DynamicImage::ImageLuma8(image.to_luma8())
                }
            }
            Operation::Crop {
                width,
                height,
                gravity,
            } => crop(&image, width, height, gravity),
            Operation::Rotate { degrees: 90 } => image.rotate90(),
            Operation::Rotate { degrees: 180 } => image.rotate180(),
            Operation::Rotate { .. } => image.rotate270(),
            Operation::Flip {
                direction: Direction::Horizontal,
            } => image.fliph(),
            Operation::Flip {
                direction: Direction::Vertical,
            } => image.flipv(),
            Operation::Blur { sigma } => image.blur(sigma),
            Operation::Sharpen { sigma, threshold } => image.unsharpen(sigma, threshold),
            Operation::Brightness { value } => image.brighten(value),
            Operation::Contrast { value } => image.adjust_contrast(value),
        };
    }
    Ok(image)
}

/// A `width`×`height` window (clamped to the image) placed by `gravity`.
fn crop(image: &DynamicImage, width: u32, height: u32, gravity: Gravity) -> DynamicImage {
    let (w, h) = (width.min(image.width()), height.min(image.height()));
    let (free_x, free_y) = (image.width() - w, image.height() - h);
    let x = match gravity {
        Gravity::West | Gravity::NorthWest | Gravity::SouthWest => 0,
        Gravity::East | Gravity::NorthEast | Gravity::SouthEast => free_x,
        Gravity::Center | Gravity::North | Gravity::South => free_x / 2,
    };
    let y = match gravity {
        Gravity::North | Gravity::NorthEast | Gravity::NorthWest => 0,
        Gravity::South | Gravity::SouthEast | Gravity::SouthWest => free_y,
        Gravity::Center | Gravity::East | Gravity::West => free_y / 2,
    };
    image.crop_imm(x, y, w, h)
}

/// The size a source is scaled to before `fit` crops or pads it (`Cover` scales past
/// one side).
fn presized(
    width: u32,
    height: u32,
    box_w: u32,
    box_h: u32,
    fit: Fit,
    enlarge: bool,
) -> (u32, u32) {
    match fit {
        Fit::Fit | Fit::Fill | Fit::Contain => {
            fitted_size(width, height, box_w, box_h, fit, enlarge)
        }
        Fit::Cover => {
            let scale = fit_scale(width, height, box_w, box_h, fit, enlarge);
            (scale_side(width, scale), scale_side(height, scale))
        }
    }
}

/// The factor `fit` scales a `width`×`height` source by to meet a `box_w`×`box_h`
/// box: to its tighter side, or its looser one for `Cover`; at most 1 unless `enlarge`.
fn fit_scale(width: u32, height: u32, box_w: u32, box_h: u32, fit: Fit, enlarge: bool) -> f64 {
    let (x, y) = (
        f64::from(box_w) / f64::from(width),
        f64::from(box_h) / f64::from(height),
    );
    let scale = if fit == Fit::Cover {
        x.max(y)
    } else {
        x.min(y)
    };
    if enlarge { scale } else { scale.min(1.0) }
}

/// One side scaled by `scale`, rounded, at least 1 pixel.
fn scale_side(side: u32, scale: f64) -> u32 {
    ((f64::from(side) * scale).round() as u32).max(1)
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

/// The size `fit` gives a `width`×`height` source in a `box_w`×`box_h` box, never
/// larger than the source unless `enlarge`.
/// For `Contain` this is the picture inside the padding.
pub fn fitted_size(
    width: u32,
    height: u32,
    box_w: u32,
    box_h: u32,
    fit: Fit,
    enlarge: bool,
) -> (u32, u32) {
    let scale = fit_scale(width, height, box_w, box_h, fit, enlarge);
    match fit {
        Fit::Fit | Fit::Contain | Fit::Cover => (
            scale_side(width, scale).min(box_w),
            scale_side(height, scale).min(box_h),
        ),
        Fit::Fill if enlarge => (box_w, box_h),
        Fit::Fill => (box_w.min(width).max(1), box_h.min(height).max(1)),
    }
}

#[allow(clippy::too_many_arguments)]
fn resize(
    image: &DynamicImage,
    box_w: u32,
    box_h: u32,
    fit: Fit,
    enlarge: bool,
    background: [u8; 3],
    resizer: &mut Resizer,
) -> Result<DynamicImage, ImageError> {
    let resized = resample(image, box_w, box_h, fit, enlarge, resizer)?;
    if fit != Fit::Contain || (resized.width(), resized.height()) == (box_w, box_h) {
        return Ok(resized);
    }
    // Pad to the box, centred, on the background.
    let [r, g, b] = background;
    let mut canvas = image::RgbaImage::from_pixel(box_w, box_h, image::Rgba([r, g, b, 255]));
    let (x, y) = (
        (box_w - resized.width()) / 2,
        (box_h - resized.height()) / 2,
    );
    image::imageops::overlay(&mut canvas, &resized.to_rgba8(), i64::from(x), i64::from(y));
    let canvas = DynamicImage::ImageRgba8(canvas);
    Ok(match resized {
        DynamicImage::ImageRgba8(_) => canvas,
        DynamicImage::ImageLuma8(_) if r == g && g == b => {
            DynamicImage::ImageLuma8(canvas.to_luma8())
        }
        _ => DynamicImage::ImageRgb8(canvas.to_rgb8()),
    })
}

fn resample(
    image: &DynamicImage,
    box_w: u32,
    box_h: u32,
    fit: Fit,
    enlarge: bool,
    resizer: &mut Resizer,
) -> Result<DynamicImage, ImageError> {
    let (w, h) = fitted_size(image.width(), image.height(), box_w, box_h, fit, enlarge);
    if (w, h) == (image.width(), image.height()) {
        return Ok(image.clone());
    }
    let mut out = DynamicImage::new(w, h, image.color());
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    // Only a cover crops (a fill stretches). A fit keeps the whole source: its rounded size differs from
    // the exact aspect ratio by a fraction of a pixel, and cropping to that would
    // shift and scale the picture slightly.
    if fit == Fit::Cover {
        options = options.fit_into_destination(Some((0.5, 0.5)));
    }
    resizer
        .resize(image, &mut out, &options)
        .map_err(|e| ImageError::new(ErrorCode::EncodeFailed, format!("resizing failed: {e}")))?;
    Ok(out)
}

fn encode(image: &DynamicImage, spec: &OutputSpec) -> Result<Vec<u8>, ImageError> {
    let failed = |e: &dyn std::fmt::Display| {
        ImageError::new(
            ErrorCode::EncodeFailed,
            format!("encoding {} failed: {e}", spec.name),
        )
    };
    let mut out = Vec::new();
    match spec.format {
        Format::Jpeg => {
            // JPEG has no alpha: flatten onto white, as a browser shows a transparent image.
            let flat;
            let image = if image.color().has_alpha() {
                flat = flatten_onto(image, spec.background);
                &flat
            } else {
                image
            };
            let (color, data) = match image {
                DynamicImage::ImageLuma8(gray) => {
                    (jpeg_encoder::ColorType::Luma, gray.as_raw().as_slice())
                }
                DynamicImage::ImageRgb8(rgb) => {
                    (jpeg_encoder::ColorType::Rgb, rgb.as_raw().as_slice())
                }
                _ => return Err(failed(&"unexpected pixel layout")),
            };
            let (Ok(width), Ok(height)) =
                (u16::try_from(image.width()), u16::try_from(image.height()))
            else {
                return Err(failed(&"JPEG is limited to 65535 pixels a side"));
            };
            let mut encoder = jpeg_encoder::Encoder::new(&mut out, spec.quality);
            // Chroma at half resolution below q90, as libjpeg's defaults and browsers expect.
            if spec.quality < 90 {
                encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
            }
            encoder.set_progressive(spec.progressive);
            encoder
                .encode(data, width, height, color)
                .map_err(|e| failed(&e))?;
        }
        Format::Png => image
            .write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
            .map_err(|e| failed(&e))?,
        Format::Webp if spec.lossless => image
            .write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
            .map_err(|e| failed(&e))?,
        Format::Webp => {
            // libwebp at its defaults (method 4, as cwebp and libvips use), RGB or
            // RGBA; grey is widened to RGB since WebP has no grey mode.
            if image.width() > 16_383 || image.height() > 16_383 {
                return Err(failed(&"WebP is limited to 16383 pixels a side"));
            }
            let widened: Vec<u8>;
            let (layout, data) = match image {
                DynamicImage::ImageRgb8(rgb) => (webp::PixelLayout::Rgb, rgb.as_raw()),
                DynamicImage::ImageRgba8(rgba) => (webp::PixelLayout::Rgba, rgba.as_raw()),
                _ if image.color().has_alpha() => {
                    widened = image.to_rgba8().into_raw();
                    (webp::PixelLayout::Rgba, &widened)
                }
                _ => {
                    widened = image.to_rgb8().into_raw();
                    (webp::PixelLayout::Rgb, &widened)
                }
            };
            let mut config =
                webp::WebPConfig::new().map_err(|()| failed(&"libwebp version mismatch"))?;
            config.quality = f32::from(spec.quality);
            let encoded = webp::Encoder::new(data, layout, image.width(), image.height())
                .encode_advanced(&config)
                .map_err(|e| failed(&format!("{e:?}")))?;
            out.extend_from_slice(&encoded);
        }
    }
    Ok(out)
}

#[cfg(test)]
fn flatten_on_white(image: &DynamicImage) -> DynamicImage {
    flatten_onto(image, [255, 255, 255])
}

/// Composites onto an opaque `background`; stays grey when the image is grey and the
/// background is too.
fn flatten_onto(image: &DynamicImage, background: [u8; 3]) -> DynamicImage {
    let grey = !image.color().has_color()
        && background[0] == background[1]
        && background[1] == background[2];
    let mut rgba = image.to_rgba8();
    for pixel in rgba.pixels_mut() {
        let alpha = u32::from(pixel[3]);
        for (c, bg) in pixel.0[..3].iter_mut().zip(background) {
            *c = ((u32::from(*c) * alpha + u32::from(bg) * (255 - alpha) + 127) / 255) as u8;
        }
    }
    let rgb = DynamicImage::ImageRgba8(rgba).to_rgb8();
    if grey {
        DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb).to_luma8())
    } else {
        DynamicImage::ImageRgb8(rgb)
    }
}

/// A test photo: `$MINILAB_IMAGES` if set, else the repository's own
/// `tests/data/images`.
#[cfg(test)]
fn test_photo(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("MINILAB_IMAGES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/images")
        });
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::quality_tests::ssim;
    use super::*;
    use crate::recipe::RecipeBook;

    #[test]
    fn fit_keeps_aspect_and_never_enlarges() {
        assert_eq!(
            fitted_size(4000, 3000, 1024, 1024, Fit::Fit, false),
            (1024, 768)
        );
        assert_eq!(
            fitted_size(3000, 4000, 1024, 1024, Fit::Fit, false),
            (768, 1024)
        );
        assert_eq!(
            fitted_size(200, 100, 1024, 1024, Fit::Fit, false),
            (200, 100)
        );
        assert_eq!(
            fitted_size(4000, 3000, 256, 256, Fit::Cover, false),
            (256, 256)
        );
        assert_eq!(fitted_size(100, 50, 256, 256, Fit::Cover, false), (100, 50));
        assert_eq!(fitted_size(10_000, 1, 100, 100, Fit::Fit, false), (100, 1));
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
    fn enlarging_happens_only_when_asked() {
        for (fit, kept, enlarged) in [
            (Fit::Fit, (100, 50), (400, 200)),
            (Fit::Contain, (100, 50), (400, 200)),
            (Fit::Cover, (100, 50), (400, 400)),
            (Fit::Fill, (100, 50), (400, 400)),
        ] {
            assert_eq!(fitted_size(100, 50, 400, 400, fit, false), kept, "{fit:?}");
            assert_eq!(
                fitted_size(100, 50, 400, 400, fit, true),
                enlarged,
                "{fit:?}"
            );
        }
        let source = DynamicImage::ImageRgb8(image::RgbImage::from_fn(100, 50, |x, _| {
            image::Rgb([(x * 2) as u8, 100, 200])
        }));
        let resize = |enlarge| Operation::Resize {
            width: 400,
            height: 400,
            fit: Fit::Fit,
            enlarge,
        };
        let kept = run_ops(&source, vec![resize(false)]);
        assert_eq!(kept.to_rgb8(), source.to_rgb8());
        let enlarged = run_ops(&source, vec![resize(true)]);
        assert_eq!((enlarged.width(), enlarged.height()), (400, 200));
        // The gradient is stretched, not cropped: the left edge stays dark, the right light.
        let enlarged = enlarged.to_rgb8();
        assert!(enlarged.get_pixel(2, 100)[0] < 10 && enlarged.get_pixel(397, 100)[0] > 190);
    }

    #[test]
    fn webp_is_lossy_at_quality_or_lossless_when_asked() {
        let photo = decode(&test_photo("photo-alpha.png"), &Limits::default())
            .unwrap()
            .1;
        assert!(photo.color().has_alpha());
        let photo = photo.resize(400, 400, image::imageops::FilterType::Triangle);
        let output = |quality, lossless| OutputSpec {
            name: "o".into(),
            operations: Vec::new(),
            format: Format::Webp,
            quality,
            lossless,
            progressive: false,
            background: [255, 255, 255],
        };
        let lossless = encode(&photo, &output(80, true)).unwrap();
        assert_eq!(chunk(&lossless), *b"VP8L");
        let decoded = image::load_from_memory_with_format(&lossless, ImageFormat::WebP).unwrap();
        assert_eq!(decoded.to_rgba8(), photo.to_rgba8(), "lossless is exact");

        let q80 = encode(&photo, &output(80, false)).unwrap();
        let q30 = encode(&photo, &output(30, false)).unwrap();
        assert_eq!(chunk(&q80), *b"VP8 ", "lossy WebP");
        assert!(
            q30.len() < q80.len() && q80.len() < lossless.len() / 2,
            "{} {} {}",
            q30.len(),
            q80.len(),
            lossless.len()
        );
        let decoded = image::load_from_memory_with_format(&q80, ImageFormat::WebP).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (photo.width(), photo.height())
        );
        // Alpha survives lossy encoding (its own lossless plane).
        let alpha =
            |image: &DynamicImage| -> Vec<u8> { image.to_rgba8().pixels().map(|p| p[3]).collect() };
        assert_eq!(alpha(&decoded), alpha(&photo));
        let score = ssim(
            &flatten_on_white(&decoded).to_luma8(),
            &flatten_on_white(&photo).to_luma8(),
        );
        assert!(score > 0.95, "q80 SSIM {score}");

        // Grey pixels are widened (WebP has no grey mode).
        let grey = DynamicImage::ImageLuma8(photo.to_luma8());
        let decoded = image::load_from_memory(&encode(&grey, &output(80, false)).unwrap()).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (grey.width(), grey.height())
        );
    }

    /// The first chunk after a VP8X header, or the only one: `VP8 ` is lossy, `VP8L`
    /// lossless.
    fn chunk(webp: &[u8]) -> [u8; 4] {
        assert_eq!(&webp[..4], b"RIFF");
        let mut at = 12;
        loop {
            let id: [u8; 4] = webp[at..at + 4].try_into().unwrap();
            if !matches!(&id, b"VP8X" | b"ALPH" | b"ICCP") {
                return id;
            }
            let len = u32::from_le_bytes(webp[at + 4..at + 8].try_into().unwrap()) as usize;
            at += 8 + len + (len & 1);
        }
    }

    #[test]
    fn web_recipe_makes_both_sizes_as_jpeg_and_webp() {
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
        assert_eq!(
            sizes,
            [
                ("large", 1024, 512),
                ("large-webp", 1024, 512),
                ("thumb", 256, 128),
                ("thumb-webp", 256, 128)
            ]
        );
        for output in &processed.outputs {
            let format = match output.format {
                Format::Jpeg => ImageFormat::Jpeg,
                Format::Webp => ImageFormat::WebP,
                Format::Png => ImageFormat::Png,
            };
            assert_eq!(image::guess_format(&output.bytes).unwrap(), format);
            let decoded = image::load_from_memory_with_format(&output.bytes, format).unwrap();
            assert_eq!(
                (decoded.width(), decoded.height()),
                (output.width, output.height)
            );
        }
        assert_eq!(processed.source.format, "png");
    }

    fn run_ops(source: &DynamicImage, operations: Vec<Operation>) -> DynamicImage {
        let recipe = Recipe {
            name: "t".into(),
            description: "t".into(),
            outputs: vec![OutputSpec {
                name: "o".into(),
                operations,
                format: Format::Png,
                quality: 80,
                lossless: false,
                progressive: false,
                background: [255, 255, 255],
            }],
        };
        recipe.validate().unwrap();
        let processed = process(&png_of(source), &recipe, &Limits::default()).unwrap();
        image::load_from_memory(&processed.outputs[0].bytes).unwrap()
    }

    fn png_of(image: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
            .unwrap();
        out
    }

    fn mean(image: &DynamicImage) -> f64 {
        let luma = image.to_luma8();
        luma.pixels().map(|p| f64::from(p[0])).sum::<f64>() / luma.len() as f64
    }

    fn variance(image: &DynamicImage) -> f64 {
        let m = mean(image);
        let luma = image.to_luma8();
        luma.pixels()
            .map(|p| (f64::from(p[0]) - m).powi(2))
            .sum::<f64>()
            / luma.len() as f64
    }

    #[test]
    fn rotate_flip_and_tone_operations_do_what_they_say() {
        // 60×40, a white pixel near the top-left corner, a checkerboard elsewhere.
        let source = DynamicImage::ImageRgb8(image::RgbImage::from_fn(60, 40, |x, y| {
            if (x, y) == (2, 1) {
                image::Rgb([255, 255, 255])
            } else if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([40, 40, 40])
            } else {
                image::Rgb([200, 200, 200])
            }
        }));
        let rotated = run_ops(&source, vec![Operation::Rotate { degrees: 90 }]);
        assert_eq!((rotated.width(), rotated.height()), (40, 60));
        // (2, 1) turns clockwise to (40 - 1 - 1, 2).
        assert_eq!(
            rotated.to_rgb8().get_pixel(38, 2),
            &image::Rgb([255, 255, 255])
        );
        let flipped = run_ops(
            &source,
            vec![Operation::Flip {
                direction: Direction::Horizontal,
            }],
        );
        assert_eq!(
            flipped.to_rgb8().get_pixel(57, 1),
            &image::Rgb([255, 255, 255])
        );
        let flipped = run_ops(
            &source,
            vec![Operation::Flip {
                direction: Direction::Vertical,
            }],
        );
        assert_eq!(
            flipped.to_rgb8().get_pixel(2, 38),
            &image::Rgb([255, 255, 255])
        );

        assert!(
            mean(&run_ops(&source, vec![Operation::Brightness { value: 30 }]))
                > mean(&source) + 25.0
        );
        assert!(
            variance(&run_ops(&source, vec![Operation::Contrast { value: 50.0 }]))
                > variance(&source) * 1.2
        );
        assert!(
            variance(&run_ops(&source, vec![Operation::Blur { sigma: 2.0 }]))
                < variance(&source) * 0.8
        );
        let sharpened = run_ops(
            &source,
            vec![Operation::Sharpen {
                sigma: 1.0,
                threshold: 0,
            }],
        );
        assert!(variance(&sharpened) > variance(&source));
    }

    #[test]
    fn alpha_goes_onto_the_background_and_progressive_jpeg_is_progressive() {
        let transparent = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            20,
            20,
            image::Rgba([0, 0, 0, 0]),
        ));
        let recipe = Recipe {
            name: "t".into(),
            description: "t".into(),
            outputs: vec![OutputSpec {
                name: "o".into(),
                operations: Vec::new(),
                format: Format::Jpeg,
                quality: 90,
                lossless: false,
                progressive: true,
                background: [200, 30, 40],
            }],
        };
        let processed = process(&png_of(&transparent), &recipe, &Limits::default()).unwrap();
        let bytes = &processed.outputs[0].bytes;
        let image::Rgb([r, g, b]) = *image::load_from_memory(bytes)
            .unwrap()
            .to_rgb8()
            .get_pixel(10, 10);
        assert!(
            r.abs_diff(200) < 6 && g.abs_diff(30) < 6 && b.abs_diff(40) < 6,
            "{r} {g} {b}"
        );
        // SOF2 (FF C2) marks a progressive JPEG, SOF0 (FF C0) a baseline one.
        assert!(bytes.windows(2).any(|w| w == [0xFF, 0xC2]));
        assert!(!bytes.windows(2).any(|w| w == [0xFF, 0xC0]));
    }

    #[test]
    fn crop_keeps_the_window_its_gravity_names() {
        // 100×60 with one white pixel in each corner region's corner.
        let source = DynamicImage::ImageRgb8(image::RgbImage::from_fn(100, 60, |x, y| {
            if (x, y) == (99, 59) || (x, y) == (0, 0) {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        }));
        let crop = |gravity| {
            run_ops(
                &source,
                vec![Operation::Crop {
                    width: 30,
                    height: 20,
                    gravity,
                }],
            )
            .to_rgb8()
        };
        let south_east = crop(Gravity::SouthEast);
        assert_eq!(south_east.dimensions(), (30, 20));
        assert_eq!(south_east.get_pixel(29, 19), &image::Rgb([255, 255, 255]));
        assert_eq!(
            crop(Gravity::NorthWest).get_pixel(0, 0),
            &image::Rgb([255, 255, 255])
        );
        let centre = crop(Gravity::Center);
        assert!(centre.pixels().all(|p| p[0] == 0));
        // A window larger than the image keeps the whole image.
        let all = run_ops(
            &source,
            vec![Operation::Crop {
                width: 500,
                height: 500,
                gravity: Gravity::Center,
            }],
        );
        assert_eq!((all.width(), all.height()), (100, 60));
    }

    #[test]
    fn fill_stretches_and_contain_pads_with_the_background() {
        // 200×100: left half black, right half white.
        let source = DynamicImage::ImageRgb8(image::RgbImage::from_fn(200, 100, |x, _| {
            if x < 100 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        }));
        let filled = run_ops(
            &source,
            vec![Operation::Resize {
                width: 100,
                height: 100,
                fit: Fit::Fill,
                enlarge: false,
            }],
        )
        .to_rgb8();
        assert_eq!(filled.dimensions(), (100, 100));
        assert!(filled.get_pixel(20, 50)[0] < 30 && filled.get_pixel(80, 50)[0] > 225);

        let recipe = Recipe {
            name: "t".into(),
            description: "t".into(),
            outputs: vec![OutputSpec {
                name: "o".into(),
                operations: vec![Operation::Resize {
                    width: 100,
                    height: 100,
                    fit: Fit::Contain,
                    enlarge: false,
                }],
                format: Format::Png,
                quality: 80,
                lossless: false,
                progressive: false,
                background: [10, 200, 30],
            }],
        };
        let processed = process(&png_of(&source), &recipe, &Limits::default()).unwrap();
        let contained = image::load_from_memory(&processed.outputs[0].bytes)
            .unwrap()
            .to_rgb8();
        assert_eq!(contained.dimensions(), (100, 100));
        // The picture is 100×50 in the middle; bands of background above and below.
        assert_eq!(contained.get_pixel(50, 5), &image::Rgb([10, 200, 30]));
        assert_eq!(contained.get_pixel(50, 94), &image::Rgb([10, 200, 30]));
        assert!(contained.get_pixel(20, 50)[0] < 30 && contained.get_pixel(80, 50)[0] > 225);
    }

    #[test]
    fn operation_parameters_are_validated() {
        let mut recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        for (op, field) in [
            (Operation::Rotate { degrees: 45 }, "operations.rotate"),
            (Operation::Blur { sigma: 0.0 }, "operations.blur"),
            (
                Operation::Sharpen {
                    sigma: 1.0,
                    threshold: 300,
                },
                "operations.sharpen",
            ),
            (
                Operation::Brightness { value: 256 },
                "operations.brightness",
            ),
            (Operation::Contrast { value: 101.0 }, "operations.contrast"),
        ] {
            recipe.outputs[0].operations = vec![op];
            assert_eq!(recipe.validate().unwrap_err().field, field);
        }
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

    use super::test_photo as photo;

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

#[cfg(test)]
mod quality_tests {
    use super::*;
    use crate::recipe::RecipeBook;

    /// Mean SSIM of two same-sized greyscale images over 8×8 windows at a stride of 4
    /// (Wang et al. 2004, uniform windows).
    pub fn ssim(a: &image::GrayImage, b: &image::GrayImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let (w, h) = a.dimensions();
        let (mut total, mut windows) = (0.0, 0u32);
        for y in (0..h.saturating_sub(7)).step_by(4) {
            for x in (0..w.saturating_sub(7)).step_by(4) {
                let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for dy in 0..8 {
                    for dx in 0..8 {
                        let pa = f64::from(a.get_pixel(x + dx, y + dy)[0]);
                        let pb = f64::from(b.get_pixel(x + dx, y + dy)[0]);
                        sa += pa;
                        sb += pb;
                        saa += pa * pa;
                        sbb += pb * pb;
                        sab += pa * pb;
                    }
                }
                let n = 64.0;
                let (ma, mb) = (sa / n, sb / n);
                let (va, vb, cov) = (saa / n - ma * ma, sbb / n - mb * mb, sab / n - ma * mb);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                windows += 1;
            }
        }
        total / f64::from(windows)
    }

    /// Every output of `web` and `thumbnail` stays close to a high-quality reference:
    /// a full-size decode resized with Lanczos3 by the `image` crate to the same size
    /// (and cropped alike for covers). Before encoding, the pixels keep an SSIM of at
    /// least 0.99 (DCT-scaled decoding and derived outputs cost nothing visible).
    /// Encoded, they keep at least 0.98, or, where q80 itself costs more on a
    /// textured photo, no more than 0.01 below the reference encoded in the same
    /// format at the same quality (JPEG by the `image` crate's encoder, WebP by
    /// libwebp).
    #[test]
    fn outputs_stay_close_to_a_high_quality_reference_resize() {
        let recipes = RecipeBook::builtin();
        for name in [
            "photo-12mp.jpg",
            "photo-24mp.jpg",
            "photo-8mp-progressive.jpg",
            "photo-exif-rotate6.jpg",
            "photo-alpha.png",
        ] {
            let bytes = test_photo(name);
            let (_, full) = decode(&bytes, &Limits::default()).unwrap();
            for recipe in ["web", "thumbnail"] {
                let recipe_spec = recipes.get(recipe).unwrap();
                let (_, scaled) = decode_scaled(
                    &bytes,
                    &Limits::default(),
                    needed_scale(recipe_spec, &bytes),
                )
                .unwrap();
                let (mut resizer, mut derived) = (Resizer::new(), None);
                let mut raw = Vec::new();
                for spec in &recipe_spec.outputs {
                    raw.push(
                        flatten_on_white(
                            &transform(&scaled, spec, &mut resizer, &mut derived).unwrap(),
                        )
                        .to_luma8(),
                    );
                }
                let processed = process(&bytes, recipe_spec, &Limits::default()).unwrap();
                for (index, (output, raw)) in processed.outputs.iter().zip(&raw).enumerate() {
                    let ours = flatten_on_white(&image::load_from_memory(&output.bytes).unwrap())
                        .to_luma8();
                    let (w, h) = (output.width, output.height);
                    let reference = if recipe == "thumbnail" {
                        // Crop the centre to the output's aspect ratio, then resize.
                        let (fw, fh) = (f64::from(full.width()), f64::from(full.height()));
                        let scale = (fw / f64::from(w)).min(fh / f64::from(h));
                        let (cw, ch) =
                            ((f64::from(w) * scale) as u32, (f64::from(h) * scale) as u32);
                        let square = full.crop_imm(
                            (full.width() - cw) / 2,
                            (full.height() - ch) / 2,
                            cw,
                            ch,
                        );
                        square.resize_exact(w, h, image::imageops::FilterType::Lanczos3)
                    } else {
                        full.resize_exact(w, h, image::imageops::FilterType::Lanczos3)
                    };
                    let reference = flatten_on_white(&reference);
                    // The reference through the same format at the same quality: JPEG by
                    // another encoder (the image crate's); WebP by libwebp, the only lossy
                    // WebP encoder here.
                    let spec = &recipe_spec.outputs[index];
                    let careful = match spec.format {
                        Format::Jpeg => {
                            let mut careful = Vec::new();
                            reference
                                .write_with_encoder(
                                    image::codecs::jpeg::JpegEncoder::new_with_quality(
                                        &mut careful,
                                        spec.quality,
                                    ),
                                )
                                .unwrap();
                            careful
                        }
                        _ => encode(&reference, spec).unwrap(),
                    };
                    let reference = reference.to_luma8();
                    let anchor = ssim(
                        &image::load_from_memory(&careful).unwrap().to_luma8(),
                        &reference,
                    );
                    let raw_score = ssim(raw, &reference);
                    assert!(
                        raw_score >= 0.99,
                        "{name} {recipe}/{}: raw SSIM {raw_score:.4}",
                        output.name
                    );
                    let score = ssim(&ours, &reference);
                    let bound = 0.98f64.min(anchor - 0.01);
                    eprintln!(
                        "{name} {recipe}/{}: SSIM {raw_score:.4} before encoding, {score:.4} after (a q80 reference keeps {anchor:.4})",
                        output.name
                    );
                    assert!(
                        score >= bound,
                        "{name} {recipe}/{}: SSIM {score:.4} < {bound:.4}",
                        output.name
                    );
                }
            }
        }
    }
}

/// libjpeg-turbo (what the container image ships) against the pure-Rust decoders on
/// the real photos: the same sizes at every DCT scale and the same picture (their
/// IDCTs and chroma upsampling differ in rounding only). Skipped, saying so, in a
/// build without libjpeg-turbo; `./tests/run` installs it and builds the `turbojpeg`
/// feature, which fails the build where it is missing.
#[cfg(test)]
mod turbojpeg_tests {
    use super::quality_tests::ssim;
    use super::*;

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
                    decode_jpeg_scaled(&bytes, w, h, scale).unwrap().unwrap()
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
