//! HEIC/HEIF decoding through the system's libheif (with libde265 for HEVC), the
//! library libvips and GIMP use. iPhones save photos as HEIC by default.
//!
//! Only what minilab needs: read the primary image's size (its transforms, `irot`
//! and `imir`, applied, as they are when decoding) and ICC profile without decoding,
//! then decode it to 8-bit RGB or RGBA in a buffer this crate allocates.
//!
//! The library is found at build time (build.rs, through pkg-config). Where it is
//! missing the crate still builds: [`AVAILABLE`] is false and every call returns an
//! error.

#[cfg(has_libheif)]
#[path = "linked.rs"]
mod sys;
#[cfg(not(has_libheif))]
#[path = "missing.rs"]
mod sys;

/// Whether this build is linked to libheif.
pub const AVAILABLE: bool = cfg!(has_libheif);

/// What went wrong, with libheif's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    /// libheif refused the file for one of its security limits (an image too large,
    /// too many items), not for damage.
    pub over_limit: bool,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The primary image as the file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The size once its transforms are applied (what [`decode`] returns).
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
    /// An embedded ICC profile (`prof` or `rICC`); `None` for none or `nclx` only.
    pub icc: Option<Vec<u8>>,
}

/// Pixels decoded by [`decode`]: 8-bit RGB (3 bytes a pixel) or RGBA (4), rows
/// packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
    pub pixels: Vec<u8>,
}

/// Whether `bytes` start like a HEIF file of HEVC images (an `ftyp` box whose major
/// brand is one of HEIC's), whatever this build can decode. AVIF (`avif`, `avis`)
/// is not HEIC.
pub fn is_heic(bytes: &[u8]) -> bool {
    const BRANDS: [&[u8; 4]; 6] = [b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"];
    bytes.get(4..8) == Some(b"ftyp")
        && bytes
            .get(8..12)
            .is_some_and(|brand| BRANDS.iter().any(|b| b.as_slice() == brand))
}

/// A HEIF file read (parsed, nothing decoded), for its header and then its pixels
/// without parsing it twice.
pub struct Heif<'a>(sys::File<'a>);

/// Reads `heif`, refusing (as [`Error::over_limit`]) an image wider or taller than
/// `max_side`, checked by libheif before any pixel is decoded.
pub fn open(heif: &[u8], max_side: u32) -> Result<Heif<'_>, Error> {
    sys::File::read(heif, max_side).map(Heif)
}

impl Heif<'_> {
    /// The primary image's header.
    pub fn header(&self) -> Result<Header, Error> {
        self.0.header()
    }

    /// The primary image's pixels, its transforms applied.
    pub fn decode(&self) -> Result<Decoded, Error> {
        self.0.decode()
    }
}

/// Opens and decodes in one step: [`open`], then [`Heif::decode`].
pub fn decode(heif: &[u8], max_side: u32) -> Result<Decoded, Error> {
    open(heif, max_side)?.decode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heic_is_told_by_its_brand() {
        let with = |brand: &[u8; 4]| [&[0u8, 0, 0, 24][..], b"ftyp", brand, &[0, 0, 0, 0]].concat();
        assert!(is_heic(&with(b"heic")));
        assert!(is_heic(&with(b"heix")));
        assert!(!is_heic(&with(b"avif")));
        assert!(!is_heic(&with(b"isom")));
        assert!(!is_heic(b"\xff\xd8\xff"));
    }

    fn photo(name: &str) -> Vec<u8> {
        let path =
            std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../tests/data/images")
                .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_header_has_the_turned_size_and_the_profile() {
        if !AVAILABLE {
            eprintln!("skipped: this build has no libheif");
            return;
        }
        let header = |name: &str| open(&photo(name), 4000).and_then(|file| file.header());
        let turned = header("heic-rotate6.heic").expect("reads");
        assert_eq!(
            (turned.width, turned.height, turned.alpha),
            (1500, 2000, false)
        );
        assert_eq!(turned.icc, None);
        let p3 = header("heic-p3.heic").expect("reads");
        assert_eq!((p3.width, p3.height), (1600, 1200));
        let icc = p3.icc.expect("a profile");
        assert_eq!(&icc[36..40], b"acsp", "an ICC profile's signature");
        let decoded = decode(&photo("heic-rotate6.heic"), 4000).expect("decodes");
        assert_eq!((decoded.width, decoded.height), (1500, 2000));
        assert_eq!(decoded.pixels.len(), 1500 * 2000 * 3);
        let refused = decode(&photo("heic-rotate6.heic"), 1000).unwrap_err();
        assert!(refused.over_limit, "{refused}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(open(b"", 100).is_err());
        assert!(decode(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", 100).is_err());
    }
}
