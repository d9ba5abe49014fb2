//! JPEG decoding through the system's libjpeg-turbo (the TurboJPEG 2.x API), the
//! decoder libvips uses: SIMD entropy decoding and IDCT, and decoding at a reduced
//! DCT scale (1/2, 1/4, 1/8) so a large photo never exists at full size when only a
//! small output is wanted.
//!
//! Only what minilab needs: read the header, then decode RGB or grey into a buffer
//! this crate allocates (of the scaled size, never more). CMYK and YCCK sources are
//! reported as such so the caller can take another decoder.
//!
//! The library is found at build time (build.rs, through pkg-config). Where it is
//! missing the crate still builds: [`AVAILABLE`] is false and every call returns an
//! error, so callers decode another way.

#[cfg(has_libturbojpeg)]
#[path = "linked.rs"]
mod sys;
#[cfg(not(has_libturbojpeg))]
#[path = "missing.rs"]
mod sys;

use sys::Decompressor;

/// Whether this build is linked to libjpeg-turbo.
pub const AVAILABLE: bool = cfg!(has_libturbojpeg);

/// What went wrong, with libjpeg-turbo's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The colour space a JPEG is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorSpace {
    Rgb,
    YCbCr,
    Gray,
    Cmyk,
    Ycck,
}

/// A JPEG's header: its size and colour space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub color_space: ColorSpace,
}

/// Pixels decoded by [`decode`]: 8-bit RGB (3 bytes a pixel) or grey (1 byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub gray: bool,
    pub pixels: Vec<u8>,
}

/// Reads the header without decoding anything.
pub fn header(jpeg: &[u8]) -> Result<Header, Error> {
    Decompressor::new()?.header(jpeg)
}

/// The DCT scales used, largest reduction first: libjpeg-turbo has SIMD for these.
const SCALES: [u32; 4] = [8, 4, 2, 1];

/// The smallest DCT scale (1/8, 1/4, 1/2 or 1) at which the image is at least
/// `min_width`×`min_height` (or its full size, if that is smaller).
pub fn denominator(header: &Header, min_width: u32, min_height: u32) -> u32 {
    SCALES
        .into_iter()
        .find(|&d| {
            scaled_side(header.width, d) >= min_width.min(header.width)
                && scaled_side(header.height, d) >= min_height.min(header.height)
        })
        .unwrap_or(1)
}

/// The size a side of `side` pixels has at 1/`denominator` (libjpeg rounds up).
pub fn scaled_side(side: u32, denominator: u32) -> u32 {
    side.div_ceil(denominator)
}

/// Decodes a YCbCr, RGB or grey JPEG at the smallest DCT scale (1/8, 1/4, 1/2 or 1)
/// whose result is at least `min_width`×`min_height`. Grey sources decode to grey,
/// the rest to RGB. CMYK and YCCK sources are refused (see [`header`] to check
/// first). Damaged entropy data that libjpeg-turbo can still decode (a warning, as
/// libvips accepts by default) is accepted; anything fatal is an error.
pub fn decode(jpeg: &[u8], min_width: u32, min_height: u32) -> Result<Decoded, Error> {
    let decompressor = Decompressor::new()?;
    let header = decompressor.header(jpeg)?;
    let gray = match header.color_space {
        ColorSpace::Gray => true,
        ColorSpace::Rgb | ColorSpace::YCbCr => false,
        ColorSpace::Cmyk | ColorSpace::Ycck => {
            return Err(Error {
                message: "CMYK and YCCK JPEGs are not decoded here".into(),
            });
        }
    };
    let denominator = denominator(&header, min_width, min_height);
    let (width, height) = (
        scaled_side(header.width, denominator),
        scaled_side(header.height, denominator),
    );
    let channels: usize = if gray { 1 } else { 3 };
    let too_large = || Error {
        message: format!("a {width}×{height} image is too large to decode"),
    };
    let len = usize::try_from(width)
        .ok()
        .zip(usize::try_from(height).ok())
        .and_then(|(w, h)| w.checked_mul(channels)?.checked_mul(h))
        .ok_or_else(too_large)?;
    let mut pixels = vec![0u8; len];
    decompressor.decompress(jpeg, &mut pixels, width, height, gray)?;
    Ok(Decoded {
        width,
        height,
        gray,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_sides_round_up_as_libjpeg_does() {
        assert_eq!(scaled_side(4000, 2), 2000);
        assert_eq!(scaled_side(4001, 8), 501);
        assert_eq!(scaled_side(1, 8), 1);
    }

    #[test]
    fn the_scale_is_the_smallest_that_keeps_the_size_asked_for() {
        let header = Header {
            width: 4000,
            height: 3000,
            color_space: ColorSpace::YCbCr,
        };
        assert_eq!(denominator(&header, 400, 300), 8);
        assert_eq!(denominator(&header, 501, 1), 4);
        assert_eq!(denominator(&header, 1, 1501), 1);
        assert_eq!(denominator(&header, 9000, 9000), 1);
    }

    #[test]
    fn garbage_is_a_fatal_error_not_a_panic() {
        let err = decode(b"\xff\xd8\xff\xe0 not really a jpeg", 1, 1).unwrap_err();
        assert!(!err.message.is_empty());
        assert!(header(b"").is_err());
    }
}
