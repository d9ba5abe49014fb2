//! Crafted and hostile inputs: each ends in its stable code (or a correct image),
//! fast and without allocating what the header claims.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use image::{DynamicImage, Rgb, RgbImage};
use minilab_core::error::ErrorCode;
use minilab_core::recipe::{Fit, Format, Gravity, Operation, OutputSpec, Recipe};
use minilab_core::{Limits, RecipeBook, pipeline};

fn web() -> Recipe {
    RecipeBook::builtin().get("web").cloned().unwrap()
}

/// The code `bytes` fail with.
fn code(bytes: &[u8]) -> ErrorCode {
    pipeline::process(bytes, &web(), &Limits::default())
        .unwrap_err()
        .code
}

fn png(image: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
        .unwrap();
    out
}

/// A PNG whose IHDR claims `width`×`height`, with a valid CRC and no pixel data.
fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(&DynamicImage::new_rgb8(1, 1));
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A 16×16 PNG with an `iCCP` chunk holding `profile_bytes` zero bytes, deflated (a
/// few kilobytes per megabyte), between the header and the pixels.
fn png_with_profile(profile_bytes: usize) -> Vec<u8> {
    let plain = png(&DynamicImage::new_luma8(16, 16));
    let mut data = b"bomb\0\0".to_vec();
    data.extend(fdeflate::compress_to_vec(&vec![0; profile_bytes]));
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend(b"iCCP");
    chunk.extend(&data);
    let crc = crc32(&chunk[4..]);
    chunk.extend(crc.to_be_bytes());
    // After the signature (8 bytes) and IHDR (25), before the pixels.
    [&plain[..33], &chunk, &plain[33..]].concat()
}

fn jpeg(image: &RgbImage, exif_orientation: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 95);
    if let Some(orientation) = exif_orientation {
        // "Exif\0\0", a big-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT.
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        exif.extend_from_slice(&orientation.to_be_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        encoder.add_app_segment(1, &exif).unwrap();
    }
    let (w, h) = (
        u16::try_from(image.width()).unwrap(),
        u16::try_from(image.height()).unwrap(),
    );
    encoder
        .encode(image.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

#[test]
fn empty_truncated_and_foreign_files_have_their_codes() {
    assert_eq!(code(b""), ErrorCode::EmptyFile);
    let photo = jpeg(
        &RgbImage::from_fn(64, 64, |x, y| Rgb([x as u8 * 4, y as u8 * 4, 128])),
        None,
    );
    assert_eq!(code(&photo[..photo.len() - 40]), ErrorCode::CorruptImage);
    let picture = png(&DynamicImage::ImageRgb8(RgbImage::from_fn(
        64,
        64,
        |x, y| Rgb([x as u8, y as u8, 7]),
    )));
    assert_eq!(code(&picture[..picture.len() / 2]), ErrorCode::CorruptImage);
    for foreign in [
        &b"<!doctype html><html><body>hi</body></html>"[..],
        b"PK\x03\x04\x14\0\0\0\x08\0some zip entry",
        b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>",
        b"II*\0\x08\0\0\0\x01\0\0\x01\x03\0\x01\0\0\0\x10\0\0\0",
        b"MM\0*\0\0\0\x08",
    ] {
        assert_eq!(code(foreign), ErrorCode::UnsupportedFormat, "{:?}", String::from_utf8_lossy(foreign));
    }
}

#[test]
fn headers_claiming_huge_images_are_refused_before_decoding() {
    assert_eq!(
        code(&png_header_claiming(65535, 65535)),
        ErrorCode::DimensionsTooLarge
    );
    // Under the side limits but 256 MP: a few bytes that would decode to a gigabyte.
    assert_eq!(
        code(&png_header_claiming(16_000, 16_000)),
        ErrorCode::TooManyPixels
    );

    // A JPEG whose frame header (SOF0) claims 65535×65535.
    let mut bytes = jpeg(&RgbImage::new(8, 8), None);
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(code(&bytes), ErrorCode::DimensionsTooLarge);
}

#[test]
fn a_compression_bomb_is_bounded_by_the_pixel_limit() {
    // 12 000 × 8 000 black pixels compress to well under a megabyte.
    let bomb = png(&DynamicImage::new_luma8(12_000, 8_000));
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    // 96 MP is refused under a 50 MP limit, from the header alone...
    let tight = Limits {
        max_pixels: 50_000_000,
        ..Limits::default()
    };
    let err = pipeline::process(&bomb, &web(), &tight).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooManyPixels);
    // ...and under the default 100 MP it is an ordinary (large, black) image.
    let processed = pipeline::process(&bomb, &web(), &Limits::default()).unwrap();
    assert_eq!(
        (processed.outputs[0].width, processed.outputs[0].height),
        (1024, 683)
    );
}

#[test]
fn a_png_profile_that_inflates_past_the_bound_is_refused_before_decoding() {
    let bound = pipeline::MAX_PNG_PROFILE_BYTES;
    // Within the bound: a profile of zeros is no profile at all; the pixels are processed.
    assert!(pipeline::process(&png_with_profile(bound), &web(), &Limits::default()).is_ok());
    // A third of a megabyte that inflates to 64 MiB: refused before the decoder would
    // inflate and copy it (it allows up to its allocation limit, ~827 MiB).
    let bomb = png_with_profile(64 << 20);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let err = pipeline::process(&bomb, &web(), &Limits::default()).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooManyPixels, "{err}");
    assert!(err.message.contains("colour profile"), "{err}");
}

#[test]
fn a_cmyk_jpeg_is_converted_to_rgb() {
    let mut cmyk = Vec::new();
    // Cyan ink only.
    let pixels: Vec<u8> = (0..32 * 32).flat_map(|_| [255u8, 0, 0, 0]).collect();
    jpeg_encoder::Encoder::new(&mut cmyk, 95)
        .encode(&pixels, 32, 32, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let processed = pipeline::process(&cmyk, &web(), &Limits::default()).unwrap();
    let out = image::load_from_memory(&processed.outputs[0].bytes)
        .unwrap()
        .to_rgb8();
    assert_eq!(out.dimensions(), (32, 32));
    let Rgb([r, g, b]) = *out.get_pixel(16, 16);
    assert!(r < 80 && g > 150 && b > 150, "not cyan: {r} {g} {b}");
}

/// Where a red top-left quadrant ends up after each EXIF orientation, as
/// (columns, rows) of the output in quadrant units, and whether sides swap.
const ORIENTATIONS: [(u16, (u32, u32), bool); 8] = [
    (1, (0, 0), false),
    (2, (1, 0), false),
    (3, (1, 1), false),
    (4, (0, 1), false),
    (5, (0, 0), true),
    (6, (1, 0), true),
    (7, (1, 1), true),
    (8, (0, 1), true),
];

#[test]
fn every_exif_orientation_is_applied_on_both_decode_paths() {
    let (w, h) = (400, 200);
    let source = RgbImage::from_fn(w, h, |x, y| {
        if x < w / 2 && y < h / 2 {
            Rgb([220, 20, 20])
        } else {
            Rgb([20, 20, 220])
        }
    });
    let recipe = |operations| Recipe {
        name: "t".into(),
        colorspace: Default::default(),
        description: "t".into(),
        outputs: vec![OutputSpec::new("o", Format::Png, operations)],
    };
    // Full size (the image crate decodes) and fit 100 (the DCT-scaled decode).
    let full = recipe(Vec::new());
    let small = recipe(vec![Operation::Resize {
        width: 100,
        height: 100,
        fit: Fit::Fit,
        enlarge: false,
        gravity: Gravity::Center,
    }]);
    for (orientation, (qx, qy), swapped) in ORIENTATIONS {
        let bytes = jpeg(&source, Some(orientation));
        for recipe in [&full, &small] {
            let processed = pipeline::process(&bytes, recipe, &Limits::default()).unwrap();
            let out = image::load_from_memory(&processed.outputs[0].bytes)
                .unwrap()
                .to_rgb8();
            let (ow, oh) = out.dimensions();
            assert_eq!(ow > oh, !swapped, "orientation {orientation}: {ow}×{oh}");
            for (cx, cy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let Rgb([r, _, b]) = *out.get_pixel(ow / 4 + cx * ow / 2, oh / 4 + cy * oh / 2);
                let red = r > b;
                assert_eq!(
                    red,
                    (cx, cy) == (qx, qy),
                    "orientation {orientation}, quadrant {cx},{cy}, {ow}×{oh}"
                );
            }
        }
    }
}

#[test]
fn animations_are_limited_in_frames_and_cost_one_frame() {
    let gif = |count: usize| {
        let mut gif = Vec::new();
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        let frame = image::RgbaImage::from_pixel(16, 16, image::Rgba([10, 200, 10, 255]));
        encoder
            .encode_frames((0..count).map(|_| image::Frame::new(frame.clone())))
            .unwrap();
        drop(encoder);
        gif
    };
    let many = gif(3000);
    let err = pipeline::process(&many, &web(), &Limits::default()).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooManyFrames);
    assert!(err.message.contains("3000 frames"), "{}", err.message);
    // Under the limit only the first frame is decoded: animations are not processed.
    let roomy = Limits {
        max_frames: 5000,
        ..Limits::default()
    };
    let processed = pipeline::process(&many, &web(), &roomy).unwrap();
    assert_eq!(
        (processed.outputs[0].width, processed.outputs[0].height),
        (16, 16)
    );
    assert!(pipeline::process(&gif(10), &web(), &Limits::default()).is_ok());
}

/// An animated WebP of `count` 16×16 frames (lossless, each a copy of one frame),
/// built chunk by chunk: VP8X with the animation flag, ANIM, then ANMF per frame.
fn animated_webp(count: usize) -> Vec<u8> {
    let mut still = Vec::new();
    DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        16,
        16,
        image::Rgba([200, 10, 10, 255]),
    ))
    .write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut still))
    .unwrap();
    let vp8l = &still[12..]; // the still image's one chunk: "VP8L", size, data
    let chunk = |id: &[u8; 4], payload: &[u8]| {
        let mut out = id.to_vec();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        if payload.len() % 2 == 1 {
            out.push(0);
        }
        out
    };
    let u24 = |v: u32| v.to_le_bytes()[..3].to_vec();
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(
        b"VP8X",
        &[&[0x02u8, 0, 0, 0][..], &u24(15), &u24(15)].concat(),
    ));
    body.extend(chunk(b"ANIM", &[0, 0, 0, 0, 0, 0]));
    let frame = [
        &u24(0)[..],
        &u24(0),
        &u24(15),
        &u24(15),
        &u24(100),
        &[0],
        vp8l,
    ]
    .concat();
    for _ in 0..count {
        body.extend(chunk(b"ANMF", &frame));
    }
    let mut webp = b"RIFF".to_vec();
    webp.extend_from_slice(&(body.len() as u32).to_le_bytes());
    webp.extend(body);
    webp
}

#[test]
fn animated_webp_frames_are_counted_without_decoding() {
    let two = animated_webp(2);
    let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&two)).unwrap();
    assert!(
        decoder.has_animation(),
        "the crafted file is an animated WebP"
    );
    let processed = pipeline::process(&two, &web(), &Limits::default()).unwrap();
    assert_eq!(
        (processed.outputs[0].width, processed.outputs[0].height),
        (16, 16)
    );
    let err = pipeline::process(&animated_webp(3000), &web(), &Limits::default()).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooManyFrames);
    assert!(err.message.contains("3000 frames"), "{}", err.message);
    // A chunk length pointing past the end ends the walk; it does not loop or panic.
    let mut lying = animated_webp(3);
    let at = lying.len() - 30;
    lying[at..at + 4].copy_from_slice(b"ANMF");
    lying[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    match pipeline::process(&lying, &web(), &Limits::default()) {
        Ok(_) => {}
        Err(err) => assert_eq!(err.code, ErrorCode::CorruptImage, "{err}"),
    }
}

#[test]
fn the_time_budget_ends_work_between_stages() {
    let photo = jpeg(
        &RgbImage::from_fn(2000, 1500, |x, y| Rgb([x as u8, y as u8, 90])),
        None,
    );
    let none = Limits {
        time_budget_ms: 0,
        ..Limits::default()
    };
    let err = pipeline::process(&photo, &web(), &none).unwrap_err();
    assert_eq!(err.code, ErrorCode::TimeBudgetExceeded);
    assert!(pipeline::process(&photo, &web(), &Limits::default()).is_ok());
}
