//! Calls whose failure never fails the request that made them: recording an upload
//! as an ImageJob, deleting that ImageJob, asking the CDN to forget an upload's
//! images. Each is bounded in time; a failure is logged, and every outcome is named
//! by one of three labels for its metric.

use minilab_core::UploadId;
use std::future::Future;
use std::time::Duration;

/// The metric labels of a call's three outcomes.
pub(crate) struct Outcomes {
    pub done: &'static str,
    pub failed: &'static str,
    pub timed_out: &'static str,
}

/// Runs `call` (described by `what`, for the log) for at most `limit`: the label
/// of how it ended.
pub(crate) async fn bounded<E: std::fmt::Display>(
    what: &str,
    id: UploadId,
    limit: Duration,
    outcomes: Outcomes,
    call: impl Future<Output = Result<(), E>>,
) -> &'static str {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(())) => outcomes.done,
        Ok(Err(e)) => {
            tracing::warn!(%id, error = %e, "{what} failed");
            outcomes.failed
        }
        Err(_) => {
            tracing::warn!(%id, "{what} timed out");
            outcomes.timed_out
        }
    }
}
