//! The TurboJPEG 2.x calls minilab makes, declared from libjpeg-turbo's turbojpeg.h
//! (2.0 and later keep these signatures and constants), each wrapped safely.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uchar, c_ulong, c_void};

use crate::{ColorSpace, Error, Header};

type Handle = *mut c_void;

// turbojpeg.h: enum TJERR, TJCS and TJPF.
const TJERR_WARNING: c_int = 0;
const TJCS_RGB: c_int = 0;
const TJCS_YCBCR: c_int = 1;
const TJCS_GRAY: c_int = 2;
const TJCS_CMYK: c_int = 3;
const TJCS_YCCK: c_int = 4;
const TJPF_RGB: c_int = 0;
const TJPF_GRAY: c_int = 6;

// Linked by build.rs, as pkg-config says.
unsafe extern "C" {
    fn tjInitDecompress() -> Handle;
    fn tjDestroy(handle: Handle) -> c_int;
    fn tjGetErrorStr2(handle: Handle) -> *mut c_char;
    fn tjGetErrorCode(handle: Handle) -> c_int;
    fn tjDecompressHeader3(
        handle: Handle,
        jpeg: *const c_uchar,
        jpeg_size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        subsampling: *mut c_int,
        color_space: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: Handle,
        jpeg: *const c_uchar,
        jpeg_size: c_ulong,
        destination: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
}

/// An owned TurboJPEG decompressor, destroyed on drop.
pub struct Decompressor(Handle);

impl Decompressor {
    pub fn new() -> Result<Self, Error> {
        // SAFETY: tjInitDecompress has no preconditions; it returns NULL on failure.
        let handle = unsafe { tjInitDecompress() };
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
            let text = tjGetErrorStr2(self.0);
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
        unsafe { tjGetErrorCode(self.0) != TJERR_WARNING }
    }

    pub fn header(&self, jpeg: &[u8]) -> Result<Header, Error> {
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| Error {
            message: "the file is too large for libjpeg-turbo".into(),
        })?;
        let (mut width, mut height, mut subsampling, mut color_space) = (0, 0, 0, 0);
        // SAFETY: the handle is live, `jpeg` is valid for `size` bytes and only read,
        // and the four out-pointers point at live c_ints.
        let status = unsafe {
            tjDecompressHeader3(
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
        let color_space = match color_space {
            TJCS_RGB => ColorSpace::Rgb,
            TJCS_YCBCR => ColorSpace::YCbCr,
            TJCS_GRAY => ColorSpace::Gray,
            TJCS_CMYK => ColorSpace::Cmyk,
            TJCS_YCCK => ColorSpace::Ycck,
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

    /// Decodes into `pixels`, which must hold exactly `width`×`height` pixels of 1
    /// (`gray`) or 3 bytes; `width`×`height` must be one of libjpeg-turbo's scaled
    /// sizes of the image (so it does not pick another).
    pub fn decompress(
        &self,
        jpeg: &[u8],
        pixels: &mut [u8],
        width: u32,
        height: u32,
        gray: bool,
    ) -> Result<(), Error> {
        let channels: u32 = if gray { 1 } else { 3 };
        let too_large = || Error {
            message: format!("a {width}×{height} image is too large to decode"),
        };
        let pitch = width.checked_mul(channels).ok_or_else(too_large)?;
        let (c_width, c_height, c_pitch) = (
            c_int::try_from(width).map_err(|_| too_large())?,
            c_int::try_from(height).map_err(|_| too_large())?,
            c_int::try_from(pitch).map_err(|_| too_large())?,
        );
        let expected =
            usize::try_from(u64::from(pitch) * u64::from(height)).map_err(|_| too_large())?;
        if pixels.len() != expected {
            return Err(Error {
                message: format!(
                    "a buffer of {} bytes for {expected} bytes of pixels",
                    pixels.len()
                ),
            });
        }
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| too_large())?;
        let format = if gray { TJPF_GRAY } else { TJPF_RGB };
        // SAFETY: the handle is live; `jpeg` is valid for `size` bytes and only read;
        // `pixels` holds exactly `c_height` rows of `c_pitch` bytes (checked above),
        // which is what libjpeg-turbo writes for a `c_width`×`c_height` output in
        // `format` (3 or 1 bytes a pixel).
        let status = unsafe {
            tjDecompress2(
                self.0,
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
        if status != 0 && self.is_fatal() {
            return Err(self.error());
        }
        Ok(())
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe {
            tjDestroy(self.0);
        }
    }
}
