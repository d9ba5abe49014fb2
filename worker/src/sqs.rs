//! The worker's queue on AWS: SQS with long polling, batches of up to 10,
//! visibility heartbeats and batched deletes whose partial failures are returned.

use crate::queue::{Delivery, Queue, QueueError};
use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use std::time::Duration;

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    /// Long-poll wait, 0–20 s.
    wait: Duration,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>, wait: Duration) -> Self {
        Self {
            client,
            url: url.into(),
            wait: wait.min(Duration::from_secs(20)),
        }
    }
}

fn error<E>(what: &str, err: aws_sdk_sqs::error::SdkError<E>) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    aws_sdk_sqs::error::SdkError<E>: std::error::Error,
{
    let detail = match err.as_service_error() {
        Some(service) => format!(
            "{} ({})",
            service.code().unwrap_or("unknown error"),
            service.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(&err).to_string(),
    };
    QueueError(format!("{what}: {detail}"))
}

#[async_trait]
impl Queue for SqsQueue {
    async fn receive(&self, max: usize) -> Result<Option<Vec<Delivery>>, QueueError> {
        let max = i32::try_from(max.clamp(1, 10)).unwrap_or(10);
        let received = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(i32::try_from(self.wait.as_secs()).unwrap_or(20))
            .send()
            .await
            .map_err(|e| error("receiving", e))?;
        let deliveries = received
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Delivery {
                    body: m.body.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                })
            })
            .collect();
        Ok(Some(deliveries))
    }

    async fn delete(&self, deliveries: &[Delivery]) -> Result<Vec<Delivery>, QueueError> {
        let mut failed = Vec::new();
        for chunk in deliveries.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&d.receipt)
                        .build()
                        .map_err(|e| QueueError(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let result = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(output) => {
                    for entry in output.failed() {
                        tracing::warn!(
                            code = entry.code(),
                            message = entry.message(),
                            "a delete in the batch failed"
                        );
                        if let Some(delivery) =
                            entry.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                        {
                            failed.push(delivery.clone());
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %error("DeleteMessageBatch", err), "deleting failed");
                    failed.extend_from_slice(chunk);
                }
            }
        }
        Ok(failed)
    }

    async fn extend(&self, delivery: &Delivery, by: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(i32::try_from(by.as_secs()).unwrap_or(43_200).min(43_200))
            .send()
            .await
            .map_err(|e| error("extending visibility", e))?;
        Ok(())
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| error("releasing", e))?;
        Ok(())
    }

    async fn check(&self) -> Result<(), QueueError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| error("reaching the queue", e))?;
        Ok(())
    }
}
