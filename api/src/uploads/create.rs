//! `POST /api/v1/uploads`: checks the request and issues a presigned POST (the
//! "ticket") for the browser to upload the file straight to the uploads bucket.

use crate::ApiState;
use crate::auth::Subject;
use crate::error::{ApiError, Code, ErrorBody, Result};
use crate::limits::{self, Client, UploadBudget};
use crate::post_policy::{FormFields, PostPolicy};
use crate::signing;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use minilab_core::recipe::FocalPoint;
use minilab_core::{UploadId, accepted_content_types, deletion, keys};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUpload {
    /// The file's name; only a safe stem of it is kept, for download names.
    pub filename: String,
    /// One of `acceptedContentTypes` from `/api/v1/recipes`.
    pub content_type: String,
    /// The file's size in bytes; the upload must have exactly this many.
    pub size: u64,
    /// The name of a recipe from `/api/v1/recipes`.
    pub recipe: String,
    /// Where to POST the final status (signed; see the README's Webhooks section).
    /// Only URLs under a prefix the deployment allows (`--webhook-allow`).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Where the photo's subject is: fractions (0-1) of its width and height as
    /// shown, from the top left. Crops and covers with `gravity: focus` keep it.
    #[serde(default)]
    pub focus: Option<FocalPoint>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadTicket {
    #[schema(value_type = String, example = "01m8y92htck9659hd5e5hehfjs")]
    pub id: UploadId,
    /// POST `fields` and then the file (as the last part, named `file`) to `url`.
    pub upload: PresignedPost,
    pub expires_at: DateTime<Utc>,
    pub status_url: String,
    pub max_bytes: u64,
    /// Send it in `X-Delete-Token` to `DELETE /api/v1/uploads/{id}`; kept nowhere
    /// else (only its SHA-256 goes with the upload), so keep it to delete later.
    pub delete_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PresignedPost {
    pub url: String,
    /// The form fields, each to send as it is, before the file.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub fields: FormFields,
}

/// Checks the request and issues a presigned POST for the file: POST `upload.fields`,
/// then the file as the last form part named `file`, to `upload.url`.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "uploads", request_body = CreateUpload,
    responses(
        (status = 201, description = "The ticket", body = UploadTicket),
        (status = 400, description = "`invalid-request`, `unknown-recipe`, `empty-file`, `webhook-not-allowed`", body = ErrorBody),
        (status = 401, description = "`token-*` (sign-in on)", body = ErrorBody),
        (status = 413, description = "`too-large`", body = ErrorBody),
        (status = 415, description = "`unsupported-type`, or `invalid-request` without a JSON content type", body = ErrorBody),
        (status = 422, description = "`invalid-request`: a body of the wrong shape", body = ErrorBody),
        (status = 429, description = "`rate-limited`, `upload-budget-exceeded` (with `Retry-After`)", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `sign-in-unavailable`", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    subject: Option<Extension<Subject>>,
    client: Option<Extension<Client>>,
    budget: Option<Extension<UploadBudget>>,
    body: std::result::Result<Json<CreateUpload>, JsonRejection>,
) -> Result<(StatusCode, Json<UploadTicket>)> {
    let Json(request) = body
        .map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()).with_status(e.status()))?;
    check(&state, &request)?;
    charge(&state, client, budget, &request)?;
    issue(&state, subject, &request).await
}

/// Refuses a request no upload could come of: an unknown recipe, a type not
/// accepted, an empty or too large file, a webhook not allowed, a long file name.
fn check(state: &ApiState, request: &CreateUpload) -> Result<()> {
    if state.config.recipes.get(&request.recipe).is_none() {
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
    if request.size > state.config.max_upload_bytes {
        return Err(ApiError::new(
            Code::TooLarge,
            format!(
                "the file has {} bytes; the limit is {}",
                request.size, state.config.max_upload_bytes
            ),
        ));
    }
    if let Some(url) = &request.webhook
        && !state.config.webhooks.allows(url)
    {
        return Err(ApiError::new(
            Code::WebhookNotAllowed,
            format!(
                "webhooks may not be sent to {:?} from this deployment",
                truncate(url)
            ),
        ));
    }
    if request
        .focus
        .is_some_and(|f| FocalPoint::new(f.x, f.y).is_none())
    {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "focus: x and y are fractions of the width and height, 0-1",
        ));
    }
    if request.filename.len() > 1024 {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "the file name is longer than 1024 bytes",
        ));
    }
    Ok(())
}

/// Takes the file's bytes from the client's upload budget (when limits are on).
fn charge(
    state: &ApiState,
    client: Option<Extension<Client>>,
    budget: Option<Extension<UploadBudget>>,
    request: &CreateUpload,
) -> Result<()> {
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
    Ok(())
}

/// The ticket: a new id (its owner's, when signed in), the POST policy for exactly
/// this file signed for as long as the credentials allow, and the upload tracked.
async fn issue(
    state: &ApiState,
    subject: Option<Extension<Subject>>,
    request: &CreateUpload,
) -> Result<(StatusCode, Json<UploadTicket>)> {
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
    let ttl = signing::lifetime(state.config.upload_ttl, credentials.expiry(), now.into());
    let expires_at = now + chrono::Duration::from_std(ttl).map_err(ApiError::internal)?;
    let stem = minilab_core::safe_file_stem(&request.filename);
    let mut metadata = vec![(minilab_core::RECIPE_METADATA, request.recipe.as_str())];
    if let Some(stem) = &stem {
        metadata.push((minilab_core::FILENAME_METADATA, stem.as_str()));
    }
    if let Some(url) = &request.webhook {
        metadata.push((minilab_core::webhook::WEBHOOK_METADATA, url.as_str()));
    }
    let focus = request.focus.map(FocalPoint::to_metadata);
    if let Some(focus) = &focus {
        metadata.push((minilab_core::FOCUS_METADATA, focus.as_str()));
    }
    let delete_token = deletion::new_token();
    let delete_key = deletion::key_of(&delete_token);
    metadata.push((deletion::DELETE_KEY_METADATA, delete_key.as_str()));
    let policy = PostPolicy {
        bucket: &state.config.uploads_bucket,
        key: &key,
        content_type: &request.content_type,
        size: request.size,
        metadata: &metadata,
        expires_at,
    };
    let fields = policy.sign(&credentials, &state.config.region, now);
    tracing::info!(%id, recipe = request.recipe, size = request.size, "upload issued");
    state.metrics.issued();
    if let Some(tracker) = &state.tracker {
        crate::tracking::spawn_tracking(
            tracker.clone(),
            state.metrics.clone(),
            crate::tracking::TrackedUpload {
                id,
                recipe: request.recipe.clone(),
                uploads_bucket: state.config.uploads_bucket.clone(),
                key: key.clone(),
                processed_bucket: state.config.processed_bucket.clone(),
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
                url: state.config.upload_url.clone(),
                fields,
            },
            expires_at,
            status_url: format!("/api/v1/uploads/{id}"),
            max_bytes: state.config.max_upload_bytes,
            delete_token,
        }),
    ))
}

fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(64).map_or(s.len(), |(i, _)| i);
    &s[..end]
}
