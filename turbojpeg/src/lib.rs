//! JPEG decoding and encoding through the system's libjpeg-turbo (the TurboJPEG 2.x
//! API), the codec libvips uses: SIMD entropy coding and DCT, and decoding at a
//! reduced DCT scale (1/2, 1/4, 1/8) so a large photo never exists at full size when
//! only a small output is wanted.
//!
//! Only what minilab needs: read the header, then decode RGB or grey into a buffer
//! this crate allocates (of the scaled size, never more); encode RGB or grey, with
//! an ICC profile if one is given. CMYK and YCCK sources are reported as such so the
//! caller can take another decoder.
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

use sys::{Compressor, Decompressor};

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

/// What [`encode`] makes: the pixels' size and layout and the JPEG's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// 1 byte a pixel (grey) instead of 3 (RGB).
    pub gray: bool,
    /// Chroma at half resolution both ways (4:2:0); otherwise full (4:4:4).
    pub subsample: bool,
    pub progressive: bool,
}

/// Encodes `pixels` as `image` says at `quality` (1-100), with `icc` (if any) in
/// APP2 markers as the ICC specification lays them out.
pub fn encode(
    pixels: &[u8],
    image: &Image,
    quality: u8,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let jpeg = Compressor::new()?.compress(pixels, image, quality)?;
    Ok(match icc {
        Some(icc) if !icc.is_empty() => with_icc(&jpeg, icc)?,
        _ => jpeg,
    })
}

/// The bytes an APP2 ICC marker holds at most: 65535 less the length field (2),
/// `ICC_PROFILE\0` (12), and the chunk's number and count (2).
const ICC_CHUNK: usize = 65_519;

/// `jpeg` with `icc` in APP2 markers (`ICC_PROFILE\0`, chunk number, count, data)
/// after the SOI and any JFIF APP0 marker, where decoders look for them.
fn with_icc(jpeg: &[u8], icc: &[u8]) -> Result<Vec<u8>, Error> {
    let chunks: Vec<&[u8]> = icc.chunks(ICC_CHUNK).collect();
    let count = u8::try_from(chunks.len()).map_err(|_| Error {
        message: "the ICC profile is too large for a JPEG".into(),
    })?;
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(Error {
            message: "libjpeg-turbo made no JPEG".into(),
        });
    }
    let mut at = 2;
    if jpeg.get(2..4) == Some(&[0xFF, 0xE0]) {
        let length = jpeg
            .get(4..6)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        at = (4 + length).min(jpeg.len());
    }
    let mut out = Vec::with_capacity(jpeg.len() + icc.len() + 18 * chunks.len());
    out.extend_from_slice(&jpeg[..at]);
    for (number, chunk) in (1u8..).zip(&chunks) {
        // The length counts itself and what follows it: 2 + 12 + 2 + the chunk.
        let length = u16::try_from(16 + chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(b"ICC_PROFILE\0");
        out.extend_from_slice(&[number, count]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&jpeg[at..]);
    Ok(out)
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

    /// The ICC profile in `jpeg`'s APP2 markers, chunks joined in their order, and
    /// how many markers there were.
    fn icc_in(jpeg: &[u8]) -> (Vec<u8>, usize) {
        let (mut chunks, mut at) = (Vec::new(), 2);
        while jpeg[at] == 0xFF && jpeg[at + 1] != 0xDA {
            let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            let body = &jpeg[at + 4..at + 2 + length];
            if jpeg[at + 1] == 0xE2 && body.starts_with(b"ICC_PROFILE\0") {
                chunks.push((body[12], body[13], body[14..].to_vec()));
            }
            at += 2 + length;
        }
        chunks.sort_by_key(|c| c.0);
        let count = chunks.len();
        assert!(chunks.iter().all(|c| usize::from(c.1) == count));
        (chunks.into_iter().flat_map(|c| c.2).collect(), count)
    }

    #[test]
    fn encodes_what_decodes_back_with_a_profile_of_several_markers() {
        if !AVAILABLE {
            return;
        }
        let (width, height) = (64u32, 48u32);
        // Smooth gradients, as in a photo: JPEG keeps them within a few levels.
        let pixels: Vec<u8> = (0..width * height)
            .flat_map(|i| [(i % width * 4) as u8, (i / width * 5) as u8, 128])
            .collect();
        let image = Image {
            width,
            height,
            gray: false,
            subsample: true,
            progressive: false,
        };
        let profile: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let jpeg = encode(&pixels, &image, 80, Some(&profile)).unwrap();
        assert_eq!(icc_in(&jpeg), (profile, 3));
        let decoded = decode(&jpeg, width, height).unwrap();
        assert_eq!((decoded.width, decoded.height), (width, height));
        let error: u64 = decoded
            .pixels
            .iter()
            .zip(&pixels)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        assert!(
            error / (pixels.len() as u64) < 8,
            "mean error {}",
            error / pixels.len() as u64
        );

        let plain = encode(&pixels, &image, 80, None).unwrap();
        assert_eq!(icc_in(&plain).1, 0);
        let wrong = encode(&pixels[1..], &image, 80, None).unwrap_err();
        assert!(wrong.message.contains("bytes of pixels"), "{wrong}");
    }

    #[test]
    fn garbage_is_a_fatal_error_not_a_panic() {
        let err = decode(b"\xff\xd8\xff\xe0 not really a jpeg", 1, 1).unwrap_err();
        assert!(!err.message.is_empty());
        assert!(header(b"").is_err());
    }
}
