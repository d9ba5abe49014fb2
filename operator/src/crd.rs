//! The ImageJob custom resource (`minilab.dev/v1alpha1`, short name `ij`): one upload,
//! or a batch of every image under a prefix, and the progress the operator records.
//! Defined here once; `minilab crd` prints the CRD and the chart carries a copy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label the API puts on the ImageJob of each upload.
pub const ORIGIN_LABEL: &str = "minilab.dev/origin";

/// What to process, with which recipe, and where the results go. `backoffLimit`,
/// `activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished` mean what they
/// mean on a Kubernetes Job.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "minilab.dev",
    version = "v1alpha1",
    kind = "ImageJob",
    namespaced,
    status = "ImageJobStatus",
    derive = "PartialEq",
    shortname = "ij",
    category = "minilab",
    doc = "One uploaded image, or a batch of every image under a prefix, processed by a minilab recipe",
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Progress", "type": "string", "jsonPath": ".status.progress"}"#,
    printcolumn = r#"{"name": "Recipe", "type": "string", "jsonPath": ".spec.recipe"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Source", "type": "string", "jsonPath": ".status.source", "priority": 1}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageJobSpec {
    pub source: ImageSource,
    /// A recipe the workers know (`GET /api/v1/recipes`).
    pub recipe: String,
    pub destination: Destination,
    /// Times the operator re-enqueues an image that never finished (lost to the
    /// queue's dead-letter queue, say) before giving up on it. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: Option<i32>,
    /// Seconds after the start before the job is failed (`DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Stops enqueueing new work (images already queued still finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Seconds after finishing before the operator deletes the job (the images stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Processes finished uploads again under `recipe` (a new version of theirs, or
    /// another): `source` is the uploads bucket with a `prefix` of their keys
    /// (`uploads/` for every upload, `uploads/{id}` for one), `destination` the
    /// processed bucket with no prefix. Each upload keeps its id and status address;
    /// its new outputs are its next revision, at new addresses, and the earlier
    /// ones stay where they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<bool>,
}

/// One object (`key`) or every object under `prefix`, in `bucket`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Set by the API for an upload: the object arrives through a presigned POST
    /// (its S3 event queues it), and the job is Expired if it has not by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_expires_at: Option<Time>,
}

/// Where outputs and manifests go: `{prefix}{output}.{ext}` and `{prefix}manifest.json`
/// for one image; for a batch, under `{prefix}{source key relative to the source prefix}/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub bucket: String,
    /// Empty (or left out) for the bucket's root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Images in the job (1 for an upload; for a batch, known once it is listed).
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub succeeded: i64,
    #[serde(default)]
    pub failed: i64,
    /// Batch images handed to the queue so far, in key order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enqueued: i64,
    /// Times unfinished images were enqueued again (at most `backoffLimit`).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub retries: i32,
    /// When work was last put on the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_enqueue_time: Option<Time>,
    /// "succeeded+failed/total", as `kubectl get` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// `s3://bucket/key`, or `s3://bucket/prefix*` for a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The outputs of a single-image job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<JobOutput>,
    /// What to show before a single-image job's outputs load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<JobPlaceholder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// An upload whose presigned URL is still valid, not yet arrived.
    AwaitingUpload,
    /// Accepted, nothing processed yet (a batch being listed, or suspended).
    Pending,
    /// Images are being processed.
    Running,
    Succeeded,
    Failed,
    /// The upload never arrived before its URL lapsed.
    Expired,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Expired)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::AwaitingUpload => "AwaitingUpload",
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Expired => "Expired",
        }
    }
}

/// As a Job's: `Complete`, `Failed` or `Suspended`, with the generation it describes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    /// Omitted when empty: kube-apiserver (1.20 at least) turns an empty string in a
    /// status merge patch into null and then refuses the patch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub last_transition_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOutput {
    pub name: String,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
}

/// A ThumbHash (base64) and the dominant colour (`#rrggbb`) of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPlaceholder {
    pub thumbhash: String,
    pub dominant_color: String,
}

/// The CRD as YAML, exactly as `minilab crd` prints it and the chart carries it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = ImageJob::crd();
    // serde_yaml cannot fail on a CRD (string keys, no non-finite floats).
    let body = serde_yaml::to_string(&crd).unwrap_or_default();
    format!("# Generated by `minilab crd` from operator/src/crd.rs; do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_names_what_kubectl_shows() {
        use kube::CustomResourceExt;
        let crd = ImageJob::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("imagejobs.minilab.dev"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["ij".to_owned()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["minilab".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
            .collect();
        assert_eq!(
            columns,
            [
                ("Phase", 0),
                ("Progress", 0),
                ("Recipe", 0),
                ("Age", 0),
                ("Source", 1),
                ("Message", 1)
            ]
        );
        let yaml = crd_yaml();
        assert!(yaml.contains("AwaitingUpload") && yaml.contains("ttlSecondsAfterFinished"));
    }
}
