//! `POST /api/v1/uploads` issues a presigned POST; `GET /api/v1/uploads/{id}` says
//! where the upload is, from S3 alone.

use crate::ApiState;
use crate::auth::Subject;
use crate::error::{ApiError, Code, Result};
use crate::limits::{self, Client, UploadBudget};
use crate::post_policy::{FormFields, PostPolicy};
use crate::signing;
use aws_sdk_s3::presigning::PresigningConfig;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use minilab_core::arrival::{Arrival, arrival};
use minilab_core::manifest::{ErrorRecord, ManifestState, Placeholder};
use minilab_core::{Manifest, UploadId, accepted_content_types, keys};
use minilab_service::objects;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUpload {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub recipe: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTicket {
    pub id: UploadId,
    /// POST `fields` and then the file (as the last part, named `file`) to `url`.
    pub upload: PresignedPost,
    pub expires_at: DateTime<Utc>,
    pub status_url: String,
    pub max_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct PresignedPost {
    pub url: String,
    pub fields: FormFields,
}

pub async fn create(
    State(state): State<ApiState>,
    subject: Option<Extension<Subject>>,
    client: Option<Extension<Client>>,
    budget: Option<Extension<UploadBudget>>,
    body: std::result::Result<Json<CreateUpload>, JsonRejection>,
) -> Result<(StatusCode, Json<UploadTicket>)> {
    let Json(request) = body
        .map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()).with_status(e.status()))?;
    if state.recipes.get(&request.recipe).is_none() {
        return Err(ApiError::new(
            Code::UnknownRecipe,
            format!("there is no recipe named {:?}", truncate(&request.recipe)),
        ));
    }
    if !accepted_content_types().contains(&request.content_type.as_str()) {
        return Err(ApiError::new(
            Code::UnsupportedType,
            format!(
                "{:?} is not accepted; upload one of {}",
                truncate(&request.content_type),
                accepted_content_types().join(", ")
            ),
        ));
    }
    if request.size == 0 {
        return Err(ApiError::new(Code::EmptyFile, "the file is empty"));
    }
    if request.size > state.max_upload_bytes {
        return Err(ApiError::new(
            Code::TooLarge,
            format!(
                "the file has {} bytes; the limit is {}",
                request.size, state.max_upload_bytes
            ),
        ));
    }
    if request.filename.len() > 1024 {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "the file name is longer than 1024 bytes",
        ));
    }

    if let (Some(Extension(Client(client))), Some(Extension(UploadBudget(budget)))) =
        (client, budget)
        && let Err(wait) = budget.take(client, std::time::Instant::now(), request.size as f64)
    {
        state.metrics.refused(Code::UploadBudgetExceeded);
        let seconds = limits::retry_after(wait);
        return Err(ApiError::too_many(
            Code::UploadBudgetExceeded,
            format!(
                "this client's upload budget has no room for {} bytes now; try again in {seconds} s",
                request.size
            ),
            seconds,
        ));
    }

    let now = Utc::now();
    let id = match &subject {
        Some(Extension(Subject(owner))) => UploadId::owned_by(now, owner),
        None => UploadId::new(now),
    };
    let key = keys::source_key(id);
    let credentials = state
        .signer
        .credentials()
        .await
        .map_err(ApiError::internal)?;
    let ttl = signing::lifetime(state.upload_ttl, credentials.expiry(), now.into());
    let expires_at = now + chrono::Duration::from_std(ttl).map_err(ApiError::internal)?;
    let stem = minilab_core::safe_file_stem(&request.filename);
    let mut metadata = vec![(minilab_core::RECIPE_METADATA, request.recipe.as_str())];
    if let Some(stem) = &stem {
        metadata.push((minilab_core::FILENAME_METADATA, stem.as_str()));
    }
    let policy = PostPolicy {
        bucket: &state.uploads_bucket,
        key: &key,
        content_type: &request.content_type,
        max_bytes: state.max_upload_bytes,
        metadata: &metadata,
        expires_at,
    };
    let fields = policy.sign(&credentials, &state.region, now);
    tracing::info!(%id, recipe = request.recipe, size = request.size, "upload issued");
    state.metrics.issued();
    if let Some(tracker) = &state.tracker {
        crate::tracking::spawn_tracking(
            tracker.clone(),
            state.metrics.clone(),
            crate::tracking::TrackedUpload {
                id,
                recipe: request.recipe.clone(),
                uploads_bucket: state.uploads_bucket.clone(),
                key: key.clone(),
                processed_bucket: state.processed_bucket.clone(),
                prefix: keys::upload_prefix(id),
                expires_at,
            },
        );
    }
    Ok((
        StatusCode::CREATED,
        Json(UploadTicket {
            id,
            upload: PresignedPost {
                url: state.upload_url.clone(),
                fields,
            },
            expires_at,
            status_url: format!("/api/v1/uploads/{id}"),
            max_bytes: state.max_upload_bytes,
        }),
    ))
}

fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(64).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    AwaitingUpload,
    Processing,
    Succeeded,
    Failed,
    Expired,
}

impl UploadState {
    fn is_final(self) -> bool {
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadStatus {
    pub id: UploadId,
    pub state: UploadState,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    pub outputs: Vec<OutputView>,
    /// What to show until the outputs load (a ThumbHash and the dominant colour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<Placeholder>,
    pub error: Option<ErrorRecord>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputView {
    pub name: String,
    /// A presigned GET that downloads the output as an attachment.
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
}

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    /// Seconds to wait for a final state (at most [`MAX_WAIT`]).
    pub wait: Option<u64>,
}

const MAX_WAIT: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(200);

pub async fn status(
    State(state): State<ApiState>,
    subject: Option<Extension<Subject>>,
    Path(id): Path<String>,
    query: std::result::Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UploadStatus>> {
    let not_found = || ApiError::new(Code::NotFound, "there is no upload with this id");
    let id: UploadId = id.parse().map_err(|_| not_found())?;
    let from_the_future = id.created_at() > Utc::now() + chrono::Duration::minutes(5);
    // Signed in: only the subject that created an upload sees it.
    let someone_elses = subject.is_some_and(|Extension(Subject(reader))| !id.is_owned_by(&reader));
    if from_the_future || someone_elses {
        return Err(not_found());
    }
    let Query(query) = query.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let status = current_status(&state, id).await?;
        if status.state.is_final() || tokio::time::Instant::now() + POLL_EVERY > deadline {
            return Ok(Json(status));
        }
        // S3 cannot notify the API, so a long poll re-reads it at a bounded rate.
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn current_status(state: &ApiState, id: UploadId) -> Result<UploadStatus> {
    if let Some(manifest) = read_manifest(state, id).await? {
        return status_from_manifest(state, id, manifest).await;
    }
    let stored = source_stored(state, id).await?;
    Ok(UploadStatus {
        id,
        state: pending_state(id, stored, state.upload_ttl, Utc::now()),
        created_at: id.created_at(),
        recipe: None,
        outputs: Vec::new(),
        placeholder: None,
        error: None,
    })
}

async fn read_manifest(state: &ApiState, id: UploadId) -> Result<Option<Manifest>> {
    objects::read_manifest(&state.s3, &state.processed_bucket, &keys::manifest_key(id))
        .await
        .map_err(ApiError::internal)
}

async fn source_stored(state: &ApiState, id: UploadId) -> Result<bool> {
    objects::exists(&state.s3, &state.uploads_bucket, &keys::source_key(id))
        .await
        .map_err(ApiError::internal)
}

async fn status_from_manifest(
    state: &ApiState,
    id: UploadId,
    manifest: Manifest,
) -> Result<UploadStatus> {
    // Signed with the signer's credentials, not the client's own cache, so that the
    // URL's lifetime can be capped at what exactly these credentials have left.
    let credentials = state
        .signer
        .credentials()
        .await
        .map_err(ApiError::internal)?;
    let ttl = signing::lifetime(
        state.download_ttl,
        credentials.expiry(),
        std::time::SystemTime::now(),
    );
    let presigning = PresigningConfig::expires_in(ttl).map_err(ApiError::internal)?;
    let signed_by = aws_sdk_s3::Config::builder()
        .credentials_provider(credentials)
        .identity_cache(aws_sdk_s3::config::IdentityCache::no_cache());
    let stem = manifest
        .source
        .filename
        .clone()
        .unwrap_or_else(|| id.to_string());
    let mut outputs = Vec::with_capacity(manifest.outputs.len());
    for output in &manifest.outputs {
        let extension = output.key.rsplit_once('.').map_or("bin", |(_, ext)| ext);
        let download_name = format!("{stem}-{}.{extension}", output.name);
        let url = state
            .s3
            .get_object()
            .bucket(&state.processed_bucket)
            .key(&output.key)
            .response_content_disposition(format!("attachment; filename=\"{download_name}\""))
            .customize()
            .config_override(signed_by.clone())
            .presigned(presigning.clone())
            .await
            .map_err(ApiError::internal)?;
        outputs.push(OutputView {
            name: output.name.clone(),
            url: url.uri().to_owned(),
            width: output.width,
            height: output.height,
            bytes: output.bytes,
            content_type: output.content_type.clone(),
        });
    }
    Ok(UploadStatus {
        id,
        state: match manifest.state {
            ManifestState::Succeeded => UploadState::Succeeded,
            ManifestState::Failed => UploadState::Failed,
        },
        created_at: id.created_at(),
        recipe: Some(manifest.recipe),
        outputs,
        placeholder: manifest.placeholder,
        error: manifest.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
