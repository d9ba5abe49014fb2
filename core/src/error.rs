//! Stable error codes: clients, dashboards and tests rely on these strings.

use serde::{Deserialize, Serialize};

/// Why an image could not be processed. The `as_str` form is a stable, kebab-case
/// code; new variants may be added, existing strings never change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The object has no bytes at all.
    EmptyFile,
    /// The object is larger than the configured maximum number of bytes.
    FileTooLarge,
    /// The bytes are not an image in a format minilab accepts (JPEG, PNG, WebP, GIF,
    /// and HEIC in builds with libheif).
    UnsupportedFormat,
    /// The bytes start like a supported image but do not decode (truncated, damaged).
    CorruptImage,
    /// The image is wider or taller than allowed.
    DimensionsTooLarge,
    /// The image has more pixels than allowed, or decoding would need too much memory.
    TooManyPixels,
    /// An animation has more frames than allowed, or a progressive JPEG more scans
    /// (passes over the whole image) than any encoder writes.
    TooManyFrames,
    /// Processing took longer than the time budget.
    TimeBudgetExceeded,
    /// The upload names a recipe this deployment does not know.
    UnknownRecipe,
    /// Encoding an output failed.
    EncodeFailed,
    /// minilab itself failed (a bug): a panic inside the pipeline, or a step that
    /// refused pixels the steps before it made.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EmptyFile => "empty-file",
            ErrorCode::FileTooLarge => "file-too-large",
            ErrorCode::UnsupportedFormat => "unsupported-format",
            ErrorCode::CorruptImage => "corrupt-image",
            ErrorCode::DimensionsTooLarge => "dimensions-too-large",
            ErrorCode::TooManyPixels => "too-many-pixels",
            ErrorCode::TooManyFrames => "too-many-frames",
            ErrorCode::TimeBudgetExceeded => "time-budget-exceeded",
            ErrorCode::UnknownRecipe => "unknown-recipe",
            ErrorCode::EncodeFailed => "encode-failed",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permanent failure to process one image: retrying the same bytes gives the same
/// answer, so the worker records it in a `failed` manifest instead of retrying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ImageError {
    pub code: ErrorCode,
    pub message: String,
}

impl ImageError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
