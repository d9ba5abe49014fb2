//! Batch jobs: every object under a source prefix is one image, its results under
//! `{destination}{key relative to the prefix}/`. Items are enqueued on the workers'
//! queue in key order, [`Settings::rate`] a second; progress counts manifests,
//! so duplicate deliveries cannot inflate it. A reprocessing (`spec.reprocess`) is a
//! batch of uploads written back to each upload: progress counts the manifests that
//! name the job.

use crate::crd::{ImageJob, ImageJobStatus, Phase};
use crate::observe::{ObserveError, Observer};
use crate::status::{Reason, Settings, Verdict, after};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use minilab_core::event::WorkItem;
use minilab_core::keys;
use minilab_core::manifest::ManifestState;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// A Job's default.
const DEFAULT_BACKOFF_LIMIT: i32 = 3;

/// What the buckets hold for one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchObservation {
    /// The source keys under the prefix, in key order (folders left out).
    pub keys: Vec<String>,
    /// For each source key whose manifest exists: whether the image failed.
    pub finished: HashMap<String, bool>,
}

/// A batch's manifests are written once and never change (a reprocessing's, once
/// they name the job, say so for good): for each running batch (by uid), the
/// outcome of each manifest read so far. A job's entry is dropped when it finishes.
#[derive(Default)]
pub struct ManifestCache(Mutex<HashMap<String, HashMap<String, bool>>>);

impl ManifestCache {
    fn get(&self, job: &str, manifest: &str) -> Option<bool> {
        let cache = self.0.lock().ok()?;
        cache.get(job)?.get(manifest).copied()
    }

    fn insert(&self, job: &str, manifest: String, failed: bool) {
        if let Ok(mut cache) = self.0.lock() {
            cache
                .entry(job.to_owned())
                .or_default()
                .insert(manifest, failed);
        }
    }

    /// Forgets a finished job's manifests.
    pub fn forget(&self, job: &str) {
        if let Ok(mut cache) = self.0.lock() {
            cache.remove(job);
        }
    }
}

/// A job's key in the [`ManifestCache`]: its uid (a recreated job starts afresh).
pub fn cache_key(job: &ImageJob) -> String {
    job.metadata.uid.clone().unwrap_or_else(|| job.name_any())
}

/// Lists the source prefix and the destination's manifests, and reads each manifest
/// not read before. Reads only.
pub async fn observe(
    job: &ImageJob,
    prefix: &str,
    observer: &dyn Observer,
    max_objects: usize,
    cache: &ManifestCache,
) -> Result<BatchObservation, ObserveError> {
    let spec = &job.spec;
    let destination = &spec.destination;
    let keys: Vec<String> = observer
        .list(&spec.source.bucket, prefix, max_objects)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .filter(|k| !reprocessing(job) || keys::parse_source_key(k).is_some())
        .collect();
    if reprocessing(job) {
        let finished = observe_reprocessed(job, &keys, observer, cache).await?;
        return Ok(BatchObservation { keys, finished });
    }
    let written: HashSet<String> = observer
        .list(
            &destination.bucket,
            &destination.prefix,
            max_objects.saturating_mul(10),
        )
        .await?
        .into_iter()
        .filter(|k| keys::is_manifest_key(k))
        .collect();
    let uid = cache_key(job);
    let mut finished = HashMap::new();
    for key in &keys {
        let Some(item) = keys::batch_item_prefix(&destination.prefix, prefix, key) else {
            continue;
        };
        let manifest_key = keys::manifest_key_in(&item);
        if !written.contains(&manifest_key) {
            continue;
        }
        let failed = match cache.get(&uid, &manifest_key) {
            Some(failed) => failed,
            None => {
                let Some(manifest) = observer
                    .manifest(&destination.bucket, &manifest_key)
                    .await?
                else {
                    continue;
                };
                let failed = manifest.state == ManifestState::Failed;
                cache.insert(&uid, manifest_key, failed);
                failed
            }
        };
        finished.insert(key.clone(), failed);
    }
    Ok(BatchObservation { keys, finished })
}

/// Whether the job processes uploads again (`spec.reprocess`).
fn reprocessing(job: &ImageJob) -> bool {
    job.spec.reprocess == Some(true)
}

/// Most manifests one look at a reprocessing reads. Every enqueued upload not seen
/// reprocessed yet is read at each look, a second apart while items are enqueued:
/// with the workers behind by N uploads, that was N reads a second, and a look that
/// took N round trips. The oldest enqueued are read first (the workers take the
/// queue roughly in order); a manifest seen reprocessed is never read again.
const MAX_READS_PER_LOOK: usize = 500;

/// For a reprocessing, which of the uploads enqueued so far this job has
/// reprocessed (their manifests name its uid), and whether that failed: a manifest
/// read for each, until it does, at most [`MAX_READS_PER_LOOK`] a look.
async fn observe_reprocessed(
    job: &ImageJob,
    keys: &[String],
    observer: &dyn Observer,
    cache: &ManifestCache,
) -> Result<HashMap<String, bool>, ObserveError> {
    let uid = cache_key(job);
    let enqueued = usize::try_from(job.status.as_ref().map_or(0, |s| s.enqueued)).unwrap_or(0);
    let mut finished = HashMap::new();
    let mut reads = 0;
    for key in keys.iter().take(enqueued) {
        let Some(id) = keys::parse_source_key(key) else {
            continue;
        };
        let manifest_key = keys::manifest_key(id);
        let failed = match cache.get(&uid, &manifest_key) {
            Some(failed) => failed,
            None if reads == MAX_READS_PER_LOOK => continue,
            None => {
                reads += 1;
                let reprocessed = observer
                    .manifest(&job.spec.destination.bucket, &manifest_key)
                    .await?
                    .and_then(|m| m.reprocessed)
                    .filter(|r| r.job == uid);
                let Some(reprocessed) = reprocessed else {
                    continue;
                };
                let failed = reprocessed.error.is_some();
                cache.insert(&uid, manifest_key, failed);
                failed
            }
        };
        finished.insert(key.clone(), failed);
    }
    Ok(finished)
}

/// What a batch does next: its verdict and the work to enqueue now.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub verdict: Verdict,
    /// Work items to put on the queue before the status is written.
    pub work: Vec<WorkItem>,
    /// `status.enqueued` and `status.retries` once `work` is on the queue.
    pub enqueued: i64,
    pub retries: i32,
    /// More first-time items remain after this round (look again in a second).
    pub more: bool,
}

/// The work item of one source object of a batch: its outputs under the
/// destination prefix, in a folder of its own named after its key.
fn work_item(job: &ImageJob, prefix: &str, key: &str) -> WorkItem {
    let spec = &job.spec;
    let destination_prefix = match keys::parse_source_key(key) {
        Some(id) if reprocessing(job) => keys::upload_prefix(id),
        _ => keys::batch_item_prefix(&spec.destination.prefix, prefix, key).unwrap_or_default(),
    };
    WorkItem {
        job: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        bucket: spec.source.bucket.clone(),
        key: key.to_owned(),
        recipe: spec.recipe.clone(),
        destination_bucket: spec.destination.bucket.clone(),
        destination_prefix,
        reprocess: reprocessing(job).then(|| cache_key(job)),
    }
}

/// Every image has a manifest: Succeeded, or Failed naming how many failed (or that
/// the prefix held nothing).
fn finished(verdict: &mut Verdict, bucket: &str, prefix: &str) {
    let (total, failed) = (verdict.total, verdict.failed);
    verdict.phase = if failed == 0 {
        Phase::Succeeded
    } else {
        Phase::Failed
    };
    verdict.reason = if failed == 0 {
        Reason::Processed
    } else {
        Reason::ImagesFailed
    };
    verdict.message = match (total, failed) {
        (0, _) => Some(format!("no objects under s3://{bucket}/{prefix}")),
        (_, 0) => None,
        (total, failed) => Some(format!("{failed} of {total} images failed")),
    };
}

/// The pure step of a batch: counts from the manifests, then the next items in key
/// order (unless suspended), or a retry of the unfinished ones once `retry_after` has
/// passed since the last enqueue, up to `backoffLimit` times.
pub fn plan(
    job: &ImageJob,
    status: &ImageJobStatus,
    observed: &BatchObservation,
    settings: &Settings,
    now: Timestamp,
) -> Plan {
    let spec = &job.spec;
    let prefix = spec.source.prefix.as_deref().unwrap_or_default();
    let suspended = spec.suspend == Some(true);
    let total = observed.keys.len() as i64;
    let mut verdict = Verdict::new(Phase::Running, total);
    verdict.failed = observed.finished.values().filter(|failed| **failed).count() as i64;
    verdict.succeeded = observed.finished.len() as i64 - verdict.failed;
    let pending: Vec<&String> = observed
        .keys
        .iter()
        .filter(|k| !observed.finished.contains_key(*k))
        .collect();
    let enqueued = usize::try_from(status.enqueued)
        .unwrap_or(0)
        .min(observed.keys.len());
    let mut plan = Plan {
        verdict,
        work: Vec::new(),
        enqueued: enqueued as i64,
        retries: status.retries,
        more: false,
    };
    let item = |key: &String| work_item(job, prefix, key);

    if pending.is_empty() {
        finished(&mut plan.verdict, &spec.source.bucket, prefix);
        return plan;
    }
    if suspended {
        if enqueued == 0 {
            plan.verdict.phase = Phase::Pending;
        }
        return plan;
    }
    if enqueued < observed.keys.len() {
        // At most `rate` items a second: a reconcile sooner (a spec change, say)
        // only looks.
        if status
            .last_enqueue_time
            .as_ref()
            .is_some_and(|t| now < after(t.0, SignedDuration::from_secs(1)))
        {
            plan.more = true;
            return plan;
        }
        let next = &observed.keys[enqueued..(enqueued + settings.rate).min(observed.keys.len())];
        plan.work = next.iter().map(item).collect();
        plan.enqueued = (enqueued + next.len()) as i64;
        plan.more = enqueued + next.len() < observed.keys.len();
    } else if status
        .last_enqueue_time
        .as_ref()
        .is_none_or(|t| now >= after(t.0, settings.retry_after))
    {
        let limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
        if status.retries >= limit {
            plan.verdict.phase = Phase::Failed;
            plan.verdict.reason = Reason::BackoffLimitExceeded;
            plan.verdict.message = Some(format!(
                "{} of {total} images never finished after {} retries",
                pending.len(),
                status.retries
            ));
            return plan;
        }
        plan.work = pending.into_iter().map(item).collect();
        plan.retries = status.retries + 1;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use minilab_core::manifest::{Manifest, Reprocessed};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Uploads every one of which job `u-1` has reprocessed; it counts the reads.
    #[derive(Default)]
    struct AllReprocessed(AtomicUsize);

    #[async_trait]
    impl Observer for AllReprocessed {
        async fn manifest(&self, _: &str, _: &str) -> Result<Option<Manifest>, ObserveError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let mut manifest = crate::status::tests::manifest(false);
            manifest.reprocessed = Some(Reprocessed {
                job: "u-1".into(),
                recipe: "web".into(),
                error: None,
            });
            Ok(Some(manifest))
        }
        async fn exists(&self, _: &str, _: &str) -> Result<bool, ObserveError> {
            unreachable!("a reprocessing reads manifests only")
        }
        async fn list(&self, _: &str, _: &str, _: usize) -> Result<Vec<String>, ObserveError> {
            unreachable!("observe_reprocessed is given the keys")
        }
    }

    #[tokio::test]
    async fn a_look_at_a_reprocessing_reads_a_bounded_number_of_manifests() {
        let uploads = 2 * MAX_READS_PER_LOOK + 10;
        let job = crate::status::tests::batch_job(
            json!({"reprocess": true, "source": {"prefix": "uploads/"}, "destination": {"prefix": ""}}),
            json!({"phase": "Running", "enqueued": uploads}),
        );
        let now = chrono::Utc::now();
        let keys: Vec<String> = (0..uploads)
            .map(|_| keys::source_key(minilab_core::UploadId::new(now)))
            .collect();
        let (buckets, cache) = (AllReprocessed::default(), ManifestCache::default());
        for counted in [MAX_READS_PER_LOOK, 2 * MAX_READS_PER_LOOK, uploads] {
            let finished = observe_reprocessed(&job, &keys, &buckets, &cache)
                .await
                .unwrap();
            // Each look reads what it has not counted, up to the bound; the oldest first.
            assert_eq!(finished.len(), counted);
            assert_eq!(buckets.0.load(Ordering::SeqCst), counted);
            assert!(keys[..counted].iter().all(|k| finished.contains_key(k)));
        }
    }
}
