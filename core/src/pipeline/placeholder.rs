//! What a page shows before an image loads: a ThumbHash of the image and its
//! dominant colour, from the smallest output's pixels.
//!
//! ThumbHash rather than BlurHash: in the same ~25 bytes it keeps the aspect ratio
//! and transparency and renders more detail and truer colour, and it has no
//! component counts to choose per image. The dominant colour is for a flat
//! background where even a decoded hash is too much (a list, a slow device).

use crate::manifest::Placeholder;
use base64::Engine as _;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;

/// ThumbHash takes at most 100×100 pixels.
const HASH_SIDE: u32 = 100;

pub(super) fn placeholder(image: &DynamicImage) -> Placeholder {
    let rgba = shrunk(image).to_rgba8();
    let hash =
        thumbhash::rgba_to_thumb_hash(rgba.width() as usize, rgba.height() as usize, rgba.as_raw());
    let [r, g, b] = dominant(rgba.as_raw());
    Placeholder {
        thumbhash: base64::engine::general_purpose::STANDARD.encode(hash),
        dominant_color: format!("#{r:02x}{g:02x}{b:02x}"),
    }
}

/// `image` within [`HASH_SIDE`] a side, its aspect kept: a box filter with SIMD
/// (`fast_image_resize`), a tenth of the `image` crate's thumbnail's time on a
/// 1024-pixel output; that one if it refuses.
fn shrunk(image: &DynamicImage) -> DynamicImage {
    let (width, height) = (image.width(), image.height());
    if width <= HASH_SIDE && height <= HASH_SIDE {
        return image.clone();
    }
    let ratio = f64::from(HASH_SIDE) / f64::from(width.max(height));
    let side = |n: u32| ((f64::from(n) * ratio).round() as u32).clamp(1, HASH_SIDE);
    let mut small = DynamicImage::new(side(width), side(height), image.color());
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
    match Resizer::new().resize(image, &mut small, &options) {
        Ok(()) => small,
        Err(_) => image.thumbnail(HASH_SIDE, HASH_SIDE),
    }
}

/// The mean of the most common colour: pixels counted in 4096 bins (4 bits a
/// channel), the fullest bin's pixels averaged. Transparent pixels do not count;
/// an image without opaque ones is white.
fn dominant(rgba: &[u8]) -> [u8; 3] {
    let mut bins = vec![(0u32, [0u64; 3]); 4096];
    for pixel in rgba.chunks_exact(4).filter(|p| p[3] >= 128) {
        let bin = usize::from(pixel[0] >> 4) << 8
            | usize::from(pixel[1] >> 4) << 4
            | usize::from(pixel[2] >> 4);
        let (count, sums) = &mut bins[bin];
        *count += 1;
        for (sum, channel) in sums.iter_mut().zip(pixel) {
            *sum += u64::from(*channel);
        }
    }
    let (count, sums) = bins
        .into_iter()
        .max_by_key(|(count, _)| *count)
        .unwrap_or_default();
    if count == 0 {
        return [255, 255, 255];
    }
    sums.map(|sum| (sum / u64::from(count)) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_decodes_to_the_image_s_shape_and_colours() {
        // 300×150: left two thirds red, right third blue.
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 150, |x, _| {
            if x < 200 {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([20, 40, 200])
            }
        }));
        let placeholder = placeholder(&image);
        assert_eq!(placeholder.dominant_color, "#dc1e1e");
        let hash = base64::engine::general_purpose::STANDARD
            .decode(&placeholder.thumbhash)
            .unwrap();
        assert!(hash.len() <= 32, "{} bytes", hash.len());
        let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
        // ThumbHash stores the aspect ratio coarsely: 2:1 comes back as 1.75.
        assert!((ratio - 2.0).abs() < 0.3, "aspect {ratio}");
        let (w, h, rgba) = thumbhash::thumb_hash_to_rgba(&hash).unwrap();
        let at = |x: usize, y: usize| &rgba[(y * w + x) * 4..(y * w + x) * 4 + 3];
        let (left, right) = (at(w / 6, h / 2), at(w - 2, h / 2));
        assert!(left[0] > 150 && left[2] < 100, "left {left:?}");
        assert!(right[2] > 120 && right[0] < 100, "right {right:?}");
    }

    #[test]
    fn transparent_pixels_do_not_make_the_dominant_colour() {
        let mut rgba = vec![0u8; 10 * 10 * 4]; // transparent black
        for pixel in rgba.chunks_exact_mut(4).take(10) {
            pixel.copy_from_slice(&[10, 200, 90, 255]);
        }
        assert_eq!(dominant(&rgba), [10, 200, 90]);
        assert_eq!(dominant(&[0, 0, 0, 0]), [255, 255, 255]);
    }
}
