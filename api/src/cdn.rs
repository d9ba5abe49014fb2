//! A CDN in front of `/i/` keeps each image for a year: when an upload is deleted,
//! it is asked to forget the upload's addresses (on CloudFront, an invalidation of
//! `/i/{id}/*`; see the `minilab` binary's cdn module). Best effort, like
//! tracking: bounded in time, a failure logged and counted, never a failed DELETE
//! (the images are gone from S3 by then, and the CDN lets them go when they expire).

use crate::best_effort::{Outcomes, bounded};
use crate::metrics::ApiMetrics;
use crate::tracking::TrackError;
use async_trait::async_trait;
use minilab_core::{UploadId, keys};
use std::time::Duration;

#[async_trait]
pub trait CdnPurge: Send + Sync {
    /// Asks the CDN to drop every copy under `pattern` (`/i/{id}/*`).
    async fn purge(&self, pattern: &str) -> Result<(), TrackError>;
}

/// The longest a CDN may take to take the request.
pub const PURGE_TIMEOUT: Duration = Duration::from_secs(5);
/// `minilab_api_cdn_invalidations_total`'s labels.
const PURGED: Outcomes = Outcomes {
    done: "asked",
    failed: "failed",
    timed_out: "timeout",
};

/// The addresses of upload `id`'s images, as a CDN's wildcard: `/i/{id}/*`.
pub fn pattern(id: UploadId) -> String {
    format!("{}*", keys::image_prefix(id))
}

/// Asks `cdn` to forget upload `id`'s images, counting the result as
/// `minilab_api_cdn_invalidations_total`.
pub async fn purge(cdn: &dyn CdnPurge, metrics: &ApiMetrics, id: UploadId) {
    let pattern = pattern(id);
    let what = "asking the CDN to forget the deleted images";
    let call = cdn.purge(&pattern);
    metrics.invalidated(bounded(what, id, PURGE_TIMEOUT, PURGED, call).await);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_covers_every_address_of_the_upload_and_no_other() {
        let id = UploadId::new(chrono::Utc::now());
        let pattern = pattern(id);
        assert_eq!(pattern, format!("/i/{id}/*"));
        let file = |revision, width| keys::OutputFile {
            name: "large",
            revision,
            width,
            format: minilab_core::recipe::Format::Jpeg,
        };
        for file in [file(0, None), file(2, Some(320))] {
            let path = keys::image_path(&file.key(id));
            assert!(path.starts_with(pattern.trim_end_matches('*')), "{path}");
        }
    }
}
