//! Word of an upload's change, from a worker to every API instance, so that the
//! requests waiting there answer at once (on a cluster; `minilab up` does this in
//! process). Each target is a `host:port` that may resolve to many addresses (the
//! API pods behind a headless Service); each address gets `POST /internal/v1/changes
//! {"id": ..., "nonce": ...}`, signed like a webhook with the peers' shared secret.
//!
//! Best effort by design: one try, a short timeout, no retries, a bounded number
//! under way. A word lost costs only latency: the waiting request reads S3 again at
//! its slower pace and finds the change itself.

use crate::metrics::Metrics;
use minilab_core::UploadId;
use minilab_core::webhook::{SIGNATURE_HEADER, sign};
use minilab_service::changes::Announce;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub use minilab_service::peer_words::CHANGES_PATH;
/// The longest one word may take to be delivered.
const TIMEOUT: Duration = Duration::from_millis(200);
/// How long a lookup of the targets' addresses is used (pods come and go).
const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// Most changes being announced at once; more are dropped (and counted).
const MAX_PENDING: usize = 64;

/// Why the announcer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("announce target {0:?} is not host:port")]
    BadTarget(String),
    #[error("building the announcement client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Announces changes to the API instances at `targets`; cheap to clone.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    targets: Vec<String>,
    secret: Vec<u8>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    pending: Arc<Semaphore>,
    /// The targets' addresses and when they were looked up.
    resolved: Mutex<Option<(Instant, Arc<[SocketAddr]>)>>,
}

impl Peers {
    /// `targets` are `host:port`, each resolved to all its addresses; `secret` is
    /// the one the API instances were given.
    pub fn new(
        targets: Vec<String>,
        secret: Vec<u8>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PeersError> {
        if let Some(bad) = targets.iter().find(|t| t.rsplit_once(':').is_none()) {
            return Err(PeersError::BadTarget(bad.clone()));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent("minilab-worker")
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                targets,
                secret,
                client,
                metrics,
                pending: Arc::new(Semaphore::new(MAX_PENDING)),
                resolved: Mutex::new(None),
            }),
        })
    }
}

impl Announce for Peers {
    fn changed(&self, id: UploadId) {
        let Ok(permit) = self.inner.pending.clone().try_acquire_owned() else {
            self.inner.metrics.announcement("dropped");
            return;
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            inner.announce(id).await;
        });
    }
}

impl Inner {
    async fn announce(&self, id: UploadId) {
        let addresses = self.addresses().await;
        if addresses.is_empty() {
            self.metrics.announcement("unresolved");
            return;
        }
        // A nonce: the start and the end of an upload announced in one second are two
        // words, not a replay of one.
        let nonce: u64 = rand::random();
        let body = serde_json::json!({ "id": id.to_string(), "nonce": format!("{nonce:016x}") })
            .to_string()
            .into_bytes();
        let signature = sign(&self.secret, chrono::Utc::now().timestamp(), &body);
        let sends = addresses.iter().map(|address| {
            self.client
                .post(format!("http://{address}{CHANGES_PATH}"))
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .body(body.clone())
                .send()
        });
        for sent in futures::future::join_all(sends).await {
            match sent {
                Ok(response) if response.status().is_success() => self.metrics.announcement("sent"),
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "an API refused word of a change");
                    self.metrics.announcement("failed")
                }
                Err(err) => {
                    tracing::debug!(error = %err, "word of a change not delivered");
                    self.metrics.announcement("failed")
                }
            }
        }
    }

    /// Every address of every target, looked up at most every [`RESOLVE_EVERY`]; a
    /// target that does not resolve now is left out (and logged).
    async fn addresses(&self) -> Arc<[SocketAddr]> {
        if let Some((at, addresses)) = &*self.resolved.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < RESOLVE_EVERY
        {
            return addresses.clone();
        }
        let mut addresses = Vec::new();
        for target in &self.targets {
            match tokio::net::lookup_host(target.as_str()).await {
                Ok(found) => addresses.extend(found),
                Err(err) => tracing::debug!(target, error = %err, "cannot resolve an API target"),
            }
        }
        addresses.sort();
        addresses.dedup();
        let addresses: Arc<[SocketAddr]> = addresses.into();
        *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), addresses.clone()));
        addresses
    }
}
