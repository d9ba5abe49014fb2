//! Sends an upload's final status to the webhook its uploader named, when the
//! deployment allows that URL: signed (see `minilab_core::webhook`), retried with
//! backoff, bounded in number and time, counted in metrics, and never followed to
//! a redirect. Best effort: a delivery lives in this process only, and the manifest
//! stays the truth (the receiver can always ask the status API).

use crate::metrics::Metrics;
use minilab_core::Manifest;
use minilab_core::image_links::{ImageAddresses, unix_now};
use minilab_core::webhook::{AllowList, SIGNATURE_HEADER, SecretTooShort, sign, signing_secret};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How deliveries are tried.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait after the first failure; it doubles after each further one.
    pub backoff: Duration,
    /// The longest one attempt may take.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Most deliveries under way at once; more are dropped (and counted).
const MAX_PENDING: usize = 256;

/// Why the sender could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WebhooksError {
    #[error(transparent)]
    Secret(#[from] SecretTooShort),
    #[error("building the webhook client: {0}")]
    Client(#[from] reqwest::Error),
}

pub struct Webhooks {
    allow: AllowList,
    secret: Vec<u8>,
    retry: Retry,
    client: reqwest::Client,
    pending: Arc<Semaphore>,
    /// Where outputs are served at stable addresses, if they are.
    images: Option<ImageAddresses>,
}

impl Webhooks {
    pub fn new(allow: AllowList, secret: Vec<u8>, retry: Retry) -> Result<Self, WebhooksError> {
        let secret = signing_secret(&secret, "the webhook secret")?;
        let client = reqwest::Client::builder()
            // A redirect could lead anywhere: the allow-list is for the URL given.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(retry.timeout)
            .user_agent("minilab-webhook")
            .build()?;
        Ok(Self {
            allow,
            secret,
            retry,
            client,
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            images: None,
        })
    }

    /// Names each output's stable address, `{base}/i/{id}/{output}.{ext}` (signed
    /// when addresses are), in the payload (`None`: outputs are not served there).
    pub fn with_image_addresses(mut self, images: Option<ImageAddresses>) -> Self {
        self.images = images;
        self
    }

    /// Sends `manifest`'s status to `url` in the background, if `url` is allowed.
    pub fn send(&self, url: &str, manifest: &Manifest, metrics: &Arc<Metrics>) {
        // Sent to the URL as parsed and checked, not to the string given.
        let Some(url) = self.allow.allowed(url) else {
            tracing::warn!(url, "not sending a webhook to an address not allowed");
            metrics.webhook("refused");
            return;
        };
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            tracing::warn!(%url, "too many webhooks pending; dropping this one");
            metrics.webhook("dropped");
            return;
        };
        let body = payload(manifest, self.images.as_ref(), unix_now())
            .to_string()
            .into_bytes();
        let delivery = manifest.id.map(|id| id.to_string()).unwrap_or_default();
        let (client, secret, retry) = (self.client.clone(), self.secret.clone(), self.retry);
        let (url, metrics) = (url.to_string(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            for attempt in 0..retry.attempts {
                let signature = sign(&secret, chrono::Utc::now().timestamp(), &body);
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .header("minilab-delivery", &delivery)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        metrics.webhook("delivered");
                        return;
                    }
                    Ok(response) => {
                        tracing::info!(url, status = %response.status(), attempt, "webhook refused")
                    }
                    Err(err) => tracing::info!(url, error = %err, attempt, "webhook failed"),
                }
                if attempt + 1 < retry.attempts {
                    metrics.webhook("retried");
                    tokio::time::sleep(retry.backoff * 2u32.pow(attempt)).await;
                }
            }
            tracing::warn!(url, "webhook not delivered; giving up");
            metrics.webhook("failed");
        });
    }
}

/// What a webhook receives: the upload's final status, without download links
/// (they expire; `statusUrl` gives fresh ones), with each output's stable address
/// under `images` (signed to open from `now` when addresses are).
pub fn payload(
    manifest: &Manifest,
    images: Option<&ImageAddresses>,
    now: u64,
) -> serde_json::Value {
    let id = manifest.id.map(|id| id.to_string());
    // Uploads only: a batch image has no address.
    let image_url = |output: &minilab_core::manifest::OutputRecord| {
        let (id, images) = manifest.id.zip(images)?;
        Some(images.address(id, &output.key, now))
    };
    json!({
        "event": "upload.finished",
        "id": id,
        "state": manifest.state,
        "recipe": manifest.recipe,
        "source": {
            "bytes": manifest.source.bytes,
            "width": manifest.source.width,
            "height": manifest.source.height,
            "format": manifest.source.format,
        },
        "outputs": manifest.outputs.iter().map(|o| {
            let mut output = json!({
                "name": o.name,
                "width": o.width,
                "height": o.height,
                "bytes": o.bytes,
                "contentType": o.content_type,
            });
            if let Some(url) = image_url(o) {
                output["imageUrl"] = url.into();
            }
            output
        }).collect::<Vec<_>>(),
        "placeholder": manifest.placeholder,
        "processingMs": manifest.timings.total_ms(),
        "error": manifest.error,
        "finishedAt": manifest.finished_at,
        "statusUrl": id.map(|id| format!("/api/v1/uploads/{id}")),
    })
}
