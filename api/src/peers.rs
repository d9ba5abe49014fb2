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
use minilab_core::UploadId;
use minilab_core::webhook::{SIGNATURE_HEADER, verify};
use minilab_service::changes::Announce;
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// How far a word's timestamp may be from this instance's clock.
const TOLERANCE_SECONDS: i64 = 60;
/// How long a word is remembered: a copy can be valid until then.
const REMEMBER: Duration = Duration::from_secs(2 * TOLERANCE_SECONDS as u64);
/// Most words remembered; past it the oldest are forgotten first.
const MAX_REMEMBERED: usize = 100_000;

/// The peers' shared secret and the words taken with it lately.
pub struct PeerWords {
    secret: std::sync::Arc<[u8]>,
    taken: Mutex<Taken>,
}

impl PeerWords {
    pub fn new(secret: std::sync::Arc<[u8]>) -> Self {
        Self {
            secret,
            taken: Mutex::new(Taken::default()),
        }
    }

    /// Checks one word: signed with the secret, within the tolerance, not taken before.
    fn take(&self, signature: &str, body: &[u8]) -> Result<(), ApiError> {
        let now = chrono::Utc::now().timestamp();
        let verified = verify(&self.secret, signature, body, now, TOLERANCE_SECONDS);
        let Some(signed_at) = minilab_core::webhook::signed_at(signature).filter(|_| verified)
        else {
            return Err(ApiError::new(
                Code::BadSignature,
                "not signed with the peer secret",
            ));
        };
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.first(word_key(signed_at, body), Instant::now()) {
            return Err(ApiError::new(Code::Replayed, "this word was taken already"));
        }
        Ok(())
    }
}

/// What identifies a word: its signed time and body.
fn word_key(signed_at: i64, body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(format!("{signed_at}.").as_bytes());
    digest.update(body);
    digest.finalize().into()
}

/// Words taken in the last [`REMEMBER`], at most [`MAX_REMEMBERED`].
#[derive(Default)]
struct Taken {
    keys: HashSet<[u8; 32]>,
    order: VecDeque<(Instant, [u8; 32])>,
}

impl Taken {
    /// True the first time `key` is seen at `now` (within what is remembered).
    fn first(&mut self, key: [u8; 32], now: Instant) -> bool {
        while let Some(&(at, old)) = self.order.front() {
            if now.saturating_duration_since(at) <= REMEMBER && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&old);
        }
        if !self.keys.insert(key) {
            return false;
        }
        self.order.push_back((now, key));
        true
    }
}

#[derive(Debug, Deserialize, ToSchema)]
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
    words.take(signature, &body)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_taken_once_while_remembered() {
        let mut taken = Taken::default();
        let start = Instant::now();
        let word = word_key(1, b"{}");
        assert!(taken.first(word, start));
        assert!(!taken.first(word, start + REMEMBER));
        assert!(taken.first(word_key(2, b"{}"), start));
        assert!(taken.first(word_key(1, b"{ }"), start));
        // Past what a copy could be valid for, it is forgotten.
        assert!(taken.first(word, start + REMEMBER * 2 + Duration::from_secs(1)));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut taken = Taken::default();
        let now = Instant::now();
        for n in 0..MAX_REMEMBERED as i64 + 10 {
            assert!(taken.first(word_key(n, b""), now));
        }
        assert!(taken.order.len() <= MAX_REMEMBERED);
        assert_eq!(taken.keys.len(), taken.order.len());
    }
}
