//! Word that an upload changed (its processing started or finished), from the
//! worker to the API requests waiting on it, so they answer at once instead of at
//! their next read of S3.
//!
//! The word carries only the upload's id: the waiting request reads the state from
//! S3 as always, so the buckets stay the one source of truth and a lost word costs
//! only latency (the request's slower S3 poll finds the change).

use minilab_core::UploadId;
use tokio::sync::broadcast;

/// Told of each change the worker makes to an upload.
pub trait Announce: Send + Sync {
    fn changed(&self, id: UploadId);
}

/// Changes announced in this process (`minilab up`), or received from workers, for
/// the requests waiting here. Cheap to clone; the announcer never waits.
#[derive(Clone, Debug)]
pub struct Changes {
    sender: broadcast::Sender<UploadId>,
}

/// How many changes may be pending for the slowest waiter before it skips ahead
/// (it then reads S3 once, which is always right).
const BACKLOG: usize = 1024;

impl Default for Changes {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Changes {
    /// Changes from now on. Subscribe before reading the state, so that a change
    /// between the read and the wait is not missed.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
        }
    }
}

impl Announce for Changes {
    fn changed(&self, id: UploadId) {
        // No one waiting is not an error.
        let _ = self.sender.send(id);
    }
}

pub struct Subscription {
    receiver: broadcast::Receiver<UploadId>,
}

impl Subscription {
    /// Returns when `id` may have changed: it was announced, or this subscriber fell
    /// behind and cannot tell. Never returns while nothing is announced.
    pub async fn changed(&mut self, id: UploadId) {
        loop {
            match self.receiver.recv().await {
                Ok(changed) if changed == id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                // Cannot happen while `Changes` holds the sender; wait for the caller's bound.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: i64) -> UploadId {
        UploadId::new(chrono::DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap())
    }

    #[tokio::test]
    async fn a_waiter_wakes_for_its_upload_only() {
        let changes = Changes::default();
        let mut mine = changes.subscribe();
        let (a, b) = (id(1), id(2));
        changes.changed(b);
        let woke = tokio::time::timeout(Duration::from_millis(50), mine.changed(a)).await;
        assert!(woke.is_err(), "another upload's change woke the waiter");
        changes.changed(a);
        tokio::time::timeout(Duration::from_secs(5), mine.changed(a))
            .await
            .expect("its own change wakes the waiter");
    }

    #[tokio::test]
    async fn a_waiter_that_fell_behind_wakes_to_read_again() {
        let changes = Changes::default();
        let mut slow = changes.subscribe();
        for n in 0..(BACKLOG as i64 + 10) {
            changes.changed(id(n + 100));
        }
        tokio::time::timeout(Duration::from_secs(5), slow.changed(id(1)))
            .await
            .expect("a lagged waiter wakes");
    }
}
