//! Every request a process sends S3, counted by operation, each attempt (S3 bills
//! retries too): `{prefix}_s3_requests_total{operation}` in the process's metrics.
//! An interceptor on the S3 client, so no call can go uncounted.

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The S3 operation: GetObject, PutObject, HeadObject, ListObjectsV2, ...
    pub operation: String,
}

/// The counts; cheap to clone (clones count together).
#[derive(Clone, Debug, Default)]
pub struct S3Requests(Family<OperationLabels, Counter>);

impl S3Requests {
    /// Serves the counts as `s3_requests` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "s3_requests",
            "Requests sent to S3, by operation (each attempt: S3 bills retries too)",
            self.0.clone(),
        );
    }

    /// `config` with every request counted.
    pub fn counting(&self, config: aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder {
        config.interceptor(self.clone())
    }
}

impl Intercept for S3Requests {
    fn name(&self) -> &'static str {
        "minilab-s3-requests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", Metadata::name);
        self.0
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .inc();
        Ok(())
    }
}
