//! The consuming loop: receive while there is room, one image per slot, heartbeats
//! while an image takes long, batched deletes after the manifest is written, and a
//! bounded drain on shutdown that hands unfinished messages back.

use crate::queue::{Delivery, Queue};
use crate::{Disposition, Worker};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Images processed at once.
    pub concurrency: usize,
    /// How long a message stays hidden per heartbeat; heartbeats come at half of it.
    pub visibility: Duration,
    /// How long shutdown waits for images in flight before handing them back.
    pub drain: Duration,
    /// The longest heartbeats keep one message hidden. Past it they stop: an image
    /// stuck in a decode (which no budget check interrupts) lets its message return
    /// to the queue, and after the queue's receive count go to the dead-letter queue,
    /// instead of being hidden for ever.
    pub hold: Duration,
}

impl RunOptions {
    /// [`RunOptions::hold`] for a time budget per image: four budgets (the image may
    /// wait for a slot of the blocking pool first), and never less than one
    /// visibility timeout.
    pub fn hold_for(time_budget: Duration, visibility: Duration) -> Duration {
        (time_budget * 4).max(visibility)
    }
}

/// Runs until `shutdown` is cancelled (or the queue closes), then drains.
pub async fn run(
    worker: Arc<Worker>,
    queue: Arc<dyn Queue>,
    options: RunOptions,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let (done, finished) = mpsc::channel::<Delivery>(1024);
    let deleter = tokio::spawn(delete_loop(queue.clone(), finished));
    let held: Arc<Mutex<HashMap<u64, Delivery>>> = Arc::default();
    let next_token = AtomicU64::new(0);
    let mut tasks = JoinSet::new();

    'receiving: loop {
        while tasks.try_join_next().is_some() {}
        let Some(permits) = free_slots(&slots, &shutdown).await else {
            break;
        };
        let received = tokio::select! {
            _ = shutdown.cancelled() => break 'receiving,
            received = queue.receive(permits.len()) => received,
        };
        let deliveries = match received {
            Ok(Some(deliveries)) => deliveries,
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(error = %err, "receiving failed; trying again in a second");
                tokio::select! {
                    _ = shutdown.cancelled() => break 'receiving,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        for (delivery, permit) in deliveries.into_iter().zip(permits) {
            let token = next_token.fetch_add(1, Ordering::Relaxed);
            lock(&held).insert(token, delivery.clone());
            let (worker, queue, done, held, options) = (
                worker.clone(),
                queue.clone(),
                done.clone(),
                held.clone(),
                options.clone(),
            );
            tasks.spawn(async move {
                let handling = worker.handle_message(&delivery.body);
                let disposition =
                    with_heartbeats(handling, queue.as_ref(), &delivery, &options).await;
                lock(&held).remove(&token);
                if disposition == Disposition::Done {
                    let _ = done.send(delivery).await;
                }
                drop(permit);
            });
        }
    }

    drain(tasks, &held, queue.as_ref(), options.drain).await;
    drop(done);
    if tokio::time::timeout(Duration::from_secs(10), deleter)
        .await
        .is_err()
    {
        tracing::warn!(
            "deleting handled messages did not finish; they will be redelivered and skipped"
        );
    }
}

/// At least one free slot, and up to 10 (one receive's most), waited for; `None`
/// at shutdown.
async fn free_slots(
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        _ = shutdown.cancelled() => return None,
        permit = slots.clone().acquire_owned() => permit.ok()?,
    };
    let mut permits = vec![first];
    while permits.len() < 10 {
        match slots.clone().try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Lets the images in flight finish within `limit`; past it, hands their messages
/// back to the queue for another worker.
async fn drain(
    mut tasks: JoinSet<()>,
    held: &Mutex<HashMap<u64, Delivery>>,
    queue: &dyn Queue,
    limit: Duration,
) {
    tracing::info!(in_flight = tasks.len(), "draining");
    let drained =
        tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_ok() {
        return;
    }
    tasks.abort_all();
    let unfinished: Vec<Delivery> = lock(held).drain().map(|(_, d)| d).collect();
    tracing::warn!(
        count = unfinished.len(),
        "drain timed out; handing unfinished messages back"
    );
    for delivery in unfinished {
        if let Err(err) = queue.release(&delivery).await {
            tracing::warn!(error = %err, "could not hand a message back; it returns after its visibility timeout");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Awaits `handling`, extending the message's visibility every half visibility
/// timeout until [`RunOptions::hold`] has passed.
async fn with_heartbeats(
    handling: impl std::future::Future<Output = Disposition>,
    queue: &dyn Queue,
    delivery: &Delivery,
    options: &RunOptions,
) -> Disposition {
    tokio::pin!(handling);
    let visibility = options.visibility;
    let period = (visibility / 2).max(Duration::from_millis(500));
    let started = tokio::time::Instant::now();
    let mut heartbeat = tokio::time::interval_at(started + period, period);
    let mut holding = true;
    loop {
        tokio::select! {
            disposition = &mut handling => return disposition,
            _ = heartbeat.tick(), if holding => {
                if started.elapsed() + visibility > options.hold {
                    tracing::warn!(body = delivery.body, "held for too long; no more heartbeats: the message returns to the queue");
                    holding = false;
                    continue;
                }
                if let Err(err) = queue.extend(delivery, visibility).await {
                    tracing::warn!(error = %err, "heartbeat failed");
                }
            }
        }
    }
}

/// Deletes handled messages in batches; retries the entries a batch could not delete.
async fn delete_loop(queue: Arc<dyn Queue>, mut finished: mpsc::Receiver<Delivery>) {
    let mut batch = Vec::with_capacity(10);
    while finished.recv_many(&mut batch, 10).await > 0 {
        let mut pending = std::mem::take(&mut batch);
        for attempt in 0..4u32 {
            match queue.delete(&pending).await {
                Ok(failed) if failed.is_empty() => break,
                Ok(failed) => pending = failed,
                Err(err) => tracing::warn!(error = %err, "deleting failed"),
            }
            if attempt == 3 {
                tracing::warn!(
                    count = pending.len(),
                    "giving up deleting; the messages will be redelivered and skipped"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueError;
    use async_trait::async_trait;
    use std::sync::atomic::AtomicUsize;

    /// Counts heartbeats; nothing else is used.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl Queue for Counting {
        async fn receive(&self, _: usize) -> Result<Option<Vec<Delivery>>, QueueError> {
            Ok(None)
        }
        async fn delete(&self, _: &[Delivery]) -> Result<Vec<Delivery>, QueueError> {
            Ok(Vec::new())
        }
        async fn extend(&self, _: &Delivery, _: Duration) -> Result<(), QueueError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn release(&self, _: &Delivery) -> Result<(), QueueError> {
            Ok(())
        }
        async fn check(&self) -> Result<(), QueueError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn heartbeats_stop_once_a_message_is_held_for_too_long() {
        let queue = Counting::default();
        // Heartbeats every 0.5 s while the visibility they give ends within the hold:
        // at 0.5 and 1 s (hidden until 2 s), none from 1.5 s on.
        let options = RunOptions {
            concurrency: 1,
            visibility: Duration::from_secs(1),
            drain: Duration::ZERO,
            hold: Duration::from_millis(2250),
        };
        let delivery = Delivery {
            body: "stuck".into(),
            receipt: String::new(),
        };
        // An image that takes 4 s (as if stuck), where 8 heartbeats would come.
        let stuck = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Disposition::Retry
        };
        assert_eq!(
            with_heartbeats(stuck, &queue, &delivery, &options).await,
            Disposition::Retry
        );
        let beats = queue.0.load(Ordering::SeqCst);
        assert!((1..=3).contains(&beats), "{beats} heartbeats");
    }
}
