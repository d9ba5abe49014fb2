//! Where to cut: the window a crop (or a `cover` resize) keeps. By a compass gravity,
//! or by what is in the picture, without a model:
//! - `entropy`: as libvips's smartcrop does, trim the image towards the window by
//!   repeatedly cutting a strip from whichever side has less information (the
//!   Shannon entropy of its grey levels);
//! - `attention`: the window holding the most of what draws the eye: edges,
//!   saturated colour and skin tones.
//!
//! Both look at a copy at most [`LOOK_AT`] pixels a side: cheap whatever the photo.

use crate::recipe::Gravity;
use image::{DynamicImage, RgbImage};

/// The longest side of the copy the smart gravities look at.
const LOOK_AT: u32 = 128;

/// The top-left corner of a `width`×`height` window (at most the image) placed by
/// `gravity`.
pub(super) fn window(
    image: &DynamicImage,
    width: u32,
    height: u32,
    gravity: Gravity,
) -> (u32, u32) {
    let (w, h) = (width.min(image.width()), height.min(image.height()));
    let (free_x, free_y) = (image.width() - w, image.height() - h);
    if free_x == 0 && free_y == 0 {
        return (0, 0);
    }
    let x = match gravity {
        Gravity::West | Gravity::NorthWest | Gravity::SouthWest => 0,
        Gravity::East | Gravity::NorthEast | Gravity::SouthEast => free_x,
        Gravity::Center | Gravity::North | Gravity::South => free_x / 2,
        Gravity::Entropy | Gravity::Attention => return smart(image, w, h, gravity),
        Gravity::Focus => return smart(image, w, h, Gravity::Attention),
        Gravity::Point { x, y } => return around(x, y, (free_x, free_y), (w, h), image),
    };
    let y = match gravity {
        Gravity::North | Gravity::NorthEast | Gravity::NorthWest => 0,
        Gravity::South | Gravity::SouthEast | Gravity::SouthWest => free_y,
        _ => free_y / 2,
    };
    (x, y)
}

/// [`window`] centred on the point (`x`, `y` in ten-thousandths of the image) as
/// nearly as the image's edges allow.
fn around(
    x: u16,
    y: u16,
    free: (u32, u32),
    window: (u32, u32),
    image: &DynamicImage,
) -> (u32, u32) {
    let corner = |at: u16, side: u32, w: u32, free: u32| {
        let centre = f64::from(at) / 10_000.0 * f64::from(side);
        ((centre - f64::from(w) / 2.0).round().max(0.0) as u32).min(free)
    };
    (
        corner(x, image.width(), window.0, free.0),
        corner(y, image.height(), window.1, free.1),
    )
}

/// [`window`] for `entropy` and `attention`: found on a small copy, mapped back.
fn smart(image: &DynamicImage, w: u32, h: u32, gravity: Gravity) -> (u32, u32) {
    let small = image.thumbnail(LOOK_AT, LOOK_AT).to_rgb8();
    let scale = f64::from(small.width()) / f64::from(image.width());
    let side = |n: u32, limit: u32| ((f64::from(n) * scale).round() as u32).clamp(1, limit);
    let (sw, sh) = (side(w, small.width()), side(h, small.height()));
    let (sx, sy) = if gravity == Gravity::Entropy {
        by_entropy(&small, sw, sh)
    } else {
        by_attention(&small, sw, sh)
    };
    let back = |n: u32, free: u32| ((f64::from(n) / scale).round() as u32).min(free);
    (back(sx, image.width() - w), back(sy, image.height() - h))
}

/// Trims towards a `w`×`h` window, a strip at a time from the side with less
/// entropy; the window's corner.
fn by_entropy(image: &RgbImage, w: u32, h: u32) -> (u32, u32) {
    let (width, height) = image.dimensions();
    let (mut left, mut right, mut top, mut bottom) = (0, width, 0, height);
    while right - left > w {
        let step = (right - left - w).min(4);
        let first = entropy(image, left, top, left + step, bottom);
        let last = entropy(image, right - step, top, right, bottom);
        if cut_first(first, last, left, width - right) {
            left += step;
        } else {
            right -= step;
        }
    }
    while bottom - top > h {
        let step = (bottom - top - h).min(4);
        let first = entropy(image, left, top, right, top + step);
        let last = entropy(image, left, bottom - step, right, bottom);
        if cut_first(first, last, top, height - bottom) {
            top += step;
        } else {
            bottom -= step;
        }
    }
    (left, top)
}

/// Whether to cut the first side's strip (entropy `first`, `cut_before` cut there
/// already) rather than the last's: the poorer one, or on a tie the side cut less,
/// so that a flat picture is cut in the middle.
fn cut_first(first: f64, last: f64, cut_before: u32, cut_after: u32) -> bool {
    if (first - last).abs() < 1e-9 {
        cut_before <= cut_after
    } else {
        first < last
    }
}

/// The Shannon entropy of the grey levels in `[x0, x1) × [y0, y1)`.
fn entropy(image: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
    let mut histogram = [0u32; 256];
    for y in y0..y1 {
        for x in x0..x1 {
            histogram[usize::from(luma(image.get_pixel(x, y).0))] += 1;
        }
    }
    let total = f64::from((x1 - x0) * (y1 - y0));
    histogram
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = f64::from(n) / total;
            -p * p.log2()
        })
        .sum()
}

/// The `w`×`h` window with the most attention in it (the one nearest the centre
/// among equals); its corner.
fn by_attention(image: &RgbImage, w: u32, h: u32) -> (u32, u32) {
    let (width, height) = image.dimensions();
    // Summed-area table of the attention map, one row and column of zeros first.
    let stride = width as usize + 1;
    let mut sums = vec![0u64; stride * (height as usize + 1)];
    for y in 0..height {
        let mut row = 0u64;
        for x in 0..width {
            row += u64::from(attention(image, x, y));
            let at = (y as usize + 1) * stride + x as usize + 1;
            sums[at] = sums[at - stride] + row;
        }
    }
    let sum = |x: u32, y: u32| {
        let (x0, y0, x1, y1) = (x as usize, y as usize, (x + w) as usize, (y + h) as usize);
        sums[y1 * stride + x1] + sums[y0 * stride + x0]
            - sums[y0 * stride + x1]
            - sums[y1 * stride + x0]
    };
    let centre = ((width - w) / 2, (height - h) / 2);
    let off_centre = |(x, y): (u32, u32)| x.abs_diff(centre.0) + y.abs_diff(centre.1);
    let mut best = centre;
    for y in 0..=height - h {
        for x in 0..=width - w {
            let (score, best_score) = (sum(x, y), sum(best.0, best.1));
            if score > best_score || (score == best_score && off_centre((x, y)) < off_centre(best))
            {
                best = (x, y);
            }
        }
    }
    best
}

/// What draws the eye to one pixel: its edge (the grey-level step to its right and
/// below), its colour's saturation, and skin tones.
fn attention(image: &RgbImage, x: u32, y: u32) -> u32 {
    let here = image.get_pixel(x, y).0;
    let grey = i32::from(luma(here));
    let step = |nx: u32, ny: u32| {
        if nx < image.width() && ny < image.height() {
            grey.abs_diff(i32::from(luma(image.get_pixel(nx, ny).0)))
        } else {
            0
        }
    };
    let edge = step(x + 1, y) + step(x, y + 1);
    let [r, g, b] = here.map(u32::from);
    let saturation = r.max(g).max(b) - r.min(g).min(b);
    let skin = r > 95 && g > 40 && b > 20 && r > g && r > b && r - g.min(b) > 15 && r - g > 15;
    2 * edge + saturation + if skin { 128 } else { 0 }
}

/// Rec. 601 luma, 0-255.
fn luma([r, g, b]: [u8; 3]) -> u8 {
    ((u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114) / 1000) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat grey `width`×`height` picture with a detailed, colourful square of
    /// `side` pixels at (`x`, `y`).
    fn picture_with_detail(width: u32, height: u32, x: u32, y: u32, side: u32) -> DynamicImage {
        let mut image = RgbImage::from_pixel(width, height, image::Rgb([128, 128, 128]));
        for dy in 0..side {
            for dx in 0..side {
                let checker = ((dx / 3 + dy / 3) % 2) as u8;
                let shade = 40 + checker * 180;
                image.put_pixel(x + dx, y + dy, image::Rgb([shade, 255 - shade, 30]));
            }
        }
        DynamicImage::ImageRgb8(image)
    }

    #[test]
    fn the_smart_gravities_keep_the_detail_the_centre_would_cut() {
        // Detail at x = 440..560 of 600: a centred 200 px window (200..400) misses it.
        let wide = picture_with_detail(600, 200, 440, 40, 120);
        assert_eq!(window(&wide, 200, 200, Gravity::Center), (200, 0));
        for gravity in [Gravity::Entropy, Gravity::Attention] {
            let (x, y) = window(&wide, 200, 200, gravity);
            assert_eq!(y, 0, "{gravity:?}");
            assert!(
                (340..=440).contains(&x),
                "{gravity:?}: x = {x}, the detail is 440..560"
            );
        }
        // Likewise up and down: detail near the top of a tall picture.
        let tall = picture_with_detail(200, 600, 40, 20, 120);
        for gravity in [Gravity::Entropy, Gravity::Attention] {
            let (x, y) = window(&tall, 200, 200, gravity);
            assert_eq!(x, 0, "{gravity:?}");
            assert!(y <= 40, "{gravity:?}: y = {y}, the detail is 20..140");
        }
    }

    #[test]
    fn a_flat_picture_is_cut_in_the_middle_and_a_window_never_leaves_it() {
        let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 100, image::Rgb([9, 9, 9])));
        for gravity in [Gravity::Entropy, Gravity::Attention] {
            let (x, y) = window(&flat, 100, 100, gravity);
            assert!((95..=105).contains(&x) && y == 0, "{gravity:?}: ({x}, {y})");
        }
        let small = picture_with_detail(50, 40, 10, 10, 20);
        for gravity in [Gravity::Entropy, Gravity::Attention, Gravity::SouthEast] {
            assert_eq!(window(&small, 80, 80, gravity), (0, 0), "{gravity:?}");
            let (x, y) = window(&small, 30, 30, gravity);
            assert!(x <= 20 && y <= 10, "{gravity:?}: ({x}, {y})");
        }
    }
}
