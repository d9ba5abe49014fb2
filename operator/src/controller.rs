//! The ImageJob reconciler: level-triggered, it reads the buckets and writes status;
//! nothing else writes ImageJob status. A reconcile is a short list of named steps:
//!
//! 1. [`observe`]: read the buckets (reads only);
//! 2. [`next_status`]: the pure step, from the job, what was read and the time;
//! 3. [`enqueue`]: put batch work on the queue (the one side effect on AWS);
//! 4. [`write_status`]: patch the status subresource and record an Event on a change
//!    of phase;
//! 5. requeue after the interval the pure step chose, or honour the TTL once finished.
//!
//! ImageJobs are watched through kube's [`DeserializeGuard`], so an object that does
//! not parse costs one Warning event, never the watch of all the others.

use crate::batch::{self, BatchMemory};
use crate::crd::{ImageJob, ImageJobStatus, Phase};
use crate::metrics::Metrics;
use crate::observe::{ObserveError, Observer, QueueError, WorkQueue};
use crate::status::{
    ConditionType, Decision, Observed, Settings, Work, deletion_due, next_status, status_patch,
    validate,
};
use crate::tracker::job_name;
use crate::upload;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use minilab_core::UploadId;
use minilab_core::event::WorkItem;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What every reconcile shares. Its caches are private: build it with [`Context::new`].
pub struct Context {
    client: Client,
    observer: Arc<dyn Observer>,
    /// The workers' queue, for batch jobs; without it they wait in Pending.
    queue: Option<Arc<dyn WorkQueue>>,
    settings: Settings,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    clock: Clock,
    batches: BatchMemory,
}

impl Context {
    pub fn new(
        client: Client,
        observer: Arc<dyn Observer>,
        queue: Option<Arc<dyn WorkQueue>>,
        settings: Settings,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Context {
            client,
            observer,
            queue,
            settings,
            recorder,
            metrics,
            clock,
            batches: BatchMemory::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("enqueueing work: {0}")]
    Queue(#[from] QueueError),
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

/// What the controller watches.
pub type Watched = DeserializeGuard<ImageJob>;

/// Reconciles the ImageJobs `api` sees until `stop`: a job when it appears or its
/// spec changes (a new generation), when the requeue its last reconcile chose comes
/// due, and when a worker's word (`told`) names its upload. A status write, the
/// operator's own, triggers nothing: it would cost a reconcile's S3 reads to learn
/// nothing new.
pub async fn run(
    api: Api<Watched>,
    context: Arc<Context>,
    told: impl Stream<Item = UploadId> + Send + 'static,
    stop: CancellationToken,
) {
    let namespace = api.namespace().map(str::to_owned);
    let (reader, writer) = reflector::store();
    let jobs = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let store = reader.clone();
    // A word for a job not seen yet is dropped: its first reconcile reads S3 anyway.
    let told = told.filter_map(move |id| {
        let name = job_name(&id);
        // Watching one namespace, the job is looked up by key; else searched for.
        let found = match &namespace {
            Some(ns) => store.get(&ObjectRef::new(&name).within(ns)),
            None => store.find(|job| job.name_any() == name),
        };
        futures::future::ready(found.map(|job| ObjectRef::from_obj(&*job)))
    });
    Controller::for_stream(jobs, reader)
        .reconcile_on(told)
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
}

/// One pass over one ImageJob. Errors are retried by [`error_policy`] with backoff.
pub async fn reconcile(object: Arc<Watched>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = match &object.0 {
        Ok(job) => reconcile_job(job, &ctx).await,
        Err(invalid) => {
            // Nothing to reconcile until someone fixes it; the watch goes on.
            ctx.metrics.malformed();
            let reference = object.object_ref(&());
            let note = format!("the ImageJob does not parse: {}", invalid.error);
            publish(&ctx, &reference, EventType::Warning, "Malformed", note).await;
            Ok(Action::await_change())
        }
    };
    ctx.metrics.reconciled(
        result.as_ref().err().map(Error::kind),
        started.elapsed().as_secs_f64(),
    );
    result
}

/// Retry soon: 5 s is enough for S3 or the API server to come back, and the
/// controller's own queue deduplicates.
pub fn error_policy(object: Arc<Watched>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(job = %object.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile_job(job: &ImageJob, ctx: &Context) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Some(status) = job
        .status
        .as_ref()
        .filter(|s| s.phase.is_some_and(Phase::is_finished))
    {
        return honour_ttl(job, status, ctx).await;
    }
    let observed = observe(job, ctx).await?;
    let decision = next_status(job, &observed, &ctx.settings, (ctx.clock)());
    enqueue(&decision.work, ctx).await?;
    write_status(job, &decision, ctx).await?;
    if decision.status.phase.is_some_and(Phase::is_finished) {
        ctx.batches.forget(&batch::cache_key(job));
        return honour_ttl(job, &decision.status, ctx).await;
    }
    Ok(Action::requeue(decision.requeue))
}

/// Step 1: what the buckets hold for this job (nothing for an invalid spec).
async fn observe(job: &ImageJob, ctx: &Context) -> Result<Observed, Error> {
    let spec = &job.spec;
    Ok(match validate(spec, &ctx.settings) {
        Err(invalid) => Observed::Invalid(invalid),
        Ok(Work::Batch { .. }) if ctx.queue.is_none() => Observed::NoQueue,
        Ok(Work::Batch { prefix }) => Observed::Batch(
            batch::observe(
                job,
                prefix,
                ctx.observer.as_ref(),
                ctx.settings.max_objects,
                &ctx.batches,
            )
            .await?,
        ),
        Ok(Work::Upload { key }) => Observed::Upload(Box::new(
            upload::observe(
                ctx.observer.as_ref(),
                &spec.source.bucket,
                key,
                &spec.destination.bucket,
                &spec.destination.prefix,
                job.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running),
            )
            .await?,
        )),
    })
}

/// Step 3: batch work onto the workers' queue.
async fn enqueue(work: &[WorkItem], ctx: &Context) -> Result<(), Error> {
    match (&ctx.queue, work.is_empty()) {
        (_, true) => Ok(()),
        (Some(queue), false) => Ok(queue.send(work).await?),
        (None, false) => Err(QueueError::NotConfigured.into()),
    }
}

/// Step 4: the status, when it changed, and an Event when the phase did.
async fn write_status(job: &ImageJob, decision: &Decision, ctx: &Context) -> Result<(), Error> {
    let old = job.status.clone().unwrap_or_default();
    let status = &decision.status;
    if *status == old {
        return Ok(());
    }
    let api: Api<ImageJob> = Api::namespaced(ctx.client.clone(), &namespace(job));
    let patch = status_patch(&old, status);
    api.patch_status(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    if let Some(phase) = status.phase.filter(|phase| old.phase != Some(*phase)) {
        ctx.metrics.transition(phase);
        let kind = match phase {
            Phase::Failed | Phase::Expired => EventType::Warning,
            _ => EventType::Normal,
        };
        let reason = match condition_reason(status) {
            Some("InvalidSpec") => "InvalidSpec",
            _ => phase.as_str(),
        };
        publish(ctx, &job.object_ref(&()), kind, reason, note(status, phase)).await;
    }
    let suspended = |status: &ImageJobStatus| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Suspended" && c.status == "True")
    };
    if suspended(status) != suspended(&old) {
        let (reason, note) = match suspended(status) {
            true => ("Suspended", "suspended: no new work is enqueued"),
            false => ("Resumed", "resumed"),
        };
        publish(
            ctx,
            &job.object_ref(&()),
            EventType::Normal,
            reason,
            note.into(),
        )
        .await;
    }
    Ok(())
}

fn condition_reason(status: &ImageJobStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| {
            c.status == "True"
                && [ConditionType::Failed, ConditionType::Complete]
                    .iter()
                    .any(|t| c.type_ == t.as_str())
        })
        .map(|c| c.reason.as_str())
}

fn note(status: &ImageJobStatus, phase: Phase) -> String {
    status.message.clone().unwrap_or_else(|| {
        format!(
            "{} ({})",
            phase.as_str(),
            status.progress.clone().unwrap_or_default()
        )
    })
}

/// Step 5 for a finished job: deleted once `ttlSecondsAfterFinished` has passed.
async fn honour_ttl(
    job: &ImageJob,
    status: &ImageJobStatus,
    ctx: &Context,
) -> Result<Action, Error> {
    let Some(due) = deletion_due(&job.spec, status) else {
        return Ok(Action::await_change());
    };
    let now = (ctx.clock)();
    if now < due {
        return Ok(Action::requeue(Duration::from_secs_f64(
            due.duration_since(now).as_secs_f64(),
        )));
    }
    let api: Api<ImageJob> = Api::namespaced(ctx.client.clone(), &namespace(job));
    api.delete(&job.name_any(), &DeleteParams::background())
        .await?;
    ctx.metrics.deleted();
    Ok(Action::await_change())
}

fn namespace(job: &ImageJob) -> String {
    job.namespace().unwrap_or_else(|| "default".into())
}

/// Events are best effort: a refused event is logged, never fails the reconcile.
async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
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
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "could not record an event");
    }
}
