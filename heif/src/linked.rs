//! The libheif calls minilab makes, declared from libheif's heif.h (1.13 and later
//! keep these signatures and constants), each wrapped safely.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::Once;

use crate::{Decoded, Error, Header};

/// heif.h: `struct heif_error`, returned by value.
#[repr(C)]
struct HeifError {
    code: c_int,
    subcode: c_int,
    message: *const c_char,
}

// heif.h: enum heif_error_code, heif_suberror_code, heif_colorspace, heif_chroma,
// heif_channel.
const HEIF_ERROR_OK: c_int = 0;
const HEIF_SUBERROR_SECURITY_LIMIT_EXCEEDED: c_int = 1000;
const HEIF_COLORSPACE_RGB: c_int = 1;
const HEIF_CHROMA_INTERLEAVED_RGB: c_int = 10;
const HEIF_CHROMA_INTERLEAVED_RGBA: c_int = 11;
const HEIF_CHANNEL_INTERLEAVED: c_int = 10;

// Linked by build.rs, as pkg-config says. The context, handle and image are opaque.
unsafe extern "C" {
    fn heif_init(params: *const c_void) -> HeifError;
    fn heif_context_alloc() -> *mut c_void;
    fn heif_context_free(context: *mut c_void);
    fn heif_context_set_maximum_image_size_limit(context: *mut c_void, maximum_width: c_int);
    fn heif_context_read_from_memory_without_copy(
        context: *mut c_void,
        memory: *const c_void,
        size: usize,
        options: *const c_void,
    ) -> HeifError;
    fn heif_context_get_primary_image_handle(
        context: *mut c_void,
        handle: *mut *mut c_void,
    ) -> HeifError;
    fn heif_image_handle_release(handle: *const c_void);
    fn heif_image_handle_get_width(handle: *const c_void) -> c_int;
    fn heif_image_handle_get_height(handle: *const c_void) -> c_int;
    fn heif_image_handle_has_alpha_channel(handle: *const c_void) -> c_int;
    fn heif_image_handle_get_raw_color_profile_size(handle: *const c_void) -> usize;
    fn heif_image_handle_get_raw_color_profile(
        handle: *const c_void,
        out_data: *mut c_void,
    ) -> HeifError;
    fn heif_decode_image(
        handle: *const c_void,
        image: *mut *mut c_void,
        colorspace: c_int,
        chroma: c_int,
        options: *const c_void,
    ) -> HeifError;
    fn heif_image_release(image: *const c_void);
    fn heif_image_get_width(image: *const c_void, channel: c_int) -> c_int;
    fn heif_image_get_height(image: *const c_void, channel: c_int) -> c_int;
    fn heif_image_get_plane_readonly(
        image: *const c_void,
        channel: c_int,
        stride: *mut c_int,
    ) -> *const u8;
}

/// `Ok` or libheif's error as an [`Error`].
fn check(err: HeifError) -> Result<(), Error> {
    if err.code == HEIF_ERROR_OK {
        return Ok(());
    }
    let message = if err.message.is_null() {
        format!("libheif error {}/{}", err.code, err.subcode)
    } else {
        // SAFETY: libheif's messages are NUL-terminated static strings or strings
        // owned by the context, which is live while this runs; copied at once.
        unsafe { CStr::from_ptr(err.message) }
            .to_string_lossy()
            .into_owned()
    };
    Err(Error {
        message,
        over_limit: err.subcode == HEIF_SUBERROR_SECURITY_LIMIT_EXCEEDED,
    })
}

fn error(message: String) -> Error {
    Error {
        message,
        over_limit: false,
    }
}

/// A HEIF file read from memory (which it borrows: libheif reads it without a
/// copy) and its primary image's handle; both released on drop.
pub struct File<'a> {
    context: *mut c_void,
    handle: *mut c_void,
    _bytes: PhantomData<&'a [u8]>,
}

impl<'a> File<'a> {
    pub fn read(heif: &'a [u8], max_side: u32) -> Result<Self, Error> {
        static INIT: Once = Once::new();
        // SAFETY: heif_init with NULL parameters has no preconditions; it loads the
        // decoder plugins once (reference-counted; never undone while the process
        // runs). A failure shows in the decode that needs the plugin.
        INIT.call_once(|| unsafe {
            let _ = heif_init(ptr::null());
        });
        // SAFETY: heif_context_alloc has no preconditions; it returns NULL on failure.
        let context = unsafe { heif_context_alloc() };
        if context.is_null() {
            return Err(error("libheif could not create a context".into()));
        }
        let mut file = File {
            context,
            handle: ptr::null_mut(),
            _bytes: PhantomData,
        };
        let side = c_int::try_from(max_side).unwrap_or(c_int::MAX);
        // SAFETY: the context is live.
        unsafe { heif_context_set_maximum_image_size_limit(file.context, side) };
        // SAFETY: the context is live; `heif` is valid for its length, only read,
        // and outlives the context (the `'a` borrow); NULL options are the defaults.
        check(unsafe {
            heif_context_read_from_memory_without_copy(
                file.context,
                heif.as_ptr().cast(),
                heif.len(),
                ptr::null(),
            )
        })?;
        // SAFETY: the context is live and holds a file; the handle pointer is
        // written on success and released in drop.
        check(unsafe { heif_context_get_primary_image_handle(file.context, &mut file.handle) })?;
        if file.handle.is_null() {
            return Err(error("the HEIF file has no primary image".into()));
        }
        Ok(file)
    }

    pub fn header(&self) -> Result<Header, Error> {
        // SAFETY: the handle is live for all four calls.
        let (width, height, alpha, icc_size) = unsafe {
            (
                heif_image_handle_get_width(self.handle),
                heif_image_handle_get_height(self.handle),
                heif_image_handle_has_alpha_channel(self.handle) != 0,
                heif_image_handle_get_raw_color_profile_size(self.handle),
            )
        };
        let icc = if icc_size > 0 {
            let mut icc = vec![0u8; icc_size];
            // SAFETY: the handle is live and `icc` holds exactly the size libheif
            // reported for the profile it copies.
            check(unsafe {
                heif_image_handle_get_raw_color_profile(self.handle, icc.as_mut_ptr().cast())
            })?;
            Some(icc)
        } else {
            None
        };
        Ok(Header {
            width: side(width)?,
            height: side(height)?,
            alpha,
            icc,
        })
    }

    pub fn decode(&self) -> Result<Decoded, Error> {
        // SAFETY: the handle is live.
        let alpha = unsafe { heif_image_handle_has_alpha_channel(self.handle) } != 0;
        let (chroma, channels) = if alpha {
            (HEIF_CHROMA_INTERLEAVED_RGBA, 4usize)
        } else {
            (HEIF_CHROMA_INTERLEAVED_RGB, 3usize)
        };
        let mut image = DecodedImage(ptr::null_mut());
        // SAFETY: the handle is live; the image pointer is written on success and
        // released by DecodedImage's drop; NULL options decode with the file's
        // transforms applied.
        check(unsafe {
            heif_decode_image(
                self.handle,
                &mut image.0,
                HEIF_COLORSPACE_RGB,
                chroma,
                ptr::null(),
            )
        })?;
        if image.0.is_null() {
            return Err(error("libheif decoded no image".into()));
        }
        let mut stride: c_int = 0;
        // SAFETY: the image is live; the plane pointer and stride it returns stay
        // valid until the image is released (after the copy below).
        let (width, height, plane) = unsafe {
            (
                heif_image_get_width(image.0, HEIF_CHANNEL_INTERLEAVED),
                heif_image_get_height(image.0, HEIF_CHANNEL_INTERLEAVED),
                heif_image_get_plane_readonly(image.0, HEIF_CHANNEL_INTERLEAVED, &mut stride),
            )
        };
        let (width, height) = (side(width)?, side(height)?);
        let row = width as usize * channels;
        let stride = usize::try_from(stride).unwrap_or(0);
        if plane.is_null() || stride < row {
            return Err(error("libheif returned no RGB plane".into()));
        }
        let mut pixels = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            // SAFETY: the plane holds `height` rows of `stride` bytes, of which the
            // first `row` (width × channels, checked ≤ stride) are the pixels.
            let line = unsafe { std::slice::from_raw_parts(plane.add(y * stride), row) };
            pixels.extend_from_slice(line);
        }
        Ok(Decoded {
            width,
            height,
            alpha,
            pixels,
        })
    }
}

impl Drop for File<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle (if any) and the context came from libheif and are
        // released once, the handle first.
        unsafe {
            if !self.handle.is_null() {
                heif_image_handle_release(self.handle);
            }
            heif_context_free(self.context);
        }
    }
}

/// A decoded image, released on drop.
struct DecodedImage(*mut c_void);

impl Drop for DecodedImage {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the image came from heif_decode_image and is released once.
            unsafe { heif_image_release(self.0) };
        }
    }
}

fn side(v: c_int) -> Result<u32, Error> {
    u32::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| error(format!("the HEIF image declares a side of {v} pixels")))
}
