//! HEIC as iPhones write it (tests/data/images/make-heic.sh): decoded through
//! libheif with its transforms and profile honoured, and refused with the right
//! code when damaged or too large. `./tests/run` builds with the `heif` feature
//! (libheif required); a build without libheif skips these, saying so.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_core::error::ErrorCode;
use minilab_core::{Limits, RecipeBook, pipeline};
use std::path::Path;
use std::process::Command;

fn photo(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("MINILAB_IMAGES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../tests/data/images")
        });
    std::fs::read(dir.join(name)).unwrap()
}

fn linked() -> bool {
    if !minilab_heif::AVAILABLE {
        eprintln!("skipped: this build has no libheif");
    }
    minilab_heif::AVAILABLE
}

fn web() -> minilab_core::Recipe {
    RecipeBook::builtin().get("web").cloned().unwrap()
}

/// Mean absolute difference per channel (0–255) of two same-sized images.
fn mean_error(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn an_oriented_heic_comes_out_turned_like_the_jpeg_it_was_made_from() {
    if !linked() {
        return;
    }
    let heic = pipeline::process(&photo("heic-rotate6.heic"), &web(), &Limits::default()).unwrap();
    let jpeg =
        pipeline::process(&photo("photo-exif-rotate6.jpg"), &web(), &Limits::default()).unwrap();
    assert_eq!(heic.source.format, "heic");
    for (ours, theirs) in heic.outputs.iter().zip(&jpeg.outputs) {
        // The JPEG's EXIF orientation and the HEIC's irot both make it portrait.
        assert_eq!((ours.width, ours.height), (theirs.width, theirs.height));
        assert!(ours.height > ours.width, "{}: portrait", ours.name);
        let (ours_px, theirs_px) = (
            image::load_from_memory(&ours.bytes).unwrap().to_rgb8(),
            image::load_from_memory(&theirs.bytes).unwrap().to_rgb8(),
        );
        // Same picture (HEVC at q50 against JPEG), not a turned or mirrored one.
        let error = mean_error(&ours_px, &theirs_px);
        assert!(error < 8.0, "{}: mean error {error:.2}", ours.name);
        let turned = image::imageops::flip_horizontal(&theirs_px);
        assert!(mean_error(&ours_px, &turned) > 2.0 * error, "{}", ours.name);
    }
}

#[test]
#[ignore = "needs libvips-tools (the colour reference): ./tests/run installs it and runs this"]
fn a_display_p3_heic_is_converted_to_srgb() {
    if !linked() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../tests/data/images/heic-p3.heic");
    let reference = dir.path().join("reference.png");
    // libvips reads the HEIC through libheif too, and converts with LittleCMS.
    let status = Command::new("vips")
        .arg("icc_transform")
        .arg(&path)
        .arg(&reference)
        .args(["srgb", "--embedded", "--intent", "relative"])
        .status()
        .unwrap();
    assert!(status.success());
    let reference = image::open(&reference).unwrap();
    let processed = pipeline::process(&photo("heic-p3.heic"), &web(), &Limits::default()).unwrap();
    let large = &processed.outputs[0];
    assert_eq!((large.width, large.height), (1024, 768));
    let ours = image::load_from_memory(&large.bytes).unwrap().to_rgb8();
    let reference = reference
        .resize_exact(1024, 768, image::imageops::FilterType::Lanczos3)
        .to_rgb8();
    let error = mean_error(&ours, &reference);
    eprintln!("heic-p3.heic large: mean error {error:.2} against libvips + LittleCMS");
    assert!(error <= 4.0, "mean error {error:.2}");
}

#[test]
fn damaged_and_oversized_heics_have_their_codes() {
    if !linked() {
        return;
    }
    let whole = photo("heic-p3.heic");
    let code =
        |bytes: &[u8], limits: &Limits| pipeline::process(bytes, &web(), limits).unwrap_err().code;
    assert_eq!(
        code(&whole[..whole.len() / 2], &Limits::default()),
        ErrorCode::CorruptImage
    );
    assert_eq!(
        code(&whole[..200], &Limits::default()),
        ErrorCode::CorruptImage
    );

    // The header says 30000×30000: refused from the header, before any pixel.
    let mut lying = whole.clone();
    let ispe = lying.windows(4).position(|w| w == b"ispe").unwrap();
    lying[ispe + 8..ispe + 12].copy_from_slice(&30_000u32.to_be_bytes());
    lying[ispe + 12..ispe + 16].copy_from_slice(&30_000u32.to_be_bytes());
    assert_eq!(
        code(&lying, &Limits::default()),
        ErrorCode::DimensionsTooLarge
    );
    let few = Limits {
        max_pixels: 1_000_000,
        ..Limits::default()
    };
    assert_eq!(code(&whole, &few), ErrorCode::TooManyPixels);
}
