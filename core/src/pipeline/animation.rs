//! Animated GIF and WebP sources into animated WebP and GIF outputs, as a short
//! list of steps: check the animation's pixels against the budget, decode the frames
//! one at a time (each composited onto the canvas, as a browser shows it), run every
//! animated output's operations on each frame, then encode each output's frames
//! with the source's delays and loop count. Still outputs take the first frame
//! (mod.rs), as do outputs with `animated: false`.

use super::colour::Profile;
use super::operations;
use super::{Budget, Timings};
use crate::error::{ErrorCode, ImageError};
use crate::limits::Limits;
use crate::recipe::{Format, OutputSpec};
use fast_image_resize::Resizer;
use image::metadata::LoopCount;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, RgbaImage};
use std::io::Cursor;
use std::time::Instant;

/// Which outputs keep a source's animation: WebP and GIF outputs that do not ask
/// for the first frame, when the source has more than one frame.
pub(super) fn keeps_animation(spec: &OutputSpec, source_frames: u32) -> bool {
    source_frames > 1 && spec.animated && matches!(spec.format, Format::Webp | Format::Gif)
}

/// One animated output, encoded.
pub(super) struct Rendered {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub bytes: Vec<u8>,
}

/// The frames of one output as its operations left them, with their delays.
struct Frames {
    images: Vec<RgbaImage>,
    delays_ms: Vec<u32>,
}

/// Every spec in `specs` run on every frame of the animated GIF or WebP `bytes`
/// (`frames` frames of `canvas` pixels, as probed), then encoded.
pub(super) fn render(
    bytes: &[u8],
    canvas: (u32, u32),
    frames: u32,
    specs: &[&OutputSpec],
    limits: &Limits,
    budget: &Budget,
    timings: &mut Timings,
) -> Result<Vec<Rendered>, ImageError> {
    let canvas_pixels = u64::from(canvas.0) * u64::from(canvas.1);
    check_pixels("the animation", canvas_pixels, frames, limits)?;
    let source = open(bytes, limits)?;
    let outputs = transform_frames(source, frames, specs, limits, budget, timings)?;
    let started = Instant::now();
    let rendered = specs
        .iter()
        .zip(outputs.per_spec)
        .map(|(spec, frames)| {
            budget.check()?;
            encode(spec, &frames, outputs.loops)
        })
        .collect();
    timings.encode += started.elapsed();
    rendered
}

/// An animation's frames × pixels must fit `max_pixels`: that is what holding and
/// encoding them costs.
fn check_pixels(
    what: &str,
    pixels_per_frame: u64,
    frames: u32,
    limits: &Limits,
) -> Result<(), ImageError> {
    let pixels = pixels_per_frame.saturating_mul(u64::from(frames));
    if pixels > limits.max_pixels {
        return Err(ImageError::new(
            ErrorCode::TooManyFrames,
            format!(
                "{what} has {frames} frames of {pixels_per_frame} pixels: {pixels} in all; \
                 the limit is {}",
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}

/// A decoder's frames, how often they play (0: forever) and the profile their
/// pixels are in.
struct Source<'a> {
    frames: image::Frames<'a>,
    loops: u32,
    profile: Option<Profile>,
}

fn loops(count: LoopCount) -> u32 {
    match count {
        LoopCount::Infinite => 0,
        LoopCount::Finite(n) => n.get(),
    }
}

fn open<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Source<'a>, ImageError> {
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(4).saturating_add(64 << 20));
    let decode_error = |e: image::ImageError| {
        ImageError::new(
            ErrorCode::CorruptImage,
            format!("the animation does not decode: {e}"),
        )
    };
    match image::guess_format(bytes) {
        Ok(ImageFormat::Gif) => {
            let mut decoder =
                image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).map_err(decode_error)?;
            decoder.set_limits(decoder_limits).map_err(decode_error)?;
            Ok(Source {
                loops: loops(decoder.loop_count()),
                profile: None,
                frames: decoder.into_frames(),
            })
        }
        Ok(ImageFormat::WebP) => {
            let mut decoder =
                image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).map_err(decode_error)?;
            decoder.set_limits(decoder_limits).map_err(decode_error)?;
            let profile = decoder.icc_profile().ok().flatten();
            Ok(Source {
                loops: loops(decoder.loop_count()),
                profile: profile.as_deref().and_then(Profile::parse),
                frames: decoder.into_frames(),
            })
        }
        _ => Err(ImageError::new(
            ErrorCode::UnsupportedFormat,
            "only GIF and WebP animations are kept",
        )),
    }
}

/// Each spec's frames, and how often the source plays.
struct Transformed {
    per_spec: Vec<Frames>,
    loops: u32,
}

/// Decodes the frames one at a time and runs each spec's operations on each; the
/// outputs' frames together must fit `max_pixels` too (an enlarging recipe could
/// otherwise multiply them).
fn transform_frames(
    source: Source<'_>,
    frames: u32,
    specs: &[&OutputSpec],
    limits: &Limits,
    budget: &Budget,
    timings: &mut Timings,
) -> Result<Transformed, ImageError> {
    let mut per_spec: Vec<Frames> = specs
        .iter()
        .map(|_| Frames {
            images: Vec::new(),
            delays_ms: Vec::new(),
        })
        .collect();
    let mut resizer = Resizer::new();
    let mut decoding = Instant::now();
    for (index, frame) in source.frames.take(frames as usize).enumerate() {
        let frame = frame.map_err(|e| {
            ImageError::new(
                ErrorCode::CorruptImage,
                format!("a frame of the animation does not decode: {e}"),
            )
        })?;
        let (numerator, denominator) = frame.delay().numer_denom_ms();
        let delay_ms = numerator / denominator.max(1);
        let mut image = DynamicImage::ImageRgba8(frame.into_buffer());
        if let Some(profile) = &source.profile {
            image = profile.to_srgb(image);
        }
        timings.decode += decoding.elapsed();

        let started = Instant::now();
        for (spec, out) in specs.iter().zip(&mut per_spec) {
            let pixels = operations::transform(&image, spec, &mut resizer, &mut None)?;
            out.images.push(pixels.to_rgba8());
            out.delays_ms.push(delay_ms);
        }
        if index == 0 {
            let output_pixels = per_spec
                .iter()
                .map(|out| u64::from(out.images[0].width()) * u64::from(out.images[0].height()))
                .sum();
            check_pixels("the animated outputs", output_pixels, frames, limits)?;
        }
        timings.transform += started.elapsed();
        budget.check()?;
        decoding = Instant::now();
    }
    Ok(Transformed {
        per_spec,
        loops: source.loops,
    })
}

/// One output's frames in its format.
fn encode(spec: &OutputSpec, frames: &Frames, loops: u32) -> Result<Rendered, ImageError> {
    let Some(first) = frames.images.first() else {
        return Err(ImageError::new(
            ErrorCode::CorruptImage,
            "the animation has no frame that decodes",
        ));
    };
    let bytes = super::encode::animated(spec, &frames.images, &frames.delays_ms, loops)?;
    Ok(Rendered {
        width: first.width(),
        height: first.height(),
        frames: frames.images.len() as u32,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::super::process;
    use super::super::testing::{fit, output, recipe};
    use super::*;
    use crate::recipe::Operation;
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame, Rgba};

    const RED: Rgba<u8> = Rgba([220, 30, 30, 255]);
    const GREEN: Rgba<u8> = Rgba([30, 200, 40, 255]);
    const BLUE: Rgba<u8> = Rgba([20, 40, 210, 255]);

    /// A `width`×`height` GIF of one colour per frame, each shown for its delay.
    fn gif(width: u32, height: u32, frames: &[(Rgba<u8>, u32)], repeat: Repeat) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
            encoder.set_repeat(repeat).unwrap();
            for &(colour, delay) in frames {
                let image = RgbaImage::from_pixel(width, height, colour);
                let delay = Delay::from_numer_denom_ms(delay, 1);
                encoder
                    .encode_frame(Frame::from_parts(image, 0, 0, delay))
                    .unwrap();
            }
        }
        out
    }

    /// An animation's frames (each's centre pixel and delay) and its loop count.
    fn played(bytes: &[u8]) -> (Vec<(Rgba<u8>, u32)>, u32) {
        let source = open(bytes, &Limits::default()).unwrap();
        let frames = source
            .frames
            .map(|frame| {
                let frame = frame.unwrap();
                let (n, d) = frame.delay().numer_denom_ms();
                let image = frame.into_buffer();
                (
                    *image.get_pixel(image.width() / 2, image.height() / 2),
                    n / d,
                )
            })
            .collect();
        (frames, source.loops)
    }

    fn close(a: Rgba<u8>, b: Rgba<u8>) -> bool {
        a.0.iter().zip(b.0).all(|(x, y)| x.abs_diff(y) <= 12)
    }

    #[test]
    fn an_animated_gif_becomes_animated_webp_and_gif_with_its_delays_and_loops() {
        let source = gif(
            200,
            100,
            &[(RED, 100), (GREEN, 250), (BLUE, 70)],
            Repeat::Finite(3),
        );
        let mut lossless = output("lossless", Format::Webp, vec![fit(50)]);
        lossless.lossless = true;
        let recipe = recipe(vec![
            output("still", Format::Jpeg, vec![fit(100)]),
            output("lossy", Format::Webp, vec![fit(100)]),
            lossless,
            output("gif", Format::Gif, vec![fit(100)]),
        ]);
        let processed = process(&source, &recipe, &Limits::default()).unwrap();
        assert_eq!(processed.source.frames, 3);

        let frames: Vec<_> = processed
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.frames))
            .collect();
        assert_eq!(
            frames,
            [("still", 1), ("lossy", 3), ("lossless", 3), ("gif", 3)]
        );
        let still = image::load_from_memory(&processed.outputs[0].bytes)
            .unwrap()
            .to_rgba8();
        assert!(
            close(*still.get_pixel(50, 25), RED),
            "{:?}",
            still.get_pixel(50, 25)
        );
        for output in &processed.outputs[1..] {
            let (played, loops) = played(&output.bytes);
            assert_eq!(loops, 3, "{}", output.name);
            let delays: Vec<u32> = played.iter().map(|(_, delay)| *delay).collect();
            assert_eq!(delays, [100, 250, 70], "{}", output.name);
            for ((colour, _), expected) in played.iter().zip([RED, GREEN, BLUE]) {
                assert!(close(*colour, expected), "{}: {colour:?}", output.name);
            }
            let decoded = image::load_from_memory(&output.bytes).unwrap();
            assert_eq!(
                (decoded.width(), decoded.height()),
                (output.width, output.height)
            );
            assert_eq!(
                (output.width, output.height),
                if output.name == "lossless" {
                    (50, 25)
                } else {
                    (100, 50)
                }
            );
        }
    }

    #[test]
    fn an_animated_webp_stays_animated_and_animated_false_takes_the_first_frame() {
        let source = gif(64, 64, &[(GREEN, 40), (BLUE, 40)], Repeat::Infinite);
        let webp = process(
            &source,
            &recipe(vec![output("w", Format::Webp, vec![])]),
            &Limits::default(),
        )
        .unwrap()
        .outputs
        .remove(0)
        .bytes;
        let mut first = output("first", Format::Webp, vec![fit(32)]);
        first.animated = false;
        let recipe = recipe(vec![output("again", Format::Gif, vec![fit(32)]), first]);
        let processed = process(&webp, &recipe, &Limits::default()).unwrap();
        assert_eq!(processed.source.frames, 2);
        let (played, loops) = played(&processed.outputs[0].bytes);
        assert_eq!(loops, 0);
        assert_eq!(played.len(), 2);
        assert!(close(played[1].0, BLUE), "{:?}", played[1].0);
        assert_eq!(processed.outputs[1].frames, 1);
        assert!(!is_animated(&processed.outputs[1].bytes));
    }

    fn is_animated(webp: &[u8]) -> bool {
        image::codecs::webp::WebPDecoder::new(Cursor::new(webp))
            .unwrap()
            .has_animation()
    }

    #[test]
    fn frames_times_pixels_are_held_to_the_pixel_limit_in_and_out() {
        let source = gif(
            100,
            100,
            &[(RED, 10), (GREEN, 10), (BLUE, 10)],
            Repeat::Infinite,
        );
        let limits = Limits {
            max_pixels: 29_999,
            ..Limits::default()
        };
        let animated = recipe(vec![output("a", Format::Webp, vec![])]);
        let err = process(&source, &animated, &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyFrames, "{err}");
        // The first frame alone fits: a still output is made.
        let still = recipe(vec![output("s", Format::Png, vec![])]);
        process(&source, &still, &limits).unwrap();
        // An enlarging recipe is held too: 3 frames of 200×200 are 120 000 pixels.
        let limits = Limits {
            max_pixels: 100_000,
            ..Limits::default()
        };
        let enlarge = Operation::Resize {
            width: 200,
            height: 200,
            fit: crate::recipe::Fit::Fit,
            enlarge: true,
            gravity: Default::default(),
        };
        let err = process(
            &source,
            &recipe(vec![output("e", Format::Gif, vec![enlarge])]),
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyFrames, "{err}");
        assert!(err.message.contains("animated outputs"), "{err}");
    }

    #[test]
    fn a_smaller_width_of_an_animated_output_is_animated_too() {
        let source = gif(200, 100, &[(RED, 30), (BLUE, 60)], Repeat::Infinite);
        for format in [Format::Webp, Format::Gif] {
            let spec = output("o", format, vec![]);
            let made = process(&source, &recipe(vec![spec.clone()]), &Limits::default()).unwrap();
            let smaller =
                super::super::variant(&made.outputs[0].bytes, &spec, 80, &Limits::default())
                    .unwrap()
                    .unwrap();
            assert_eq!((smaller.width, smaller.height, smaller.frames), (80, 40, 2));
            let (played, _) = played(&smaller.bytes);
            let delays: Vec<u32> = played.iter().map(|(_, delay)| *delay).collect();
            assert_eq!(delays, [30, 60], "{format:?}");
            assert!(close(played[1].0, BLUE), "{format:?}: {:?}", played[1].0);
        }
    }
}
