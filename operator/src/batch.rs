//! Batch jobs: every object under a source prefix is one image, its results under
//! `{destination}{key relative to the prefix}/`. Items are enqueued on the workers'
//! queue in key order, [`Settings::rate`] a second; progress counts manifests,
//! so duplicate deliveries cannot inflate it. A reprocessing (`spec.reprocess`) is a
//! batch of uploads written back to each upload: progress counts the manifests that
//! name the job.
//!
//! What a look costs does not grow with the batch ([`BatchMemory`]): the source is
//! listed at the job's first look in this process and remembered, and the
//! destination is listed from the first image not yet seen finished on. Before,
//! every look (one a second while enqueuing) listed both whole: 100,000 images made
//! 2,000 looks of up to 600 LIST pages each.

use crate::crd::{ImageJob, ImageJobStatus, Phase};
use crate::observe::{ObserveError, Observer};
use crate::status::{Reason, Settings, Verdict, after};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use minilab_core::event::WorkItem;
use minilab_core::keys;
use minilab_core::manifest::ManifestState;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A Job's default.
const DEFAULT_BACKOFF_LIMIT: i32 = 3;

/// What the buckets hold for one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchObservation {
    /// The source keys under the prefix, in key order (folders left out).
    pub keys: Arc<Vec<String>>,
    /// For each source key whose manifest exists: whether the image failed.
    pub finished: HashMap<String, bool>,
}

/// What the operator remembers of each running batch (by uid) between looks, so a
/// look costs what changed since the last, not the batch's size; a job's entry is
/// dropped when it finishes, and a restart starts afresh (one whole look).
#[derive(Default)]
pub struct BatchMemory(Mutex<HashMap<String, Remembered>>);

#[derive(Default)]
struct Remembered {
    /// The source keys as the job's first look listed them: the batch is the
    /// objects under the prefix when it started (later ones may be left out).
    sources: Option<Arc<Vec<String>>>,
    /// By source key, whether each image seen finished failed: a batch's manifests
    /// are written once and never change (a reprocessing's, once they name the
    /// job, say so for good), so each is read once.
    finished: HashMap<String, bool>,
}

impl BatchMemory {
    fn finished(&self, job: &str, key: &str) -> Option<bool> {
        let memory = self.0.lock().ok()?;
        memory.get(job)?.finished.get(key).copied()
    }

    fn sources(&self, job: &str) -> Option<Arc<Vec<String>>> {
        let memory = self.0.lock().ok()?;
        memory.get(job)?.sources.clone()
    }

    fn remember(&self, job: &str, f: impl FnOnce(&mut Remembered)) {
        if let Ok(mut memory) = self.0.lock() {
            f(memory.entry(job.to_owned()).or_default());
        }
    }

    fn remember_finished(&self, job: &str, key: &str, failed: bool) {
        self.remember(job, |r| {
            r.finished.insert(key.to_owned(), failed);
        });
    }

    fn remember_sources(&self, job: &str, keys: Arc<Vec<String>>) {
        self.remember(job, |r| r.sources = Some(keys));
    }

    /// Forgets a finished job.
    pub fn forget(&self, job: &str) {
        if let Ok(mut memory) = self.0.lock() {
            memory.remove(job);
        }
    }
}

/// A job's key in the [`BatchMemory`]: its uid (a recreated job starts afresh).
pub fn cache_key(job: &ImageJob) -> String {
    job.metadata.uid.clone().unwrap_or_else(|| job.name_any())
}

/// The batch's source keys, its finished images, and whether each failed: the
/// source listed once, the destination from the first image not seen finished on,
/// each manifest read once. Reads only.
pub async fn observe(
    job: &ImageJob,
    prefix: &str,
    observer: &dyn Observer,
    max_objects: usize,
    memory: &BatchMemory,
) -> Result<BatchObservation, ObserveError> {
    let keys = sources(job, prefix, observer, max_objects, memory).await?;
    let finished = if reprocessing(job) {
        observe_reprocessed(job, &keys, observer, memory).await?
    } else {
        observe_written(job, prefix, &keys, observer, max_objects, memory).await?
    };
    Ok(BatchObservation { keys, finished })
}

/// The source keys under `prefix`, in key order (folders, and for a reprocessing
/// anything but uploads, left out): listed at the job's first look, then
/// remembered.
async fn sources(
    job: &ImageJob,
    prefix: &str,
    observer: &dyn Observer,
    max_objects: usize,
    memory: &BatchMemory,
) -> Result<Arc<Vec<String>>, ObserveError> {
    let uid = cache_key(job);
    if let Some(keys) = memory.sources(&uid) {
        return Ok(keys);
    }
    let keys: Arc<Vec<String>> = Arc::new(
        observer
            .list(&job.spec.source.bucket, prefix, max_objects, None)
            .await?
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .filter(|k| !reprocessing(job) || keys::parse_source_key(k).is_some())
            .collect(),
    );
    memory.remember_sources(&uid, keys.clone());
    Ok(keys)
}

/// For a batch, which images have a manifest under the destination, and whether
/// each failed. The destination is listed after the first image's folder not seen
/// finished (in S3's order, which is not the sources' order: `a/` sorts after
/// `a-b/`); everything before it was, and is remembered.
async fn observe_written(
    job: &ImageJob,
    prefix: &str,
    keys: &[String],
    observer: &dyn Observer,
    max_objects: usize,
    memory: &BatchMemory,
) -> Result<HashMap<String, bool>, ObserveError> {
    let destination = &job.spec.destination;
    let uid = cache_key(job);
    let mut finished = HashMap::new();
    let mut unseen = Vec::new();
    for key in keys {
        if let Some(failed) = memory.finished(&uid, key) {
            finished.insert(key.clone(), failed);
            continue;
        }
        let Some(item) = keys::batch_item_prefix(&destination.prefix, prefix, key) else {
            continue;
        };
        let manifest_key = keys::manifest_key_in(&item);
        unseen.push((key, item, manifest_key));
    }
    // Every key under an item's folder sorts after the folder's own name.
    let Some(first) = unseen.iter().map(|(_, item, _)| item.as_str()).min() else {
        return Ok(finished);
    };
    let written: HashSet<String> = observer
        .list(
            &destination.bucket,
            &destination.prefix,
            max_objects.saturating_mul(10),
            Some(first),
        )
        .await?
        .into_iter()
        .filter(|k| keys::is_manifest_key(k))
        .collect();
    for (key, _, manifest_key) in unseen {
        if !written.contains(&manifest_key) {
            continue;
        }
        let Some(manifest) = observer
            .manifest(&destination.bucket, &manifest_key)
            .await?
        else {
            continue;
        };
        let failed = manifest.state == ManifestState::Failed;
        memory.remember_finished(&uid, key, failed);
        finished.insert(key.clone(), failed);
    }
    Ok(finished)
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
    memory: &BatchMemory,
) -> Result<HashMap<String, bool>, ObserveError> {
    let uid = cache_key(job);
    let enqueued = usize::try_from(job.status.as_ref().map_or(0, |s| s.enqueued)).unwrap_or(0);
    let mut finished = HashMap::new();
    let mut reads = 0;
    for key in keys.iter().take(enqueued) {
        let failed = match memory.finished(&uid, key) {
            Some(failed) => failed,
            None if reads == MAX_READS_PER_LOOK => continue,
            None => {
                let Some(id) = keys::parse_source_key(key) else {
                    continue;
                };
                let manifest_key = keys::manifest_key(id);
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
                memory.remember_finished(&uid, key, failed);
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
        async fn list(
            &self,
            _: &str,
            _: &str,
            _: usize,
            _: Option<&str>,
        ) -> Result<Vec<String>, ObserveError> {
            unreachable!("observe_reprocessed is given the keys")
        }
    }

    /// A source bucket (`up`) and a destination bucket (`out`) in memory, in S3's
    /// order; counts the keys each listing returns and the manifests read.
    #[derive(Default)]
    struct Buckets {
        up: Vec<String>,
        out: Mutex<std::collections::BTreeSet<String>>,
        listed: AtomicUsize,
        read: AtomicUsize,
    }

    impl Buckets {
        /// Counts since the last call: (keys listed, manifests read).
        fn spent(&self) -> (usize, usize) {
            (
                self.listed.swap(0, Ordering::SeqCst),
                self.read.swap(0, Ordering::SeqCst),
            )
        }

        /// Image `i` of the batch finished: its manifest and an output written.
        fn finish(&self, key: &str) {
            let item = keys::batch_item_prefix("b/", "shoot/", key).unwrap();
            let mut out = self.out.lock().unwrap();
            out.insert(keys::manifest_key_in(&item));
            out.insert(format!("{item}square.jpg"));
        }
    }

    #[async_trait]
    impl Observer for Buckets {
        async fn manifest(&self, _: &str, key: &str) -> Result<Option<Manifest>, ObserveError> {
            self.read.fetch_add(1, Ordering::SeqCst);
            let written = self.out.lock().unwrap().contains(key);
            Ok(written.then(|| crate::status::tests::manifest(false)))
        }
        async fn exists(&self, _: &str, _: &str) -> Result<bool, ObserveError> {
            unreachable!("a batch lists")
        }
        async fn list(
            &self,
            bucket: &str,
            prefix: &str,
            _: usize,
            start_after: Option<&str>,
        ) -> Result<Vec<String>, ObserveError> {
            let keys: Vec<String> = match bucket {
                "up" => self.up.clone(),
                _ => self.out.lock().unwrap().iter().cloned().collect(),
            };
            let listed: Vec<String> = keys
                .into_iter()
                .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s))
                .collect();
            self.listed.fetch_add(listed.len(), Ordering::SeqCst);
            Ok(listed)
        }
    }

    #[tokio::test]
    async fn a_look_at_a_batch_costs_what_changed_not_the_batchs_size() {
        // Keys whose item folders sort in another order than they do (`7/` after
        // `7-x/`): the listing starts at the first unfinished folder in S3's order.
        let mut up: Vec<String> = (0..2000).map(|i| format!("shoot/{i:04}.jpg")).collect();
        up.extend(["shoot/7".to_owned(), "shoot/7-x".to_owned()]);
        up.sort();
        let buckets = Buckets {
            up: up.clone(),
            ..Buckets::default()
        };
        let job = crate::status::tests::batch_job(json!({}), json!({"phase": "Running"}));
        let memory = BatchMemory::default();
        let look = || observe(&job, "shoot/", &buckets, 100_000, &memory);

        // The first look lists the source; nothing is written yet.
        let seen = look().await.unwrap();
        assert_eq!((seen.keys.len(), seen.finished.len()), (2002, 0));
        assert_eq!(buckets.spent(), (2002, 0));
        // Images finish in key order, but for `shoot/7`, whose folder sorts last
        // (after `shoot/7-x`'s, though its key sorts before).
        let mut done = 0;
        for batch in [100, 500, 1401] {
            for key in up.iter().filter(|k| *k != "shoot/7").skip(done).take(batch) {
                buckets.finish(key);
            }
            done += batch;
            let seen = look().await.unwrap();
            assert_eq!(seen.finished.len(), done);
            // Listed: what was written since the last look (2 objects an image);
            // read: its manifests. Not the source again, not what was seen before.
            assert_eq!(buckets.spent(), (2 * batch, batch));
        }
        // Every image but one finished: a look lists what is after that one's folder.
        buckets.finish("shoot/7");
        let seen = look().await.unwrap();
        assert_eq!(seen.finished.len(), 2002);
        assert_eq!(buckets.spent(), (2, 1));
        // Seen all finished: nothing more to list or read.
        assert_eq!(look().await.unwrap().finished.len(), 2002);
        assert_eq!(buckets.spent(), (0, 0));
        // A restart (memory empty) looks at everything once.
        let fresh = BatchMemory::default();
        let seen = observe(&job, "shoot/", &buckets, 100_000, &fresh)
            .await
            .unwrap();
        assert_eq!(seen.finished.len(), 2002);
        assert_eq!(buckets.spent(), (2002 + 2 * 2002, 2002));
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
        let (buckets, cache) = (AllReprocessed::default(), BatchMemory::default());
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
