//! Word of an upload's change, as received from a worker (on a cluster): a body
//! `{"id": ..., "nonce": ...}` signed like a webhook (`Minilab-Signature`) with the
//! peers' shared secret. The API's waiting requests and the operator both take it;
//! either reads S3 as always, so a forged or replayed word could do no more than make
//! it read early. Forged words are refused, and so are replayed ones: each signed
//! (time, body) is taken once (the workers put a nonce in the body).

use minilab_core::UploadId;
use minilab_core::webhook::verify;
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where word of changes is posted (the API's and the operator's metrics address).
pub const CHANGES_PATH: &str = "/internal/v1/changes";
/// How far a word's timestamp may be from this instance's clock.
const TOLERANCE_SECONDS: i64 = 60;
/// How long a word is remembered: a copy can be valid until then.
const REMEMBER: Duration = Duration::from_secs(2 * TOLERANCE_SECONDS as u64);
/// Most words remembered; past it the oldest are forgotten first.
const MAX_REMEMBERED: usize = 100_000;

/// Why a word was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not signed with the peer secret")]
    BadSignature,
    #[error("this word was taken already")]
    Replayed,
    #[error("the body is not {{\"id\": <upload id>}}")]
    BadBody,
}

#[derive(Deserialize)]
struct Change {
    id: String,
}

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

    /// The upload one word names: signed with the secret, within the tolerance, not
    /// taken before.
    pub fn take(&self, signature: &str, body: &[u8]) -> Result<UploadId, Refused> {
        let now = chrono::Utc::now().timestamp();
        let verified = verify(&self.secret, signature, body, now, TOLERANCE_SECONDS);
        let Some(signed_at) = minilab_core::webhook::signed_at(signature).filter(|_| verified)
        else {
            return Err(Refused::BadSignature);
        };
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.first(word_key(signed_at, body), Instant::now()) {
            return Err(Refused::Replayed);
        }
        serde_json::from_slice::<Change>(body)
            .ok()
            .and_then(|change| change.id.parse::<UploadId>().ok())
            .ok_or(Refused::BadBody)
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

#[cfg(test)]
mod tests {
    use super::*;
    use minilab_core::webhook::sign;

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

    #[test]
    fn a_signed_word_names_its_upload_once() {
        let words = PeerWords::new(b"a shared secret of the peers".to_vec().into());
        let id = UploadId::new(chrono::Utc::now());
        let body = format!(r#"{{"id": "{id}", "nonce": "1"}}"#);
        let now = chrono::Utc::now().timestamp();
        let signature = sign(b"a shared secret of the peers", now, body.as_bytes());
        assert_eq!(words.take(&signature, body.as_bytes()), Ok(id));
        assert_eq!(
            words.take(&signature, body.as_bytes()),
            Err(Refused::Replayed)
        );
        let forged = sign(b"another secret", now, body.as_bytes());
        assert_eq!(
            words.take(&forged, body.as_bytes()),
            Err(Refused::BadSignature)
        );
        let other = br#"{"id": "not an id"}"#;
        let signed = sign(b"a shared secret of the peers", now, other);
        assert_eq!(words.take(&signed, other), Err(Refused::BadBody));
    }
}
