//! One image through a recipe, as a short list of steps: probe the bytes (format,
//! limits), decode (scaled where the recipe allows), then for each output its
//! operations and its encoding. Bytes in, bytes out; no I/O.

mod animation;
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
    /// 1, or an animation's frames.
    pub frames: u32,
}

#[derive(Debug)]
pub struct EncodedOutput {
    pub name: String,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// 1, or the frames of an output that kept the source's animation.
    pub frames: u32,
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
/// aspect: resized (Lanczos3) and encoded as `spec` says, its animation kept. `None`
/// when the output is no wider than `width`: it is served as it is, never enlarged.
/// A `colorspace: keep` output's profile is applied on decoding, so its variants
/// are sRGB.
pub fn variant(
    output: &[u8],
    spec: &OutputSpec,
    width: u32,
    limits: &Limits,
) -> Result<Option<EncodedOutput>, ImageError> {
    contained(|| {
        let (output_width, output_height) = decode::dimensions(output, limits)?;
        if width >= output_width {
            return Ok(None);
        }
        let resize = crate::recipe::Operation::Resize {
            width,
            height: output_height,
            fit: crate::recipe::Fit::Fit,
            enlarge: false,
            gravity: crate::recipe::Gravity::Center,
        };
        let recipe = Recipe {
            name: spec.name.clone(),
            colorspace: crate::recipe::Colorspace::Srgb,
            description: String::new(),
            outputs: vec![OutputSpec {
                operations: vec![resize],
                ..spec.clone()
            }],
        };
        Ok(run(output, &recipe, limits)?.outputs.pop())
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
        conversion(recipe),
    )?;
    let mut timings = Timings {
        decode: started.elapsed(),
        ..Timings::default()
    };
    budget.check()?;

    let (animated, still): (Vec<usize>, Vec<usize>) = (0..recipe.outputs.len())
        .partition(|&i| animation::keeps_animation(&recipe.outputs[i], decoded.info.frames));
    let (mut outputs, smallest) = stills(&decoded, recipe, still, &budget, &mut timings)?;
    outputs.extend(animations(
        bytes,
        &decoded.info,
        recipe,
        animated,
        limits,
        &budget,
        &mut timings,
    )?);
    outputs.sort_by_key(|(index, _)| *index);

    let started = Instant::now();
    let placeholder = match smallest {
        Some(smallest) => placeholder::placeholder(&smallest),
        None => placeholder::placeholder(&in_srgb(&decoded, decoded.image.clone())),
    };
    timings.encode += started.elapsed();
    Ok(Processed {
        source: decoded.info,
        outputs: outputs.into_iter().map(|(_, output)| output).collect(),
        placeholder,
        timings,
    })
}

/// Where the source's profile is converted to sRGB: on each output, after its
/// geometry, when every output has only geometric operations (tone, blur and a
/// padded background mean sRGB values); else at decoding.
fn conversion(recipe: &Recipe) -> decode::Conversion {
    let geometric = |op: &crate::recipe::Operation| {
        use crate::recipe::{Fit, Operation};
        match op {
            Operation::Resize { fit, .. } => *fit != Fit::Contain,
            Operation::Crop { .. } | Operation::Rotate { .. } | Operation::Flip { .. } => true,
            _ => false,
        }
    };
    if recipe
        .outputs
        .iter()
        .all(|o| o.operations.iter().all(geometric))
    {
        decode::Conversion::PerOutput
    } else {
        decode::Conversion::AtDecode
    }
}

/// `pixels` of `decoded`'s in sRGB: converted through the profile left for later.
fn in_srgb(decoded: &decode::Decoded, pixels: DynamicImage) -> DynamicImage {
    match &decoded.pending {
        Some(profile) => profile.to_srgb(pixels),
        None => pixels,
    }
}

/// An output and its index in the recipe.
type Indexed = (usize, EncodedOutput);

/// The outputs at `indexes` made from the decoded (first) frame, each with its
/// index, largest first; and the smallest one's pixels, for the placeholder.
fn stills(
    decoded: &decode::Decoded,
    recipe: &Recipe,
    mut indexes: Vec<usize>,
    budget: &Budget,
    timings: &mut Timings,
) -> Result<(Vec<Indexed>, Option<DynamicImage>), ImageError> {
    let image = &decoded.image;
    let mut resizer = Resizer::new();
    let mut derived: Option<DynamicImage> = None;
    let mut outputs = Vec::with_capacity(indexes.len());
    let mut smallest: Option<DynamicImage> = None;
    sort_largest_first(&mut indexes, recipe, image);
    for index in indexes {
        let spec = &recipe.outputs[index];
        let started = Instant::now();
        let pixels = operations::transform(image, spec, &mut resizer, &mut derived)?;
        let pixels = in_srgb(decoded, pixels);
        timings.transform += started.elapsed();

        let started = Instant::now();
        let encoded = encode::encode(&pixels, spec, decoded.icc.as_deref())?;
        timings.encode += started.elapsed();
        budget.check()?;
        outputs.push((
            index,
            EncodedOutput {
                name: spec.name.clone(),
                format: spec.format,
                width: pixels.width(),
                height: pixels.height(),
                frames: 1,
                bytes: encoded,
            },
        ));
        let area = |image: &DynamicImage| u64::from(image.width()) * u64::from(image.height());
        if smallest.as_ref().is_none_or(|s| area(&pixels) < area(s)) {
            smallest = Some(pixels);
        }
    }
    Ok((outputs, smallest))
}

/// The outputs at `indexes`, which keep the source's animation, each with its index.
fn animations(
    bytes: &[u8],
    source: &SourceInfo,
    recipe: &Recipe,
    indexes: Vec<usize>,
    limits: &Limits,
    budget: &Budget,
    timings: &mut Timings,
) -> Result<Vec<Indexed>, ImageError> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let specs: Vec<&OutputSpec> = indexes.iter().map(|&i| &recipe.outputs[i]).collect();
    let canvas = (source.width, source.height);
    let rendered = animation::render(
        bytes,
        canvas,
        source.frames,
        &specs,
        limits,
        budget,
        timings,
    )?;
    Ok(indexes
        .into_iter()
        .zip(specs)
        .zip(rendered)
        .map(|((index, spec), rendered)| {
            let output = EncodedOutput {
                name: spec.name.clone(),
                format: spec.format,
                width: rendered.width,
                height: rendered.height,
                frames: rendered.frames,
                bytes: rendered.bytes,
            };
            (index, output)
        })
        .collect())
}

/// The outputs' indexes, largest first: its resized pixels can serve the smaller ones.
fn sort_largest_first(indexes: &mut [usize], recipe: &Recipe, image: &DynamicImage) {
    let share =
        |index: usize| geometry::first_share(&recipe.outputs[index], image.width(), image.height());
    indexes.sort_by(|&a, &b| share(b).total_cmp(&share(a)));
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
                Format::Gif => ImageFormat::Gif,
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
