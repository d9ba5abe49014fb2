//! minilab's domain: what an upload is, how it is named in S3, which recipes exist,
//! how an image goes through the pipeline, and what the worker records about it.
//!
//! Nothing here does I/O: the pipeline takes bytes and returns bytes, so it is tested
//! and benchmarked without any service.

pub mod arrival;
pub mod deletion;
pub mod error;
pub mod event;
pub mod id;
pub mod image_links;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod negotiate;
pub mod pipeline;
pub mod recipe;
pub mod upload;
pub mod webhook;

pub use error::{ErrorCode, ImageError};
pub use id::UploadId;
pub use limits::Limits;
pub use manifest::Manifest;
pub use recipe::{Recipe, RecipeBook};

/// Content types a browser may upload; the worker still trusts only the bytes. HEIC
/// (`image/heic`, `image/heif`) only where this build decodes it (libheif).
pub fn accepted_content_types() -> &'static [&'static str] {
    const ALL: &[&str] = &[
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/heic",
        "image/heif",
    ];
    if minilab_heif::AVAILABLE {
        ALL
    } else {
        &ALL[..4]
    }
}

/// The user-metadata name (after `x-amz-meta-`) that carries the recipe with an upload.
pub const RECIPE_METADATA: &str = "recipe";

/// The user-metadata name that carries the upload's (safe) file name stem.
pub const FILENAME_METADATA: &str = "filename";

/// The user-metadata name that carries the uploader's focal point
/// ([`recipe::FocalPoint::to_metadata`]).
pub const FOCUS_METADATA: &str = "focus";

/// Reduces a browser's file name to a stem safe in metadata, keys and
/// Content-Disposition: ASCII letters, digits, `-` and `_`, at most 64 characters.
/// `None` when nothing is left.
pub fn safe_file_stem(filename: &str) -> Option<String> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
    let mut safe = String::with_capacity(stem.len().min(64));
    for c in stem.chars() {
        if safe.len() == 64 {
            break;
        }
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            safe.push(c);
        } else if !safe.is_empty() && !safe.ends_with('-') {
            safe.push('-');
        }
    }
    let safe = safe.trim_end_matches('-');
    (!safe.is_empty()).then(|| safe.to_owned())
}

#[cfg(test)]
mod tests {
    use super::safe_file_stem;

    #[test]
    fn file_stems_keep_only_safe_characters() {
        assert_eq!(safe_file_stem("IMG_0001.JPG").as_deref(), Some("IMG_0001"));
        assert_eq!(
            safe_file_stem("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            safe_file_stem("C:\\x\\my photo (1).jpeg").as_deref(),
            Some("my-photo-1")
        );
        assert_eq!(safe_file_stem("\"><script>.png").as_deref(), Some("script"));
        assert_eq!(safe_file_stem("日本.jpg"), None);
        assert_eq!(safe_file_stem(&"a".repeat(500)).map(|s| s.len()), Some(64));
    }
}
