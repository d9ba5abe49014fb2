//! Helpers for the pipeline's tests: the repository's photos, made-up images, one
//! recipe run on pixels, and the measures the tests compare by.

use super::process;
use crate::limits::Limits;
use crate::recipe::{Format, Gravity, Operation, OutputSpec, Recipe};
use image::DynamicImage;

pub fn png(width: u32, height: u32, color: image::ColorType) -> Vec<u8> {
    let image = DynamicImage::new(width, height, color);
    let mut out = Vec::new();
    image
        .write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
        .unwrap();
    out
}

/// An output at the defaults (quality 80, baseline, white background).
pub fn output(name: &str, format: Format, operations: Vec<Operation>) -> OutputSpec {
    OutputSpec::new(name, format, operations)
}

/// A recipe of `outputs`, in sRGB.
pub fn recipe(outputs: Vec<OutputSpec>) -> Recipe {
    Recipe {
        name: "t".into(),
        colorspace: Default::default(),
        description: "t".into(),
        outputs,
    }
}

/// A resize to fit a `size`×`size` box.
pub fn fit(size: u32) -> Operation {
    Operation::Resize {
        width: size,
        height: size,
        fit: crate::recipe::Fit::Fit,
        enlarge: false,
        gravity: Gravity::Center,
    }
}

pub fn run_ops(source: &DynamicImage, operations: Vec<Operation>) -> DynamicImage {
    let recipe = recipe(vec![output("o", Format::Png, operations)]);
    recipe.validate().unwrap();
    let processed = process(&png_of(source), &recipe, &Limits::default()).unwrap();
    image::load_from_memory(&processed.outputs[0].bytes).unwrap()
}

pub fn png_of(image: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
        .unwrap();
    out
}

pub fn mean(image: &DynamicImage) -> f64 {
    let luma = image.to_luma8();
    luma.pixels().map(|p| f64::from(p[0])).sum::<f64>() / luma.len() as f64
}

pub fn variance(image: &DynamicImage) -> f64 {
    let m = mean(image);
    let luma = image.to_luma8();
    luma.pixels()
        .map(|p| (f64::from(p[0]) - m).powi(2))
        .sum::<f64>()
        / luma.len() as f64
}

/// A test photo: `$MINILAB_IMAGES` if set, else the repository's own
/// `tests/data/images`.
pub fn test_photo(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("MINILAB_IMAGES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../tests/data/images")
        });
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

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
