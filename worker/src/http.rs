//! The worker's own HTTP port: `/livez`, `/readyz` and `/metrics`.

use crate::Worker;
use crate::queue::Queue;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Probe {
    worker: Arc<Worker>,
    queue: Arc<dyn Queue>,
    shutdown: CancellationToken,
}

/// Ready while not draining and while both buckets and the queue answer.
pub fn router(worker: Arc<Worker>, queue: Arc<dyn Queue>, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Probe {
            worker,
            queue,
            shutdown,
        })
}

async fn readyz(State(probe): State<Probe>) -> (StatusCode, String) {
    if probe.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
    }
    let checks = async {
        for bucket in [&probe.worker.uploads_bucket, &probe.worker.processed_bucket] {
            probe
                .worker
                .s3
                .head_bucket()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "bucket {bucket}: {}",
                        minilab_service::objects::describe(&e)
                    )
                })?;
        }
        probe.queue.check().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(3), checks).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(err)) => {
            tracing::warn!(error = err, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage or queue unreachable\n".into(),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage or queue timed out\n".into(),
        ),
    }
}

async fn metrics(State(probe): State<Probe>) -> axum::response::Response {
    minilab_service::metrics::response(&probe.worker.metrics.registry)
}
