//! The API's side: one ImageJob per upload, created when the ticket is issued.

use crate::crd::{Destination, ImageJob, ImageJobSpec, ImageSource, ORIGIN_LABEL};
use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use minilab_api::tracking::{TrackedUpload, UploadTracker};

/// Creates ImageJobs through the Kubernetes API.
pub struct KubeTracker {
    pub api: Api<ImageJob>,
}

/// The ImageJob of one upload, named `upload-{id}`.
pub fn upload_job(upload: &TrackedUpload) -> ImageJob {
    let mut job = ImageJob::new(
        &format!("upload-{}", upload.id),
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
            ttl_seconds_after_finished: None,
        },
    );
    job.metadata.labels = Some([(ORIGIN_LABEL.to_owned(), "upload".to_owned())].into());
    job
}

#[async_trait]
impl UploadTracker for KubeTracker {
    async fn track(&self, upload: &TrackedUpload) -> Result<(), String> {
        self.api
            .create(&PostParams::default(), &upload_job(upload))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
