//! Where upload events come from. One small trait, so the worker is the same code
//! on SQS and in `minilab up`'s in-process queue.

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

/// One message, with what the queue needs to delete it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: String,
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

    /// Removes a message that was handled for good.
    async fn delete(&self, delivery: &Delivery) -> Result<(), QueueError>;
}

/// `minilab up`'s queue: a bounded channel in the same process. Nothing survives a
/// restart; `minilab up` re-enqueues unfinished uploads when it starts instead.
pub struct LocalQueue {
    receiver: Mutex<mpsc::Receiver<String>>,
}

/// The sending side, held by the embedded store.
pub type LocalSender = mpsc::Sender<String>;

impl LocalQueue {
    pub fn new(capacity: usize) -> (LocalSender, Self) {
        let (sender, receiver) = mpsc::channel(capacity);
        (
            sender,
            Self {
                receiver: Mutex::new(receiver),
            },
        )
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

    async fn delete(&self, _delivery: &Delivery) -> Result<(), QueueError> {
        Ok(())
    }
}
