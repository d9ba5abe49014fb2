//! What the API issues for one upload, as the cluster side records it (an ImageJob
//! per upload, written by `minilab api --kube-tracking`).

use crate::UploadId;
use chrono::{DateTime, Utc};

/// One issued upload: where it will land, what makes it, where results go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedUpload {
    pub id: UploadId,
    pub recipe: String,
    pub uploads_bucket: String,
    pub key: String,
    pub processed_bucket: String,
    /// Outputs and the manifest go under this prefix: `{id}/`.
    pub prefix: String,
    pub expires_at: DateTime<Utc>,
}
