//! `GET /api/v1/recipes`: what a person may choose, and the limits of an upload.

use crate::ApiState;
use axum::Json;
use axum::extract::State;
use minilab_core::recipe::Format;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecipeList {
    pub recipes: Vec<RecipeView>,
    /// The largest file an upload may have, in bytes.
    pub max_upload_bytes: u64,
    /// The content types an upload may declare (HEIC only in builds with libheif).
    pub accepted_content_types: Vec<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecipeView {
    pub name: String,
    pub description: String,
    pub outputs: Vec<OutputSpecView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpecView {
    pub name: String,
    pub format: Format,
    pub content_type: &'static str,
    pub quality: u8,
    /// The steps before encoding, in order (`resize`, `crop`, `grayscale`, ...), as
    /// the recipe file writes them.
    #[schema(value_type = Vec<Object>)]
    pub operations: serde_json::Value,
}

/// The recipes this deployment has, with the upload limits.
#[utoipa::path(get, path = "/api/v1/recipes", tag = "recipes",
    responses((status = 200, description = "The recipes and the upload limits", body = RecipeList)))]
pub async fn recipes(State(state): State<ApiState>) -> Json<RecipeList> {
    let recipes = state
        .config
        .recipes
        .iter()
        .map(|r| RecipeView {
            name: r.name.clone(),
            description: r.description.clone(),
            outputs: r
                .outputs
                .iter()
                .map(|o| OutputSpecView {
                    name: o.name.clone(),
                    format: o.format,
                    content_type: o.format.content_type(),
                    quality: o.quality,
                    operations: serde_json::to_value(&o.operations).unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    Json(RecipeList {
        recipes,
        max_upload_bytes: state.config.max_upload_bytes,
        accepted_content_types: minilab_core::accepted_content_types().to_vec(),
    })
}
