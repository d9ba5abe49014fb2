//! On a cluster the API tells a tracker (an ImageJob per upload) about each ticket it
//! issues. Tracking is best effort: it runs after the answer, bounded in time, and a
//! failure is logged and counted, never returned to the browser.

use crate::best_effort::{Outcomes, bounded};
use crate::metrics::ApiMetrics;
use async_trait::async_trait;
use minilab_core::UploadId;
pub use minilab_core::upload::TrackedUpload;
use std::sync::Arc;
use std::time::Duration;

/// Why a tracker could not record an upload: its own error (the Kubernetes API's,
/// say), logged and counted.
pub type TrackError = Box<dyn std::error::Error + Send + Sync>;

#[async_trait]
pub trait UploadTracker: Send + Sync {
    async fn track(&self, upload: &TrackedUpload) -> Result<(), TrackError>;
    /// Removes the upload's record (its ImageJob): the upload was deleted. A record
    /// that is gone already is no error.
    async fn forget(&self, id: UploadId) -> Result<(), TrackError>;
}

/// The longest a tracker may take before the attempt counts as failed.
pub const TRACKING_TIMEOUT: Duration = Duration::from_secs(5);
/// `minilab_api_kube_tracking_total`'s labels for recording an upload and for forgetting it.
const TRACKED: Outcomes = Outcomes {
    done: "ok",
    failed: "failed",
    timed_out: "timeout",
};
const FORGOTTEN: Outcomes = Outcomes {
    done: "forgotten",
    failed: "forget-failed",
    timed_out: "forget-timeout",
};

/// Tracks `upload` in the background.
pub fn spawn_tracking(
    tracker: Arc<dyn UploadTracker>,
    metrics: Arc<ApiMetrics>,
    upload: TrackedUpload,
) {
    tokio::spawn(async move {
        let what = "recording the upload as an ImageJob";
        let call = tracker.track(&upload);
        let outcome = bounded(what, upload.id, TRACKING_TIMEOUT, TRACKED, call).await;
        metrics.tracked(outcome);
    });
}

/// Forgets the upload `id` with `tracker`, bounded like tracking; a failure is
/// logged and counted (the operator deletes a finished job after its TTL anyway).
pub async fn forget(tracker: &dyn UploadTracker, metrics: &ApiMetrics, id: UploadId) {
    let what = "deleting the upload's ImageJob";
    let call = tracker.forget(id);
    metrics.tracked(bounded(what, id, TRACKING_TIMEOUT, FORGOTTEN, call).await);
}
