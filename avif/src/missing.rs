//! This build has no libavif (build.rs did not find it): nothing can be encoded.

use crate::{Error, Pixels, Settings};

pub fn encode(
    _pixels: &Pixels,
    _settings: Settings,
    _icc: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    Err(Error {
        message: "this build of minilab has no libavif".into(),
    })
}
