//! One image through a recipe, as a short list of steps: probe the bytes (format,
//! limits), decode (scaled where the recipe allows), then for each output its
//! operations and its encoding. Bytes in, bytes out; no I/O.

mod colour;
mod decode;
mod encode;
mod focus;
mod geometry;
mod operations;
mod placeholder;
mod probe;
#[cfg(test)]
mod quality_tests;
#[cfg(test)]
mod testing;

pub use decode::{decode, decode_scaled, uses_libjpeg_turbo};
pub use geometry::{Resize, fitted_size};
pub use probe::{MAX_JPEG_SCANS, MAX_PNG_PROFILE_BYTES};

use crate::error::{ErrorCode, ImageError};
use crate::limits::Limits;
use crate::manifest::Placeholder;
use crate::recipe::{Format, OutputSpec, Recipe};
use fast_image_resize::Resizer;
use image::DynamicImage;
use std::time::{Duration, Instant};

/// What the pipeline made of one source image.
#[derive(Debug)]
pub struct Processed {
    pub source: SourceInfo,
    pub outputs: Vec<EncodedOutput>,
    /// From the smallest output's pixels.
    pub placeholder: Placeholder,
    pub timings: Timings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// The format detected from the bytes, e.g. `jpeg`.
    pub format: &'static str,
    /// Width and height as stored, before auto-orientation (for HEIC, as shown:
    /// libheif reports the size with its `irot` transform applied).
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
/// a stable [`ErrorCode`]; a panic anywhere inside (a bug, never the image's fault
/// alone) is caught and reported as `internal`.
///
/// Where the time goes: a JPEG much larger than every output is decoded at 1/2, 1/4
/// or 1/8 scale (DCT scaling: less entropy decoding and no full-size buffer); the
/// largest resized output is made from the source and smaller ones from it; resizing
/// is SIMD (fast_image_resize) and JPEG encoding is SIMD (libjpeg-turbo when the
/// build has it, else jpeg-encoder).
pub fn process(bytes: &[u8], recipe: &Recipe, limits: &Limits) -> Result<Processed, ImageError> {
    contained(|| run(bytes, recipe, limits))
}

/// `output` (an output's own bytes, as `spec` made them) at `width`, keeping its
/// aspect: decoded, resized (Lanczos3) and encoded as `spec` says. `None` when the
/// output is no wider than `width`: it is served as it is, never enlarged. A
/// `colorspace: keep` output's profile is applied on decoding, so its variants are
/// sRGB.
pub fn variant(
    output: &[u8],
    spec: &OutputSpec,
    width: u32,
    limits: &Limits,
) -> Result<Option<EncodedOutput>, ImageError> {
    contained(|| {
        let (_, image) = decode::decode(output, limits)?;
        if width >= image.width() {
            return Ok(None);
        }
        let to = Resize {
            width,
            height: image.height(),
            fit: crate::recipe::Fit::Fit,
            enlarge: false,
        };
        let resized = operations::resample(
            &image,
            to,
            crate::recipe::Gravity::Center,
            &mut Resizer::new(),
        )?;
        let bytes = encode::encode(&resized, spec, None)?;
        Ok(Some(EncodedOutput {
            name: spec.name.clone(),
            format: spec.format,
            width: resized.width(),
            height: resized.height(),
            bytes,
        }))
    })
}

/// `step`'s result, or `internal` if it panics. Unwinding is safe here: the step
/// works on its own locals and leaves nothing shared half-changed.
fn contained<T>(step: impl FnOnce() -> Result<T, ImageError>) -> Result<T, ImageError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ImageError::new(
            ErrorCode::Internal,
            format!("processing failed inside minilab: {what}"),
        ))
    })
}

fn run(bytes: &[u8], recipe: &Recipe, limits: &Limits) -> Result<Processed, ImageError> {
    let started = Instant::now();
    let budget = Budget {
        started,
        limit_ms: limits.time_budget_ms,
    };
    let decoded = decode::decode_in(
        bytes,
        limits,
        decode::needed_scale(recipe, bytes),
        recipe.colorspace,
    )?;
    let (source, image, icc) = (decoded.info, decoded.image, decoded.icc);
    let mut timings = Timings {
        decode: started.elapsed(),
        ..Timings::default()
    };
    budget.check()?;

    let mut resizer = Resizer::new();
    let mut derived: Option<DynamicImage> = None;
    let mut outputs: Vec<Option<EncodedOutput>> = (0..recipe.outputs.len()).map(|_| None).collect();
    let mut smallest: Option<DynamicImage> = None;
    for index in largest_first(recipe, &image) {
        let spec = &recipe.outputs[index];
        let started = Instant::now();
        let pixels = operations::transform(&image, spec, &mut resizer, &mut derived)?;
        timings.transform += started.elapsed();

        let started = Instant::now();
        let encoded = encode::encode(&pixels, spec, icc.as_deref())?;
        timings.encode += started.elapsed();
        budget.check()?;
        outputs[index] = Some(EncodedOutput {
            name: spec.name.clone(),
            format: spec.format,
            width: pixels.width(),
            height: pixels.height(),
            bytes: encoded,
        });
        let area = |image: &DynamicImage| u64::from(image.width()) * u64::from(image.height());
        if smallest.as_ref().is_none_or(|s| area(&pixels) < area(s)) {
            smallest = Some(pixels);
        }
    }
    let started = Instant::now();
    let placeholder = placeholder::placeholder(smallest.as_ref().unwrap_or(&image));
    timings.encode += started.elapsed();
    Ok(Processed {
        source,
        outputs: outputs.into_iter().flatten().collect(),
        placeholder,
        timings,
    })
}

/// The outputs' indexes, largest first: its resized pixels can serve the smaller ones.
fn largest_first(recipe: &Recipe, image: &DynamicImage) -> Vec<usize> {
    let share =
        |index: usize| geometry::first_share(&recipe.outputs[index], image.width(), image.height());
    let mut order: Vec<usize> = (0..recipe.outputs.len()).collect();
    order.sort_by(|&a, &b| share(b).total_cmp(&share(a)));
    order
}

/// The time one image may take, checked between steps.
struct Budget {
    started: Instant,
    limit_ms: u64,
}

impl Budget {
    fn check(&self) -> Result<(), ImageError> {
        if self.started.elapsed() > Duration::from_millis(self.limit_ms) {
            Err(ImageError::new(
                ErrorCode::TimeBudgetExceeded,
                format!("processing took over {} ms", self.limit_ms),
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::png;
    use super::*;
    use crate::recipe::{Operation, RecipeBook};
    use image::ImageFormat;

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
                Format::Avif => ImageFormat::Avif,
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

    #[test]
    fn a_panic_inside_is_internal_not_the_image_s_fault() {
        let err = contained::<()>(|| panic!("index out of bounds")).unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(err.message.contains("index out of bounds"), "{err}");
        let formatted = contained::<()>(|| panic!("{} went wrong", 1)).unwrap_err();
        assert!(formatted.message.contains("1 went wrong"), "{formatted}");
    }

    #[test]
    fn the_placeholder_comes_from_the_smallest_output() {
        // A red picture: a large grey output and a small colour one.
        let red = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            400,
            200,
            image::Rgb([200, 20, 20]),
        ));
        let recipe = testing::recipe(vec![
            testing::output(
                "big",
                Format::Png,
                vec![testing::fit(300), Operation::Grayscale],
            ),
            testing::output("small", Format::Png, vec![testing::fit(40)]),
        ]);
        let processed = process(&testing::png_of(&red), &recipe, &Limits::default()).unwrap();
        assert_eq!(processed.placeholder.dominant_color, "#c81414");
    }

    #[test]
    fn a_variant_is_the_output_at_a_smaller_width_in_its_format() {
        let recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        let processed = process(
            &testing::test_photo("photo-12mp.jpg"),
            &recipe,
            &Limits::default(),
        )
        .unwrap();
        for (spec, output) in recipe.outputs.iter().zip(&processed.outputs) {
            let smaller = variant(&output.bytes, spec, 200, &Limits::default())
                .unwrap()
                .unwrap();
            let expected = fitted_size(
                output.width,
                output.height,
                200,
                output.height,
                crate::recipe::Fit::Fit,
                false,
            );
            assert_eq!((smaller.width, smaller.height), expected, "{}", spec.name);
            let format = ImageFormat::from_extension(spec.format.extension()).unwrap();
            let decoded = image::load_from_memory_with_format(&smaller.bytes, format).unwrap();
            assert_eq!((decoded.width(), decoded.height()), expected);
            // The same picture, smaller: close to the output resized.
            let reference = image::load_from_memory(&output.bytes)
                .unwrap()
                .resize_exact(
                    expected.0,
                    expected.1,
                    image::imageops::FilterType::Lanczos3,
                )
                .to_luma8();
            let score = testing::ssim(&decoded.to_luma8(), &reference);
            assert!(score > 0.95, "{}: SSIM {score}", spec.name);
            // Never enlarged: at or past the output's width it is served as it is.
            let at_width = variant(&output.bytes, spec, output.width, &Limits::default()).unwrap();
            assert!(at_width.is_none(), "{}", spec.name);
        }
    }
}
