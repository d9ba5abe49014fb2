//! The pure step of a reconcile: from an ImageJob and what the buckets hold, the next
//! status, the work to enqueue and when to look again. No client and no clock (`now`
//! is given), so every rule here is tested from fixtures.

use crate::batch::{self, BatchObservation};
use crate::crd::{
    Condition, ImageJob, ImageJobSpec, ImageJobStatus, JobOutput, JobPlaceholder, Phase,
};
use crate::upload::{self, UploadObservation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use minilab_core::event::WorkItem;
use std::collections::BTreeSet;
use std::time::Duration;

/// How the operator runs jobs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Batch work items enqueued per second (per job).
    pub rate: usize,
    /// Batch images without a manifest this long after the last enqueue are enqueued
    /// again (up to `backoffLimit` times).
    pub retry_after: SignedDuration,
    /// Most objects one batch may have.
    pub max_objects: usize,
    /// The recipes the workers know: a job naming another is invalid.
    pub recipes: BTreeSet<String>,
    /// Whether the workers tell the operator when an upload starts and finishes
    /// (`--peer-secret`): upload jobs are then read at that word, and polled only as
    /// a fallback for a word lost, every [`UPLOAD_FALLBACK_POLL`].
    pub told_by_workers: bool,
}

/// How often an upload job is read without word from the workers, when they give it.
pub const UPLOAD_FALLBACK_POLL: Duration = Duration::from_secs(60);

impl Default for Settings {
    fn default() -> Self {
        Self {
            rate: 50,
            retry_after: SignedDuration::from_mins(10),
            max_objects: 100_000,
            recipes: minilab_core::RecipeBook::builtin()
                .iter()
                .map(|r| r.name.clone())
                .collect(),
            told_by_workers: false,
        }
    }
}

/// What the reconcile read for a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// Boxed: a manifest is large beside the other variants.
    Upload(Box<UploadObservation>),
    Batch(BatchObservation),
    /// A batch, but the operator has no work queue to put it on.
    NoQueue,
    /// The spec passed the schema but makes no sense (see [`validate`]).
    Invalid(InvalidSpec),
}

/// The `reason` of a job's condition, in the API's CamelCase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not finished (never written: a condition is set once finished).
    Processing,
    /// Complete: every image processed.
    Processed,
    /// Failed: the upload's image failed.
    ImageFailed,
    /// Failed: some of a batch's images failed.
    ImagesFailed,
    /// Failed: nothing arrived before the ticket expired.
    UploadExpired,
    /// Failed: past `activeDeadlineSeconds`.
    DeadlineExceeded,
    /// Failed: the spec makes no sense ([`validate`]).
    InvalidSpec,
    /// Failed: a batch's images stayed unfinished past `backoffLimit` retries.
    BackoffLimitExceeded,
    /// Failed: the upload was deleted by its owner (`DELETE /api/v1/uploads/{id}`).
    UploadDeleted,
    /// Suspended True.
    JobSuspended,
    /// Suspended False.
    JobResumed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "Processing",
            Self::Processed => "Processed",
            Self::ImageFailed => "ImageFailed",
            Self::ImagesFailed => "ImagesFailed",
            Self::UploadExpired => "UploadExpired",
            Self::UploadDeleted => "UploadDeleted",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::InvalidSpec => "InvalidSpec",
            Self::BackoffLimitExceeded => "BackoffLimitExceeded",
            Self::JobSuspended => "JobSuspended",
            Self::JobResumed => "JobResumed",
        }
    }
}

/// The `type` of a job's condition, as a Job's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    Complete,
    Failed,
    Suspended,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "Complete",
            Self::Failed => "Failed",
            Self::Suspended => "Suspended",
        }
    }
}

/// Why a spec that passed the schema makes no sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    #[error("spec.source needs exactly one of key and prefix")]
    KeyOrPrefix,
    #[error(
        "spec.source.key is for uploads (with uploadExpiresAt); name existing objects with spec.source.prefix"
    )]
    KeyWithoutExpiry,
    #[error("unknown recipe {recipe:?} (known: {known})")]
    UnknownRecipe { recipe: String, known: String },
    #[error(
        "spec.reprocess takes uploads by spec.source.prefix (uploads/...) and writes back to each upload: spec.destination.prefix must be empty"
    )]
    Reprocess,
}

/// What a job's source says, before the job's own rules (suspension, deadline).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub phase: Phase,
    /// The condition's reason once finished: never empty (the API server refuses an
    /// empty required string).
    pub reason: Reason,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub outputs: Vec<JobOutput>,
    pub placeholder: Option<JobPlaceholder>,
    pub message: Option<String>,
    pub finished_at: Option<Timestamp>,
}

impl Verdict {
    pub fn new(phase: Phase, total: i64) -> Self {
        Verdict {
            phase,
            reason: Reason::Processing,
            total,
            succeeded: 0,
            failed: 0,
            outputs: Vec::new(),
            placeholder: None,
            message: None,
            finished_at: None,
        }
    }
}

/// The outcome of the pure step.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: ImageJobStatus,
    /// To put on the workers' queue before `status` is written.
    pub work: Vec<WorkItem>,
    /// When to reconcile again, unless finished (then the TTL decides).
    pub requeue: Duration,
}

/// What a valid spec asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work<'a> {
    /// One object that arrives through a presigned POST.
    Upload { key: &'a str },
    /// Every object under a prefix.
    Batch { prefix: &'a str },
}

/// The recipe must be known and the source exactly one of an upload's `key` (with
/// `uploadExpiresAt`) or a batch's `prefix`; a reprocessing is a batch written back
/// to each upload.
pub fn validate<'a>(spec: &'a ImageJobSpec, settings: &Settings) -> Result<Work<'a>, InvalidSpec> {
    let source = &spec.source;
    let work = match (&source.key, &source.prefix, &source.upload_expires_at) {
        (Some(_), Some(_), _) | (None, None, _) => return Err(InvalidSpec::KeyOrPrefix),
        (Some(_), None, None) => return Err(InvalidSpec::KeyWithoutExpiry),
        (Some(key), None, Some(_)) => Work::Upload { key },
        (None, Some(prefix), _) => Work::Batch { prefix },
    };
    if spec.reprocess == Some(true)
        && (!matches!(work, Work::Batch { .. }) || !spec.destination.prefix.is_empty())
    {
        return Err(InvalidSpec::Reprocess);
    }
    if !settings.recipes.contains(&spec.recipe) {
        return Err(InvalidSpec::UnknownRecipe {
            recipe: spec.recipe.clone(),
            known: settings
                .recipes
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(work)
}

/// The next status of an unfinished job: suspension, the source's verdict, the
/// deadline, progress, completion and conditions.
pub fn next_status(
    job: &ImageJob,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Decision {
    let generation = job.metadata.generation;
    let suspended = job.spec.suspend == Some(true);
    let mut status = job.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.source = Some(source_display(&job.spec));
    suspension(&mut status, suspended, generation, now);

    let (mut verdict, mut work, mut more) =
        source_verdict(job, observed, &mut status, settings, now);
    if deadline_passed(job, &status, &verdict, suspended, now) {
        verdict.phase = Phase::Failed;
        verdict.reason = Reason::DeadlineExceeded;
        verdict.message = Some(format!(
            "the job ran longer than its {} s deadline",
            job.spec.active_deadline_seconds.unwrap_or_default()
        ));
        work.clear();
        more = false;
    }
    record(&mut status, verdict, generation, now);
    let requeue = if more {
        Duration::from_secs(1)
    } else {
        poll_interval(job, &status, now, settings)
    };
    Decision {
        status,
        work,
        requeue,
    }
}

/// What the source says: an upload's arrival and manifest, a batch's counts and its
/// next work (its enqueue bookkeeping written into `status`), or why there is none.
fn source_verdict(
    job: &ImageJob,
    observed: &Observed,
    status: &mut ImageJobStatus,
    settings: &Settings,
    now: Timestamp,
) -> (Verdict, Vec<WorkItem>, bool) {
    let old = job.status.clone().unwrap_or_default();
    match (observed, &job.spec.source) {
        (Observed::Upload(observation), source) => {
            let expires = source
                .upload_expires_at
                .as_ref()
                .map_or(Timestamp::MAX, |t| t.0);
            (
                upload::verdict(observation, expires, now),
                Vec::new(),
                false,
            )
        }
        (Observed::Batch(observation), _) => {
            let plan = batch::plan(job, &old, observation, settings, now);
            if !plan.work.is_empty() {
                status.last_enqueue_time = Some(Time(now));
            }
            status.enqueued = plan.enqueued;
            status.retries = plan.retries;
            (plan.verdict, plan.work, plan.more)
        }
        (Observed::NoQueue, _) => {
            let mut verdict = Verdict::new(Phase::Pending, old.total);
            verdict.message =
                Some("no work queue configured (minilab operator --queue-url)".into());
            (verdict, Vec::new(), false)
        }
        (Observed::Invalid(invalid), _) => {
            let mut verdict = Verdict::new(Phase::Failed, 0);
            verdict.reason = Reason::InvalidSpec;
            verdict.message = Some(invalid.to_string());
            (verdict, Vec::new(), false)
        }
    }
}

/// Whether an unfinished, running job has passed its `activeDeadlineSeconds`.
fn deadline_passed(
    job: &ImageJob,
    status: &ImageJobStatus,
    verdict: &Verdict,
    suspended: bool,
    now: Timestamp,
) -> bool {
    match (
        verdict.phase.is_finished() || suspended,
        job.spec.active_deadline_seconds,
        status.start_time.as_ref(),
    ) {
        (false, Some(deadline), Some(start)) => {
            now >= after(start.0, SignedDuration::from_secs(deadline))
        }
        _ => false,
    }
}

/// The verdict written into the status: counts, outputs, progress, the phase and,
/// once finished, the completion time and the Complete or Failed condition.
fn record(status: &mut ImageJobStatus, verdict: Verdict, generation: Option<i64>, now: Timestamp) {
    status.total = verdict.total;
    status.succeeded = verdict.succeeded;
    status.failed = verdict.failed;
    status.outputs = verdict.outputs;
    status.placeholder = verdict.placeholder;
    status.message = verdict.message;
    status.progress = Some(format!(
        "{}/{}",
        status.succeeded + status.failed,
        status.total
    ));
    status.phase = Some(verdict.phase);
    if verdict.phase.is_finished() {
        status.completion_time = Some(Time(verdict.finished_at.unwrap_or(now)));
        let type_ = if verdict.phase == Phase::Succeeded {
            ConditionType::Complete
        } else {
            ConditionType::Failed
        };
        let message = status.message.clone().unwrap_or_default();
        set_condition(
            status,
            type_,
            "True",
            verdict.reason,
            &message,
            now,
            generation,
        );
    }
}

/// As a Job: `Suspended` True while suspended, False once resumed, and the deadline
/// counts from the (re)start.
fn suspension(
    status: &mut ImageJobStatus,
    suspended: bool,
    generation: Option<i64>,
    now: Timestamp,
) {
    let was_suspended = status
        .conditions
        .iter()
        .any(|c| c.type_ == ConditionType::Suspended.as_str() && c.status == "True");
    if suspended {
        set_condition(
            status,
            ConditionType::Suspended,
            "True",
            Reason::JobSuspended,
            "suspended",
            now,
            generation,
        );
    } else if was_suspended {
        set_condition(
            status,
            ConditionType::Suspended,
            "False",
            Reason::JobResumed,
            "resumed",
            now,
            generation,
        );
        status.start_time = Some(Time(now));
    }
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }
}

/// Level-triggered polling with backoff: often while a job is young, less as it ages
/// (a second per ten seconds of age, 2–60 s; an upload job the workers tell of, every
/// [`UPLOAD_FALLBACK_POLL`]), and never past the moment the upload is given up, a
/// retry is due or the deadline falls.
pub fn poll_interval(
    job: &ImageJob,
    status: &ImageJobStatus,
    now: Timestamp,
    settings: &Settings,
) -> Duration {
    let created = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let age = now.duration_since(created).as_secs_f64().max(0.0);
    let mut wait = match settings.told_by_workers && job.spec.source.key.is_some() {
        true => UPLOAD_FALLBACK_POLL.as_secs_f64(),
        false => (age / 10.0).clamp(2.0, 60.0),
    };
    let mut cap = |at: Timestamp| {
        let until = at.duration_since(now).as_secs_f64();
        if until > 0.0 {
            wait = wait.min(until + 0.5);
        }
    };
    if status.phase == Some(Phase::AwaitingUpload)
        && let Some(expires) = &job.spec.source.upload_expires_at
    {
        cap(upload::given_up_at(expires.0));
    }
    if let Some(last) = &status.last_enqueue_time {
        cap(after(last.0, settings.retry_after));
    }
    if let (Some(deadline), Some(start)) = (job.spec.active_deadline_seconds, &status.start_time) {
        cap(after(start.0, SignedDuration::from_secs(deadline)));
    }
    Duration::from_secs_f64(wait)
}

/// The merge patch that turns status `old` into `new`: fields `new` leaves out are
/// sent as null, since a merge patch keeps every field it does not name (a message
/// that no longer applies would stay forever).
pub fn status_patch(old: &ImageJobStatus, new: &ImageJobStatus) -> serde_json::Value {
    let mut patch = serde_json::to_value(new).unwrap_or_default();
    if let (Ok(serde_json::Value::Object(old)), serde_json::Value::Object(fields)) =
        (serde_json::to_value(old), &mut patch)
    {
        for key in old.keys() {
            fields.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": patch })
}

/// When a finished job is due for deletion (`ttlSecondsAfterFinished`), if ever.
pub fn deletion_due(spec: &ImageJobSpec, status: &ImageJobStatus) -> Option<Timestamp> {
    let ttl = spec.ttl_seconds_after_finished?;
    let done = status.completion_time.as_ref()?;
    Some(after(done.0, SignedDuration::from_secs(i64::from(ttl))))
}

/// `t + d`, saturating at the end of time: spec values (a deadline of i64::MAX
/// seconds, an expiry in year 9999) must not overflow into a panic.
pub fn after(t: Timestamp, d: SignedDuration) -> Timestamp {
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
    type_: ConditionType,
    value: &str,
    reason: Reason,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let condition = Condition {
        type_: type_.as_str().into(),
        status: value.into(),
        reason: reason.as_str().into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: generation,
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == type_.as_str())
    {
        Some(existing) if existing.status == value => {
            existing.reason = condition.reason;
            existing.message = condition.message;
            existing.observed_generation = generation;
        }
        Some(existing) => *existing = condition,
        None => status.conditions.push(condition),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The rules of every phase, from fixtures: jobs as the API server returns them and
    //! observations as the buckets would give them.
    use super::*;
    use minilab_core::ErrorCode;
    use minilab_core::manifest::{
        ErrorRecord, Manifest, ManifestState, OutputRecord, Placeholder, Source, StageTimings,
    };
    use serde_json::{Value, json};
    use std::collections::HashMap;

    const CREATED: &str = "2026-11-25T12:00:00Z";

    fn at(seconds_after_creation: i64) -> Timestamp {
        CREATED.parse::<Timestamp>().unwrap() + SignedDuration::from_secs(seconds_after_creation)
    }

    fn merge(target: &mut Value, patch: Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
            (target, patch) => *target = patch,
        }
    }

    /// An ImageJob as the API server returns it: an upload's (as the API creates it)
    /// with `spec` merged in, or a batch's when `spec` names a prefix.
    fn job(spec: Value, status: Value) -> ImageJob {
        let mut job = json!({
            "apiVersion": "minilab.dev/v1alpha1",
            "kind": "ImageJob",
            "metadata": {"name": "upload-1", "namespace": "photos", "uid": "u-1", "generation": 1,
                "resourceVersion": "100", "creationTimestamp": CREATED},
            "spec": {
                "source": {"bucket": "up", "key": "uploads/1", "uploadExpiresAt": at(900).to_string()},
                "recipe": "web",
                "destination": {"bucket": "out", "prefix": "1/"}
            }
        });
        merge(&mut job["spec"], spec);
        if !status.is_null() {
            job["status"] = status;
        }
        serde_json::from_value(job).unwrap()
    }

    pub(crate) fn batch_job(spec: Value, status: Value) -> ImageJob {
        let mut spec_with = json!({"source": {"key": null, "uploadExpiresAt": null, "prefix": "shoot/"},
            "recipe": "thumbnail", "destination": {"prefix": "b/"}});
        merge(&mut spec_with, spec);
        job(spec_with, status)
    }

    /// A manifest of one output (or a failure), for the operator's tests.
    pub(crate) fn manifest(failed: bool) -> Manifest {
        Manifest {
            version: Manifest::VERSION,
            id: None,
            state: if failed {
                ManifestState::Failed
            } else {
                ManifestState::Succeeded
            },
            recipe: "web".into(),
            source: Source {
                bucket: "up".into(),
                key: "uploads/1".into(),
                bytes: 1234,
                filename: None,
                format: Some("jpeg".into()),
                width: Some(4000),
                height: Some(3000),
                frames: None,
                delete_key: None,
            },
            outputs: if failed {
                Vec::new()
            } else {
                vec![OutputRecord {
                    name: "large".into(),
                    key: "1/large.jpg".into(),
                    width: 1024,
                    height: 768,
                    bytes: 120_000,
                    content_type: "image/jpeg".into(),
                    frames: None,
                }]
            },
            placeholder: (!failed).then(|| Placeholder {
                thumbhash: "1QcSHQRnh493V4dIh4eXh1h4kJUI".into(),
                dominant_color: "#4a6f2c".into(),
            }),
            error: failed.then(|| ErrorRecord {
                code: ErrorCode::CorruptImage,
                message: "the image does not decode".into(),
            }),
            timings: StageTimings::default(),
            finished_at: "2026-11-25T12:00:30Z".parse().unwrap(),
            revision: 0,
            reprocessed: None,
            earlier: Vec::new(),
        }
    }

    fn upload(manifest: Option<Manifest>, stored: bool) -> Observed {
        Observed::Upload(Box::new(UploadObservation { manifest, stored }))
    }

    fn settings() -> Settings {
        Settings {
            rate: 10,
            retry_after: SignedDuration::from_secs(600),
            ..Settings::default()
        }
    }

    fn decide(job: &ImageJob, observed: &Observed, now: Timestamp) -> Decision {
        next_status(job, observed, &settings(), now)
    }

    /// The status as the API server would store it after the patch.
    fn stored(decision: &Decision) -> Value {
        serde_json::to_value(&decision.status).unwrap()
    }

    /// The job after its status patch, for the next reconcile.
    fn with(job: &ImageJob, decision: &Decision) -> ImageJob {
        let mut next = job.clone();
        next.status = Some(decision.status.clone());
        next
    }

    #[test]
    fn an_upload_awaits_then_runs_then_succeeds_with_its_outputs() {
        let fresh = job(json!({}), Value::Null);
        let decision = decide(&fresh, &upload(None, false), at(5));
        let s = stored(&decision);
        assert_eq!(s["phase"], "AwaitingUpload");
        assert_eq!(s["progress"], "0/1");
        assert_eq!(s["observedGeneration"], 1);
        assert_eq!(s["startTime"], at(5).to_string());
        assert_eq!(s["source"], "s3://up/uploads/1");
        assert!(s.get("conditions").is_none());
        assert_eq!(decision.requeue, Duration::from_secs(2));

        // The same observation later writes the same status; polled less often.
        let waiting = with(&fresh, &decision);
        let again = decide(&waiting, &upload(None, false), at(300));
        assert_eq!(again.status, decision.status);
        assert_eq!(again.requeue, Duration::from_secs(30));
        // Told by the workers of each start and finish, the operator polls only as a
        // fallback, and still at the moment the upload is given up.
        let told = Settings {
            told_by_workers: true,
            ..settings()
        };
        let quiet = next_status(&fresh, &upload(None, false), &told, at(5));
        assert_eq!(quiet.requeue, UPLOAD_FALLBACK_POLL);
        // A URL that lapsed at creation: given up 60 s (core's grace) later.
        let expiring = job(
            json!({"source": {"uploadExpiresAt": at(0).to_string()}}),
            Value::Null,
        );
        let capped = next_status(&expiring, &upload(None, false), &told, at(5)).requeue;
        assert!(capped < UPLOAD_FALLBACK_POLL, "{capped:?}");
        let polled_at = at(5) + SignedDuration::try_from(capped).unwrap();
        assert!(
            polled_at >= crate::upload::given_up_at(at(0)),
            "{polled_at}"
        );

        let running = with(&waiting, &decide(&waiting, &upload(None, true), at(20)));
        assert_eq!(
            stored(&decide(&running, &upload(None, true), at(21)))["phase"],
            "Running"
        );
        assert_eq!(
            running.status.as_ref().unwrap().start_time,
            Some(Time(at(5))),
            "kept"
        );

        let done = decide(&running, &upload(Some(manifest(false)), true), at(40));
        let s = stored(&done);
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(s["progress"], "1/1");
        assert_eq!(s["completionTime"], "2026-11-25T12:00:30Z");
        assert_eq!(s["outputs"][0]["key"], "1/large.jpg");
        assert_eq!(s["outputs"][0]["width"], 1024);
        assert_eq!(
            s["placeholder"]["thumbhash"],
            "1QcSHQRnh493V4dIh4eXh1h4kJUI"
        );
        assert_eq!(s["placeholder"]["dominantColor"], "#4a6f2c");
        let complete = &s["conditions"][0];
        assert_eq!(
            (&complete["type"], &complete["status"], &complete["reason"]),
            (&json!("Complete"), &json!("True"), &json!("Processed"))
        );
        assert_eq!(complete["lastTransitionTime"], at(40).to_string());
        assert!(
            complete.get("message").is_none(),
            "an empty message is left out: {complete}"
        );
        assert!(done.work.is_empty());
    }

    #[test]
    fn a_status_patch_removes_what_no_longer_applies() {
        let old = job(
            json!({}),
            json!({"phase": "Pending", "message": "no work queue configured", "total": 1}),
        );
        let decision = decide(&old, &upload(None, true), at(5));
        let patch = status_patch(old.status.as_ref().unwrap(), &decision.status);
        assert_eq!(patch["status"]["message"], Value::Null);
        assert!(patch["status"].as_object().unwrap().contains_key("message"));
        assert_eq!(patch["status"]["phase"], "Running");
        assert!(
            !patch["status"]
                .as_object()
                .unwrap()
                .contains_key("completionTime")
        );
    }

    #[test]
    fn a_failed_image_fails_the_job_with_its_code() {
        let s = stored(&decide(
            &job(json!({}), Value::Null),
            &upload(Some(manifest(true)), true),
            at(40),
        ));
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["failed"], 1);
        assert_eq!(s["progress"], "1/1");
        assert_eq!(s["message"], "corrupt-image: the image does not decode");
        assert_eq!(s["conditions"][0]["type"], "Failed");
        assert_eq!(s["conditions"][0]["reason"], "ImageFailed");
    }

    #[test]
    fn an_upload_that_never_arrives_expires_after_its_url_and_the_grace() {
        let waiting = job(
            json!({}),
            json!({"phase": "AwaitingUpload", "startTime": at(0).to_string(), "total": 1}),
        );
        // The URL lapses at 900 s; an upload started just before may land for 60 s more.
        let decision = decide(&waiting, &upload(None, false), at(950));
        assert_eq!(stored(&decision)["phase"], "AwaitingUpload");
        assert_eq!(decision.requeue, Duration::from_secs_f64(10.5));
        let s = stored(&decide(&waiting, &upload(None, false), at(961)));
        assert_eq!(s["phase"], "Expired");
        assert_eq!(s["completionTime"], at(961).to_string());
        assert!(s["message"].as_str().unwrap().contains("did not arrive"));
        assert_eq!(s["conditions"][0]["type"], "Failed");
        assert_eq!(s["conditions"][0]["reason"], "UploadExpired");
    }

    #[test]
    fn suspend_pauses_the_deadline_and_resume_restarts_it() {
        let running = json!({"phase": "Running", "startTime": at(0).to_string(), "total": 1});
        let spec = json!({"suspend": true, "activeDeadlineSeconds": 60});
        let suspended = job(spec, running.clone());
        let decision = decide(&suspended, &upload(None, true), at(100));
        let s = stored(&decision);
        assert_eq!(
            s["phase"], "Running",
            "suspended past its deadline: not failed"
        );
        assert_eq!(s["conditions"][0]["type"], "Suspended");
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][0]["reason"], "JobSuspended");

        let mut resumed = with(&suspended, &decision);
        resumed.spec.suspend = Some(false);
        let decision = decide(&resumed, &upload(None, true), at(200));
        let s = stored(&decision);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["startTime"], at(200).to_string());
        assert_eq!(s["conditions"][0]["status"], "False");
        assert_eq!(s["conditions"][0]["reason"], "JobResumed");
        assert_eq!(
            s["conditions"][0]["lastTransitionTime"],
            at(200).to_string()
        );
        assert_eq!(decision.requeue, Duration::from_secs(20));
    }

    #[test]
    fn a_job_past_its_deadline_fails_and_a_finished_one_is_due_after_its_ttl() {
        let running = json!({"phase": "Running", "startTime": at(0).to_string(), "total": 1});
        let spec = json!({"activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 300});
        let job_ = job(spec, running.clone());
        // Absurd values from a spec end in no deadline at all, not a panic.
        let forever = job(
            json!({"activeDeadlineSeconds": i64::MAX, "source": {"uploadExpiresAt": "9999-12-30T21:59:30Z"}}),
            running,
        );
        assert_eq!(
            stored(&decide(&forever, &upload(None, true), at(50)))["phase"],
            "Running"
        );
        // Before the deadline the next poll is no later than the deadline itself.
        let decision = decide(&job_, &upload(None, true), at(50));
        assert_eq!(decision.requeue, Duration::from_secs(5));
        let failed = decide(&job_, &upload(None, true), at(61));
        let s = stored(&failed);
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["conditions"][0]["reason"], "DeadlineExceeded");
        assert_eq!(s["message"], "the job ran longer than its 60 s deadline");
        assert_eq!(deletion_due(&job_.spec, &failed.status), Some(at(361)));
        let no_ttl = job(
            json!({}),
            json!({"phase": "Failed", "completionTime": at(1).to_string()}),
        );
        assert_eq!(
            deletion_due(&no_ttl.spec, no_ttl.status.as_ref().unwrap()),
            None
        );
    }

    #[test]
    fn specs_the_schema_accepts_but_that_make_no_sense_are_invalid() {
        let settings = settings();
        let both = job(json!({"source": {"prefix": "p/"}}), Value::Null);
        assert_eq!(
            validate(&both.spec, &settings),
            Err(InvalidSpec::KeyOrPrefix)
        );
        let unknown = batch_job(json!({"recipe": "sepia"}), Value::Null);
        let invalid = validate(&unknown.spec, &settings).unwrap_err();
        let message = invalid.to_string();
        assert!(
            message.contains("unknown recipe \"sepia\"") && message.contains("thumbnail"),
            "{message}"
        );
        let key_only = job(json!({"source": {"uploadExpiresAt": null}}), Value::Null);
        assert_eq!(
            validate(&key_only.spec, &settings),
            Err(InvalidSpec::KeyWithoutExpiry)
        );
        let upload = job(json!({}), Value::Null);
        assert_eq!(
            validate(&upload.spec, &settings),
            Ok(Work::Upload { key: "uploads/1" })
        );
        let batch = batch_job(json!({}), Value::Null);
        assert_eq!(
            validate(&batch.spec, &settings),
            Ok(Work::Batch { prefix: "shoot/" })
        );

        let reprocess = |spec| batch_job(merged(json!({"reprocess": true}), spec), Value::Null);
        let elsewhere = reprocess(json!({}));
        assert_eq!(
            validate(&elsewhere.spec, &settings),
            Err(InvalidSpec::Reprocess),
            "the results go back to each upload, under no other prefix"
        );
        let by_key = job(
            json!({"reprocess": true, "destination": {"prefix": ""}}),
            Value::Null,
        );
        assert_eq!(
            validate(&by_key.spec, &settings),
            Err(InvalidSpec::Reprocess)
        );
        let uploads =
            reprocess(json!({"source": {"prefix": "uploads/"}, "destination": {"prefix": ""}}));
        assert_eq!(
            validate(&uploads.spec, &settings),
            Ok(Work::Batch { prefix: "uploads/" })
        );

        let s = stored(&decide(&unknown, &Observed::Invalid(invalid), at(1)));
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["conditions"][0]["type"], "Failed");
        assert_eq!(s["conditions"][0]["reason"], "InvalidSpec");
        assert_eq!(s["message"], message);
    }

    fn batch(keys: usize, finished: &[(usize, bool)]) -> Observed {
        let key = |i: usize| format!("shoot/{i:02}.jpg");
        Observed::Batch(BatchObservation {
            keys: std::sync::Arc::new((0..keys).map(key).collect()),
            finished: finished
                .iter()
                .map(|(i, failed)| (key(*i), *failed))
                .collect::<HashMap<_, _>>(),
        })
    }

    #[test]
    fn a_batch_is_enqueued_in_key_order_at_the_rate_and_counted_from_manifests() {
        let mut current = batch_job(json!({}), Value::Null);
        let mut now = 1;
        for enqueued in [10, 20, 25] {
            let decision = decide(&current, &batch(25, &[]), at(now));
            let s = stored(&decision);
            assert_eq!(s["enqueued"], enqueued);
            assert_eq!(s["total"], 25);
            assert_eq!(s["phase"], "Running");
            assert_eq!(decision.work.len(), if enqueued == 25 { 5 } else { 10 });
            let first = &decision.work[0];
            assert_eq!(
                first.key,
                format!("shoot/{:02}.jpg", enqueued - decision.work.len())
            );
            assert_eq!(
                first.destination_prefix,
                format!("b/{:02}.jpg/", enqueued - decision.work.len())
            );
            assert_eq!(first.job, "photos/upload-1");
            assert_eq!(first.recipe, "thumbnail");
            let more = enqueued < 25;
            assert_eq!(decision.requeue == Duration::from_secs(1), more);
            current = with(&current, &decision);
            // However often the watch triggers a reconcile, at most `rate` a second.
            let soon = at(now) + SignedDuration::from_millis(500);
            let soon = decide(&current, &batch(25, &[]), soon);
            assert!(soon.work.is_empty());
            assert_eq!(
                soon.status.enqueued,
                current.status.as_ref().unwrap().enqueued
            );
            assert_eq!(soon.requeue == Duration::from_secs(1), more);
            now += 1;
        }
        // Everything on the queue: nothing more until a retry is due.
        let decision = decide(&current, &batch(25, &[(0, false), (3, true)]), at(now));
        assert!(decision.work.is_empty());
        assert_eq!(stored(&decision)["progress"], "2/25");
        assert_eq!((decision.status.succeeded, decision.status.failed), (1, 1));

        let all: Vec<(usize, bool)> = (0..25).map(|i| (i, i == 7)).collect();
        let s = stored(&decide(&current, &batch(25, &all), at(now + 1)));
        assert_eq!(s["phase"], "Failed");
        assert_eq!(
            (
                s["total"].as_i64(),
                s["succeeded"].as_i64(),
                s["failed"].as_i64()
            ),
            (Some(25), Some(24), Some(1))
        );
        assert_eq!(s["progress"], "25/25");
        assert_eq!(s["message"], "1 of 25 images failed");
        assert_eq!(s["source"], "s3://up/shoot/*");
        assert_eq!(s["conditions"][0]["reason"], "ImagesFailed");

        let none_failed: Vec<(usize, bool)> = (0..25).map(|i| (i, false)).collect();
        let s = stored(&decide(&current, &batch(25, &none_failed), at(now + 1)));
        assert_eq!(
            (&s["phase"], &s["conditions"][0]["type"]),
            (&json!("Succeeded"), &json!("Complete"))
        );
    }

    fn merged(mut a: Value, b: Value) -> Value {
        merge(&mut a, b);
        a
    }

    #[test]
    fn a_reprocessing_sends_each_upload_back_to_its_own_prefix_with_the_jobs_uid() {
        let id = minilab_core::UploadId::new(chrono::Utc::now());
        let job_ = batch_job(
            json!({"reprocess": true, "source": {"prefix": "uploads/"}, "destination": {"prefix": ""}}),
            Value::Null,
        );
        let observed = Observed::Batch(BatchObservation {
            keys: std::sync::Arc::new(vec![minilab_core::keys::source_key(id)]),
            finished: HashMap::new(),
        });
        let decision = decide(&job_, &observed, at(1));
        let item = &decision.work[0];
        assert_eq!(
            (item.key.as_str(), item.destination_prefix.as_str()),
            (
                minilab_core::keys::source_key(id).as_str(),
                minilab_core::keys::upload_prefix(id).as_str()
            )
        );
        assert_eq!(item.reprocess.as_deref(), Some("u-1"));
        // A plain batch's items are not reprocessings.
        let plain = decide(&batch_job(json!({}), Value::Null), &batch(1, &[]), at(1));
        assert_eq!(plain.work[0].reprocess, None);
    }

    #[test]
    fn a_suspended_batch_enqueues_nothing_and_resumes_where_it_stopped() {
        let job_ = batch_job(json!({"suspend": true}), Value::Null);
        let decision = decide(&job_, &batch(25, &[]), at(1));
        assert!(decision.work.is_empty());
        assert_eq!(stored(&decision)["phase"], "Pending");
        let mut resumed = with(&job_, &decision);
        resumed.spec.suspend = Some(false);
        let decision = decide(&resumed, &batch(25, &[]), at(2));
        assert_eq!(decision.work.len(), 10);
        assert_eq!(decision.work[0].key, "shoot/00.jpg");
        let mut paused = with(&resumed, &decision);
        paused.spec.suspend = Some(true);
        let decision = decide(&paused, &batch(25, &[(0, false)]), at(3));
        assert!(decision.work.is_empty());
        assert_eq!(
            stored(&decision)["phase"],
            "Running",
            "work already queued still finishes"
        );
        assert_eq!(decision.status.enqueued, 10);
    }

    #[test]
    fn unfinished_batch_images_are_retried_up_to_the_backoff_limit() {
        let queued = json!({"phase": "Running", "enqueued": 3, "total": 3, "startTime": at(0).to_string(),
            "lastEnqueueTime": at(0).to_string()});
        let job_ = batch_job(json!({"backoffLimit": 1}), queued);
        let observed = batch(3, &[(1, false)]);
        // Before retryAfter: nothing; the next look is when the retry is due.
        let decision = decide(&job_, &observed, at(300));
        assert!(decision.work.is_empty());
        assert_eq!(decision.requeue, Duration::from_secs(30));
        let decision = decide(&job_, &observed, at(600));
        let keys: Vec<&str> = decision.work.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["shoot/00.jpg", "shoot/02.jpg"]);
        assert_eq!(decision.status.retries, 1);
        assert_eq!(decision.status.last_enqueue_time, Some(Time(at(600))));
        let retried = with(&job_, &decision);
        let s = stored(&decide(&retried, &observed, at(1200)));
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["conditions"][0]["reason"], "BackoffLimitExceeded");
        assert_eq!(s["message"], "2 of 3 images never finished after 1 retries");
    }

    #[test]
    fn a_batch_past_its_deadline_enqueues_nothing_more() {
        let job_ = batch_job(
            json!({"activeDeadlineSeconds": 2}),
            json!({"phase": "Running", "enqueued": 10,
            "startTime": at(0).to_string(), "lastEnqueueTime": at(1).to_string()}),
        );
        let decision = decide(&job_, &batch(25, &[]), at(3));
        assert!(decision.work.is_empty());
        let s = stored(&decision);
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["conditions"][0]["reason"], "DeadlineExceeded");
    }
}
