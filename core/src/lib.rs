//! minilab's domain: what an upload is, how it is named in S3, which recipes exist,
//! how an image goes through the pipeline, and what the worker records about it.
//!
//! Nothing here does I/O: the pipeline takes bytes and returns bytes, so it is tested
//! and benchmarked without any service.

pub mod error;
pub mod event;
pub mod id;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod pipeline;
pub mod recipe;

pub use error::{ErrorCode, ImageError};
pub use id::UploadId;
pub use limits::Limits;
pub use manifest::Manifest;
pub use recipe::{Recipe, RecipeBook};

/// Content types a browser may upload; the worker still trusts only the bytes.
pub const ACCEPTED_CONTENT_TYPES: &[&str] = &["image/jpeg", "image/png", "image/webp", "image/gif"];

/// The user-metadata name (after `x-amz-meta-`) that carries the recipe with an upload.
pub const RECIPE_METADATA: &str = "recipe";
