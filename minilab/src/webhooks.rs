//! The webhook flags, shared by `up`, `api` (which checks the URL an upload names)
//! and `worker` (which sends, signed with the secret).

use anyhow::Context;
use clap::Args;
use minilab_core::image_links::ImageAddresses;
use minilab_core::webhook::AllowList;
use minilab_worker::webhooks::{Retry, Webhooks};
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// URL prefixes an upload's webhook may be under, comma-separated, each
    /// `scheme://host[:port]/path/`. None (the default): uploads may not name one.
    #[arg(
        long = "webhook-allow",
        env = "MINILAB_WEBHOOK_ALLOW",
        value_delimiter = ','
    )]
    allow: Vec<String>,
    /// The secret deliveries are signed with (HMAC-SHA256), at least 16 bytes; the
    /// worker needs it with --webhook-allow.
    #[arg(long, env = "MINILAB_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
}

impl WebhookArgs {
    pub fn allow_list(&self) -> anyhow::Result<AllowList> {
        AllowList::parse(&self.allow).context("--webhook-allow")
    }

    /// What the worker sends with, naming outputs' stable `addresses` (when they
    /// have a base); `None` when no webhook is allowed.
    pub fn webhooks(&self, addresses: ImageAddresses) -> anyhow::Result<Option<Arc<Webhooks>>> {
        let allow = self.allow_list()?;
        if allow.is_empty() {
            return Ok(None);
        }
        let secret = self
            .webhook_secret
            .clone()
            .context("--webhook-allow needs --webhook-secret (MINILAB_WEBHOOK_SECRET)")?;
        let webhooks = Webhooks::new(allow, secret.into_bytes(), Retry::default())?
            .with_image_addresses(Some(addresses).filter(|a| !a.base().is_empty()));
        Ok(Some(Arc::new(webhooks)))
    }
}
