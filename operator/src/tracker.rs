//! The ImageJob of one upload, as `minilab api --kube-tracking` creates it.

use crate::crd::{Destination, ImageJob, ImageJobSpec, ImageSource, ORIGIN_LABEL};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use minilab_core::upload::TrackedUpload;

/// The name of an upload's ImageJob.
pub fn job_name(id: &minilab_core::UploadId) -> String {
    format!("upload-{id}")
}

/// The ImageJob of one upload, named [`job_name`], deleted by the operator
/// `ttl_after_finished` seconds after it finishes (never, when `None`).
pub fn upload_job(upload: &TrackedUpload, ttl_after_finished: Option<i32>) -> ImageJob {
    let mut job = ImageJob::new(
        &job_name(&upload.id),
        ImageJobSpec {
            source: ImageSource {
                bucket: upload.uploads_bucket.clone(),
                key: Some(upload.key.clone()),
                prefix: None,
                upload_expires_at: Timestamp::from_millisecond(
                    upload.expires_at.timestamp_millis(),
                )
                .ok()
                .map(Time),
            },
            recipe: upload.recipe.clone(),
            destination: Destination {
                bucket: upload.processed_bucket.clone(),
                prefix: upload.prefix.clone(),
            },
            backoff_limit: None,
            active_deadline_seconds: None,
            suspend: None,
            ttl_seconds_after_finished: ttl_after_finished,
            reprocess: None,
        },
    );
    job.metadata.labels = Some([(ORIGIN_LABEL.to_owned(), "upload".to_owned())].into());
    job
}
