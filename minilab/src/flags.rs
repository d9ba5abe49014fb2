//! Flags more than one subcommand takes, each defined once and flattened where it
//! applies (`#[command(flatten)]`): how long presigned URLs live, the recipes, the
//! largest upload, S3 path-style addressing and the peers' shared secret. (Limits
//! per image and per client are in `limits`, webhooks in `webhooks`.)

use clap::Args;
use minilab_core::{Limits, RecipeBook};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long presigned URLs stay valid (`up`, `api`).
#[derive(Args, Debug, Clone)]
pub struct PresignArgs {
    /// Seconds a presigned upload stays valid (at most what the signing credentials
    /// have left: role credentials are renewed with 15 minutes to go).
    #[arg(long, env = "MINILAB_UPLOAD_TTL", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    upload_ttl: u64,
    /// Seconds a presigned download stays valid (capped like --upload-ttl).
    #[arg(long, env = "MINILAB_DOWNLOAD_TTL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    download_ttl: u64,
}

impl PresignArgs {
    pub fn upload_ttl(&self) -> Duration {
        Duration::from_secs(self.upload_ttl)
    }

    pub fn download_ttl(&self) -> Duration {
        Duration::from_secs(self.download_ttl)
    }
}

/// Recipes added to the built-in ones (`up`, `process`, `api`, `worker`, `operator`).
#[derive(Args, Debug, Clone)]
pub struct RecipeArgs {
    /// A YAML file of recipes (`recipes: [...]`) added to the built-in ones (the
    /// operator's: a job naming a recipe neither built in nor here is InvalidSpec).
    #[arg(long, env = "MINILAB_RECIPES")]
    recipes: Option<PathBuf>,
}

impl RecipeArgs {
    /// The built-in recipes, plus the file's when given; an error names the file,
    /// the recipe, the output and the field.
    pub fn load(&self) -> anyhow::Result<Arc<RecipeBook>> {
        use anyhow::Context;
        let book = match &self.recipes {
            None => RecipeBook::builtin(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                RecipeBook::with_yaml(&text).with_context(|| format!("in {}", path.display()))?
            }
        };
        Ok(Arc::new(book))
    }
}

/// The largest upload (`up`, `process`, `api`, `worker`).
#[derive(Args, Debug, Clone, Copy)]
pub struct UploadSizeArgs {
    /// Largest upload, in bytes (`too-large` at the API, `file-too-large` for an
    /// image).
    #[arg(long, env = "MINILAB_MAX_UPLOAD_BYTES", default_value_t = Limits::DEFAULT_MAX_BYTES)]
    pub max_upload_bytes: u64,
}

/// How S3 is addressed (`api`, `worker`, `operator`, `publish-web`).
#[cfg(feature = "cluster")]
#[derive(Args, Debug, Clone, Copy)]
pub struct PathStyleArgs {
    /// Address buckets by path (`endpoint/bucket`), as LocalStack and other
    /// S3-compatible stores need; AWS uses virtual-hosted names.
    #[arg(long, env = "MINILAB_S3_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: bool,
}

/// The secret word of uploads' changes is signed with (`api`, `worker`, `operator`).
#[cfg(feature = "cluster")]
#[derive(Args, Debug, Clone)]
pub struct PeerSecretArgs {
    /// The secret (at least 16 bytes) shared by the workers, which sign word of each
    /// upload's start and finish with it, and the API and operator instances, which
    /// take that word on `POST /internal/v1/changes` beside /metrics.
    #[arg(long, env = "MINILAB_PEER_SECRET", hide_env_values = true)]
    peer_secret: Option<String>,
}

#[cfg(feature = "cluster")]
impl PeerSecretArgs {
    /// The secret, checked; `None` without one.
    pub fn secret(&self) -> anyhow::Result<Option<Arc<[u8]>>> {
        self.peer_secret
            .as_deref()
            .map(|secret| {
                minilab_core::webhook::signing_secret(
                    secret.as_bytes(),
                    "--peer-secret (MINILAB_PEER_SECRET)",
                )
                .map(Arc::from)
                .map_err(Into::into)
            })
            .transpose()
    }
}

/// Where images are served at stable addresses, and whether those are signed, for
/// the names statuses (`api`) and webhooks (`worker`) give them.
#[cfg(feature = "cluster")]
#[derive(Args, Debug, Clone)]
pub struct ImageAddressArgs {
    /// What outputs' stable addresses are under: `{base}/i/{id}/{output}.{ext}` (the
    /// site's `https://host` behind a CDN). On `api`, empty names the path alone,
    /// relative to the API; on `worker`, empty leaves `imageUrl` out of webhooks.
    #[arg(long, env = "MINILAB_IMAGE_BASE_URL", default_value = "")]
    image_base_url: String,
    /// Sign the image addresses statuses (`api`) and webhooks (`worker`) name
    /// (`?expires=...&signature=...`, an HMAC-SHA256 with this secret, at least 16
    /// bytes; the same on both); `api` then serves only signed ones, `private` to
    /// browsers and never kept by a CDN.
    #[arg(long, env = "MINILAB_IMAGE_LINK_SECRET", hide_env_values = true)]
    image_link_secret: Option<String>,
    /// Seconds a signed image address is handed out for: each is valid for one to
    /// two of them.
    #[arg(long, env = "MINILAB_IMAGE_LINK_WINDOW", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=7 * 86400))]
    image_link_window: u64,
}

#[cfg(feature = "cluster")]
impl ImageAddressArgs {
    /// The addresses: the base without its trailing `/` (empty or an http(s) URL),
    /// signed when --image-link-secret is given.
    pub fn addresses(&self) -> anyhow::Result<minilab_core::image_links::ImageAddresses> {
        let base = self.image_base_url.trim_end_matches('/');
        let is_url = base.starts_with("https://") || base.starts_with("http://");
        anyhow::ensure!(
            base.is_empty() || (is_url && !base.contains(char::is_whitespace)),
            "--image-base-url must be empty or an http(s) URL; got {base:?}"
        );
        let links = match &self.image_link_secret {
            Some(secret) => Some(minilab_core::image_links::ImageLinks::new(
                minilab_core::webhook::signing_secret(
                    secret.as_bytes(),
                    "--image-link-secret (MINILAB_IMAGE_LINK_SECRET)",
                )?,
                self.image_link_window,
            )),
            None => None,
        };
        Ok(minilab_core::image_links::ImageAddresses::new(
            base.to_owned(),
            links,
        ))
    }
}
