//! What the operator reads from S3: manifests and whether an upload has arrived. The
//! buckets are the source of truth; ImageJob status is derived from them.

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use minilab_core::manifest::Manifest;

/// What went wrong reading S3 (shared with the API and the worker).
pub use minilab_service::objects::ObjectError as ObserveError;

/// The storage the operator observes (S3 in production, LocalStack in tests).
#[async_trait]
pub trait Observer: Send + Sync {
    /// The manifest at `key`, or `None` when there is none yet.
    async fn manifest(&self, bucket: &str, key: &str) -> Result<Option<Manifest>, ObserveError>;
    /// Whether an object exists at `key`.
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, ObserveError>;
    /// The keys under `prefix`, in S3's order (sorted), after `start_after` when
    /// given, at most `limit` of them (an error past it).
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, ObserveError>;
}

/// Where the operator puts batch work: the workers' queue.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    async fn send(&self, items: &[minilab_core::event::WorkItem]) -> Result<(), QueueError>;
}

/// Why batch work did not reach the queue (the reconcile is retried).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SendMessageBatch: {0}")]
    Send(String),
    #[error("SendMessageBatch refused an entry: {0}")]
    Refused(String),
    #[error("no work queue configured")]
    NotConfigured,
}

pub struct SqsWorkQueue {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

#[async_trait]
impl WorkQueue for SqsWorkQueue {
    async fn send(&self, items: &[minilab_core::event::WorkItem]) -> Result<(), QueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        for chunk in items.chunks(10) {
            let mut request = self.sqs.send_message_batch().queue_url(&self.queue_url);
            for (i, item) in chunk.iter().enumerate() {
                request = request.entries(
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(item.body())
                        .build()
                        .map_err(|e| QueueError::Send(e.to_string()))?,
                );
            }
            let sent = request.send().await.map_err(|e| {
                QueueError::Send(format!(
                    "{}: {}",
                    e.code().unwrap_or("unknown"),
                    e.message().unwrap_or("")
                ))
            })?;
            // A partial failure fails the whole send: the caller sends again, and the
            // workers skip images that are finished already.
            if let Some(failed) = sent.failed().first() {
                return Err(QueueError::Refused(
                    failed.message().unwrap_or(failed.code()).to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// Observes through `s3`, a client that counts each request in the operator's
/// metrics (`minilab_operator_s3_requests_total`).
pub struct S3Observer {
    pub s3: aws_sdk_s3::Client,
}

#[async_trait]
impl Observer for S3Observer {
    async fn manifest(&self, bucket: &str, key: &str) -> Result<Option<Manifest>, ObserveError> {
        minilab_service::objects::read_manifest(&self.s3, bucket, key).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, ObserveError> {
        let failed = |message: String| ObserveError::S3 {
            operation: "ListObjectsV2",
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
            message,
        };
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed(e.code().unwrap_or("unknown").to_owned()))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            if keys.len() > limit {
                return Err(failed(format!("more than {limit} objects")));
            }
        }
        Ok(keys)
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, ObserveError> {
        minilab_service::objects::exists(&self.s3, bucket, key).await
    }
}
