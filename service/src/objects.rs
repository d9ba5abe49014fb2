//! The S3 reads the API, the worker and the operator share: whether an object
//! exists, and an upload's manifest, read with a size bound and its version checked.
//! A missing object is an answer (`false`, `None`), not an error.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use minilab_core::Manifest;

/// The largest manifest read; real ones are a few kilobytes.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// S3 did not answer, or answered with an error other than "not found".
    #[error("S3 {operation} s3://{bucket}/{key}: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    /// The object is there but is not a manifest this version reads.
    #[error("s3://{bucket}/{key} is not a manifest this version reads: {message}")]
    BadManifest {
        bucket: String,
        key: String,
        message: String,
    },
}

/// Whether `bucket` holds `key` (a HeadObject).
pub async fn exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<bool, ObjectError> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
        Err(err) => Err(s3_error("HeadObject", bucket, key, &err)),
    }
}

/// The manifest at `key`, `None` when there is none yet.
pub async fn read_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Manifest>, ObjectError> {
    Ok(read_manifest_tagged(s3, bucket, key)
        .await?
        .map(|(manifest, _)| manifest))
}

/// The manifest at `key` and its ETag (for a write conditional on it), `None` when
/// there is none yet.
pub async fn read_manifest_tagged(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<(Manifest, Option<String>)>, ObjectError> {
    let object = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => object,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(err) => return Err(s3_error("GetObject", bucket, key, &err)),
    };
    let bad = |message: String| ObjectError::BadManifest {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        message,
    };
    let etag = object.e_tag().map(str::to_owned);
    let length = u64::try_from(object.content_length().unwrap_or(0)).unwrap_or(0);
    if length > MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "{length} bytes, more than {MAX_MANIFEST_BYTES}"
        )));
    }
    let body = object
        .body
        .collect()
        .await
        .map_err(|e| ObjectError::S3 {
            operation: "GetObject",
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message: e.to_string(),
        })?
        .into_bytes();
    parse_manifest(&body)
        .map(|manifest| Some((manifest, etag)))
        .map_err(|e| bad(e.to_string()))
}

/// Why bytes are not a manifest this version reads.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest's JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("version {0}")]
    Version(u32),
}

/// A manifest from its JSON, refused when it is another version's.
pub fn parse_manifest(json: &[u8]) -> Result<Manifest, ManifestError> {
    let manifest: Manifest = serde_json::from_slice(json)?;
    if manifest.version != Manifest::VERSION {
        return Err(ManifestError::Version(manifest.version));
    }
    Ok(manifest)
}

/// One line for an SDK error: the service's code and message when it answered, the
/// whole error chain when it did not.
pub fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    SdkError<E>: std::error::Error,
{
    match err.as_service_error() {
        Some(service) => format!(
            "{} ({})",
            service.code().unwrap_or("unknown error"),
            service.message().unwrap_or("no message")
        ),
        None => aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
    }
}

/// An SDK error of `operation` on `s3://bucket/key`, described in one line.
pub fn s3_error<E>(
    operation: &'static str,
    bucket: &str,
    key: &str,
    err: &SdkError<E>,
) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    SdkError<E>: std::error::Error,
{
    ObjectError::S3 {
        operation,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        message: describe(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(version: u32) -> String {
        serde_json::json!({
            "version": version,
            "state": "succeeded",
            "recipe": "web",
            "source": { "bucket": "uploads", "key": "uploads/x", "bytes": 1 },
            "timings": {
                "downloadMs": 1.0, "decodeMs": 1.0, "transformMs": 1.0, "encodeMs": 1.0, "uploadMs": 1.0
            },
            "finishedAt": "2026-12-03T12:00:00Z",
        })
        .to_string()
    }

    #[test]
    fn a_manifest_of_another_version_is_refused() {
        let current = parse_manifest(manifest_json(Manifest::VERSION).as_bytes()).unwrap();
        assert_eq!(current.recipe, "web");
        let err = parse_manifest(manifest_json(Manifest::VERSION + 1).as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::Version(v) if v == Manifest::VERSION + 1));
        assert!(matches!(
            parse_manifest(b"not json"),
            Err(ManifestError::Json(_))
        ));
    }
}
