//! After a restart of `minilab up`, the in-process queue is empty: find uploads
//! that arrived but have no manifest, so they can be enqueued again.

use minilab_core::event::ObjectCreated;
use minilab_core::keys;
use minilab_service::objects::{ObjectError, exists, s3_error};

/// Every upload in `uploads_bucket` without a manifest in `processed_bucket`.
pub async fn unfinished_uploads(
    s3: &aws_sdk_s3::Client,
    uploads_bucket: &str,
    processed_bucket: &str,
) -> Result<Vec<ObjectCreated>, ObjectError> {
    let mut unfinished = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(uploads_bucket)
        .prefix("uploads/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("ListObjectsV2", uploads_bucket, "uploads/", &e))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let Some(id) = keys::parse_source_key(key) else {
                continue;
            };
            let manifest = keys::manifest_key(id);
            let finished = exists(s3, processed_bucket, &manifest).await?;
            if !finished {
                unfinished.push(ObjectCreated {
                    bucket: uploads_bucket.to_owned(),
                    key: key.to_owned(),
                    size: object.size().and_then(|s| u64::try_from(s).ok()),
                    event_time: None,
                    // A restart's re-enqueue: whichever write claimed it (if any).
                    write: None,
                });
            }
        }
    }
    Ok(unfinished)
}
