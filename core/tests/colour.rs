//! Photos with an embedded ICC profile (Display P3, Adobe RGB, CMYK; made by
//! tests/data/images/make-colour.sh) against a colour-managed reference from
//! another engine: libvips with LittleCMS converts the full-size source to sRGB,
//! the `image` crate resizes that with Lanczos3 to the output's size. The error is
//! the mean absolute difference per channel (0–255), over all pixels and over the
//! saturated ones, where an unmanaged photo goes wrong most.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use minilab_core::pipeline;
use minilab_core::recipe::{Colorspace, Fit, Format, Gravity, Operation, OutputSpec, Recipe};
use minilab_core::{Limits, RecipeBook};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

const BOUND: f64 = 4.0;

fn photo_path(name: &str) -> PathBuf {
    std::env::var_os("MINILAB_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../tests/data/images")
        })
        .join(name)
}

/// A recipe keeping the source's colour space: every format, and a grey output.
fn keep() -> Recipe {
    let output = |name: &str, format, lossless, operations: Vec<Operation>| {
        let fit = Operation::Resize {
            width: 1024,
            height: 1024,
            fit: Fit::Fit,
            enlarge: false,
            gravity: Gravity::Center,
        };
        OutputSpec {
            lossless,
            ..OutputSpec::new(name, format, [vec![fit], operations].concat())
        }
    };
    Recipe {
        name: "keep".into(),
        colorspace: Colorspace::Keep,
        description: "the source's colour space".into(),
        outputs: vec![
            output("jpeg", Format::Jpeg, false, vec![]),
            output("png", Format::Png, false, vec![]),
            output("webp", Format::Webp, false, vec![]),
            output("webp-lossless", Format::Webp, true, vec![]),
            output("grey", Format::Jpeg, false, vec![Operation::Grayscale]),
        ],
    }
}

/// The ICC profile embedded in an image, read by the `image` crate's decoders.
fn icc_of(bytes: &[u8]) -> Option<Vec<u8>> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .unwrap();
    reader.into_decoder().unwrap().icc_profile().unwrap()
}

#[test]
fn keep_leaves_the_pixels_and_attaches_the_profile_in_every_format() {
    for name in ["colour-p3.jpg", "colour-p3.png", "colour-adobergb.jpg"] {
        let bytes = std::fs::read(photo_path(name)).unwrap();
        let source_icc = icc_of(&bytes).expect("the test photo has a profile");
        let processed = pipeline::process(&bytes, &keep(), &Limits::default()).unwrap();
        let unmanaged = image::load_from_memory(&bytes).unwrap();
        for output in &processed.outputs {
            let icc = icc_of(&output.bytes);
            let ours = image::load_from_memory(&output.bytes).unwrap();
            assert_eq!((ours.width(), ours.height()), (output.width, output.height));
            if output.name == "grey" {
                assert_eq!(icc, None, "{name}: a grey output has no RGB profile");
                continue;
            }
            assert_eq!(icc.as_ref(), Some(&source_icc), "{name} {}", output.name);
            let unmanaged = unmanaged
                .resize_exact(
                    output.width,
                    output.height,
                    image::imageops::FilterType::Lanczos3,
                )
                .to_rgb8();
            let cast = cast(&ours.to_rgb8(), &unmanaged);
            assert!(
                cast <= 2.0,
                "{name} {}: pixels changed ({cast:.2})",
                output.name
            );
        }
    }
    // CMYK cannot be kept: the outputs are sRGB, untagged.
    let cmyk = std::fs::read(photo_path("colour-cmyk.jpg")).unwrap();
    let processed = pipeline::process(&cmyk, &keep(), &Limits::default()).unwrap();
    assert!(processed.outputs.iter().all(|o| icc_of(&o.bytes).is_none()));
}

#[test]
#[ignore = "needs libvips-tools (the colour reference): ./tests/run installs it and runs this"]
fn kept_outputs_shown_colour_managed_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["colour-p3.jpg", "colour-adobergb.jpg"] {
        let path = photo_path(name);
        let bytes = std::fs::read(&path).unwrap();
        let reference = vips_reference(&path);
        let processed = pipeline::process(&bytes, &keep(), &Limits::default()).unwrap();
        for output in processed.outputs.iter().filter(|o| o.name != "grey") {
            // What a colour-managed viewer shows: libvips reads the attached profile
            // (libwebp's demuxer for the WebP container minilab writes).
            let file = dir
                .path()
                .join(format!("{}.{}", output.name, output.format.extension()));
            std::fs::write(&file, &output.bytes).unwrap();
            let shown = vips_reference(&file);
            let reference = DynamicImage::ImageRgb8(reference.clone())
                .resize_exact(
                    output.width,
                    output.height,
                    image::imageops::FilterType::Lanczos3,
                )
                .to_rgb8();
            let (all, saturated) = errors(&shown, &reference);
            eprintln!(
                "{name} kept {}: shown managed, mean error {all:.2}, saturated {saturated:.2}",
                output.name
            );
            assert!(
                all <= BOUND && saturated <= BOUND,
                "{name} kept {}: mean error {all:.2}, saturated {saturated:.2}",
                output.name
            );
        }
    }
}

/// The photo converted to sRGB through its embedded profile by `vips icc_transform`.
fn vips_reference(path: &Path) -> RgbImage {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reference.png");
    let status = Command::new("vips")
        .arg("icc_transform")
        .arg(path)
        .arg(&out)
        .args(["srgb", "--embedded", "--intent", "relative"])
        .status()
        .expect("vips runs (libvips-tools; ./tests/run installs it)");
    assert!(status.success(), "vips icc_transform {}", path.display());
    image::open(&out).unwrap().to_rgb8()
}

/// Mean absolute error per channel over all pixels, and over the pixels whose
/// reference saturation (max − min of the channels, over max) is at least 0.5.
fn errors(ours: &RgbImage, reference: &RgbImage) -> (f64, f64) {
    let (mut all, mut saturated, mut n_saturated) = (0.0, 0.0, 0usize);
    for (a, b) in ours.pixels().zip(reference.pixels()) {
        let error = (0..3).map(|c| f64::from(a[c].abs_diff(b[c]))).sum::<f64>() / 3.0;
        all += error;
        let (max, min) = (b.0.iter().max().unwrap(), b.0.iter().min().unwrap());
        if *max > 0 && f64::from(max - min) / f64::from(*max) >= 0.5 {
            saturated += error;
            n_saturated += 1;
        }
    }
    let pixels = ours.len() / 3;
    (all / pixels as f64, saturated / n_saturated.max(1) as f64)
}

/// The largest difference between the two images' mean red, green and blue: a
/// colour cast, whatever the detail (small outputs differ pixel by pixel from any
/// other resampler's).
fn cast(ours: &RgbImage, reference: &RgbImage) -> f64 {
    let mean = |image: &RgbImage, c: usize| {
        image.pixels().map(|p| f64::from(p[c])).sum::<f64>() / (image.len() / 3) as f64
    };
    (0..3)
        .map(|c| (mean(ours, c) - mean(reference, c)).abs())
        .fold(0.0, f64::max)
}

#[test]
#[ignore = "needs libvips-tools (the colour reference): ./tests/run installs it and runs this"]
fn outputs_of_profiled_photos_match_a_colour_managed_reference() {
    let web = RecipeBook::builtin().get("web").cloned().unwrap();
    // The same outputs with a tone operation that changes nothing: the profile is
    // then converted at decoding, before the resizes, not on each output after them.
    let mut at_decode = web.clone();
    at_decode.outputs[0]
        .operations
        .push(Operation::Brightness { value: 0 });
    let mut failures = Vec::new();
    for (name, recipe) in [
        "colour-p3.jpg",
        "colour-p3.png",
        "colour-p3.webp",
        "colour-adobergb.jpg",
        "colour-cmyk.jpg",
    ]
    .into_iter()
    .flat_map(|name| [(name, &web), (name, &at_decode)])
    {
        let path = photo_path(name);
        let bytes = std::fs::read(&path).unwrap();
        let processed = pipeline::process(&bytes, recipe, &Limits::default()).unwrap();
        let reference = vips_reference(&path);
        // The same pixels read without their profile, as minilab did before: the
        // photos must be ones where that shows, or this test could not fail.
        let unmanaged = image::load_from_memory(&bytes).unwrap().to_rgb8();
        for output in &processed.outputs {
            let ours = image::load_from_memory(&output.bytes).unwrap().to_rgb8();
            let resize = |image: &RgbImage| {
                DynamicImage::ImageRgb8(image.clone())
                    .resize_exact(
                        output.width,
                        output.height,
                        image::imageops::FilterType::Lanczos3,
                    )
                    .to_rgb8()
            };
            let reference = resize(&reference);
            let (all, saturated) = errors(&ours, &reference);
            let unmanaged = resize(&unmanaged);
            let (_, unmanaged_saturated) = errors(&unmanaged, &reference);
            let (cast, unmanaged_cast) = (cast(&ours, &reference), cast(&unmanaged, &reference));
            eprintln!(
                "{name} {}: mean error {all:.2}, saturated {saturated:.2}, cast {cast:.2} \
                 (unmanaged: saturated {unmanaged_saturated:.2}, cast {unmanaged_cast:.2})",
                output.name
            );
            // Pixel by pixel where the output is large (the `large` 1024 px image);
            // the 256 px thumbnails are made from it, and differ from a direct
            // resize in detail, so they are held to the colour they show overall
            // (whose error there is mostly JPEG's and WebP's half-resolution
            // chroma on saturated detail: 3.7 at most, unmanaged 7.4 and more).
            if output.width.max(output.height) >= 1024 && (all > BOUND || saturated > BOUND) {
                failures.push(format!(
                    "{name} {}: mean error {all:.2}, on saturated pixels {saturated:.2}",
                    output.name
                ));
            }
            if cast > BOUND {
                failures.push(format!("{name} {}: colour cast {cast:.2}", output.name));
            }
            assert!(
                unmanaged_saturated > 1.5 * BOUND,
                "{name}: the unmanaged pixels are close to the reference too ({unmanaged_saturated:.2})"
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
