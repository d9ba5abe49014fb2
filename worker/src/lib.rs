//! minilab's worker: takes S3 upload events from a queue, runs each upload through
//! its recipe, writes every output and then the manifest to the processed bucket.
//!
//! At-least-once and idempotent: output keys are derived from the upload id, and an
//! upload whose manifest exists is skipped, so a redelivered event changes nothing.
//! One ticket, one processing: before processing an upload the worker claims it for
//! the write its event names (a conditional PUT of `{id}/claim`), so a second POST
//! of the same ticket (which S3 cannot refuse) is skipped as `second-upload`, while
//! another delivery of the same event goes on.
//! Permanent failures (bad images, unknown recipes) end as a `failed` manifest;
//! transient ones (storage errors) leave the message for redelivery. An ImageJob
//! may have finished uploads processed again ([`reprocess`]).

pub mod http;
pub mod metrics;
pub mod peers;
pub mod queue;
pub mod recovery;
mod reprocess;
pub mod runner;
#[cfg(feature = "sqs")]
pub mod sqs;
pub mod webhooks;

use aws_sdk_s3::primitives::ByteStream;
use chrono::Utc;
use metrics::Metrics;
use minilab_core::error::{ErrorCode, ImageError};
use minilab_core::event::{Message, ObjectCreated, WorkItem, parse_message};
use minilab_core::keys::{self, OutputFile};
use minilab_core::manifest::{ErrorRecord, ManifestState, OutputRecord, Source, StageTimings};
use minilab_core::pipeline::{self, Processed};
use minilab_core::recipe::FocalPoint;
use minilab_core::{Limits, Manifest, RecipeBook, UploadId};
use minilab_service::changes::Announce;
use std::sync::Arc;
use std::time::Instant;

/// What a worker is told: where sources and outputs live, the recipes it knows,
/// the limits every image runs under.
pub struct WorkerConfig {
    pub uploads_bucket: String,
    pub processed_bucket: String,
    pub recipes: Arc<RecipeBook>,
    pub limits: Limits,
}

/// What a worker talks to.
pub struct WorkerDeps {
    pub s3: aws_sdk_s3::Client,
    /// Shared with whatever else counts for the worker (the announcer's drops).
    pub metrics: Arc<Metrics>,
    /// Told when an upload starts and finishes, so the API answers at once (in
    /// `minilab up`: the API in the same process); best effort.
    pub announce: Option<Arc<dyn Announce>>,
    /// Sends final statuses to the webhooks uploads name (`None`: webhooks off).
    pub webhooks: Option<Arc<webhooks::Webhooks>>,
}

/// Processes uploads; cheap to share between tasks.
pub struct Worker {
    s3: aws_sdk_s3::Client,
    uploads_bucket: String,
    processed_bucket: String,
    recipes: Arc<RecipeBook>,
    limits: Limits,
    metrics: Arc<Metrics>,
    announce: Option<Arc<dyn Announce>>,
    webhooks: Option<Arc<webhooks::Webhooks>>,
}

/// How one created object ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed(ErrorCode),
    /// Nothing to do, and why.
    Skipped(SkipReason),
}

/// Why a message or object was left alone; the `reason` label of
/// `minilab_worker_jobs_total{outcome="skipped"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// S3's `s3:TestEvent` when a notification is set up.
    TestEvent,
    /// A message that is neither an S3 event nor a work item.
    NotAnEvent,
    /// A work item for another bucket or without a prefix.
    ForeignDestination,
    /// An object minilab did not issue a ticket for.
    ForeignObject,
    /// The manifest exists: a redelivered event.
    Duplicate,
    /// Another write of the same ticket claimed the upload.
    SecondUpload,
    /// The source was deleted before it was read.
    SourceGone,
    /// An upload to reprocess has not finished its first processing.
    NotFinished,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TestEvent => "test-event",
            Self::NotAnEvent => "not-an-event",
            Self::ForeignDestination => "foreign-destination",
            Self::ForeignObject => "foreign-object",
            Self::Duplicate => "duplicate",
            Self::SecondUpload => "second-upload",
            Self::SourceGone => "source-gone",
            Self::NotFinished => "not-finished",
        }
    }
}

/// Whose an upload's claim (`{id}/claim`) is, for one delivery of its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// This delivery's PUT made it.
    Made,
    /// An earlier delivery of the same write made it.
    Ours,
    /// Another write of the same ticket made it.
    Other,
    /// Not claimed: batch items, and uploads re-enqueued without their event.
    Unclaimed,
}

/// What to do with a message once handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Handled for good (including permanent failures and messages to ignore): delete it.
    Done,
    /// A transient failure: leave it, so the queue delivers it again.
    Retry,
}

/// A failure that may pass: storage unreachable, throttled, 5xx.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(String);

fn transient<E>(what: &str, err: aws_sdk_s3::error::SdkError<E>) -> Transient
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    aws_sdk_s3::error::SdkError<E>: std::error::Error,
{
    Transient(format!("{what}: {}", describe(&err)))
}

pub use minilab_service::objects::describe;

/// Whether S3 refused a conditional write because its condition no longer held
/// (412: the object exists, or has another ETag).
fn precondition_failed<E>(err: &aws_sdk_s3::error::SdkError<E>) -> bool {
    err.raw_response()
        .is_some_and(|r| r.status().as_u16() == 412)
}

impl Worker {
    pub fn new(config: WorkerConfig, deps: WorkerDeps) -> Self {
        Self {
            s3: deps.s3,
            uploads_bucket: config.uploads_bucket,
            processed_bucket: config.processed_bucket,
            recipes: config.recipes,
            limits: config.limits,
            metrics: deps.metrics,
            announce: deps.announce,
            webhooks: deps.webhooks,
        }
    }

    /// The most one image may take; a message's visibility is held that long.
    pub fn time_budget(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.limits.time_budget_ms)
    }

    /// Handles one queue message body.
    pub async fn handle_message(&self, body: &str) -> Disposition {
        let objects = match parse_message(body) {
            Ok(Message::Test) => {
                self.metrics.job("skipped", SkipReason::TestEvent.as_str());
                return Disposition::Done;
            }
            Ok(Message::Created(objects)) => objects,
            Ok(Message::Work(item)) => {
                return match self.handle_work_item(&item).await {
                    Ok(outcome) => {
                        self.count(outcome);
                        Disposition::Done
                    }
                    Err(err) => {
                        tracing::warn!(job = item.job, key = item.key, error = %err, "will retry");
                        self.metrics.job("retried", "transient");
                        Disposition::Retry
                    }
                };
            }
            Err(err) => {
                tracing::warn!(error = %err, "dropping a message that is not an S3 event");
                self.metrics.job("skipped", SkipReason::NotAnEvent.as_str());
                return Disposition::Done;
            }
        };
        let mut disposition = Disposition::Done;
        for object in objects {
            match self.handle_object(&object).await {
                Ok(outcome) => self.count(outcome),
                Err(err) => {
                    tracing::warn!(key = object.key, error = %err, "will retry");
                    self.metrics.job("retried", "transient");
                    disposition = Disposition::Retry;
                }
            }
        }
        disposition
    }

    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => self.metrics.job("succeeded", "none"),
            Outcome::Failed(code) => self.metrics.job("failed", code.as_str()),
            Outcome::Skipped(why) => self.metrics.job("skipped", why.as_str()),
        }
    }

    /// Processes one image of a batch job, unless it is finished already. Outputs go
    /// only to this worker's processed bucket.
    pub async fn handle_work_item(&self, item: &WorkItem) -> Result<Outcome, Transient> {
        if let Some(job) = &item.reprocess {
            return self.reprocess(item, job).await;
        }
        if item.destination_bucket != self.processed_bucket
            || item.destination_prefix.is_empty()
            || !item.destination_prefix.ends_with('/')
        {
            tracing::warn!(
                job = item.job,
                bucket = item.destination_bucket,
                prefix = item.destination_prefix,
                "ignoring a work item for another bucket or without a prefix"
            );
            return Ok(Outcome::Skipped(SkipReason::ForeignDestination));
        }
        let task = Task {
            id: None,
            bucket: item.bucket.clone(),
            key: item.key.clone(),
            recipe: Some(item.recipe.clone()),
            prefix: item.destination_prefix.clone(),
            revision: 0,
        };
        self.run(&task, None, None).await
    }

    /// Processes one created object, unless it is finished already.
    pub async fn handle_object(&self, object: &ObjectCreated) -> Result<Outcome, Transient> {
        let Some(id) =
            keys::parse_source_key(&object.key).filter(|_| object.bucket == self.uploads_bucket)
        else {
            tracing::warn!(
                bucket = object.bucket,
                key = object.key,
                "ignoring an object minilab did not issue"
            );
            return Ok(Outcome::Skipped(SkipReason::ForeignObject));
        };
        let task = Task {
            id: Some(id),
            bucket: self.uploads_bucket.clone(),
            key: keys::source_key(id),
            recipe: None,
            prefix: keys::upload_prefix(id),
            revision: 0,
        };
        self.run(&task, object.event_time, object.write.as_deref())
            .await
    }

    /// Processes `task` unless another `write` of its source claimed it or its
    /// manifest exists (a duplicate delivery); `event_time` is when S3 saw the
    /// upload, for the lag metric. A claim made now needs no look for the manifest:
    /// nothing was done for this upload before (a DELETE keeps the claim).
    async fn run(
        &self,
        task: &Task,
        event_time: Option<chrono::DateTime<Utc>>,
        write: Option<&str>,
    ) -> Result<Outcome, Transient> {
        let claim = match write {
            Some(write) => self.claim(task, write).await?,
            None => Claim::Unclaimed,
        };
        if claim == Claim::Other {
            tracing::info!(
                key = task.key,
                "another upload with this ticket is processed; skipping"
            );
            return Ok(Outcome::Skipped(SkipReason::SecondUpload));
        }
        if claim != Claim::Made && self.manifest_exists(task).await? {
            tracing::debug!(key = task.key, "already finished; duplicate delivery");
            return Ok(Outcome::Skipped(SkipReason::Duplicate));
        }
        if let Some(lag) = event_time.and_then(|t| (Utc::now() - t).to_std().ok()) {
            self.metrics.event_lag(lag);
        }
        self.metrics.in_flight.inc();
        self.announce(task);
        let result = self.process(task).await;
        self.metrics.in_flight.dec();
        if matches!(result, Ok(Outcome::Succeeded | Outcome::Failed(_))) {
            self.announce(task);
        }
        result
    }

    fn announce(&self, task: &Task) {
        if let (Some(announce), Some(id)) = (&self.announce, task.id) {
            announce.changed(id);
        }
    }

    /// One image, in named steps: make it (fetch, transform, store the outputs), write
    /// its manifest, then report it.
    async fn process(&self, task: &Task) -> Result<Outcome, Transient> {
        let started = Instant::now();
        let Some(made) = self.make(task).await? else {
            return Ok(Outcome::Skipped(SkipReason::SourceGone));
        };
        // Unconditional: it cannot be refused.
        self.write_manifest(task, &made.manifest, None).await?;
        Ok(self.report(task, made.webhook.as_deref(), &made.manifest, started))
    }

    /// Fetches the source, transforms it and stores the outputs: the manifest that
    /// records it (the pure [`manifest`]), not written yet. `None` when the source is
    /// gone.
    async fn make(&self, task: &Task) -> Result<Option<Finished>, Transient> {
        let started = Instant::now();
        let Some(mut source) = self.download(task).await? else {
            tracing::warn!(key = task.key, "the source is gone; nothing to process");
            return Ok(None);
        };
        let mut timings = StageTimings {
            download_ms: ms(started),
            ..StageTimings::default()
        };
        let recipe = task
            .recipe
            .clone()
            .or_else(|| source.recipe.clone())
            .unwrap_or_default();
        let bytes = source.bytes.take();
        let result = match self
            .transform(&task.key, &recipe, source.focus, source.size, bytes)
            .await
        {
            Ok(processed) => {
                let stored = Instant::now();
                let outputs = self.store_outputs(task, processed.outputs).await?;
                timings.upload_ms = ms(stored);
                Ok(Made {
                    info: processed.source,
                    outputs,
                    placeholder: processed.placeholder,
                    timings: processed.timings,
                })
            }
            Err(err) => {
                tracing::info!(key = task.key, code = %err.code, message = err.message, "image failed");
                Err(err)
            }
        };
        Ok(Some(Finished {
            manifest: manifest(task, recipe, source_record(task, &source), timings, result),
            webhook: source.webhook,
        }))
    }

    /// The pipeline on the source under its recipe (its `gravity: focus` at the
    /// uploader's focal point), off the async runtime (it is CPU-bound); an unknown
    /// recipe or an oversized file fails the image.
    async fn transform(
        &self,
        key: &str,
        recipe_name: &str,
        focus: Option<FocalPoint>,
        size: u64,
        bytes: Option<Vec<u8>>,
    ) -> Result<Processed, ImageError> {
        let Some(recipe) = self.recipes.get(recipe_name).map(|r| r.focused_on(focus)) else {
            return Err(ImageError::new(
                ErrorCode::UnknownRecipe,
                format!("this deployment has no recipe named {recipe_name:?}"),
            ));
        };
        let Some(bytes) = bytes else {
            return Err(ImageError::new(
                ErrorCode::FileTooLarge,
                format!(
                    "the file has {size} bytes; the limit is {}",
                    self.limits.max_bytes
                ),
            ));
        };
        let limits = self.limits;
        tokio::task::spawn_blocking(move || pipeline::process(&bytes, &recipe, &limits))
            .await
            .unwrap_or_else(|join| {
                // The pipeline catches its own panics; this is the task lost.
                tracing::error!(key, error = %join, "the pipeline task failed");
                Err(ImageError::new(
                    ErrorCode::Internal,
                    "the image could not be processed",
                ))
            })
    }

    /// Each output under the task's prefix, immutable (its key never holds other
    /// bytes); their records for the manifest.
    async fn store_outputs(
        &self,
        task: &Task,
        outputs: Vec<pipeline::EncodedOutput>,
    ) -> Result<Vec<OutputRecord>, Transient> {
        let mut records = Vec::with_capacity(outputs.len());
        for output in outputs {
            let key = OutputFile {
                name: &output.name,
                revision: task.revision,
                width: None,
                format: output.format,
            }
            .key_in(&task.prefix);
            records.push(OutputRecord {
                name: output.name,
                key: key.clone(),
                width: output.width,
                height: output.height,
                bytes: output.bytes.len() as u64,
                content_type: output.format.content_type().to_owned(),
                frames: (output.frames > 1).then_some(output.frames),
            });
            self.s3
                .put_object()
                .bucket(&self.processed_bucket)
                .key(&key)
                .content_type(output.format.content_type())
                .cache_control("public, max-age=31536000, immutable")
                .body(ByteStream::from(output.bytes))
                .send()
                .await
                .map_err(|e| transient("writing an output", e))?;
        }
        Ok(records)
    }

    /// The webhook asked for sent, the image logged and timed: what `manifest` (as
    /// made, written already) says happened.
    fn report(
        &self,
        task: &Task,
        webhook: Option<&str>,
        manifest: &Manifest,
        started: Instant,
    ) -> Outcome {
        if let (Some(webhooks), Some(url), Some(_)) = (&self.webhooks, webhook, task.id) {
            webhooks.send(url, manifest, &self.metrics);
        }
        tracing::info!(key = task.key, state = ?manifest.state, revision = task.revision, ms = ms(started), "image finished");
        let t = &manifest.timings;
        for (stage, ms) in [
            ("download", t.download_ms),
            ("decode", t.decode_ms),
            ("transform", t.transform_ms),
            ("encode", t.encode_ms),
            ("upload", t.upload_ms),
        ] {
            self.metrics.stage(stage, ms);
        }
        match &manifest.error {
            None => Outcome::Succeeded,
            Some(error) => Outcome::Failed(error.code),
        }
    }

    /// Claims the task for `write` of its source with a conditional PUT of its claim
    /// (`If-None-Match: *`): made now, held by an earlier delivery of the same event,
    /// or held by another write.
    async fn claim(&self, task: &Task, write: &str) -> Result<Claim, Transient> {
        let key = keys::claim_key_in(&task.prefix);
        let put = self
            .s3
            .put_object()
            .bucket(&self.processed_bucket)
            .key(&key)
            .if_none_match("*")
            .content_type("text/plain")
            .body(ByteStream::from(write.as_bytes().to_vec()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Made),
            Err(err) if precondition_failed(&err) => {
                let held = self
                    .s3
                    .get_object()
                    .bucket(&self.processed_bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| transient("reading the claim", e))?;
                let held = held
                    .body
                    .collect()
                    .await
                    .map_err(|e| Transient(format!("reading the claim: {e}")))?;
                Ok(if held.into_bytes() == write.as_bytes() {
                    Claim::Ours
                } else {
                    Claim::Other
                })
            }
            Err(err) => Err(transient("claiming the upload", err)),
        }
    }

    async fn manifest_exists(&self, task: &Task) -> Result<bool, Transient> {
        minilab_service::objects::exists(&self.s3, &self.processed_bucket, &task.manifest_key())
            .await
            .map_err(|e| Transient(format!("checking the manifest: {e}")))
    }

    /// Fetches the source; `bytes` is `None` when it is larger than the limit (it is
    /// then not read at all). `None` when the object no longer exists.
    async fn download(&self, task: &Task) -> Result<Option<Download>, Transient> {
        let got = self
            .s3
            .get_object()
            .bucket(&task.bucket)
            .key(&task.key)
            .send()
            .await;
        let object = match got {
            Ok(object) => object,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(err) => return Err(transient("reading the source", err)),
        };
        let metadata = object.metadata().cloned().unwrap_or_default();
        let size = u64::try_from(object.content_length().unwrap_or(0)).unwrap_or(0);
        let bytes = if size > self.limits.max_bytes {
            None
        } else {
            let data = object
                .body
                .collect()
                .await
                .map_err(|e| Transient(format!("reading the source: {e}")))?;
            Some(data.into_bytes().to_vec())
        };
        Ok(Some(Download {
            size: bytes.as_ref().map_or(size, |b| b.len() as u64),
            bytes,
            recipe: metadata.get(minilab_core::RECIPE_METADATA).cloned(),
            filename: metadata
                .get(minilab_core::FILENAME_METADATA)
                .and_then(|f| minilab_core::safe_file_stem(f)),
            webhook: metadata
                .get(minilab_core::webhook::WEBHOOK_METADATA)
                .cloned(),
            delete_key: metadata
                .get(minilab_core::deletion::DELETE_KEY_METADATA)
                .cloned(),
            focus: metadata
                .get(minilab_core::FOCUS_METADATA)
                .and_then(|f| FocalPoint::from_metadata(f)),
        }))
    }

    /// Writes the task's manifest; with `if_match`, only over the manifest of that
    /// ETag (a conditional PUT): `false` when another one has replaced it since.
    async fn write_manifest(
        &self,
        task: &Task,
        manifest: &Manifest,
        if_match: Option<&str>,
    ) -> Result<bool, Transient> {
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| Transient(e.to_string()))?;
        let put = self
            .s3
            .put_object()
            .bucket(&self.processed_bucket)
            .key(task.manifest_key())
            .set_if_match(if_match.map(str::to_owned))
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(err) if precondition_failed(&err) => Ok(false),
            Err(err) => Err(transient("writing the manifest", err)),
        }
    }
}

/// One image to process: an upload (`{id}/` in the processed bucket, the recipe from
/// the object's metadata) or a batch job's work item (prefix and recipe given).
struct Task {
    id: Option<UploadId>,
    bucket: String,
    key: String,
    recipe: Option<String>,
    prefix: String,
    /// Which processing of the image this is ([`Manifest::revision`]).
    revision: u32,
}

impl Task {
    fn manifest_key(&self) -> String {
        keys::manifest_key_in(&self.prefix)
    }
}

struct Download {
    size: u64,
    bytes: Option<Vec<u8>>,
    recipe: Option<String>,
    filename: Option<String>,
    /// Where the uploader asked the final status to be sent.
    webhook: Option<String>,
    /// The SHA-256 of the upload's delete token.
    delete_key: Option<String>,
    /// Where the uploader says the subject is.
    focus: Option<FocalPoint>,
}

/// An image processed, its outputs stored: the manifest to write, and where the
/// uploader asked its final status to be sent.
struct Finished {
    manifest: Manifest,
    webhook: Option<String>,
}

/// What the pipeline made of an image, its outputs stored.
struct Made {
    info: pipeline::SourceInfo,
    outputs: Vec<OutputRecord>,
    placeholder: minilab_core::manifest::Placeholder,
    timings: pipeline::Timings,
}

/// The source as the manifest records it, before the pipeline read it.
fn source_record(task: &Task, source: &Download) -> Source {
    Source {
        bucket: task.bucket.clone(),
        key: task.key.clone(),
        bytes: source.size,
        filename: source.filename.clone(),
        format: None,
        width: None,
        height: None,
        frames: None,
        delete_key: source.delete_key.clone(),
    }
}

/// The manifest of one image: what was read, and what came out or why nothing did.
fn manifest(
    task: &Task,
    recipe: String,
    mut source: Source,
    mut timings: StageTimings,
    result: Result<Made, ImageError>,
) -> Manifest {
    let (state, outputs, placeholder, error) = match result {
        Ok(made) => {
            source.format = Some(made.info.format.to_owned());
            source.width = Some(made.info.width);
            source.height = Some(made.info.height);
            source.frames = (made.info.frames > 1).then_some(made.info.frames);
            timings.decode_ms = made.timings.decode.as_secs_f64() * 1e3;
            timings.transform_ms = made.timings.transform.as_secs_f64() * 1e3;
            timings.encode_ms = made.timings.encode.as_secs_f64() * 1e3;
            (
                ManifestState::Succeeded,
                made.outputs,
                Some(made.placeholder),
                None,
            )
        }
        Err(err) => (
            ManifestState::Failed,
            Vec::new(),
            None,
            Some(ErrorRecord::from(&err)),
        ),
    };
    Manifest {
        version: Manifest::VERSION,
        id: task.id,
        state,
        recipe,
        source,
        outputs,
        placeholder,
        error,
        timings,
        finished_at: Utc::now(),
        revision: task.revision,
        reprocessed: None,
        earlier: Vec::new(),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use minilab_core::manifest::Placeholder;
    use std::time::Duration;

    fn task() -> Task {
        Task {
            id: None,
            bucket: "up".into(),
            key: "uploads/x/a.jpg".into(),
            recipe: None,
            prefix: "x/".into(),
            revision: 0,
        }
    }

    fn source() -> Source {
        let download = Download {
            size: 1234,
            bytes: None,
            recipe: None,
            filename: Some("a.jpg".into()),
            webhook: None,
            delete_key: Some("0123abcd".into()),
            focus: None,
        };
        source_record(&task(), &download)
    }

    fn fetched() -> StageTimings {
        StageTimings {
            download_ms: 5.0,
            upload_ms: 7.0,
            ..StageTimings::default()
        }
    }

    #[test]
    fn a_made_image_records_what_was_read_and_its_outputs() {
        let made = Made {
            info: pipeline::SourceInfo {
                format: "jpeg",
                width: 4000,
                height: 3000,
                frames: 1,
            },
            outputs: vec![OutputRecord {
                name: "large".into(),
                key: "x/large.jpg".into(),
                width: 1024,
                height: 768,
                bytes: 120_000,
                content_type: "image/jpeg".into(),
                frames: None,
            }],
            placeholder: Placeholder {
                thumbhash: "hash".into(),
                dominant_color: "#808080".into(),
            },
            timings: pipeline::Timings {
                decode: Duration::from_millis(10),
                transform: Duration::from_millis(3),
                encode: Duration::from_millis(20),
            },
        };
        let m = manifest(&task(), "web".into(), source(), fetched(), Ok(made));
        assert_eq!(m.state, ManifestState::Succeeded);
        assert_eq!(
            (m.source.format.as_deref(), m.source.width, m.source.height),
            (Some("jpeg"), Some(4000), Some(3000))
        );
        assert_eq!(
            (m.source.bytes, m.source.filename.as_deref()),
            (1234, Some("a.jpg"))
        );
        assert_eq!(m.source.delete_key.as_deref(), Some("0123abcd"));
        assert_eq!(m.outputs.len(), 1);
        assert!(m.placeholder.is_some() && m.error.is_none());
        let t = &m.timings;
        assert_eq!(
            (
                t.download_ms,
                t.decode_ms,
                t.transform_ms,
                t.encode_ms,
                t.upload_ms
            ),
            (5.0, 10.0, 3.0, 20.0, 7.0)
        );
        assert_eq!((m.recipe.as_str(), m.version), ("web", Manifest::VERSION));
    }

    #[test]
    fn a_failed_image_records_its_error_and_nothing_made() {
        let error = ImageError::new(ErrorCode::UnknownRecipe, "no such recipe");
        let m = manifest(&task(), "nope".into(), source(), fetched(), Err(error));
        assert_eq!(m.state, ManifestState::Failed);
        assert_eq!(m.error.map(|e| e.code), Some(ErrorCode::UnknownRecipe));
        assert!(m.outputs.is_empty() && m.placeholder.is_none());
        assert_eq!((m.source.format, m.source.width), (None, None));
        assert_eq!(m.timings.download_ms, 5.0);
    }
}
