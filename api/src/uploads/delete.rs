//! `DELETE /api/v1/uploads/{id}`: the owner removes an upload, as a short list of
//! steps: check who asks (signed in as its owner, or holding the delete token its
//! ticket carried), make sure it is finished, turn its manifest into a tombstone
//! (the upload then reads `deleted`, and no size is made on demand any more), delete
//! everything else under its results prefix but the claim (outputs, sizes made on
//! demand) and its source, then forget its ImageJob and ask the CDN to forget its
//! images. Each step may run again: a DELETE that failed half-way is finished by
//! the next one.

use crate::ApiState;
use crate::auth::Subject;
use crate::error::{ApiError, Code, ErrorBody, Result};
use crate::uploads::status::{read_manifest, source_stored, visible_upload};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use minilab_core::manifest::ManifestState;
use minilab_core::{Manifest, UploadId, deletion, keys};

/// The header a DELETE carries the upload's delete token in.
pub const DELETE_TOKEN_HEADER: &str = "x-delete-token";

/// Most pages of keys one upload's prefix is listed in (1000 keys a page).
const MAX_PAGES: usize = 10;

/// Deletes the upload's source, outputs and sizes made on demand; its status then
/// reads `deleted`. Signed in, the owner may; otherwise the request must carry the
/// ticket's `deleteToken` in `X-Delete-Token`.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id"),
        ("X-Delete-Token" = Option<String>, Header, description = "The ticket's `deleteToken` (without sign-in)"),
    ),
    responses(
        (status = 204, description = "Deleted (or deleted already)"),
        (status = 401, description = "`token-*` (sign-in on)", body = ErrorBody),
        (status = 403, description = "`delete-token-invalid`: no token, or not this upload's", body = ErrorBody),
        (status = 404, description = "`not-found`: no such upload, or another subject's", body = ErrorBody),
        (status = 409, description = "`not-finished`: stored but not processed yet; try again when it is", body = ErrorBody),
        (status = 429, description = "`rate-limited` (with `Retry-After`)", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    subject: Option<Extension<Subject>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let signed_in = subject.is_some();
    let id = visible_upload(&id, subject)?;
    let manifest = finished(&state, id).await?;
    if !signed_in {
        authorize(&manifest, &headers)?;
    }
    if manifest.state != ManifestState::Deleted {
        write_tombstone(&state, manifest).await?;
    }
    delete_results(&state, id).await?;
    delete_source(&state, id).await?;
    forget_job(&state, id).await;
    purge_cdn(&state, id).await;
    tracing::info!(%id, "upload deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The upload's manifest: a stored upload without one is still being processed
/// (`not-finished`: deleting under a worker would leave its outputs behind), and
/// one with neither is `not-found`.
async fn finished(state: &ApiState, id: UploadId) -> Result<Manifest> {
    match read_manifest(state, id).await? {
        Some(manifest) => Ok(manifest),
        None if source_stored(state, id).await? => Err(ApiError::new(
            Code::NotFinished,
            "the upload is still being processed; delete it once it has finished",
        )),
        None => Err(ApiError::new(
            Code::NotFound,
            "there is no upload with this id",
        )),
    }
}

/// The request's delete token must be the one whose key the manifest records.
fn authorize(manifest: &Manifest, headers: &HeaderMap) -> Result<()> {
    let token = headers
        .get(DELETE_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let allowed = manifest
        .source
        .delete_key
        .as_deref()
        .is_some_and(|key| deletion::token_matches(token, key));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::DeleteTokenInvalid,
            "deleting an upload takes the deleteToken of its ticket, in X-Delete-Token",
        ))
    }
}

/// The manifest, emptied of outputs, in state `deleted` (its delete key kept, so
/// that a DELETE that fails later can be sent again).
async fn write_tombstone(state: &ApiState, manifest: Manifest) -> Result<()> {
    let Some(id) = manifest.id else {
        return Err(ApiError::internal("an upload's manifest without its id"));
    };
    let tombstone = Manifest {
        state: ManifestState::Deleted,
        outputs: Vec::new(),
        placeholder: None,
        error: None,
        earlier: Vec::new(),
        finished_at: chrono::Utc::now(),
        ..manifest
    };
    let body = serde_json::to_vec_pretty(&tombstone).map_err(ApiError::internal)?;
    state
        .s3
        .put_object()
        .bucket(&state.config.processed_bucket)
        .key(keys::manifest_key(id))
        .content_type("application/json")
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Every object under the upload's results prefix but its manifest and its claim
/// (they stay, so that no copy of its event and no second upload on its ticket is
/// processed: the worker looks for a manifest only behind a claim), a page of keys
/// (and one DeleteObjects) at a time.
async fn delete_results(state: &ApiState, id: UploadId) -> Result<()> {
    let bucket = &state.config.processed_bucket;
    let prefix = keys::upload_prefix(id);
    let (manifest, claim) = (keys::manifest_key_in(&prefix), keys::claim_key_in(&prefix));
    let mut continuation = None;
    for _ in 0..MAX_PAGES {
        let page = state
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(keys::upload_prefix(id))
            .set_continuation_token(continuation)
            .send()
            .await
            .map_err(ApiError::internal)?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|object| object.key())
            .filter(|key| *key != manifest && *key != claim)
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(ApiError::internal)?;
        if !objects.is_empty() {
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(ApiError::internal)?;
            let deleted = state
                .s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(ApiError::internal)?;
            if let Some(error) = deleted.errors().first() {
                return Err(ApiError::internal(format!(
                    "S3 did not delete {}: {}",
                    error.key().unwrap_or_default(),
                    error.message().unwrap_or_default()
                )));
            }
        }
        match page.next_continuation_token() {
            Some(token) if page.is_truncated() == Some(true) => {
                continuation = Some(token.to_owned())
            }
            _ => return Ok(()),
        }
    }
    Err(ApiError::internal(format!(
        "more than {MAX_PAGES} pages of keys under {id}/"
    )))
}

/// The source, from the uploads bucket (S3 answers a missing key as deleted).
async fn delete_source(state: &ApiState, id: UploadId) -> Result<()> {
    state
        .s3
        .delete_object()
        .bucket(&state.config.uploads_bucket)
        .key(keys::source_key(id))
        .send()
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// The upload's images in the CDN, when one is in front; best effort.
async fn purge_cdn(state: &ApiState, id: UploadId) {
    if let Some(cdn) = &state.cdn {
        crate::cdn::purge(cdn.as_ref(), &state.metrics, id).await;
    }
}

/// The upload's ImageJob, when uploads are tracked; best effort, like tracking.
async fn forget_job(state: &ApiState, id: UploadId) {
    if let Some(tracker) = &state.tracker {
        crate::tracking::forget(tracker.as_ref(), &state.metrics, id).await;
    }
}
