//! The per-image limits as flags, shared by `up`, `worker` and `process`.

use clap::Args;
use minilab_core::Limits;

/// What one image may cost. Each limit refuses an image with its own error code.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Widest source image, in pixels (`dimensions-too-large`).
    #[arg(long, env = "MINILAB_MAX_WIDTH", default_value_t = Limits::default().max_width,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_width: u32,
    /// Tallest source image, in pixels (`dimensions-too-large`).
    #[arg(long, env = "MINILAB_MAX_HEIGHT", default_value_t = Limits::default().max_height,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_height: u32,
    /// Most pixels (width × height) in a source image (`too-many-pixels`).
    #[arg(long, env = "MINILAB_MAX_PIXELS", default_value_t = Limits::default().max_pixels,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_pixels: u64,
    /// Most frames in an animated GIF or WebP (`too-many-frames`); the first is processed.
    #[arg(long, env = "MINILAB_MAX_FRAMES", default_value_t = Limits::default().max_frames,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_frames: u32,
    /// Most milliseconds one image may take (`time-budget-exceeded`).
    #[arg(long, env = "MINILAB_TIME_BUDGET_MS", default_value_t = Limits::default().time_budget_ms,
          value_parser = clap::value_parser!(u64).range(1..))]
    time_budget_ms: u64,
}

impl LimitArgs {
    /// The limits, with `max_bytes` from the upload size flag.
    pub fn limits(&self, max_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            max_width: self.max_width,
            max_height: self.max_height,
            max_pixels: self.max_pixels,
            max_frames: self.max_frames,
            time_budget_ms: self.time_budget_ms,
        }
    }
}
