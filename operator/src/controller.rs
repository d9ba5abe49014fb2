//! The ImageJob reconciler: level-triggered, it reads the buckets and writes status;
//! nothing else writes ImageJob status.
//!
//! It watches ImageJobs as untyped objects and parses each one in `reconcile`, so a
//! malformed object costs one Warning event, never the watch of all the others.

use crate::crd::{Condition, ImageJob, ImageJobSpec, ImageJobStatus, JobOutput, Phase};
use crate::metrics::Metrics;
use crate::observe::{ObserveError, Observer, WorkQueue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use minilab_core::event::WorkItem;
use minilab_core::manifest::{Manifest, ManifestState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An upload may land just before its URL lapses; wait this long past it.
const UPLOAD_GRACE: SignedDuration = SignedDuration::from_secs(60);

pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub struct Context {
    pub client: Client,
    pub observer: Arc<dyn Observer>,
    /// The workers' queue, for batch jobs; without it they wait in Pending.
    pub queue: Option<Arc<dyn WorkQueue>>,
    pub batch: BatchSettings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Manifests are written once and never change: for each running batch (by
    /// uid), whether each manifest read so far failed. A job's entry is dropped when
    /// it finishes.
    pub manifests: Mutex<HashMap<String, HashMap<String, bool>>>,
}

/// How batch jobs are expanded.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Work items enqueued per reconcile; a reconcile follows a second later while
    /// more remain, so this is also the rate per second.
    pub rate: usize,
    /// Images without a manifest this long after the last enqueue are enqueued
    /// again (up to `backoffLimit` times).
    pub retry_after: SignedDuration,
    /// Most objects one batch may have.
    pub max_objects: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            rate: 50,
            retry_after: SignedDuration::from_mins(10),
            max_objects: 100_000,
        }
    }
}

/// A Job's default.
const DEFAULT_BACKOFF_LIMIT: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("enqueueing work: {0}")]
    Queue(String),
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Observe(ObserveError::S3 { .. }) => "s3",
            Error::Observe(ObserveError::BadManifest { .. }) => "bad-manifest",
            Error::Queue(_) => "queue",
        }
    }
}

pub fn api_resource() -> ApiResource {
    ApiResource::erase::<ImageJob>(&())
}

/// One pass over one ImageJob. Errors are retried by [`error_policy`] with backoff.
pub async fn reconcile(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_object(&object, &ctx).await;
    ctx.metrics.reconciled(
        result.as_ref().err().map(Error::kind),
        started.elapsed().as_secs_f64(),
    );
    result
}

/// Retry soon, then less often: 5 s for a first failure is enough for S3 or the API
/// server to come back, and the controller's own queue deduplicates.
pub fn error_policy(object: Arc<DynamicObject>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(job = %object.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile_object(object: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = object.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ImageJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let job: ImageJob = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(job) => job,
        Err(e) => {
            // Nothing to reconcile until someone fixes it; the watch goes on.
            ctx.metrics.malformed();
            publish(
                ctx,
                object.object_ref(&api_resource()),
                EventType::Warning,
                "Malformed",
                format!("the ImageJob does not parse: {e}"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let now = (ctx.clock)();
    let old = job.status.clone().unwrap_or_default();

    if old.phase.is_some_and(Phase::is_finished) {
        return honour_ttl(&job, &api, &old, now, ctx).await;
    }

    let mut status = old.clone();
    status.observed_generation = job.metadata.generation;
    status.source = Some(source_display(&job.spec));
    let generation = job.metadata.generation;
    let suspended = job.spec.suspend == Some(true);
    match (
        suspended,
        old.conditions
            .iter()
            .any(|c| c.type_ == "Suspended" && c.status == "True"),
    ) {
        (true, _) => set_condition(
            &mut status,
            "Suspended",
            "True",
            "JobSuspended",
            "suspended",
            now,
            generation,
        ),
        (false, true) => {
            set_condition(
                &mut status,
                "Suspended",
                "False",
                "JobResumed",
                "resumed",
                now,
                generation,
            );
            // As a Job does: the deadline counts from the resumption.
            status.start_time = Some(Time(now));
        }
        (false, false) => {}
    }
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    let observed = match &job.spec.source.prefix {
        Some(prefix) if job.spec.source.key.is_none() => {
            observe_batch(&job, prefix, &mut status, suspended, now, ctx).await?
        }
        _ => observe(&job.spec, now, ctx.observer.as_ref()).await?,
    };
    status.total = observed.total;
    status.succeeded = observed.succeeded;
    status.failed = observed.failed;
    status.outputs = observed.outputs;
    status.message = observed.message.clone();
    let mut phase = observed.phase;
    let mut reason = observed.reason;

    if let (false, Some(deadline), Some(start)) = (
        phase.is_finished() || suspended,
        job.spec.active_deadline_seconds,
        status.start_time.as_ref(),
    ) && now >= after(start.0, SignedDuration::from_secs(deadline))
    {
        phase = Phase::Failed;
        reason = "DeadlineExceeded".into();
        status.message = Some(format!("the job ran longer than its {deadline} s deadline"));
    }
    status.progress = Some(format!(
        "{}/{}",
        status.succeeded + status.failed,
        status.total
    ));
    status.phase = Some(phase);
    if phase.is_finished() {
        status.completion_time = Some(Time(observed.finished_at.unwrap_or(now)));
        let message = status.message.clone().unwrap_or_default();
        match phase {
            Phase::Succeeded => set_condition(
                &mut status,
                "Complete",
                "True",
                &reason,
                &message,
                now,
                generation,
            ),
            _ => set_condition(
                &mut status,
                "Failed",
                "True",
                &reason,
                &message,
                now,
                generation,
            ),
        }
    }

    if status != old {
        let patch = serde_json::json!({ "status": status });
        api.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    if old.phase != Some(phase) {
        ctx.metrics.transition(phase);
        let kind = if matches!(phase, Phase::Failed | Phase::Expired) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = status.message.clone().unwrap_or_else(|| {
            format!(
                "{} ({})",
                phase.as_str(),
                status.progress.clone().unwrap_or_default()
            )
        });
        publish(ctx, job.object_ref(&()), kind, phase.as_str(), note).await;
    }

    if phase.is_finished() {
        if let (Some(uid), Ok(mut cache)) = (&job.metadata.uid, ctx.manifests.lock()) {
            cache.remove(uid);
        }
        return honour_ttl(&job, &api, &status, now, ctx).await;
    }
    if observed.more_to_enqueue {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::requeue(poll_interval(
        &job,
        &status,
        now,
        ctx.batch.retry_after,
    )))
}

/// What the buckets say about a job.
struct Observed {
    phase: Phase,
    reason: String,
    total: i64,
    succeeded: i64,
    failed: i64,
    outputs: Vec<JobOutput>,
    message: Option<String>,
    finished_at: Option<Timestamp>,
    more_to_enqueue: bool,
}

impl Observed {
    fn new() -> Self {
        Observed {
            phase: Phase::Pending,
            reason: String::new(),
            total: 1,
            succeeded: 0,
            failed: 0,
            outputs: Vec::new(),
            message: None,
            finished_at: None,
            more_to_enqueue: false,
        }
    }
}

/// A batch: every object under `prefix` is one image, its results under
/// `{destination}{key relative to prefix}/`. Items are enqueued in key order at
/// `BatchSettings::rate` per reconcile; progress counts manifests, so duplicate
/// deliveries cannot inflate it.
async fn observe_batch(
    job: &ImageJob,
    prefix: &str,
    status: &mut ImageJobStatus,
    suspended: bool,
    now: Timestamp,
    ctx: &Context,
) -> Result<Observed, Error> {
    let spec = &job.spec;
    let mut observed = Observed::new();
    let Some(queue) = &ctx.queue else {
        observed.total = status.total;
        observed.message = Some("no work queue configured (minilab operator --queue-url)".into());
        return Ok(observed);
    };
    let keys: Vec<String> = ctx
        .observer
        .list(&spec.source.bucket, prefix, ctx.batch.max_objects)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect();
    observed.total = keys.len() as i64;
    let destination = &spec.destination;
    let item_prefix = |key: &str| format!("{}{}/", destination.prefix, &key[prefix.len()..]);
    let written: std::collections::HashSet<String> = ctx
        .observer
        .list(
            &destination.bucket,
            &destination.prefix,
            ctx.batch.max_objects.saturating_mul(10),
        )
        .await?
        .into_iter()
        .filter(|k| k.ends_with("/manifest.json"))
        .collect();
    let uid = job.metadata.uid.clone().unwrap_or_else(|| job.name_any());
    let mut pending = Vec::new();
    for key in &keys {
        let manifest_key = format!("{}manifest.json", item_prefix(key));
        if !written.contains(&manifest_key) {
            pending.push(key);
            continue;
        }
        let cached = ctx
            .manifests
            .lock()
            .ok()
            .and_then(|m| m.get(&uid).and_then(|job| job.get(&manifest_key)).copied());
        let failed = match cached {
            Some(failed) => failed,
            None => {
                let Some(manifest) = ctx
                    .observer
                    .manifest(&destination.bucket, &manifest_key)
                    .await?
                else {
                    pending.push(key);
                    continue;
                };
                let failed = manifest.state == ManifestState::Failed;
                if let Ok(mut cache) = ctx.manifests.lock() {
                    cache
                        .entry(uid.clone())
                        .or_default()
                        .insert(manifest_key, failed);
                }
                failed
            }
        };
        if failed {
            observed.failed += 1;
        } else {
            observed.succeeded += 1;
        }
    }

    let item = |key: &String| WorkItem {
        job: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        bucket: spec.source.bucket.clone(),
        key: key.clone(),
        recipe: spec.recipe.clone(),
        destination_bucket: destination.bucket.clone(),
        destination_prefix: item_prefix(key),
    };
    let enqueued = usize::try_from(status.enqueued)
        .unwrap_or(0)
        .min(keys.len());
    if pending.is_empty() {
        observed.phase = if observed.failed == 0 {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        observed.reason = if observed.failed == 0 {
            "Processed"
        } else {
            "ImagesFailed"
        }
        .into();
        observed.message = match (observed.total, observed.failed) {
            (0, _) => Some(format!(
                "no objects under s3://{}/{prefix}",
                spec.source.bucket
            )),
            (_, 0) => None,
            (total, failed) => Some(format!("{failed} of {total} images failed")),
        };
        return Ok(observed);
    }
    if suspended {
        observed.phase = if enqueued > 0 {
            Phase::Running
        } else {
            Phase::Pending
        };
        return Ok(observed);
    }
    if enqueued < keys.len() {
        let next = &keys[enqueued..(enqueued + ctx.batch.rate).min(keys.len())];
        let items: Vec<WorkItem> = next.iter().map(item).collect();
        queue.send(&items).await.map_err(Error::Queue)?;
        status.enqueued = (enqueued + next.len()) as i64;
        status.last_enqueue_time = Some(Time(now));
        observed.more_to_enqueue = enqueued + next.len() < keys.len();
    } else if status
        .last_enqueue_time
        .as_ref()
        .is_none_or(|t| now >= after(t.0, ctx.batch.retry_after))
    {
        let limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
        if status.retries >= limit {
            observed.phase = Phase::Failed;
            observed.reason = "BackoffLimitExceeded".into();
            observed.message = Some(format!(
                "{} of {} images never finished after {} retries",
                pending.len(),
                observed.total,
                status.retries
            ));
            return Ok(observed);
        }
        let items: Vec<WorkItem> = pending.iter().map(|k| item(k)).collect();
        queue.send(&items).await.map_err(Error::Queue)?;
        status.retries += 1;
        status.last_enqueue_time = Some(Time(now));
    }
    observed.phase = Phase::Running;
    Ok(observed)
}

async fn observe(
    spec: &ImageJobSpec,
    now: Timestamp,
    observer: &dyn Observer,
) -> Result<Observed, Error> {
    let mut observed = Observed::new();
    let source = &spec.source;
    let (Some(key), None, Some(expires)) = (&source.key, &source.prefix, &source.upload_expires_at)
    else {
        // Batches are observed by `observe_batch`; what is left is an invalid source
        // or one existing object named by key.
        observed.total = 0;
        if source.key.is_some() == source.prefix.is_some() {
            observed.phase = Phase::Failed;
            observed.reason = "InvalidSpec".into();
            observed.message = Some("spec.source needs exactly one of key and prefix".into());
        } else {
            // Left Pending, not failed: a later operator version picks it up.
            observed.message = Some(
                "not processed: a key without uploadExpiresAt is not an upload; name existing objects with source.prefix".into(),
            );
        }
        return Ok(observed);
    };
    let manifest_key = format!("{}manifest.json", spec.destination.prefix);
    match observer
        .manifest(&spec.destination.bucket, &manifest_key)
        .await?
    {
        Some(manifest) => apply_manifest(&mut observed, &manifest),
        None if observer.exists(&source.bucket, key).await? => observed.phase = Phase::Running,
        None if now > after(expires.0, UPLOAD_GRACE) => {
            observed.phase = Phase::Expired;
            observed.reason = "UploadExpired".into();
            observed.message = Some(format!(
                "the upload did not arrive before its URL expired at {}",
                expires.0
            ));
        }
        None => observed.phase = Phase::AwaitingUpload,
    }
    Ok(observed)
}

fn apply_manifest(observed: &mut Observed, manifest: &Manifest) {
    observed.finished_at =
        Timestamp::from_millisecond(manifest.finished_at.timestamp_millis()).ok();
    match manifest.state {
        ManifestState::Succeeded => {
            observed.phase = Phase::Succeeded;
            observed.reason = "Processed".into();
            observed.succeeded = 1;
            observed.outputs = manifest
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
        }
        ManifestState::Failed => {
            observed.phase = Phase::Failed;
            observed.failed = 1;
            match &manifest.error {
                Some(error) => {
                    observed.reason = "ImageFailed".into();
                    observed.message = Some(format!("{}: {}", error.code, error.message));
                }
                None => observed.reason = "ImageFailed".into(),
            }
        }
    }
}

/// Level-triggered polling with backoff: often while a job is young, less as it ages
/// (a second per ten seconds of age, 2–60 s), and never past the moment the upload URL
/// lapses or the deadline falls.
fn poll_interval(
    job: &ImageJob,
    status: &ImageJobStatus,
    now: Timestamp,
    retry_after: SignedDuration,
) -> Duration {
    let created = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let age = now.duration_since(created).as_secs_f64().max(0.0);
    let mut wait = (age / 10.0).clamp(2.0, 60.0);
    let mut cap = |at: Timestamp| {
        let until = at.duration_since(now).as_secs_f64();
        if until > 0.0 {
            wait = wait.min(until + 0.5);
        }
    };
    if status.phase == Some(Phase::AwaitingUpload)
        && let Some(expires) = &job.spec.source.upload_expires_at
    {
        cap(after(expires.0, UPLOAD_GRACE));
    }
    if let Some(last) = &status.last_enqueue_time {
        cap(after(last.0, retry_after));
    }
    if let (Some(deadline), Some(start)) = (job.spec.active_deadline_seconds, &status.start_time) {
        cap(after(start.0, SignedDuration::from_secs(deadline)));
    }
    Duration::from_secs_f64(wait)
}

/// A finished job with `ttlSecondsAfterFinished` is deleted when that has passed.
async fn honour_ttl(
    job: &ImageJob,
    api: &Api<ImageJob>,
    status: &ImageJobStatus,
    now: Timestamp,
    ctx: &Context,
) -> Result<Action, Error> {
    let (Some(ttl), Some(done)) = (job.spec.ttl_seconds_after_finished, &status.completion_time)
    else {
        return Ok(Action::await_change());
    };
    let expiry = after(done.0, SignedDuration::from_secs(i64::from(ttl)));
    if now < expiry {
        return Ok(Action::requeue(Duration::from_secs_f64(
            expiry.duration_since(now).as_secs_f64(),
        )));
    }
    api.delete(&job.name_any(), &DeleteParams::background())
        .await?;
    ctx.metrics.deleted();
    Ok(Action::await_change())
}

/// `t + d`, saturating at the end of time: spec values (a deadline of i64::MAX
/// seconds, an expiry in year 9999) must not overflow into a panic.
fn after(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn source_display(spec: &ImageJobSpec) -> String {
    let source = &spec.source;
    match (&source.key, &source.prefix) {
        (Some(key), _) => format!("s3://{}/{key}", source.bucket),
        (None, Some(prefix)) => format!("s3://{}/{prefix}*", source.bucket),
        (None, None) => format!("s3://{}/", source.bucket),
    }
}

/// Sets a condition, keeping its transition time when only the reason or message moved.
fn set_condition(
    status: &mut ImageJobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let condition = Condition {
        type_: type_.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: generation,
    };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) if existing.status == value => {
            existing.reason = condition.reason;
            existing.message = condition.message;
            existing.observed_generation = generation;
        }
        Some(existing) => *existing = condition,
        None => status.conditions.push(condition),
    }
}

/// Events are best effort: a refused event is logged, never fails the reconcile.
async fn publish(
    ctx: &Context,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, reason, "could not record an event");
    }
}
