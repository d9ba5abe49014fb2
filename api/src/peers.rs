//! Word of uploads' changes from the workers (on a cluster): `POST
//! /internal/v1/changes {"id": ..., "nonce": ...}`, signed with the peers' shared
//! secret, on the internal address beside `/metrics`, never where the load balancer
//! sends. The
//! word wakes the requests waiting here on that upload; they read S3 as always, so a
//! forged or replayed word could do no more than make them read early. Forged words
//! are refused (`bad-signature`), and so are replayed ones (`replayed`): each
//! signed (time, body) is taken once (the workers put a nonce in the body).

use crate::ApiState;
use crate::error::{ApiError, Code, ErrorBody};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use minilab_core::webhook::SIGNATURE_HEADER;
use minilab_service::changes::Announce;
pub use minilab_service::peer_words::PeerWords;
use minilab_service::peer_words::Refused;
use serde::Deserialize;
use utoipa::ToSchema;

/// The word's body, as the OpenAPI document shows it; `PeerWords` reads it.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // read by minilab_service::peer_words, described here
pub struct Change {
    /// The upload that changed.
    pub id: String,
    /// Makes each word unique (words are taken once).
    #[serde(default)]
    pub nonce: Option<String>,
}

/// Internal, on the metrics address, with `--peer-secret`: a worker's word that an
/// upload changed, signed like a webhook (`Minilab-Signature`) with the peer secret.
#[utoipa::path(post, path = "/internal/v1/changes", tag = "internal", request_body = Change,
    responses(
    (status = 204, description = "Taken: the requests waiting on the upload read it again"),
    (status = 400, description = "`invalid-request`", body = ErrorBody),
    (status = 401, description = "`bad-signature`: not signed with the peer secret", body = ErrorBody),
    (status = 409, description = "`replayed`: this signed word was taken already", body = ErrorBody),
    (status = 404, description = "`not-found`: this instance takes no word of changes", body = ErrorBody)))]
pub async fn changed(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (Some(words), Some(changes)) = (&state.peer_words, &state.changes) else {
        return Err(ApiError::new(Code::NotFound, "no such endpoint"));
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let id = words.take(signature, &body).map_err(|refused| {
        let code = match refused {
            Refused::BadSignature => Code::BadSignature,
            Refused::Replayed => Code::Replayed,
            Refused::BadBody => Code::InvalidRequest,
        };
        ApiError::new(code, refused.to_string())
    })?;
    changes.changed(id);
    Ok(StatusCode::NO_CONTENT)
}
