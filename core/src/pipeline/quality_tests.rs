//! The pipeline's outputs against a careful reference on the repository's photos.

use super::decode::{decode, decode_scaled, needed_scale};
use super::encode::{encode, flatten_on_white};
use super::operations::transform;
use super::process;
use super::testing::{ssim, test_photo};
use crate::limits::Limits;
use crate::recipe::{Format, RecipeBook};
use fast_image_resize::Resizer;

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
                let ours =
                    flatten_on_white(&image::load_from_memory(&output.bytes).unwrap()).to_luma8();
                let (w, h) = (output.width, output.height);
                let reference = if recipe == "thumbnail" {
                    // Crop the centre to the output's aspect ratio, then resize.
                    let (fw, fh) = (f64::from(full.width()), f64::from(full.height()));
                    let scale = (fw / f64::from(w)).min(fh / f64::from(h));
                    let (cw, ch) = ((f64::from(w) * scale) as u32, (f64::from(h) * scale) as u32);
                    let square =
                        full.crop_imm((full.width() - cw) / 2, (full.height() - ch) / 2, cw, ch);
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
                            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                                &mut careful,
                                spec.quality,
                            ))
                            .unwrap();
                        careful
                    }
                    _ => encode(&reference, spec, None).unwrap(),
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
