//! `GET /i/{id}/{output}.{ext}`: an upload's output at a stable address a website can
//! use in `<img src>` and a CDN can cache for a year, instead of an expiring
//! download link; `{output}.auto`, the same image in the best format the browser
//! takes (`Vary: Accept`). The address is the capability (the id's 80 random bits), so
//! where uploads are private (sign-in) it is served only signed
//! ([`minilab_core::image_links`]; see docs/architecture.md, "Delivery").

use crate::ApiState;
use crate::error::{ApiError, Code, ErrorBody, Result};
use crate::limits::Client;
use crate::renders;
use crate::uploads::status::read_manifest;
use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minilab_core::image_links::{self, LinkError};
use minilab_core::keys::{ImageRequest, OutputFile};
use minilab_core::manifest::{ManifestState, OutputRecord};
use minilab_core::recipe::Format;
use minilab_core::{Manifest, UploadId, keys, negotiate};

/// Outputs never change under their key: a year, immutable.
pub const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// One output's bytes, streamed from the processed bucket, with its type (from its
/// extension, never from the object's metadata), its ETag and a year's caching; an
/// `If-None-Match` naming its ETag gets 304. `{output}.w{width}.{ext}` is the output
/// at a width its recipe allows (`widths`), made on the first request
/// ([`renders`]). Anything that is not an output of an upload (the manifest, the
/// claim, a batch's results, a malformed name, a width not allowed) is `not-found`,
/// like an output that does not exist (yet). `{output}.auto` (and
/// `{output}.w{width}.auto`) is, among the upload's outputs of `{output}`'s size, the
/// AVIF or WebP the request's `Accept` names, else `{output}` itself
/// ([`minilab_core::negotiate`]), with `Vary: Accept`.
#[utoipa::path(get, path = "/i/{id}/{file}", tag = "images",
    params(
        ("id" = String, Path, description = "The upload's id"),
        ("file" = String, Path, description = "An output's name and its format's extension (`large.jpg`), or with a width its recipe allows (`large.w640.jpg`); `.auto` instead of the extension for the best format `Accept` names among the outputs of its size (`large.auto`, `large.w640.auto`); a later revision's (after a reprocessing) with `.r{revision}` after the name (`large.r1.jpg`)"),
    ),
    responses(
        (status = 200, description = "The output's bytes, `Cache-Control: public, max-age=31536000, immutable`", content_type = "image/*"),
        (status = 304, description = "Not modified: `If-None-Match` named its ETag"),
        (status = 404, description = "`not-found`: no such output (or not yet)", body = ErrorBody),
        (status = 429, description = "`rate-limited` (with `Retry-After`): reads, or widths made for this client", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
pub async fn image(
    State(state): State<ApiState>,
    client: Option<Extension<Client>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response> {
    let id: UploadId = id.parse().map_err(|_| not_found())?;
    let signed = signed_link(&state, id, query.as_deref())?;
    let mut response = answer(&state, client, &headers, id, &file).await?;
    // A signed address is one person's, for a while: never kept by a CDN.
    if let Some(left) = signed
        && let Ok(value) = HeaderValue::try_from(format!("private, max-age={left}"))
    {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

/// With signed links ([`minilab_core::image_links`]), the seconds the request's
/// link stays valid, or why it opens nothing; `None` when links are not signed.
fn signed_link(state: &ApiState, id: UploadId, query: Option<&str>) -> Result<Option<u64>> {
    let Some(links) = state.config.images.links() else {
        return Ok(None);
    };
    let query = query.unwrap_or_default();
    let value = |name| image_links::query_value(query, name);
    links
        .check(
            id,
            value("expires"),
            value("signature"),
            image_links::unix_now(),
        )
        .map(Some)
        .map_err(|err| match err {
            LinkError::Invalid => ApiError::new(
                Code::ImageLinkInvalid,
                "this image's address must carry the signature its status gave",
            ),
            LinkError::Expired => ApiError::new(
                Code::ImageLinkExpired,
                "this image's address has expired; its status gives a fresh one",
            ),
        })
}

/// What `/i/{id}/{file}` answers, before the signed link's caching.
async fn answer(
    state: &ApiState,
    client: Option<Extension<Client>>,
    headers: &HeaderMap,
    id: UploadId,
    file: &str,
) -> Result<Response> {
    match keys::parse_image_request(file).ok_or_else(not_found)? {
        ImageRequest::File(file) => serve(state, client, headers, id, file, None).await,
        ImageRequest::Auto {
            name,
            revision,
            width,
        } => {
            let manifest = read_manifest(state, id)
                .await?
                .filter(|m| m.state == ManifestState::Succeeded)
                .ok_or_else(not_found)?;
            let file = chosen(state, &manifest, headers, name, revision, width)?;
            let mut response = serve(state, client, headers, id, file, Some(&manifest)).await?;
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept"));
            Ok(response)
        }
    }
}

/// The file `{name}[.r{revision}][.w{width}].auto` serves: among `manifest`'s
/// outputs of that revision, the type the request's `Accept` takes best; at a width,
/// only a type whose output may be made at it (sizes are made for the current
/// revision only).
fn chosen<'a>(
    state: &ApiState,
    manifest: &'a Manifest,
    headers: &HeaderMap,
    name: &str,
    revision: u32,
    width: Option<u32>,
) -> Result<OutputFile<'a>> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let outputs = manifest.outputs_of(revision).ok_or_else(not_found)?;
    let can_serve = |output: &OutputRecord| {
        width.is_none_or(|width| {
            revision == manifest.revision
                && renders::allows(state, &manifest.recipe, &output.name, width)
        })
    };
    let (name, format) =
        negotiate::choose(outputs, name, accept, can_serve).ok_or_else(not_found)?;
    Ok(OutputFile {
        name,
        revision,
        width,
        format,
    })
}

/// The file's bytes (or a 304), made first if it is a width asked for the first time
/// (from `manifest`, the upload's, if read already).
async fn serve(
    state: &ApiState,
    client: Option<Extension<Client>>,
    headers: &HeaderMap,
    id: UploadId,
    file: OutputFile<'_>,
    manifest: Option<&Manifest>,
) -> Result<Response> {
    let key = file.key(id);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let object = state
        .s3
        .get_object()
        .bucket(&state.config.processed_bucket)
        .key(&key)
        .set_if_none_match(if_none_match.map(str::to_owned))
        .send()
        .await;
    let object = match object {
        Ok(object) => object,
        Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(304) => {
            return Ok(not_modified(if_none_match));
        }
        // A width the recipe allows, asked for the first time: made now.
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            let client = client.map(|Extension(Client(client))| client);
            let made = renders::make(state, client, id, file, manifest).await?;
            return Ok(image_response(
                Body::from(made.bytes),
                file.format,
                None,
                made.etag,
            ));
        }
        Err(err) => return Err(ApiError::internal(format!("GetObject {key}: {err}"))),
    };
    let etag = object.e_tag().map(str::to_owned);
    // A store that ignores the condition: the answer is the same.
    if etag.is_some() && etag.as_deref() == if_none_match {
        return Ok(not_modified(if_none_match));
    }
    let length = object.content_length();
    let body = futures::stream::unfold(object.body, |mut body| async move {
        body.next().await.map(|chunk| (chunk, body))
    });
    Ok(image_response(
        Body::from_stream(body),
        file.format,
        length,
        etag,
    ))
}

/// `body` as an image of `format`, cacheable.
fn image_response(
    body: Body,
    format: Format,
    length: Option<i64>,
    etag: Option<String>,
) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Some(length) = length.and_then(|l| HeaderValue::try_from(l.to_string()).ok()) {
        headers.insert(header::CONTENT_LENGTH, length);
    }
    if let Some(etag) = etag.and_then(|e| HeaderValue::try_from(e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    cacheable(headers);
    response
}

fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "there is no such image")
}

fn not_modified(etag: Option<&str>) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if let Some(etag) = etag.and_then(|e| HeaderValue::try_from(e).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    cacheable(response.headers_mut());
    response
}

/// Cached for a year by browsers and CDNs, usable from any site (`<img>`, canvas),
/// never sniffed as anything but its type.
fn cacheable(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
}
