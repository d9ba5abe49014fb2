//! `GET /api/v1/uploads/{id}` says where an upload is, from S3 alone, and with
//! `?wait=N` waits for its end (a long poll): woken by word of a change when the
//! worker announces them here ([`Watch`]), by re-reading S3 otherwise.

use crate::ApiState;
use crate::auth::Subject;
use crate::error::{ApiError, Code, ErrorBody, Result};
use crate::limits::{Client, Meter};
use crate::signing;
use aws_sdk_s3::presigning::PresigningConfig;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use minilab_core::arrival::{Arrival, arrival};
use minilab_core::manifest::{ErrorRecord, ManifestState, Placeholder};
use minilab_core::{Manifest, UploadId, keys};
use minilab_service::changes::Subscription;
use minilab_service::objects;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    AwaitingUpload,
    Processing,
    Succeeded,
    Failed,
    Expired,
    /// Deleted by its owner: nothing of it is kept but this state.
    Deleted,
}

impl UploadState {
    pub fn is_final(self) -> bool {
        !matches!(self, UploadState::AwaitingUpload | UploadState::Processing)
    }
}

/// The state of an upload that has no manifest yet (the rule is core's, shared with
/// the operator).
pub fn pending_state(
    id: UploadId,
    source_stored: bool,
    upload_ttl: Duration,
    now: DateTime<Utc>,
) -> UploadState {
    let expires_at = chrono::Duration::from_std(upload_ttl)
        .ok()
        .and_then(|ttl| id.created_at().checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    match arrival(source_stored, expires_at, now) {
        Arrival::Arrived => UploadState::Processing,
        Arrival::Awaiting => UploadState::AwaitingUpload,
        Arrival::Expired => UploadState::Expired,
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadStatus {
    #[schema(value_type = String, example = "01m8y92htck9659hd5e5hehfjs")]
    pub id: UploadId,
    pub state: UploadState,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// The uploaded file, once the worker has read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceView>,
    pub outputs: Vec<OutputView>,
    /// What to show until the outputs load (a ThumbHash and the dominant colour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<Placeholder>,
    /// Milliseconds the worker spent, from reading the source to writing the last
    /// output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_ms: Option<f64>,
    pub error: Option<ErrorRecord>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    pub bytes: u64,
    /// Width and height as displayed (orientation applied), when the image decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The format the file turned out to be (`jpeg`, `png`, `heic`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// An animation's frames (absent for a still image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputView {
    pub name: String,
    /// A presigned GET that downloads the output as an attachment.
    pub url: String,
    /// Where the output stays, for `<img src>` and CDNs (`{base}/i/{id}/{output}.{ext}`),
    /// when this deployment serves images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Smaller widths the output is also served at (`{name}.w{width}.{ext}` beside
    /// `imageUrl`), made on the first request: its recipe's `widths` below its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<u32>,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
    /// An animation's frames (absent for a still image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatusQuery {
    /// Seconds to wait for a final state (at most [`MAX_WAIT`]).
    pub wait: Option<u64>,
}

const MAX_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting request reads S3 when nothing announces changes here.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// ... and when something does: only a safety net for lost word.
const SAFETY_POLL: Duration = Duration::from_secs(2);

/// Where the upload is, read from S3; `?wait=N` waits up to N seconds (at most 20)
/// for a final state, unless the client has [`crate::limits::MAX_WAITS_PER_CLIENT`]
/// requests waiting already (then it answers at once). Each second waited costs the
/// client a read; out of reads, the wait ends early.
#[utoipa::path(get, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "The upload's id"), StatusQuery),
    responses(
        (status = 200, description = "The upload's status", body = UploadStatus),
        (status = 400, description = "`invalid-request`: a bad query", body = ErrorBody),
        (status = 401, description = "`token-*` (sign-in on)", body = ErrorBody),
        (status = 404, description = "`not-found`: no such upload, or another subject's", body = ErrorBody),
        (status = 429, description = "`rate-limited` (with `Retry-After`)", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `sign-in-unavailable`", body = ErrorBody),
        (status = 504, description = "`timeout`", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<ApiState>,
    subject: Option<Extension<Subject>>,
    client: Option<Extension<Client>>,
    meter: Option<Extension<Meter>>,
    Path(id): Path<String>,
    query: std::result::Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UploadStatus>> {
    let id = visible_upload(&id, subject)?;
    let Query(query) = query.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    // A client with its most requests waiting already gets the status at once.
    let place = query
        .wait
        .filter(|&seconds| seconds > 0)
        .zip(client)
        .and_then(|(_, Extension(Client(client)))| state.waits.start(client));
    let wait = match place {
        Some(_) => Duration::from_secs(query.wait.unwrap_or(0)).min(MAX_WAIT),
        None => Duration::ZERO,
    };
    let mut deadline = Instant::now() + wait;
    let mut meter = meter.map(|Extension(meter)| meter);
    let mut watch = Watch::new(&state, id);
    loop {
        let status = watch.read(&state).await?;
        if status.state.is_final() || Instant::now() >= deadline {
            return Ok(Json(status));
        }
        watch.next(deadline).await;
        // Each second held costs a read: out of reads, the wait ends with this read.
        if meter
            .as_mut()
            .is_some_and(|meter| !meter.pay(std::time::Instant::now()))
        {
            deadline = Instant::now();
        }
    }
}

/// The upload `id` names, if the caller may see it: a well-formed id, not from the
/// future, and (when signed in) the caller's own. Anything else is `not-found`.
pub fn visible_upload(id: &str, subject: Option<Extension<Subject>>) -> Result<UploadId> {
    let not_found = || ApiError::new(Code::NotFound, "there is no upload with this id");
    let id: UploadId = id.parse().map_err(|_| not_found())?;
    let from_the_future = id.created_at() > Utc::now() + chrono::Duration::minutes(5);
    let someone_elses = subject.is_some_and(|Extension(Subject(reader))| !id.is_owned_by(&reader));
    if from_the_future || someone_elses {
        return Err(not_found());
    }
    Ok(id)
}

/// Reads an upload's state and waits for its next change, for one request. Created
/// before the first read, so a change between that read and the wait is not missed.
pub struct Watch {
    id: UploadId,
    /// The source was seen stored: it stays until the upload has finished (a DELETE
    /// waits for the manifest), so later reads look for the manifest only.
    stored: bool,
    /// Word of changes, when something announces them here.
    changes: Option<Subscription>,
    metrics: std::sync::Arc<crate::metrics::ApiMetrics>,
}

impl Watch {
    pub fn new(state: &ApiState, id: UploadId) -> Self {
        Self {
            id,
            stored: false,
            changes: state.changes.as_ref().map(|c| c.subscribe()),
            metrics: state.metrics.clone(),
        }
    }

    /// The upload's status now.
    pub async fn read(&mut self, state: &ApiState) -> Result<UploadStatus> {
        let status = status_now(state, self.id, self.stored).await?;
        self.stored |= status.state == UploadState::Processing;
        Ok(status)
    }

    /// Returns when the upload may have changed (word of it came, or it is time to
    /// read S3 again), or at `deadline`, whichever is first.
    pub async fn next(&mut self, deadline: Instant) {
        let by = match &mut self.changes {
            Some(changes) => {
                let until = deadline.min(Instant::now() + SAFETY_POLL);
                match tokio::time::timeout_at(until, changes.changed(self.id)).await {
                    Ok(()) => "word",
                    Err(_) => "poll",
                }
            }
            None => {
                tokio::time::sleep_until(deadline.min(Instant::now() + POLL_EVERY)).await;
                "poll"
            }
        };
        self.metrics.woke(by);
    }
}

/// The status from the manifest, else from whether the source is stored (looked for
/// unless `stored` is known).
async fn status_now(state: &ApiState, id: UploadId, stored: bool) -> Result<UploadStatus> {
    if let Some(manifest) = read_manifest(state, id).await? {
        return status_from_manifest(state, id, manifest).await;
    }
    let stored = stored || source_stored(state, id).await?;
    Ok(UploadStatus {
        id,
        state: pending_state(id, stored, state.config.upload_ttl, Utc::now()),
        created_at: id.created_at(),
        recipe: None,
        source: None,
        outputs: Vec::new(),
        placeholder: None,
        processing_ms: None,
        error: None,
    })
}

/// The upload's manifest, `None` before the worker wrote one.
pub(crate) async fn read_manifest(state: &ApiState, id: UploadId) -> Result<Option<Manifest>> {
    objects::read_manifest(
        &state.s3,
        &state.config.processed_bucket,
        &keys::manifest_key(id),
    )
    .await
    .map_err(ApiError::internal)
}

pub(crate) async fn source_stored(state: &ApiState, id: UploadId) -> Result<bool> {
    objects::exists(
        &state.s3,
        &state.config.uploads_bucket,
        &keys::source_key(id),
    )
    .await
    .map_err(ApiError::internal)
}

/// How download links are signed: for how long, and with what. Signed with the
/// signer's credentials, not the client's own cache, so that a link's lifetime can be
/// capped at what exactly these credentials have left.
async fn download_signing(
    state: &ApiState,
) -> Result<(PresigningConfig, aws_sdk_s3::config::Builder)> {
    let credentials = state
        .signer
        .credentials()
        .await
        .map_err(ApiError::internal)?;
    let ttl = signing::lifetime(
        state.config.download_ttl,
        credentials.expiry(),
        std::time::SystemTime::now(),
    );
    let presigning = PresigningConfig::expires_in(ttl).map_err(ApiError::internal)?;
    let signed_by = aws_sdk_s3::Config::builder()
        .credentials_provider(credentials)
        .identity_cache(aws_sdk_s3::config::IdentityCache::no_cache());
    Ok((presigning, signed_by))
}

/// Where upload `id`'s `output` stays, when this deployment serves images (signed
/// to open at `now` when addresses are), and the smaller widths it is served at too.
fn stable_address(
    config: &crate::ApiConfig,
    id: UploadId,
    output: &minilab_core::manifest::OutputRecord,
    recipe: Option<&minilab_core::Recipe>,
    now: u64,
) -> (Option<String>, Vec<u32>) {
    if !config.serve_images {
        return (None, Vec::new());
    }
    let widths = recipe
        .map(|recipe| smaller_widths(recipe, &output.name, output.width))
        .unwrap_or_default();
    (Some(config.images.address(id, &output.key, now)), widths)
}

async fn status_from_manifest(
    state: &ApiState,
    id: UploadId,
    manifest: Manifest,
) -> Result<UploadStatus> {
    let (presigning, signed_by) = download_signing(state).await?;
    let stem = manifest
        .source
        .filename
        .clone()
        .unwrap_or_else(|| id.to_string());
    let recipe = state.config.recipes.get(&manifest.recipe);
    let now = minilab_core::image_links::unix_now();
    let mut outputs = Vec::with_capacity(manifest.outputs.len());
    for output in &manifest.outputs {
        let extension = output.key.rsplit_once('.').map_or("bin", |(_, ext)| ext);
        let download_name = format!("{stem}-{}.{extension}", output.name);
        let url = state
            .s3
            .get_object()
            .bucket(&state.config.processed_bucket)
            .key(&output.key)
            .response_content_disposition(format!("attachment; filename=\"{download_name}\""))
            .customize()
            .config_override(signed_by.clone())
            .presigned(presigning.clone())
            .await
            .map_err(ApiError::internal)?;
        let (image_url, widths) = stable_address(&state.config, id, output, recipe, now);
        outputs.push(OutputView {
            name: output.name.clone(),
            url: url.uri().to_owned(),
            image_url,
            widths,
            width: output.width,
            height: output.height,
            bytes: output.bytes,
            content_type: output.content_type.clone(),
            frames: output.frames,
        });
    }
    Ok(UploadStatus {
        id,
        state: match manifest.state {
            ManifestState::Succeeded => UploadState::Succeeded,
            ManifestState::Failed => UploadState::Failed,
            ManifestState::Deleted => UploadState::Deleted,
        },
        created_at: id.created_at(),
        recipe: Some(manifest.recipe),
        source: Some(SourceView {
            bytes: manifest.source.bytes,
            width: manifest.source.width,
            height: manifest.source.height,
            format: manifest.source.format,
            frames: manifest.source.frames,
        }),
        outputs,
        placeholder: manifest.placeholder,
        processing_ms: Some(manifest.timings.total_ms()),
        error: manifest.error,
    })
}

/// The widths `recipe` allows its output `name` at on demand, below `width`
/// (its own), smallest first.
fn smaller_widths(recipe: &minilab_core::Recipe, name: &str, width: u32) -> Vec<u32> {
    let mut widths: Vec<u32> = recipe
        .outputs
        .iter()
        .find(|o| o.name == name)
        .map(|o| o.widths.iter().copied().filter(|&w| w < width).collect())
        .unwrap_or_default();
    widths.sort_unstable();
    widths.dedup();
    widths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_lists_the_allowed_widths_below_the_outputs_own() {
        use minilab_core::recipe::{Format, OutputSpec, Recipe};
        let recipe = Recipe {
            name: "r".into(),
            description: String::new(),
            colorspace: Default::default(),
            outputs: vec![OutputSpec {
                widths: vec![1200, 640, 320, 640, 1024],
                ..OutputSpec::new("large", Format::Jpeg, Vec::new())
            }],
        };
        assert_eq!(smaller_widths(&recipe, "large", 1024), [320, 640]);
        assert_eq!(smaller_widths(&recipe, "large", 300), Vec::<u32>::new());
        assert_eq!(smaller_widths(&recipe, "other", 1024), Vec::<u32>::new());
    }

    #[test]
    fn an_upload_that_never_arrives_expires_after_its_url_and_a_grace() {
        let created = Utc::now();
        let id = UploadId::new(created);
        let ttl = Duration::from_secs(900);
        assert_eq!(
            pending_state(id, false, ttl, created),
            UploadState::AwaitingUpload
        );
        let lapse = created + chrono::Duration::seconds(900 + 59);
        assert_eq!(
            pending_state(id, false, ttl, lapse),
            UploadState::AwaitingUpload
        );
        let later = created + chrono::Duration::seconds(900 + 61);
        assert_eq!(pending_state(id, false, ttl, later), UploadState::Expired);
        assert_eq!(pending_state(id, true, ttl, later), UploadState::Processing);
    }
}
