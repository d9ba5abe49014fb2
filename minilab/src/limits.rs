//! Limits as flags: per image (shared by `up`, `worker` and `process`) and per
//! client of the API (shared by `up` and `api`).

use clap::Args;
use minilab_api::limits::{Rate, RateLimits};
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
    /// Most frames in an animated GIF or WebP (`too-many-frames`); WebP and GIF
    /// outputs keep them, their frames × pixels counted against --max-pixels.
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

/// What one client may ask of the API, shared by `api` and `up`. Each flag left out
/// takes the command's default: `api`'s [`RateLimits::API`]; `up` on loopback none at
/// all (one person on their own machine), served to a network `api`'s.
#[derive(Args, Debug, Clone)]
pub struct ClientLimitArgs {
    /// Upload tickets one client may get per minute on average (0: no limit); beyond
    /// it, 429 `rate-limited` with Retry-After [api: 30; up on loopback: 0].
    #[arg(long, env = "MINILAB_TICKETS_PER_MINUTE")]
    tickets_per_minute: Option<u32>,
    /// Upload tickets one client may get at once (an album) before the rate applies
    /// [api: 30].
    #[arg(long, env = "MINILAB_TICKET_BURST")]
    ticket_burst: Option<u32>,
    /// Status reads one client may make per minute on average (0: no limit); a long
    /// poll is charged one more read per second it waits [api: 600; up on loopback: 0].
    #[arg(long, env = "MINILAB_READS_PER_MINUTE")]
    reads_per_minute: Option<u32>,
    /// Status reads one client may make at once before the rate applies [api: 120].
    #[arg(long, env = "MINILAB_READ_BURST")]
    read_burst: Option<u32>,
    /// Bytes of uploads one client may be issued tickets for per hour, charged when
    /// the ticket is issued (0: no limit); beyond it, 429 `upload-budget-exceeded`
    /// [api: 2 GiB; up on loopback: 0].
    #[arg(long, env = "MINILAB_UPLOAD_BYTES_PER_HOUR")]
    upload_bytes_per_hour: Option<u64>,
    /// Proxies in front of the API that each append the address they saw to
    /// X-Forwarded-For (an ALB: 1; CloudFront and an ALB: 2): the client is the entry
    /// that many places from the right. 0: the peer address is the client, and the
    /// header is ignored.
    #[arg(long, env = "MINILAB_TRUSTED_PROXY_HOPS", default_value_t = 0)]
    trusted_proxy_hops: usize,
}

impl ClientLimitArgs {
    /// The limits: each flag given, else `defaults`' value.
    pub fn rate_limits(&self, defaults: RateLimits) -> RateLimits {
        RateLimits {
            tickets: Rate {
                per_minute: self
                    .tickets_per_minute
                    .unwrap_or(defaults.tickets.per_minute),
                burst: self.ticket_burst.unwrap_or(defaults.tickets.burst),
            },
            reads: Rate {
                per_minute: self.reads_per_minute.unwrap_or(defaults.reads.per_minute),
                burst: self.read_burst.unwrap_or(defaults.reads.burst),
            },
            upload_bytes_per_hour: self
                .upload_bytes_per_hour
                .unwrap_or(defaults.upload_bytes_per_hour),
            trusted_hops: self.trusted_proxy_hops,
        }
    }
}
