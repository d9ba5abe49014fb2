//! The API's Prometheus metrics (`/metrics`). Labels are bounded: fixed words and
//! stable error codes, never ids or addresses.

use minilab_service::s3_requests::S3Requests;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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
    invalidations: Family<ResultLabels, Counter>,
    uploads: Counter,
    refused: Family<ReasonLabels, Counter>,
    wakes: Family<WakeLabels, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new(S3Requests::default())
    }
}

impl ApiMetrics {
    /// The API's metrics, `s3_requests` among them.
    pub fn new(s3_requests: S3Requests) -> Self {
        let tracking = Family::<ResultLabels, Counter>::default();
        let uploads = Counter::default();
        let mut registry = Registry::with_prefix("minilab_api");
        s3_requests.register(&mut registry);
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
        let invalidations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cdn_invalidations",
            "Requests to the CDN to forget a deleted upload's images, by result",
            invalidations.clone(),
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
            invalidations,
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

    /// An attempt to record an upload as an ImageJob ended: `ok`, `failed` or
    /// `timeout`.
    pub fn tracked(&self, result: &'static str) {
        self.tracking.get_or_create(&ResultLabels { result }).inc();
    }

    /// A request to the CDN to forget a deleted upload's images ended: `asked`,
    /// `failed` or `timeout`.
    pub fn invalidated(&self, result: &'static str) {
        self.invalidations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
