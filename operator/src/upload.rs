//! Upload jobs: one object that arrives through a presigned POST (its S3 event queues
//! it), followed to its manifest. The API creates one per upload, `upload-{id}`.

use crate::crd::{JobOutput, JobPlaceholder, Phase};
use crate::observe::{ObserveError, Observer};
use crate::status::{Reason, Verdict};
use k8s_openapi::jiff::Timestamp;
use minilab_core::arrival::{Arrival, arrival};
use minilab_core::keys;
use minilab_core::manifest::{Manifest, ManifestState};

/// What the buckets hold for one upload.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadObservation {
    pub manifest: Option<Manifest>,
    /// Whether the source object is stored (only read while there is no manifest).
    pub stored: bool,
}

/// Reads what one poll needs, one request while nothing changes: until the source
/// has been seen (`arrived`, from the job's phase), whether it arrived now (no
/// manifest can exist before it); from then on, the manifest.
pub async fn observe(
    observer: &dyn Observer,
    source_bucket: &str,
    key: &str,
    destination_bucket: &str,
    destination_prefix: &str,
    arrived: bool,
) -> Result<UploadObservation, ObserveError> {
    let stored = arrived || observer.exists(source_bucket, key).await?;
    let manifest = match stored {
        true => {
            observer
                .manifest(
                    destination_bucket,
                    &keys::manifest_key_in(destination_prefix),
                )
                .await?
        }
        false => None,
    };
    Ok(UploadObservation { manifest, stored })
}

/// The upload's state: from its manifest when there is one, else from whether it
/// arrived before its URL (`expires`) lapsed, with core's grace.
pub fn verdict(observation: &UploadObservation, expires: Timestamp, now: Timestamp) -> Verdict {
    if let Some(manifest) = &observation.manifest {
        return from_manifest(manifest);
    }
    let mut verdict = Verdict::new(Phase::Pending, 1);
    match arrival(observation.stored, to_chrono(expires), to_chrono(now)) {
        Arrival::Arrived => verdict.phase = Phase::Running,
        Arrival::Awaiting => verdict.phase = Phase::AwaitingUpload,
        Arrival::Expired => {
            verdict.phase = Phase::Expired;
            verdict.reason = Reason::UploadExpired;
            verdict.message = Some(format!(
                "the upload did not arrive before its URL expired at {expires}"
            ));
        }
    }
    verdict
}

/// When an upload that has not arrived by `expires` is given up (core's rule).
pub fn given_up_at(expires: Timestamp) -> Timestamp {
    let at = minilab_core::arrival::given_up_at(to_chrono(expires));
    Timestamp::from_millisecond(at.timestamp_millis()).unwrap_or(Timestamp::MAX)
}

fn to_chrono(t: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(t.as_millisecond())
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

fn from_manifest(manifest: &Manifest) -> Verdict {
    let mut verdict = Verdict::new(Phase::Pending, 1);
    verdict.finished_at = Timestamp::from_millisecond(manifest.finished_at.timestamp_millis()).ok();
    match manifest.state {
        ManifestState::Succeeded => {
            verdict.phase = Phase::Succeeded;
            verdict.reason = Reason::Processed;
            verdict.succeeded = 1;
            verdict.outputs = manifest
                .outputs
                .iter()
                .map(|o| JobOutput {
                    name: o.name.clone(),
                    key: o.key.clone(),
                    width: o.width,
                    height: o.height,
                    bytes: o.bytes,
                    content_type: o.content_type.clone(),
                })
                .collect();
            verdict.placeholder = manifest.placeholder.as_ref().map(|p| JobPlaceholder {
                thumbhash: p.thumbhash.clone(),
                dominant_color: p.dominant_color.clone(),
            });
        }
        ManifestState::Failed => {
            verdict.phase = Phase::Failed;
            verdict.reason = Reason::ImageFailed;
            verdict.failed = 1;
            verdict.message = manifest
                .error
                .as_ref()
                .map(|error| format!("{}: {}", error.code, error.message));
        }
        ManifestState::Deleted => {
            verdict.phase = Phase::Failed;
            verdict.reason = Reason::UploadDeleted;
            verdict.failed = 1;
            verdict.message = Some("deleted by its owner".to_owned());
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// A bucket pair holding the source or not, and a manifest or not; it notes
    /// each read.
    struct Buckets {
        source: bool,
        manifest: Option<Manifest>,
        reads: Mutex<Vec<&'static str>>,
    }

    #[async_trait]
    impl Observer for Buckets {
        async fn manifest(&self, _: &str, _: &str) -> Result<Option<Manifest>, ObserveError> {
            self.reads.lock().unwrap().push("manifest");
            Ok(self.manifest.clone())
        }
        async fn exists(&self, _: &str, _: &str) -> Result<bool, ObserveError> {
            self.reads.lock().unwrap().push("source");
            Ok(self.source)
        }
        async fn list(
            &self,
            _: &str,
            _: &str,
            _: usize,
            _: Option<&str>,
        ) -> Result<Vec<String>, ObserveError> {
            unreachable!("upload jobs never list")
        }
    }

    #[tokio::test]
    async fn a_poll_reads_one_object_until_something_changes() {
        // (source stored, manifest written, arrived before) → reads, what is seen
        let cases = [
            (false, false, false, vec!["source"], false),
            (true, false, false, vec!["source", "manifest"], false),
            (true, true, false, vec!["source", "manifest"], true),
            (true, false, true, vec!["manifest"], false),
            (true, true, true, vec!["manifest"], true),
        ];
        for (source, written, arrived, reads, finished) in cases {
            let buckets = Buckets {
                source,
                manifest: written.then(|| crate::status::tests::manifest(false)),
                reads: Mutex::default(),
            };
            let seen = observe(&buckets, "up", "uploads/x/a.jpg", "out", "x/", arrived)
                .await
                .unwrap();
            assert_eq!(
                *buckets.reads.lock().unwrap(),
                reads,
                "{source} {written} {arrived}"
            );
            assert_eq!(seen.manifest.is_some(), finished);
            assert_eq!(seen.stored, source);
        }
    }
}
