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
    /// Which processing of the upload this is: 0 the first, then one more for each
    /// reprocessing that succeeded (its outputs' keys say `.r{revision}`,
    /// [`crate::keys::OutputFile`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u32,
    /// The last reprocessing asked of the upload; when it failed, the rest of the
    /// manifest is still the revision before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocessed: Option<Reprocessed>,
    /// The outputs of earlier revisions, still stored and served at their
    /// addresses (newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Revision>,
}

impl Manifest {
    pub const VERSION: u32 = 1;

    /// The outputs of `revision`: the current ones or an earlier revision's.
    pub fn outputs_of(&self, revision: u32) -> Option<&[OutputRecord]> {
        if revision == self.revision {
            return Some(&self.outputs);
        }
        self.earlier
            .iter()
            .find(|r| r.revision == revision)
            .map(|r| r.outputs.as_slice())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A reprocessing of an upload by an ImageJob (`spec.reprocess`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reprocessed {
    /// The uid of the ImageJob that asked for it: a second delivery of its work
    /// finds it done.
    pub job: String,
    pub recipe: String,
    /// Why it failed (the upload kept its revision), or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
}

/// An earlier revision's outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub revision: u32,
    pub recipe: String,
    pub outputs: Vec<OutputRecord>,
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
