//! This build has no libjpeg-turbo (build.rs did not find it): a decompressor cannot
//! be made, so every call reports that and callers decode another way.

use crate::{Error, Header, Image};

/// Never made: [`Decompressor::new`] always fails.
pub enum Decompressor {}

impl Decompressor {
    pub fn new() -> Result<Self, Error> {
        Err(Error {
            message: "this build of minilab has no libjpeg-turbo".into(),
        })
    }

    pub fn header(&self, _jpeg: &[u8]) -> Result<Header, Error> {
        match *self {}
    }

    pub fn decompress(
        &self,
        _jpeg: &[u8],
        _pixels: &mut [u8],
        _width: u32,
        _height: u32,
        _gray: bool,
    ) -> Result<(), Error> {
        match *self {}
    }
}

/// Never made: [`Compressor::new`] always fails.
pub enum Compressor {}

impl Compressor {
    pub fn new() -> Result<Self, Error> {
        Err(Error {
            message: "this build of minilab has no libjpeg-turbo".into(),
        })
    }

    pub fn compress(&self, _pixels: &[u8], _image: &Image, _quality: u8) -> Result<Vec<u8>, Error> {
        match *self {}
    }
}
