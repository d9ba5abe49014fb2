//! The libavif 0.11 calls minilab makes, declared from its avif.h, each wrapped
//! safely. libavif allocates the image and the encoder; only the leading fields
//! minilab sets are declared for those. The RGB image lives here, so its whole
//! 0.11 layout is (build.rs accepts 0.11.x only).

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

use crate::{Error, Pixels, Settings};

/// avif.h: `avifRWData`.
#[repr(C)]
struct RwData {
    data: *mut u8,
    size: usize,
}

/// avif.h: the leading fields of `avifImage`, up to its colour description.
#[repr(C)]
struct ImagePrefix {
    width: u32,
    height: u32,
    depth: u32,
    yuv_format: c_int,
    yuv_range: c_int,
    yuv_chroma_sample_position: c_int,
    yuv_planes: [*mut u8; 3],
    yuv_row_bytes: [u32; 3],
    image_owns_yuv_planes: c_int,
    alpha_plane: *mut u8,
    alpha_row_bytes: u32,
    image_owns_alpha_plane: c_int,
    alpha_premultiplied: c_int,
    icc: RwData,
    color_primaries: u16,
    transfer_characteristics: u16,
    matrix_coefficients: u16,
}

/// avif.h (0.11): `avifRGBImage`, whole.
#[repr(C)]
struct RgbImage {
    width: u32,
    height: u32,
    depth: u32,
    format: c_int,
    chroma_upsampling: c_int,
    chroma_downsampling: c_int,
    avoid_libyuv: c_int,
    ignore_alpha: c_int,
    alpha_premultiplied: c_int,
    is_float: c_int,
    pixels: *mut u8,
    row_bytes: u32,
}

/// avif.h: the leading fields of `avifEncoder`, up to the quantizers.
#[repr(C)]
struct EncoderPrefix {
    codec_choice: c_int,
    max_threads: c_int,
    speed: c_int,
    keyframe_interval: c_int,
    timescale: u64,
    min_quantizer: c_int,
    max_quantizer: c_int,
}

// avif.h: avifResult, avifPixelFormat, avifRGBFormat, avifCodecChoice and the CICP
// code points of sRGB as avifenc writes them for an untagged PNG.
const AVIF_RESULT_OK: c_int = 0;
const AVIF_PIXEL_FORMAT_YUV420: c_int = 3;
const AVIF_RGB_FORMAT_RGB: c_int = 0;
const AVIF_RGB_FORMAT_RGBA: c_int = 1;
const AVIF_CODEC_CHOICE_AOM: c_int = 1;
const AVIF_COLOR_PRIMARIES_BT709: u16 = 1;
const AVIF_TRANSFER_CHARACTERISTICS_SRGB: u16 = 13;
const AVIF_MATRIX_COEFFICIENTS_BT601: u16 = 6;

// Linked by build.rs, as pkg-config says.
unsafe extern "C" {
    fn avifImageCreate(width: u32, height: u32, depth: u32, format: c_int) -> *mut ImagePrefix;
    fn avifImageDestroy(image: *mut ImagePrefix);
    fn avifImageSetProfileICC(image: *mut ImagePrefix, icc: *const u8, size: usize);
    fn avifRGBImageSetDefaults(rgb: *mut RgbImage, image: *const ImagePrefix);
    fn avifImageRGBToYUV(image: *mut ImagePrefix, rgb: *const RgbImage) -> c_int;
    fn avifEncoderCreate() -> *mut EncoderPrefix;
    fn avifEncoderWrite(
        encoder: *mut EncoderPrefix,
        image: *const ImagePrefix,
        output: *mut RwData,
    ) -> c_int;
    fn avifEncoderDestroy(encoder: *mut EncoderPrefix);
    fn avifRWDataFree(data: *mut RwData);
    fn avifResultToString(result: c_int) -> *const c_char;
}

fn check(result: c_int, what: &str) -> Result<(), Error> {
    if result == AVIF_RESULT_OK {
        return Ok(());
    }
    // SAFETY: avifResultToString returns a static NUL-terminated string for any value.
    let text = unsafe { CStr::from_ptr(avifResultToString(result)) };
    Err(Error {
        message: format!("{what}: {}", text.to_string_lossy()),
    })
}

/// An image libavif allocated (never NULL), destroyed on drop.
struct Image(*mut ImagePrefix);

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the image came from avifImageCreate and is destroyed once.
        unsafe { avifImageDestroy(self.0) }
    }
}

/// An encoder libavif allocated (never NULL), destroyed on drop.
struct Encoder(*mut EncoderPrefix);

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: the encoder came from avifEncoderCreate and is destroyed once.
        unsafe { avifEncoderDestroy(self.0) }
    }
}

pub fn encode(pixels: &Pixels, settings: Settings, icc: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let image = yuv_image(pixels, icc)?;
    let encoder = encoder(settings)?;
    write(&encoder, &image)
}

fn failed(what: &str) -> Error {
    Error {
        message: format!("libavif could not {what}"),
    }
}

/// `pixels` as a 4:2:0 sRGB image, tagged with `icc` when given.
fn yuv_image(pixels: &Pixels, icc: Option<&[u8]>) -> Result<Image, Error> {
    // SAFETY: no preconditions; NULL on failure.
    let created =
        unsafe { avifImageCreate(pixels.width, pixels.height, 8, AVIF_PIXEL_FORMAT_YUV420) };
    if created.is_null() {
        return Err(failed("create an image"));
    }
    let image = Image(created);
    // SAFETY: the image is live and these fields are its leading ones (ImagePrefix).
    unsafe {
        (*image.0).color_primaries = AVIF_COLOR_PRIMARIES_BT709;
        (*image.0).transfer_characteristics = AVIF_TRANSFER_CHARACTERISTICS_SRGB;
        (*image.0).matrix_coefficients = AVIF_MATRIX_COEFFICIENTS_BT601;
    }
    if let Some(icc) = icc {
        // SAFETY: the image is live; libavif copies `icc`, valid for its length.
        unsafe { avifImageSetProfileICC(image.0, icc.as_ptr(), icc.len()) };
    }
    let channels: u32 = if pixels.alpha { 4 } else { 3 };
    let mut rgb = RgbImage {
        width: 0,
        height: 0,
        depth: 0,
        format: 0,
        chroma_upsampling: 0,
        chroma_downsampling: 0,
        avoid_libyuv: 0,
        ignore_alpha: 0,
        alpha_premultiplied: 0,
        is_float: 0,
        pixels: std::ptr::null_mut(),
        row_bytes: 0,
    };
    // SAFETY: `rgb` is a whole 0.11 avifRGBImage; the image is live.
    unsafe { avifRGBImageSetDefaults(&mut rgb, image.0) };
    rgb.format = if pixels.alpha {
        AVIF_RGB_FORMAT_RGBA
    } else {
        AVIF_RGB_FORMAT_RGB
    };
    rgb.pixels = pixels.data.as_ptr().cast_mut();
    rgb.row_bytes = pixels.width * channels;
    // SAFETY: the image is live; `rgb` describes `pixels.data`, which holds
    // width × height pixels of `channels` bytes (checked by the caller) and which
    // libavif only reads (its field is not const, the conversion never writes it).
    let converted = unsafe { avifImageRGBToYUV(image.0, &rgb) };
    check(converted, "converting to YUV")?;
    Ok(image)
}

/// An AOM encoder on one thread at `settings`' speed and quantizer.
fn encoder(settings: Settings) -> Result<Encoder, Error> {
    // SAFETY: no preconditions; NULL on failure.
    let created = unsafe { avifEncoderCreate() };
    if created.is_null() {
        return Err(failed("create an encoder"));
    }
    let encoder = Encoder(created);
    let quantizer = c_int::from(settings.quantizer.min(63));
    // SAFETY: the encoder is live and these are its leading fields (EncoderPrefix).
    unsafe {
        (*encoder.0).codec_choice = AVIF_CODEC_CHOICE_AOM;
        (*encoder.0).max_threads = 1;
        (*encoder.0).speed = c_int::from(settings.speed.min(10));
        (*encoder.0).min_quantizer = quantizer;
        (*encoder.0).max_quantizer = quantizer;
    }
    Ok(encoder)
}

/// The AVIF file of `image`.
fn write(encoder: &Encoder, image: &Image) -> Result<Vec<u8>, Error> {
    let mut output = RwData {
        data: std::ptr::null_mut(),
        size: 0,
    };
    // SAFETY: the encoder and the image are live; `output` is an empty avifRWData
    // that libavif fills and that is freed below.
    let written = unsafe { avifEncoderWrite(encoder.0, image.0, &mut output) };
    let bytes = if written == AVIF_RESULT_OK && !output.data.is_null() {
        // SAFETY: on success libavif's output holds `size` bytes at `data`.
        unsafe { std::slice::from_raw_parts(output.data, output.size) }.to_vec()
    } else {
        Vec::new()
    };
    // SAFETY: `output` is an avifRWData libavif may have filled; freed once.
    unsafe { avifRWDataFree(&mut output) };
    check(written, "encoding")?;
    Ok(bytes)
}
