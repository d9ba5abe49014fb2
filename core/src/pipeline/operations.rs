//! One output's operations on the oriented source: resizes (the first may start
//! from a larger output's pixels), crops, turns, flips and tone adjustments.

use super::focus;
use super::geometry::Resize;
use crate::error::{ErrorCode, ImageError};
use crate::recipe::{Direction, Fit, Gravity, Operation, OutputSpec};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;

/// Runs one output's operations on the oriented source. An output whose first
/// operation is a resize starts from `derived` (the largest output's resized pixels)
/// when that is at least as large as it needs; the first such resize is kept there.
pub(super) fn transform(
    source: &DynamicImage,
    spec: &OutputSpec,
    resizer: &mut Resizer,
    derived: &mut Option<DynamicImage>,
) -> Result<DynamicImage, ImageError> {
    let mut operations = spec.operations.iter();
    let mut image = match Resize::first_of(spec) {
        Some(first) => {
            operations.next();
            let (need_w, need_h) = first.presized(source.width(), source.height());
            let start = match derived.as_ref() {
                Some(d) if d.width() >= need_w && d.height() >= need_h => d,
                _ => source,
            };
            let gravity = match spec.operations.first() {
                Some(&Operation::Resize { gravity, .. }) => gravity,
                _ => Gravity::Center,
            };
            let resized = resize(start, first, gravity, spec.background, resizer)?;
            // Only a downscaled fit serves smaller outputs (an enlarged one has no
            // more detail than the source).
            if derived.is_none()
                && first.fit == Fit::Fit
                && resized.width() <= source.width()
                && resized.height() <= source.height()
            {
                *derived = Some(resized.clone());
            }
            resized
        }
        None => source.clone(),
    };
    for op in operations {
        image = apply(image, op, spec.background, resizer)?;
    }
    Ok(image)
}

/// One operation on `image`.
fn apply(
    image: DynamicImage,
    op: &Operation,
    background: [u8; 3],
    resizer: &mut Resizer,
) -> Result<DynamicImage, ImageError> {
    Ok(match *op {
        Operation::Resize {
            width,
            height,
            fit,
            enlarge,
            gravity,
        } => {
            let to = Resize {
                width,
                height,
                fit,
                enlarge,
            };
            resize(&image, to, gravity, background, resizer)?
        }
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
    })
}

/// A `width`×`height` window (clamped to the image) placed by `gravity`.
fn crop(image: &DynamicImage, width: u32, height: u32, gravity: Gravity) -> DynamicImage {
    let (w, h) = (width.min(image.width()), height.min(image.height()));
    let (x, y) = focus::window(image, w, h, gravity);
    image.crop_imm(x, y, w, h)
}

/// `image` resized to meet `to`'s box; a `Contain` is padded to the box with
/// `background`.
fn resize(
    image: &DynamicImage,
    to: Resize,
    gravity: Gravity,
    background: [u8; 3],
    resizer: &mut Resizer,
) -> Result<DynamicImage, ImageError> {
    let (box_w, box_h) = (to.width, to.height);
    let resized = resample(image, to, gravity, resizer)?;
    if to.fit != Fit::Contain || (resized.width(), resized.height()) == (box_w, box_h) {
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

pub(super) fn resample(
    image: &DynamicImage,
    to: Resize,
    gravity: Gravity,
    resizer: &mut Resizer,
) -> Result<DynamicImage, ImageError> {
    let (w, h) = to.fitted(image.width(), image.height());
    if (w, h) == (image.width(), image.height()) {
        return Ok(image.clone());
    }
    let mut out = DynamicImage::new(w, h, image.color());
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    // Only a cover crops (a fill stretches). A fit keeps the whole source: its rounded size differs from
    // the exact aspect ratio by a fraction of a pixel, and cropping to that would
    // shift and scale the picture slightly.
    if to.fit == Fit::Cover {
        options = options.fit_into_destination(Some(centering(image, w, h, gravity)));
    }
    resizer
        .resize(image, &mut out, &options)
        // fast_image_resize refuses only mismatched pixel types or empty images,
        // which the steps before rule out: a failure here is minilab's own.
        .map_err(|e| ImageError::new(ErrorCode::Internal, format!("resizing failed: {e}")))?;
    Ok(out)
}

/// Where a cover's crop of `image` to the `w`:`h` aspect sits, as the share of what
/// is cut that is cut before it (left, top): (0.5, 0.5) for the centre.
fn centering(image: &DynamicImage, w: u32, h: u32, gravity: Gravity) -> (f64, f64) {
    if gravity.is_center() {
        return (0.5, 0.5);
    }
    let (src_w, src_h) = (u64::from(image.width()), u64::from(image.height()));
    // The largest window of the box's aspect inside the image.
    let (win_w, win_h) = if src_w * u64::from(h) > src_h * u64::from(w) {
        ((src_h * u64::from(w) / u64::from(h)).max(1), src_h)
    } else {
        (src_w, (src_w * u64::from(h) / u64::from(w)).max(1))
    };
    let (win_w, win_h) = (win_w as u32, win_h as u32);
    let (x, y) = focus::window(image, win_w, win_h, gravity);
    let share = |at: u32, free: u32| {
        if free == 0 {
            0.5
        } else {
            f64::from(at) / f64::from(free)
        }
    };
    (
        share(x, image.width() - win_w),
        share(y, image.height() - win_h),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::pipeline::process;
    use crate::pipeline::testing::{self, mean, png, png_of, run_ops, variance};
    use crate::recipe::{FocalPoint, Format, RecipeBook};

    #[test]
    fn a_fit_enlarges_only_when_asked_and_stretches_the_whole_picture() {
        let source = DynamicImage::ImageRgb8(image::RgbImage::from_fn(100, 50, |x, _| {
            image::Rgb([(x * 2) as u8, 100, 200])
        }));
        let resize = |enlarge| Operation::Resize {
            width: 400,
            height: 400,
            fit: Fit::Fit,
            enlarge,
            gravity: Gravity::Center,
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
    fn a_cover_and_a_crop_keep_what_their_smart_gravity_finds() {
        // Flat grey but for a detailed, colourful square at the right.
        let mut picture = image::RgbImage::from_pixel(600, 200, image::Rgb([128, 128, 128]));
        for y in 40..160 {
            for x in 440..560 {
                let shade = if (x / 3 + y / 3) % 2 == 0 { 40 } else { 220 };
                picture.put_pixel(x, y, image::Rgb([shade, 255 - shade, 30]));
            }
        }
        let source = DynamicImage::ImageRgb8(picture);
        let cover = |gravity| Operation::Resize {
            width: 100,
            height: 100,
            fit: Fit::Cover,
            enlarge: false,
            gravity,
        };
        let crop = |gravity| Operation::Crop {
            width: 200,
            height: 200,
            gravity,
        };
        assert!(variance(&run_ops(&source, vec![cover(Gravity::Center)])) < 1.0);
        assert!(variance(&run_ops(&source, vec![crop(Gravity::Center)])) < 1.0);
        for gravity in [Gravity::Entropy, Gravity::Attention] {
            let covered = run_ops(&source, vec![cover(gravity)]);
            assert_eq!((covered.width(), covered.height()), (100, 100));
            assert!(
                variance(&covered) > 100.0,
                "{gravity:?}: the detail is kept"
            );
            let cropped = run_ops(&source, vec![crop(gravity)]);
            assert!(
                variance(&cropped) > 100.0,
                "{gravity:?}: the detail is kept"
            );
        }
    }

    #[test]
    fn a_focal_point_places_crops_and_covers_around_it() {
        // Flat grey but for a detailed square at the right, centred at x 500 of 600.
        let mut picture = image::RgbImage::from_pixel(600, 200, image::Rgb([128, 128, 128]));
        for y in 40..160 {
            for x in 440..560 {
                let shade = if (x / 3 + y / 3) % 2 == 0 { 40 } else { 220 };
                picture.put_pixel(x, y, image::Rgb([shade, 255 - shade, 30]));
            }
        }
        let png = testing::png_of(&DynamicImage::ImageRgb8(picture));
        let recipe = testing::recipe(vec![
            testing::output(
                "crop",
                Format::Png,
                vec![Operation::Crop {
                    width: 120,
                    height: 120,
                    gravity: Gravity::Focus,
                }],
            ),
            testing::output(
                "cover",
                Format::Png,
                vec![Operation::Resize {
                    width: 100,
                    height: 100,
                    fit: Fit::Cover,
                    enlarge: false,
                    gravity: Gravity::Focus,
                }],
            ),
        ]);
        recipe.validate().unwrap();
        let made = |point: Option<FocalPoint>| {
            let processed = process(&png, &recipe.focused_on(point), &Limits::default()).unwrap();
            processed
                .outputs
                .iter()
                .map(|o| image::load_from_memory(&o.bytes).unwrap())
                .collect::<Vec<_>>()
        };
        for image in made(FocalPoint::new(0.1, 0.5)) {
            assert!(variance(&image) < 1.0, "the flat left is kept");
        }
        for image in made(FocalPoint::new(500.0 / 600.0, 0.5)) {
            assert!(variance(&image) > 100.0, "the detail is kept");
        }
        // Centred on the point: the crop is exactly the square.
        let crop = made(FocalPoint::new(500.0 / 600.0, 0.5))
            .remove(0)
            .to_rgb8();
        assert!(
            crop.pixels().all(|p| p[2] == 30),
            "no grey around the square"
        );
        // No point: as attention, which finds the detail.
        for image in made(None) {
            assert!(variance(&image) > 100.0, "attention keeps the detail");
        }
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
                gravity: Gravity::Center,
            }],
        )
        .to_rgb8();
        assert_eq!(filled.dimensions(), (100, 100));
        assert!(filled.get_pixel(20, 50)[0] < 30 && filled.get_pixel(80, 50)[0] > 225);

        let contain = Operation::Resize {
            width: 100,
            height: 100,
            fit: Fit::Contain,
            enlarge: false,
            gravity: Gravity::Center,
        };
        let recipe = testing::recipe(vec![OutputSpec {
            background: [10, 200, 30],
            ..testing::output("o", Format::Png, vec![contain])
        }]);
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
}
