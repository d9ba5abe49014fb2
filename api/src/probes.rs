//! Probes for the orchestrator (`/livez`, `/readyz`) and the metrics (`/metrics`).

use crate::ApiState;
use crate::error::{ApiError, Code, ErrorBody};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready` (takes requests).
    pub status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/livez", tag = "probes",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn livez() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The instance takes new requests; 503 `draining` once it is shutting down. It
/// says nothing about S3: an S3 brownout must not take every instance out at once.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "`draining`: shutting down", body = ErrorBody)))]
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    if state.readiness.draining() {
        return Err(ApiError::new(
            Code::Draining,
            "this instance is shutting down",
        ));
    }
    Ok(Json(Health { status: "ready" }))
}

/// The API's metrics in the OpenMetrics text format (on the API's port, or on a
/// port of its own with `--metrics-listen`).
#[utoipa::path(get, path = "/metrics", tag = "probes", responses(
    (status = 200, description = "OpenMetrics text",
     content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<ApiState>) -> axum::response::Response {
    minilab_service::metrics::response(state.metrics.registry())
}
