//! This build has no libheif (build.rs did not find it): a file cannot be read, so
//! every call reports that.

use crate::{Decoded, Error, Header};

/// Never made: [`File::read`] always fails.
pub struct File<'a>(std::convert::Infallible, std::marker::PhantomData<&'a [u8]>);

impl File<'_> {
    pub fn read(_heif: &[u8], _max_side: u32) -> Result<Self, Error> {
        Err(Error {
            message: "this build of minilab has no libheif".into(),
            over_limit: false,
        })
    }

    pub fn header(&self) -> Result<Header, Error> {
        match self.0 {}
    }

    pub fn decode(&self) -> Result<Decoded, Error> {
        match self.0 {}
    }
}
