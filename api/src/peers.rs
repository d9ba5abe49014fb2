//! Word of uploads' changes from the workers (on a cluster): `POST
//! /internal/v1/changes {"id": ...}`, signed with the peers' shared secret, on the
//! internal address beside `/metrics`, never where the load balancer sends. The
//! word wakes the requests waiting here on that upload; they read S3 as always, so a
//! forged or replayed word can do no more than make them read early.

use crate::ApiState;
use crate::error::{ApiError, Code, ErrorBody};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use minilab_core::UploadId;
use minilab_core::webhook::{SIGNATURE_HEADER, verify};
use minilab_service::changes::Announce;
use serde::Deserialize;
use utoipa::ToSchema;

/// How far a word's timestamp may be from this instance's clock.
const TOLERANCE_SECONDS: i64 = 60;

#[derive(Debug, Deserialize, ToSchema)]
pub struct Change {
    /// The upload that changed.
    pub id: String,
}

/// Internal, on the metrics address, with `--peer-secret`: a worker's word that an
/// upload changed, signed like a webhook (`Minilab-Signature`) with the peer secret.
#[utoipa::path(post, path = "/internal/v1/changes", tag = "internal", request_body = Change,
    responses(
    (status = 204, description = "Taken: the requests waiting on the upload read it again"),
    (status = 400, description = "`invalid-request`", body = ErrorBody),
    (status = 401, description = "`bad-signature`: not signed with the peer secret", body = ErrorBody),
    (status = 404, description = "`not-found`: this instance takes no word of changes", body = ErrorBody)))]
pub async fn changed(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (Some(secret), Some(changes)) = (&state.peer_secret, &state.changes) else {
        return Err(ApiError::new(Code::NotFound, "no such endpoint"));
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    if !verify(secret, signature, &body, now, TOLERANCE_SECONDS) {
        return Err(ApiError::new(
            Code::BadSignature,
            "not signed with the peer secret",
        ));
    }
    let id = serde_json::from_slice::<Change>(&body)
        .ok()
        .and_then(|change| change.id.parse::<UploadId>().ok())
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidRequest,
                "the body is not {\"id\": <upload id>}",
            )
        })?;
    changes.changed(id);
    Ok(StatusCode::NO_CONTENT)
}
