//! On a cluster the API tells a tracker (an ImageJob per upload) about each ticket it
//! issues. Tracking is best effort: it runs after the answer, bounded in time, and a
//! failure is logged and counted, never returned to the browser.

use async_trait::async_trait;
pub use minilab_core::upload::TrackedUpload;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Why a tracker could not record an upload: its own error (the Kubernetes API's,
/// say), logged and counted.
pub type TrackError = Box<dyn std::error::Error + Send + Sync>;

#[async_trait]
pub trait UploadTracker: Send + Sync {
    async fn track(&self, upload: &TrackedUpload) -> Result<(), TrackError>;
}

/// The longest a tracker may take before the attempt counts as failed.
pub const TRACKING_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// ok, failed or timeout
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// The error code the request was refused with (a fixed set).
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WakeLabels {
    /// word (a change announced) or poll (the timer)
    by: &'static str,
}

/// The API's metrics (`/metrics`).
pub struct ApiMetrics {
    registry: Registry,
    tracking: Family<ResultLabels, Counter>,
    uploads: Counter,
    refused: Family<ReasonLabels, Counter>,
    wakes: Family<WakeLabels, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let tracking = Family::<ResultLabels, Counter>::default();
        let uploads = Counter::default();
        let mut registry = Registry::with_prefix("minilab_api");
        registry.register("uploads_issued", "Upload tickets issued", uploads.clone());
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refused",
            "Requests refused before any work, by reason",
            refused.clone(),
        );
        registry.register(
            "kube_tracking",
            "Attempts to record an upload as an ImageJob, by result",
            tracking.clone(),
        );
        let wakes = Family::<WakeLabels, Counter>::default();
        registry.register(
            "status_wakes",
            "Times a waiting status request or event stream read the state again, by what woke it",
            wakes.clone(),
        );
        Self {
            registry,
            tracking,
            uploads,
            refused,
            wakes,
        }
    }
}

impl ApiMetrics {
    pub fn issued(&self) {
        self.uploads.inc();
    }

    /// A request refused with `reason` (a stable error code).
    pub fn refused(&self, reason: crate::error::Code) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A waiting request woke to read the state again: `by` word of a change, or
    /// its poll timer.
    pub fn woke(&self, by: &'static str) {
        self.wakes.get_or_create(&WakeLabels { by }).inc();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Tracks `upload` in the background.
pub fn spawn_tracking(
    tracker: Arc<dyn UploadTracker>,
    metrics: Arc<ApiMetrics>,
    upload: TrackedUpload,
) {
    tokio::spawn(async move {
        let result = match tokio::time::timeout(TRACKING_TIMEOUT, tracker.track(&upload)).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(id = %upload.id, error = %e, "could not record the upload as an ImageJob");
                "failed"
            }
            Err(_) => {
                tracing::warn!(id = %upload.id, "recording the upload as an ImageJob timed out");
                "timeout"
            }
        };
        metrics
            .tracking
            .get_or_create(&ResultLabels { result })
            .inc();
    });
}
