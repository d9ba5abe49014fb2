//! The TurboJPEG 2.x calls minilab makes, declared from libjpeg-turbo's turbojpeg.h
//! (2.0 and later keep these signatures and constants), each wrapped safely.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uchar, c_ulong, c_void};

use crate::{ColorSpace, Error, Header, Image};

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
// enum TJSAMP, and the flags.
const TJSAMP_444: c_int = 0;
const TJSAMP_420: c_int = 2;
const TJSAMP_GRAY: c_int = 3;
const TJFLAG_PROGRESSIVE: c_int = 16384;

// Linked by build.rs, as pkg-config says.
unsafe extern "C" {
    fn tjInitDecompress() -> Handle;
    fn tjInitCompress() -> Handle;
    fn tjFree(buffer: *mut c_uchar);
    fn tjCompress2(
        handle: Handle,
        source: *const c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        jpeg: *mut *mut c_uchar,
        jpeg_size: *mut c_ulong,
        subsampling: c_int,
        quality: c_int,
        flags: c_int,
    ) -> c_int;
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

/// An owned TurboJPEG handle, destroyed on drop.
struct Owned(Handle);

impl Owned {
    fn new(handle: Handle, what: &str) -> Result<Self, Error> {
        if handle.is_null() {
            return Err(Error {
                message: format!("libjpeg-turbo could not create a {what}"),
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
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress or tjInitCompress and is
        // destroyed once.
        unsafe {
            tjDestroy(self.0);
        }
    }
}

/// A TurboJPEG decompressor.
pub struct Decompressor(Owned);

impl Decompressor {
    pub fn new() -> Result<Self, Error> {
        // SAFETY: tjInitDecompress has no preconditions; it returns NULL on failure.
        Owned::new(unsafe { tjInitDecompress() }, "decompressor").map(Self)
    }

    fn error(&self) -> Error {
        self.0.error()
    }

    fn is_fatal(&self) -> bool {
        // SAFETY: the handle is live.
        unsafe { tjGetErrorCode(self.0.0) != TJERR_WARNING }
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
                self.0.0,
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
                self.0.0,
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

/// A TurboJPEG compressor.
pub struct Compressor(Owned);

impl Compressor {
    pub fn new() -> Result<Self, Error> {
        // SAFETY: tjInitCompress has no preconditions; it returns NULL on failure.
        Owned::new(unsafe { tjInitCompress() }, "compressor").map(Self)
    }

    /// Encodes `pixels` (`width`×`height`, 3 bytes a pixel RGB or 1 grey) at
    /// `quality` (1-100), chroma at half resolution when `subsample` (RGB only).
    pub fn compress(&self, pixels: &[u8], image: &Image, quality: u8) -> Result<Vec<u8>, Error> {
        let channels: u32 = if image.gray { 1 } else { 3 };
        let too_large = || Error {
            message: format!(
                "a {}×{} image is too large to encode",
                image.width, image.height
            ),
        };
        let pitch = image.width.checked_mul(channels).ok_or_else(too_large)?;
        let expected =
            usize::try_from(u64::from(pitch) * u64::from(image.height)).map_err(|_| too_large())?;
        if pixels.len() != expected || expected == 0 {
            return Err(Error {
                message: format!(
                    "{} bytes of pixels for a {}×{} image",
                    pixels.len(),
                    image.width,
                    image.height
                ),
            });
        }
        let (c_width, c_height, c_pitch) = (
            c_int::try_from(image.width).map_err(|_| too_large())?,
            c_int::try_from(image.height).map_err(|_| too_large())?,
            c_int::try_from(pitch).map_err(|_| too_large())?,
        );
        let (format, subsampling) = match (image.gray, image.subsample) {
            (true, _) => (TJPF_GRAY, TJSAMP_GRAY),
            (false, true) => (TJPF_RGB, TJSAMP_420),
            (false, false) => (TJPF_RGB, TJSAMP_444),
        };
        let flags = if image.progressive {
            TJFLAG_PROGRESSIVE
        } else {
            0
        };
        let mut jpeg: *mut c_uchar = std::ptr::null_mut();
        let mut size: c_ulong = 0;
        // SAFETY: the handle is live; `pixels` holds exactly `c_height` rows of
        // `c_pitch` bytes in `format` (checked above) and is only read; with a NULL
        // `jpeg`, libjpeg-turbo allocates the output (tjAlloc) and sets `jpeg` and
        // `size`, and the buffer is freed below with tjFree, once.
        let status = unsafe {
            tjCompress2(
                self.0.0,
                pixels.as_ptr(),
                c_width,
                c_pitch,
                c_height,
                format,
                &mut jpeg,
                &mut size,
                subsampling,
                c_int::from(quality.clamp(1, 100)),
                flags,
            )
        };
        let result = if status != 0 || jpeg.is_null() {
            Err(self.0.error())
        } else {
            usize::try_from(size).map_err(|_| too_large()).map(|size| {
                // SAFETY: on success `jpeg` points at `size` bytes libjpeg-turbo wrote.
                unsafe { std::slice::from_raw_parts(jpeg, size) }.to_vec()
            })
        };
        if !jpeg.is_null() {
            // SAFETY: `jpeg` was allocated by libjpeg-turbo and is not used after this.
            unsafe { tjFree(jpeg) };
        }
        result
    }
}
