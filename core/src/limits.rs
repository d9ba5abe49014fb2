//! What one image may cost. Every decode runs under these, checked against the
//! header before any pixel buffer is allocated.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest source object, in bytes.
    pub max_bytes: u64,
    /// Widest source image, in pixels.
    pub max_width: u32,
    /// Tallest source image, in pixels.
    pub max_height: u32,
    /// Most pixels (width × height) in a source image.
    pub max_pixels: u64,
    /// Most frames in an animated source. An animation kept by WebP and GIF
    /// outputs counts its frames × pixels against `max_pixels`, in and out.
    pub max_frames: u32,
    /// Most milliseconds one image may take, checked between stages.
    pub time_budget_ms: u64,
}

impl Limits {
    /// 25 MiB, as the upload policy allows.
    pub const DEFAULT_MAX_BYTES: u64 = 25 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_width: 16_384,
            max_height: 16_384,
            // 100 MP: a 24 MP camera photo fits with a wide margin; RGBA at this size
            // is 400 MB, the most one decode may hold.
            max_pixels: 100_000_000,
            max_frames: 1000,
            // A 24 MP photo through `web` takes about 0.15 s on one core.
            time_budget_ms: 30_000,
        }
    }
}
