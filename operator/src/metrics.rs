//! The operator's Prometheus metrics, with bounded labels (fixed strings only).

use crate::aws_resources::State as AwsState;
use crate::crd::Phase;
use minilab_service::s3_requests::S3Requests;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok, or the kind of error: kube, s3, bad-manifest
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// the phase a job entered
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsResourceLabels {
    /// the ACK kind (from --aws-resources: a bounded set)
    pub kind: String,
    /// synced, pending, recoverable or terminal
    pub state: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    aws_resources: Family<AwsResourceLabels, Gauge>,
    /// Counts each request of the operator's S3 client.
    pub s3_requests: S3Requests,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    transitions: Family<PhaseLabels, Counter>,
    malformed: Counter,
    deleted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ResultLabels, Counter>::default();
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        let transitions = Family::<PhaseLabels, Counter>::default();
        let malformed = Counter::default();
        let deleted = Counter::default();
        let s3_requests = S3Requests::default();
        let aws_resources = Family::<AwsResourceLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("minilab_operator");
        // They follow the unfinished jobs, not all jobs.
        s3_requests.register(&mut registry);
        registry.register("reconciles", "Reconciles, by result", reconciles.clone());
        registry.register(
            "reconcile_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "phase_transitions",
            "ImageJobs entering each phase",
            transitions.clone(),
        );
        registry.register(
            "malformed_jobs",
            "ImageJobs that did not parse (skipped, the watch goes on)",
            malformed.clone(),
        );
        registry.register(
            "ttl_deletions",
            "Finished ImageJobs deleted after ttlSecondsAfterFinished",
            deleted.clone(),
        );
        registry.register(
            "aws_resources",
            "The release's AWS resources made through ACK, by kind and by what their controller reports",
            aws_resources.clone(),
        );
        Self {
            registry,
            aws_resources,
            s3_requests,
            reconciles,
            duration,
            transitions,
            malformed,
            deleted,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, error: Option<&'static str>, seconds: f64) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: error.unwrap_or("ok"),
            })
            .inc();
        self.duration.observe(seconds);
    }

    pub fn transition(&self, phase: Phase) {
        self.transitions
            .get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            })
            .inc();
    }

    pub fn malformed(&self) {
        self.malformed.inc();
    }

    pub fn aws_resources(&self, kind: &str, counts: [(AwsState, i64); 4]) {
        for (state, count) in counts {
            self.aws_resources
                .get_or_create(&AwsResourceLabels {
                    kind: kind.to_owned(),
                    state: state.as_str(),
                })
                .set(count);
        }
    }

    pub fn deleted(&self) {
        self.deleted.inc();
    }
}
