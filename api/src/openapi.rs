//! The API's contract: an OpenAPI 3.1 document generated from the handlers' own
//! `#[utoipa::path]` attributes and their types, served at `/api/v1/openapi.json`.
//! A test (tests/openapi.rs) fails when a route is served that the document lacks.

use crate::error::{Code, ErrorBody, ErrorDetail};
use crate::{images, peers, probes, recipes, uploads, web};
use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::{ContentBuilder, ResponseBuilder};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "minilab",
        description = "Upload a photo straight to S3 with a presigned POST, then follow it \
            as it is processed into the recipe's outputs. Errors are `{\"error\": {code, message}}` \
            with a stable `code` (see the `Code` schema); 429 and some 503 answers carry `Retry-After`. \
            With sign-in on, the uploads routes need `Authorization: Bearer <JWT>`."
    ),
    paths(
        uploads::create::create,
        uploads::status::status,
        uploads::events::events,
        uploads::delete::delete,
        images::image,
        recipes::recipes,
        document,
        probes::livez,
        probes::readyz,
        probes::metrics,
        peers::changed,
    ),
    components(schemas(Code, ErrorBody, ErrorDetail, uploads::status::UploadStatus)),
    tags(
        (name = "uploads", description = "Issue an upload, follow it, read its outputs"),
        (name = "images", description = "Outputs at stable, cacheable addresses (`minilab up`; `minilab api --serve-images`)"),
        (name = "recipes", description = "What a photo can be turned into"),
        (name = "probes", description = "Liveness, readiness and metrics"),
        (name = "internal", description = "Between minilab's own processes, on the metrics address"),
        (name = "page", description = "The upload page (with `--serve-web` and in `minilab up`)"),
    )
)]
struct ApiDoc;

/// The document: the handlers' paths, and the upload page's files.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for path in web::paths() {
        let content_type = web::content_type(&path).unwrap_or("text/plain");
        let operation = OperationBuilder::new()
            .tag("page")
            .summary(Some(format!("The upload page's {path}")))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The file")
                    .content(content_type, ContentBuilder::new().build()),
            )
            .build();
        doc.paths
            .paths
            .insert(path, PathItem::new(HttpMethod::Get, operation));
    }
    doc
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "probes",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
