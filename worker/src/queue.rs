//! Where upload events come from. One small trait, so the worker is the same code
//! on SQS and in `minilab up`'s in-process queue.

use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

/// One message, with what the queue needs to delete or extend it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: String,
    /// SQS's receipt handle; empty for the in-process queue.
    pub receipt: String,
}

#[derive(Debug, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait Queue: Send + Sync {
    /// Waits a bounded time for up to `max` messages. `Ok(None)` means the queue is
    /// closed for good; `Ok(Some(empty))` that nothing arrived in time.
    async fn receive(&self, max: usize) -> Result<Option<Vec<Delivery>>, QueueError>;

    /// Removes handled messages; returns those it could not remove, to retry.
    async fn delete(&self, deliveries: &[Delivery]) -> Result<Vec<Delivery>, QueueError>;

    /// Keeps a message hidden from other consumers for `by` from now (a heartbeat
    /// while an image takes long).
    async fn extend(&self, delivery: &Delivery, by: Duration) -> Result<(), QueueError>;

    /// Hands a message back at once, for another consumer.
    async fn release(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Whether the queue can be reached.
    async fn check(&self) -> Result<(), QueueError>;
}

/// `minilab up`'s queue: a bounded channel in the same process. Nothing survives a
/// restart; `minilab up` re-enqueues unfinished uploads when it starts instead.
pub struct LocalQueue {
    sender: LocalSender,
    receiver: Mutex<mpsc::Receiver<String>>,
}

/// The sending side, held by the embedded store.
pub type LocalSender = mpsc::Sender<String>;

impl LocalQueue {
    pub fn new(capacity: usize) -> (LocalSender, Self) {
        let (sender, receiver) = mpsc::channel(capacity);
        let queue = Self {
            sender: sender.clone(),
            receiver: Mutex::new(receiver),
        };
        (sender, queue)
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn receive(&self, max: usize) -> Result<Option<Vec<Delivery>>, QueueError> {
        let mut receiver = self.receiver.lock().await;
        let mut bodies = Vec::new();
        match receiver.recv_many(&mut bodies, max.max(1)).await {
            0 => Ok(None),
            _ => Ok(Some(
                bodies
                    .into_iter()
                    .map(|body| Delivery {
                        body,
                        receipt: String::new(),
                    })
                    .collect(),
            )),
        }
    }

    async fn delete(&self, _deliveries: &[Delivery]) -> Result<Vec<Delivery>, QueueError> {
        Ok(Vec::new())
    }

    async fn extend(&self, _delivery: &Delivery, _by: Duration) -> Result<(), QueueError> {
        Ok(())
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.sender
            .send(delivery.body.clone())
            .await
            .map_err(|_| QueueError("the in-process queue is closed".into()))
    }

    async fn check(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
