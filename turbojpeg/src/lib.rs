//! JPEG decoding through the system's libjpeg-turbo (the TurboJPEG 2.x API), the
//! decoder libvips uses: SIMD entropy decoding and IDCT, and decoding at a reduced
//! DCT scale (1/2, 1/4, 1/8) so a large photo never exists at full size when only a
//! small output is wanted.
//!
//! Only what minilab needs: read the header, then decode RGB or grey into a buffer
//! this crate allocates (of the scaled size, never more). CMYK and YCCK sources are
//! reported as such so the caller can take another decoder.

use std::ffi::CStr;
use std::os::raw::{c_int, c_ulong};

use turbojpeg_sys as sys;

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

/// An owned TurboJPEG decompressor, destroyed on drop.
struct Decompressor(sys::tjhandle);

impl Decompressor {
    fn new() -> Result<Self, Error> {
        // SAFETY: tjInitDecompress has no preconditions; it returns NULL on failure.
        let handle = unsafe { sys::tjInitDecompress() };
        if handle.is_null() {
            return Err(Error {
                message: "libjpeg-turbo could not create a decompressor".into(),
            });
        }
        Ok(Self(handle))
    }

    fn error(&self) -> Error {
        // SAFETY: the handle is live; tjGetErrorStr2 returns a NUL-terminated string
        // owned by the handle (or a static one), which is copied before the handle
        // can be used again.
        let message = unsafe {
            let text = sys::tjGetErrorStr2(self.0);
            if text.is_null() {
                "unknown libjpeg-turbo error".to_owned()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        Error { message }
    }

    fn is_fatal(&self) -> bool {
        // SAFETY: the handle is live.
        unsafe { sys::tjGetErrorCode(self.0) != sys::TJERR_TJERR_WARNING as c_int }
    }

    fn header(&self, jpeg: &[u8]) -> Result<Header, Error> {
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| Error {
            message: "the file is too large for libjpeg-turbo".into(),
        })?;
        let (mut width, mut height, mut subsampling, mut color_space) = (0, 0, 0, 0);
        // SAFETY: the handle is live, `jpeg` is valid for `size` bytes and only read,
        // and the four out-pointers point at live c_ints.
        let status = unsafe {
            sys::tjDecompressHeader3(
                self.0,
                jpeg.as_ptr(),
                size,
                &mut width,
                &mut height,
                &mut subsampling,
                &mut color_space,
            )
        };
        if status != 0 {
            return Err(self.error());
        }
        let color_space = match color_space as u32 {
            sys::TJCS_TJCS_RGB => ColorSpace::Rgb,
            sys::TJCS_TJCS_YCbCr => ColorSpace::YCbCr,
            sys::TJCS_TJCS_GRAY => ColorSpace::Gray,
            sys::TJCS_TJCS_CMYK => ColorSpace::Cmyk,
            sys::TJCS_TJCS_YCCK => ColorSpace::Ycck,
            other => {
                return Err(Error {
                    message: format!("unknown JPEG colour space {other}"),
                });
            }
        };
        let side = |v: c_int| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| Error {
                    message: format!("the JPEG declares a side of {v} pixels"),
                })
        };
        Ok(Header {
            width: side(width)?,
            height: side(height)?,
            color_space,
        })
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe {
            sys::tjDestroy(self.0);
        }
    }
}

/// Reads the header without decoding anything.
pub fn header(jpeg: &[u8]) -> Result<Header, Error> {
    Decompressor::new()?.header(jpeg)
}

/// The DCT scales used, largest reduction first: libjpeg-turbo has SIMD for these.
const SCALES: [u32; 4] = [8, 4, 2, 1];

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
    let denominator = SCALES
        .into_iter()
        .find(|&d| {
            scaled_side(header.width, d) >= min_width.min(header.width)
                && scaled_side(header.height, d) >= min_height.min(header.height)
        })
        .unwrap_or(1);
    let (width, height) = (
        scaled_side(header.width, denominator),
        scaled_side(header.height, denominator),
    );
    let channels: usize = if gray { 1 } else { 3 };
    let too_large = || Error {
        message: format!("a {width}×{height} image is too large to decode"),
    };
    let row = usize::try_from(width)
        .ok()
        .and_then(|w| w.checked_mul(channels))
        .ok_or_else(too_large)?;
    let len = usize::try_from(height)
        .ok()
        .and_then(|h| h.checked_mul(row))
        .ok_or_else(too_large)?;
    let (c_width, c_height, c_pitch) = (
        c_int::try_from(width).map_err(|_| too_large())?,
        c_int::try_from(height).map_err(|_| too_large())?,
        c_int::try_from(row).map_err(|_| too_large())?,
    );
    let size = c_ulong::try_from(jpeg.len()).map_err(|_| too_large())?;
    let mut pixels = vec![0u8; len];
    let format = if gray {
        sys::TJPF_TJPF_GRAY
    } else {
        sys::TJPF_TJPF_RGB
    } as c_int;
    // SAFETY: the handle is live; `jpeg` is valid for `size` bytes and only read;
    // `pixels` holds exactly `c_height` rows of `c_pitch` bytes, which is what
    // libjpeg-turbo writes for a `c_width`×`c_height` output (one of its own scaled
    // sizes, so it does not pick another) in `format` (3 or 1 bytes a pixel).
    let status = unsafe {
        sys::tjDecompress2(
            decompressor.0,
            jpeg.as_ptr(),
            size,
            pixels.as_mut_ptr(),
            c_width,
            c_pitch,
            c_height,
            format,
            0,
        )
    };
    if status != 0 && decompressor.is_fatal() {
        return Err(decompressor.error());
    }
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
    fn garbage_is_a_fatal_error_not_a_panic() {
        let err = decode(b"\xff\xd8\xff\xe0 not really a jpeg", 1, 1).unwrap_err();
        assert!(!err.message.is_empty());
        assert!(header(b"").is_err());
    }
}
