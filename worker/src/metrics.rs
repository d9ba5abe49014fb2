//! The worker's Prometheus metrics. Labels are bounded: outcomes and reasons are
//! fixed strings or stable error codes, never keys or messages.

use minilab_service::s3_requests::S3Requests;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// succeeded, failed, retried, skipped
    pub outcome: &'static str,
    /// an error code, or why a message was skipped or retried
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// download, decode, transform, encode, upload
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// webhooks: delivered, retried, failed, dropped, refused;
    /// announcements: sent, failed, dropped, unresolved
    pub result: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    jobs: Family<JobLabels, Counter>,
    webhooks: Family<ResultLabels, Counter>,
    announcements: Family<ResultLabels, Counter>,
    stages: Family<StageLabels, Histogram>,
    pub in_flight: Gauge,
    event_lag: Histogram,
    /// Counts each request of the worker's S3 client.
    pub s3_requests: S3Requests,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let jobs = Family::<JobLabels, Counter>::default();
        let stages = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let in_flight = Gauge::default();
        let event_lag =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]);
        let mut registry = Registry::with_prefix("minilab_worker");
        let s3_requests = S3Requests::default();
        s3_requests.register(&mut registry);
        registry.register(
            "jobs",
            "Messages and uploads handled, by outcome and reason",
            jobs.clone(),
        );
        registry.register(
            "stage_seconds",
            "Time spent in each stage of processing an upload",
            stages.clone(),
        );
        registry.register(
            "images_in_flight",
            "Images being processed now",
            in_flight.clone(),
        );
        registry.register(
            "event_lag_seconds",
            "From the S3 event time to the start of work on the upload",
            event_lag.clone(),
        );
        let webhooks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries and attempts, by result",
            webhooks.clone(),
        );
        let announcements = Family::<ResultLabels, Counter>::default();
        registry.register(
            "announcements",
            "Word of an upload's change sent to an API instance, by result",
            announcements.clone(),
        );
        Self {
            registry,
            jobs,
            webhooks,
            announcements,
            stages,
            in_flight,
            event_lag,
            s3_requests,
        }
    }

    pub fn job(&self, outcome: &'static str, reason: &'static str) {
        self.jobs
            .get_or_create(&JobLabels { outcome, reason })
            .inc();
    }

    /// How many jobs ended with `outcome` and `reason` so far.
    pub fn job_count(&self, outcome: &'static str, reason: &'static str) -> u64 {
        self.jobs
            .get_or_create(&JobLabels { outcome, reason })
            .get()
    }

    pub fn stage(&self, stage: &'static str, ms: f64) {
        self.stages
            .get_or_create(&StageLabels { stage })
            .observe(ms / 1e3);
    }

    pub fn webhook(&self, result: &'static str) {
        self.webhooks.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn announcement(&self, result: &'static str) {
        self.announcements
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn event_lag(&self, lag: Duration) {
        self.event_lag.observe(lag.as_secs_f64());
    }
}
