//! `{id}/manifest.json`: the worker's record of one upload, written after every
//! output. The API answers status from it; the operator derives ImageJob status
//! from it. Its presence means the upload is finished, one way or the other.

use crate::UploadId;
use crate::error::{ErrorCode, ImageError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The manifest layout's version; readers reject versions they do not know.
    pub version: u32,
    /// The upload's id; absent for an image of a batch job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<UploadId>,
    pub state: ManifestState,
    pub recipe: String,
    pub source: Source,
    #[serde(default)]
    pub outputs: Vec<OutputRecord>,
    /// What to show before the outputs load; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<Placeholder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    pub timings: StageTimings,
    pub finished_at: DateTime<Utc>,
}

impl Manifest {
    pub const VERSION: u32 = 1;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestState {
    Succeeded,
    Failed,
    /// Deleted by its owner: the source, outputs and sizes made on demand are gone,
    /// and this record stays so that the upload reads as deleted.
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub bucket: String,
    pub key: String,
    pub bytes: u64,
    /// The browser's file name, reduced to safe characters, for download names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// An animation's frames (absent for a still image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    /// The SHA-256 of the upload's delete token ([`crate::deletion`]), from the
    /// source's metadata; absent for batch images and uploads issued before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputRecord {
    pub name: String,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
    /// An animation's frames (absent for a still image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
}

/// A placeholder for an image that has not loaded yet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placeholder {
    /// A ThumbHash (https://evanw.github.io/thumbhash/), base64: about 25 bytes that
    /// decode to a blurred picture of the image, with its aspect ratio.
    pub thumbhash: String,
    /// The image's most common colour, `#rrggbb`.
    pub dominant_color: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub code: ErrorCode,
    pub message: String,
}

impl From<&ImageError> for ErrorRecord {
    fn from(err: &ImageError) -> Self {
        Self {
            code: err.code,
            message: err.message.clone(),
        }
    }
}

/// Milliseconds spent in each stage of the worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageTimings {
    pub download_ms: f64,
    pub decode_ms: f64,
    pub transform_ms: f64,
    pub encode_ms: f64,
    pub upload_ms: f64,
}

impl StageTimings {
    /// All stages together: the worker's time on the upload.
    pub fn total_ms(&self) -> f64 {
        self.download_ms + self.decode_ms + self.transform_ms + self.encode_ms + self.upload_ms
    }
}
