//! AVIF encoding through the system's libavif with libaom, the fastest AV1 encoder
//! measured here at the size of JPEG q80 (bench/avif.py; docs/architecture.md).
//!
//! Only what minilab needs: 8-bit RGB or RGBA in, 4:2:0 AVIF out, at a quantizer
//! and libaom speed the caller chooses, on one thread (a worker encodes one image
//! per core), optionally with an ICC profile.
//!
//! The library is found at build time (build.rs, through pkg-config). Where it is
//! missing the crate still builds: [`AVAILABLE`] is false and [`encode`] fails.

#[cfg(has_libavif)]
#[path = "linked.rs"]
mod sys;
#[cfg(not(has_libavif))]
#[path = "missing.rs"]
mod sys;

/// Whether this build is linked to libavif.
pub const AVAILABLE: bool = cfg!(has_libavif);

/// What went wrong, with libavif's own words.
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

/// 8-bit pixels, rows packed: RGB (3 bytes a pixel) or RGBA (4).
pub struct Pixels<'a> {
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
    pub data: &'a [u8],
}

/// How to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// AV1 quantizer, 0 (best) to 63.
    pub quantizer: u8,
    /// libaom's speed (`cpu-used`), 0 (slowest) to 10.
    pub speed: u8,
}

/// The quantizer for a 1–100 quality: linear, 100 → 0 and 1 → 62. At 80 it is 13,
/// where libaom at speed 9 matches JPEG q80's SSIM (bench/avif.py).
pub fn quantizer_for_quality(quality: u8) -> u8 {
    let quality = u32::from(quality.clamp(1, 100));
    (((100 - quality) * 63 + 50) / 100).min(63) as u8
}

/// Encodes `pixels` as AVIF (4:2:0, full range, tagged sRGB unless `icc` names
/// their colour space).
pub fn encode(pixels: &Pixels, settings: Settings, icc: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let channels = if pixels.alpha { 4 } else { 3 };
    let expected = u64::from(pixels.width) * u64::from(pixels.height) * channels;
    if pixels.width == 0 || pixels.height == 0 || pixels.data.len() as u64 != expected {
        return Err(Error {
            message: format!(
                "{} bytes for {}×{} pixels of {channels} bytes",
                pixels.data.len(),
                pixels.width,
                pixels.height
            ),
        });
    }
    sys::encode(pixels, settings, icc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_maps_to_a_quantizer_that_falls_as_quality_rises() {
        assert_eq!(quantizer_for_quality(100), 0);
        assert_eq!(quantizer_for_quality(80), 13);
        assert_eq!(quantizer_for_quality(1), 62);
        assert!(quantizer_for_quality(50) > quantizer_for_quality(60));
    }

    #[test]
    fn an_image_encodes_to_an_avif_file_of_its_size() {
        if !AVAILABLE {
            eprintln!("skipped: this build has no libavif");
            return;
        }
        let data: Vec<u8> = (0..64 * 48)
            .flat_map(|i| [(i % 64 * 4) as u8, (i / 64 * 5) as u8, 128])
            .collect();
        let pixels = Pixels {
            width: 64,
            height: 48,
            alpha: false,
            data: &data,
        };
        let avif = encode(
            &pixels,
            Settings {
                quantizer: 13,
                speed: 9,
            },
            None,
        )
        .expect("encodes");
        assert_eq!(&avif[4..12], b"ftypavif");
        let ispe = avif
            .windows(4)
            .position(|w| w == b"ispe")
            .expect("an ispe box");
        let side = |at: usize| u32::from_be_bytes(avif[at..at + 4].try_into().unwrap_or_default());
        assert_eq!((side(ispe + 8), side(ispe + 12)), (64, 48));
        let short = Pixels {
            data: &data[1..],
            ..pixels
        };
        assert!(
            encode(
                &short,
                Settings {
                    quantizer: 13,
                    speed: 9
                },
                None
            )
            .is_err()
        );
    }
}
