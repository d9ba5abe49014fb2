//! Pixels to bytes: JPEG (jpeg-encoder, SIMD), PNG, WebP (libwebp; lossless by the
//! `image` crate) and AVIF (libavif with libaom). Formats without alpha are flattened onto the background. A
//! profile kept by `colorspace: keep` is attached to colour outputs (a grey output
//! has left the profile's colour space anyway).

use crate::error::{ErrorCode, ImageError};
use crate::recipe::{Format, OutputSpec};
use image::{DynamicImage, ImageEncoder, RgbaImage};
use std::borrow::Cow;

pub(super) fn encode(
    image: &DynamicImage,
    spec: &OutputSpec,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>, ImageError> {
    let icc = icc.filter(|_| image.color().has_color());
    match spec.format {
        Format::Jpeg => jpeg(image, spec, icc),
        Format::Png => png(image, icc),
        Format::Webp if spec.lossless => webp_lossless(image, icc),
        Format::Webp => webp_lossy(image, spec, icc),
        Format::Avif => avif(image, spec, icc),
        Format::Gif => gif(std::iter::once((image.to_rgba8(), 0)), 0),
    }
    .map_err(|e| encode_failed(spec, e))
}

fn encode_failed(spec: &OutputSpec, e: String) -> ImageError {
    ImageError::new(
        ErrorCode::EncodeFailed,
        format!("encoding {} failed: {e}", spec.name),
    )
}

/// Frames of one size, each shown for its delay, in an animated WebP or GIF;
/// `loops` 0 repeats forever.
pub(super) fn animated(
    spec: &OutputSpec,
    frames: &[RgbaImage],
    delays_ms: &[u32],
    loops: u32,
) -> Result<Vec<u8>, ImageError> {
    match spec.format {
        Format::Gif => gif(frames.iter().cloned().zip(delays_ms.iter().copied()), loops),
        _ => webp_animated(spec, frames, delays_ms, loops),
    }
    .map_err(|e| encode_failed(spec, e))
}

/// GIF: a palette of up to 256 colours per frame (NeuQuant at speed 10, as the
/// `image` crate's fast setting); fully transparent pixels stay transparent.
fn gif(frames: impl Iterator<Item = (RgbaImage, u32)>, loops: u32) -> Result<Vec<u8>, String> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        let repeat = match u16::try_from(loops) {
            Ok(0) => Repeat::Infinite,
            Ok(n) => Repeat::Finite(n),
            Err(_) => Repeat::Infinite,
        };
        encoder.set_repeat(repeat).map_err(|e| e.to_string())?;
        for (image, delay_ms) in frames {
            if image.width() > u32::from(u16::MAX) || image.height() > u32::from(u16::MAX) {
                return Err("GIF is limited to 65535 pixels a side".into());
            }
            let delay = image::Delay::from_numer_denom_ms(delay_ms, 1);
            encoder
                .encode_frame(image::Frame::from_parts(image, 0, 0, delay))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// libwebp's animation encoder, lossy at the spec's quality or lossless. It takes
/// each frame's start time and, after the last, the time the last one ends; the
/// webp crate passes 0 for that end, so the start times are counted back from 0
/// (libwebp allows the wrap-around) and the last frame keeps its own delay.
fn webp_animated(
    spec: &OutputSpec,
    frames: &[RgbaImage],
    delays_ms: &[u32],
    loops: u32,
) -> Result<Vec<u8>, String> {
    let (width, height) = frames.first().ok_or("no frames")?.dimensions();
    if width > 16_383 || height > 16_383 {
        return Err("WebP is limited to 16383 pixels a side".into());
    }
    // WebP stores each frame's duration in 24 bits.
    let delays: Vec<i64> = delays_ms
        .iter()
        .map(|&d| i64::from(d.min((1 << 24) - 1)))
        .collect();
    let total: i64 = delays.iter().sum();
    let mut start = i32::try_from(-total).map_err(|_| "the animation is too long")?;
    let mut config = webp::WebPConfig::new().map_err(|()| "libwebp version mismatch")?;
    config.quality = f32::from(spec.quality);
    config.lossless = i32::from(spec.lossless);
    let mut encoder = webp::AnimEncoder::new(width, height, &config);
    encoder.set_loop_count(i32::try_from(loops).unwrap_or(0));
    for (image, delay) in frames.iter().zip(&delays) {
        encoder.add_frame(webp::AnimFrame::from_rgba(
            image.as_raw(),
            width,
            height,
            start,
        ));
        start += *delay as i32;
    }
    let encoded = encoder.try_encode().map_err(|e| format!("{e:?}"))?;
    if encoded.len() < 12 || &encoded[..4] != b"RIFF" {
        return Err("libwebp assembled no animation".into());
    }
    Ok(encoded.to_vec())
}

/// JPEG has no alpha: flattened onto the background (white by default), as a
/// browser shows a transparent image.
fn jpeg(image: &DynamicImage, spec: &OutputSpec, icc: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let flat;
    let image = if image.color().has_alpha() {
        flat = flatten_onto(image, spec.background);
        &flat
    } else {
        image
    };
    if image.width() > u32::from(u16::MAX) || image.height() > u32::from(u16::MAX) {
        return Err("JPEG is limited to 65535 pixels a side".into());
    }
    if super::decode::uses_libjpeg_turbo() {
        encode_jpeg_turbo(image, spec, icc)
    } else {
        encode_jpeg_rust(image, spec, icc)
    }
}

fn png(image: &DynamicImage, icc: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_with(image, icc, image::codecs::png::PngEncoder::new(&mut out))?;
    Ok(out)
}

fn webp_lossless(image: &DynamicImage, icc: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_with(
        image,
        icc,
        image::codecs::webp::WebPEncoder::new_lossless(&mut out),
    )?;
    Ok(out)
}

/// The image through one of the `image` crate's encoders, the profile attached.
fn write_with(
    image: &DynamicImage,
    icc: Option<&[u8]>,
    mut encoder: impl ImageEncoder,
) -> Result<(), String> {
    if let Some(icc) = icc {
        encoder
            .set_icc_profile(icc.to_vec())
            .map_err(|e| e.to_string())?;
    }
    image.write_with_encoder(encoder).map_err(|e| e.to_string())
}

/// libwebp at its defaults (method 4, as cwebp and libvips use), RGB or RGBA; grey
/// is widened to RGB since WebP has no grey mode.
fn webp_lossy(
    image: &DynamicImage,
    spec: &OutputSpec,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    if image.width() > 16_383 || image.height() > 16_383 {
        return Err("WebP is limited to 16383 pixels a side".into());
    }
    let (alpha, data) = rgb_or_rgba(image);
    let layout = if alpha {
        webp::PixelLayout::Rgba
    } else {
        webp::PixelLayout::Rgb
    };
    let mut config = webp::WebPConfig::new().map_err(|()| "libwebp version mismatch")?;
    config.quality = f32::from(spec.quality);
    let encoded = webp::Encoder::new(&data, layout, image.width(), image.height())
        .encode_advanced(&config)
        .map_err(|e| format!("{e:?}"))?;
    Ok(match icc {
        Some(icc) => with_iccp(&encoded, icc, image),
        None => encoded.to_vec(),
    })
}

/// libavif with libaom, one thread, 4:2:0; recipes bound the size (recipe.rs:
/// MAX_AVIF_PIXELS).
fn avif(image: &DynamicImage, spec: &OutputSpec, icc: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let (alpha, data) = rgb_or_rgba(image);
    let pixels = minilab_avif::Pixels {
        width: image.width(),
        height: image.height(),
        alpha,
        data: &data,
    };
    let settings = minilab_avif::Settings {
        quantizer: minilab_avif::quantizer_for_quality(spec.quality),
        speed: spec.speed,
    };
    minilab_avif::encode(&pixels, settings, icc).map_err(|e| e.to_string())
}

/// Chroma at half resolution below q90, as libjpeg's defaults and browsers expect.
fn subsampled(spec: &OutputSpec) -> bool {
    spec.quality < 90
}

/// A JPEG's pixels: whether they are grey (else RGB), and their bytes.
fn jpeg_pixels(image: &DynamicImage) -> Result<(bool, &[u8]), String> {
    match image {
        DynamicImage::ImageLuma8(gray) => Ok((true, gray.as_raw().as_slice())),
        DynamicImage::ImageRgb8(rgb) => Ok((false, rgb.as_raw().as_slice())),
        _ => Err("unexpected pixel layout".into()),
    }
}

/// A JPEG through libjpeg-turbo (SIMD colour conversion, DCT and entropy coding):
/// what the pipeline uses when the build has it. At most 65535 pixels a side.
fn encode_jpeg_turbo(
    image: &DynamicImage,
    spec: &OutputSpec,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let (gray, data) = jpeg_pixels(image)?;
    let layout = minilab_turbojpeg::Image {
        width: image.width(),
        height: image.height(),
        gray,
        subsample: subsampled(spec),
        progressive: spec.progressive,
    };
    minilab_turbojpeg::encode(data, &layout, spec.quality, icc).map_err(|e| e.to_string())
}

/// A JPEG through jpeg-encoder (pure Rust, SIMD): builds without libjpeg-turbo.
/// At most 65535 pixels a side.
fn encode_jpeg_rust(
    image: &DynamicImage,
    spec: &OutputSpec,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let (gray, data) = jpeg_pixels(image)?;
    let color = if gray {
        jpeg_encoder::ColorType::Luma
    } else {
        jpeg_encoder::ColorType::Rgb
    };
    let side = |side: u32| u16::try_from(side).map_err(|e| e.to_string());
    let (width, height) = (side(image.width())?, side(image.height())?);
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, spec.quality);
    if subsampled(spec) {
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    }
    encoder.set_progressive(spec.progressive);
    if let Some(icc) = icc {
        encoder.add_icc_profile(icc).map_err(|e| e.to_string())?;
    }
    encoder
        .encode(data, width, height, color)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The pixels as packed 8-bit RGB or RGBA: grey is widened, as WebP and AVIF are
/// encoded from colour here.
fn rgb_or_rgba(image: &DynamicImage) -> (bool, Cow<'_, [u8]>) {
    match image {
        DynamicImage::ImageRgb8(rgb) => (false, Cow::Borrowed(rgb.as_raw())),
        DynamicImage::ImageRgba8(rgba) => (true, Cow::Borrowed(rgba.as_raw())),
        _ if image.color().has_alpha() => (true, Cow::Owned(image.to_rgba8().into_raw())),
        _ => (false, Cow::Owned(image.to_rgb8().into_raw())),
    }
}

#[cfg(test)]
pub(super) fn flatten_on_white(image: &DynamicImage) -> DynamicImage {
    flatten_onto(image, [255, 255, 255])
}

/// A WebP file from libwebp (simple, or extended with alpha) made extended with an
/// `ICCP` chunk: the `VP8X` header (flags, canvas size) first, then the profile,
/// then the image chunks, as the container specification orders them.
fn with_iccp(webp: &[u8], icc: &[u8], image: &DynamicImage) -> Vec<u8> {
    const ICC_FLAG: u8 = 0x20;
    const ALPHA_FLAG: u8 = 0x10;
    let chunks = &webp[12..]; // after "RIFF", size, "WEBP"
    let (flags, image_chunks) = match chunks.get(..4) {
        Some(b"VP8X") => (chunks[8], &chunks[18..]),
        _ if image.color().has_alpha() => (ALPHA_FLAG, chunks),
        _ => (0, chunks),
    };
    let side = |n: u32| (n - 1).to_le_bytes()[..3].to_vec();
    let mut vp8x = vec![flags | ICC_FLAG, 0, 0, 0];
    vp8x.extend(side(image.width()));
    vp8x.extend(side(image.height()));
    let mut body = b"WEBP".to_vec();
    for (id, data) in [(b"VP8X", vp8x.as_slice()), (b"ICCP", icc)] {
        body.extend_from_slice(id);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    body.extend_from_slice(image_chunks);
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend(body);
    file
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::pipeline::testing::{self, png_of, ssim, test_photo};
    use crate::pipeline::{decode, process};
    use image::ImageFormat;

    #[test]
    fn webp_is_lossy_at_quality_or_lossless_when_asked() {
        let photo = decode(&test_photo("photo-alpha.png"), &Limits::default())
            .unwrap()
            .1;
        assert!(photo.color().has_alpha());
        let photo = photo.resize(400, 400, image::imageops::FilterType::Triangle);
        let output = |quality, lossless| OutputSpec {
            quality,
            lossless,
            ..testing::output("o", Format::Webp, Vec::new())
        };
        let lossless = encode(&photo, &output(80, true), None).unwrap();
        assert_eq!(chunk(&lossless), *b"VP8L");
        let decoded = image::load_from_memory_with_format(&lossless, ImageFormat::WebP).unwrap();
        assert_eq!(decoded.to_rgba8(), photo.to_rgba8(), "lossless is exact");

        let q80 = encode(&photo, &output(80, false), None).unwrap();
        let q30 = encode(&photo, &output(30, false), None).unwrap();
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
        let decoded =
            image::load_from_memory(&encode(&grey, &output(80, false), None).unwrap()).unwrap();
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
    fn alpha_goes_onto_the_background_and_progressive_jpeg_is_progressive() {
        let transparent = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            20,
            20,
            image::Rgba([0, 0, 0, 0]),
        ));
        let recipe = testing::recipe(vec![OutputSpec {
            quality: 90,
            progressive: true,
            background: [200, 30, 40],
            ..testing::output("o", Format::Jpeg, Vec::new())
        }]);
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

    /// An AVIF output's pixels, decoded by libheif (which reads AV1 too).
    fn decode_avif(bytes: &[u8]) -> DynamicImage {
        let decoded = minilab_heif::decode(bytes, 4096).expect("libheif decodes the AVIF");
        if decoded.alpha {
            DynamicImage::ImageRgba8(
                image::RgbaImage::from_raw(decoded.width, decoded.height, decoded.pixels).unwrap(),
            )
        } else {
            DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(decoded.width, decoded.height, decoded.pixels).unwrap(),
            )
        }
    }

    #[test]
    fn avif_is_smaller_than_jpeg_at_the_same_quality_and_keeps_alpha() {
        if !(minilab_avif::AVAILABLE && minilab_heif::AVAILABLE) {
            eprintln!("skipped: this build has no libavif or no libheif");
            return;
        }
        let recipe = testing::recipe(vec![
            testing::output("jpeg", Format::Jpeg, vec![testing::fit(1024)]),
            testing::output("avif", Format::Avif, vec![testing::fit(1024)]),
        ]);
        recipe.validate().unwrap();
        let photo = test_photo("photo-12mp.jpg");
        let processed = process(&photo, &recipe, &Limits::default()).unwrap();
        let (jpeg, avif) = (&processed.outputs[0], &processed.outputs[1]);
        assert_eq!(&avif.bytes[4..12], b"ftypavif");
        assert!(
            avif.bytes.len() < jpeg.bytes.len(),
            "AVIF {} bytes, JPEG {}",
            avif.bytes.len(),
            jpeg.bytes.len()
        );
        let reference = decode(&photo, &Limits::default())
            .unwrap()
            .1
            .resize_exact(1024, 768, image::imageops::FilterType::Lanczos3)
            .to_luma8();
        let decoded = decode_avif(&avif.bytes);
        assert_eq!((decoded.width(), decoded.height()), (1024, 768));
        let score = ssim(&decoded.to_luma8(), &reference);
        let jpeg_score = ssim(
            &image::load_from_memory(&jpeg.bytes).unwrap().to_luma8(),
            &reference,
        );
        eprintln!(
            "AVIF {} bytes SSIM {score:.4}; JPEG {} bytes SSIM {jpeg_score:.4}",
            avif.bytes.len(),
            jpeg.bytes.len()
        );
        assert!(
            score >= jpeg_score - 0.005,
            "AVIF {score:.4}, JPEG {jpeg_score:.4}"
        );

        // Transparency survives.
        let alpha = process(&test_photo("photo-alpha.png"), &recipe, &Limits::default()).unwrap();
        let decoded = decode_avif(&alpha.outputs[1].bytes);
        assert!(decoded.color().has_alpha());
        assert!(decoded.to_rgba8().pixels().any(|p| p[3] == 0));
    }
}
