//! Colour: pixels described by an embedded ICC profile (Display P3 from phones,
//! Adobe RGB from cameras, CMYK from print) become sRGB, what browsers assume of an
//! image without a profile, through moxcms (pure Rust). Outputs carry no profile:
//! untagged means sRGB everywhere, and a compact sRGB profile would cost ~500 bytes
//! per output for nothing. A recipe with `colorspace: keep` keeps RGB pixels as they
//! are and attaches their profile to its outputs instead (encode.rs).

use image::{DynamicImage, RgbImage};
use moxcms::{ColorProfile, DataColorSpace, Layout, RenderingIntent, TransformOptions};

/// Relative colorimetric: what libvips and browsers use; moxcms applies no other
/// intent-specific mapping to matrix profiles anyway.
fn options() -> TransformOptions {
    TransformOptions {
        rendering_intent: RenderingIntent::RelativeColorimetric,
        ..TransformOptions::default()
    }
}

/// A parsed embedded profile and the colour space its pixels are in.
pub(super) struct Profile(ColorProfile);

impl Profile {
    /// The profile in `icc`, or `None` when it does not parse: such an image is
    /// shown unmanaged, as browsers show it.
    pub(super) fn parse(icc: &[u8]) -> Option<Self> {
        ColorProfile::new_from_slice(icc).ok().map(Self)
    }

    pub(super) fn is_cmyk(&self) -> bool {
        self.0.color_space == DataColorSpace::Cmyk
    }

    pub(super) fn is_rgb(&self) -> bool {
        self.0.color_space == DataColorSpace::Rgb
    }

    /// `image` in sRGB. RGB pixels with an RGB profile are converted unless the
    /// profile is sRGB already; grey images and profiles that do not match the
    /// pixels (an RGB profile on a grey image, say) are left as they are.
    pub(super) fn to_srgb(&self, mut image: DynamicImage) -> DynamicImage {
        if !self.is_rgb() {
            return image;
        }
        let (width, layout, channels) = match &image {
            DynamicImage::ImageRgb8(rgb) => (rgb.width() as usize, Layout::Rgb, 3),
            DynamicImage::ImageRgba8(rgba) => (rgba.width() as usize, Layout::Rgba, 4),
            _ => return image,
        };
        let Ok(transform) =
            self.0
                .create_transform_8bit(layout, &ColorProfile::new_srgb(), layout, options())
        else {
            return image;
        };
        let convert = |src: &[u8], dst: &mut [u8]| transform.transform(src, dst).is_ok();
        if is_srgb_already(convert, channels) {
            return image;
        }
        let pixels: &mut [u8] = match &mut image {
            DynamicImage::ImageRgb8(rgb) => rgb,
            DynamicImage::ImageRgba8(rgba) => rgba,
            _ => return image,
        };
        let mut converted = vec![0u8; width * channels];
        for line in pixels.chunks_exact_mut(width * channels) {
            if !convert(line, &mut converted) {
                break;
            }
            line.copy_from_slice(&converted);
        }
        image
    }

    /// sRGB pixels from CMYK samples (0 = no ink, as jpeg-decoder returns a
    /// JPEG's), `None` if the profile cannot convert them.
    pub(super) fn cmyk_to_srgb(&self, width: u32, height: u32, cmyk: &[u8]) -> Option<RgbImage> {
        let srgb = ColorProfile::new_srgb();
        let transform = self
            .0
            .create_transform_8bit(Layout::Rgba, &srgb, Layout::Rgb, options())
            .ok()?;
        let mut rgb = vec![0u8; cmyk.len() / 4 * 3];
        let row = width as usize;
        for (src, dst) in cmyk
            .chunks_exact(row * 4)
            .zip(rgb.chunks_exact_mut(row * 3))
        {
            transform.transform(src, dst).ok()?;
        }
        RgbImage::from_raw(width, height, rgb)
    }
}

/// Whether a transform leaves colours as they are (within one step): an embedded
/// sRGB profile, the commonest case, then costs nothing. Tried on ramps of each
/// primary, grey and mixed colours.
fn is_srgb_already(convert: impl Fn(&[u8], &mut [u8]) -> bool, channels: usize) -> bool {
    let mut probe = Vec::new();
    for v in (0..=255u8).step_by(15) {
        for rgb in [
            [v, 0, 0],
            [0, v, 0],
            [0, 0, v],
            [v, v, v],
            [v, 255 - v, v / 2],
        ] {
            probe.extend_from_slice(&rgb);
            if channels == 4 {
                probe.push(255);
            }
        }
    }
    let mut out = vec![0u8; probe.len()];
    convert(&probe, &mut out) && probe.iter().zip(&out).all(|(a, b)| a.abs_diff(*b) <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vivid() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(64, 8, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 30) as u8, 255 - (x * 4) as u8])
        }))
    }

    fn profile(profile: ColorProfile) -> Profile {
        Profile::parse(&profile.encode().unwrap()).expect("an encoded profile parses")
    }

    #[test]
    fn an_srgb_profile_leaves_the_pixels_and_display_p3_converts_them() {
        let image = vivid();
        let srgb = profile(ColorProfile::new_srgb()).to_srgb(image.clone());
        assert_eq!(srgb.to_rgb8(), image.to_rgb8());
        let p3 = profile(ColorProfile::new_display_p3()).to_srgb(image.clone());
        // P3's primaries are more saturated than sRGB's: the same numbers mean a
        // more saturated colour, so in sRGB a purple's red value grows.
        let (ours, theirs) = (p3.to_rgb8(), image.to_rgb8());
        assert_ne!(ours, theirs);
        let (before, after) = (theirs.get_pixel(32, 0), ours.get_pixel(32, 0));
        assert!(after[0] > before[0], "{before:?} → {after:?}");
    }

    #[test]
    fn a_damaged_or_mismatched_profile_changes_nothing() {
        assert!(Profile::parse(b"not an ICC profile").is_none());
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([90])));
        let converted = profile(ColorProfile::new_display_p3()).to_srgb(grey.clone());
        assert_eq!(converted, grey);
    }
}
