//! One replica reconciles at a time: the one holding a Lease. The others stand by,
//! ready to take over when it goes; a leader that loses the Lease stops reconciling
//! before another starts.

use crate::controller::{self, Context, Watched};
use futures::Stream;
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use minilab_core::UploadId;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The Lease that elects the one active replica, and this replica's name in it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub name: String,
    pub namespace: String,
    pub identity: String,
}

/// Why leadership could not be sought or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("setting up the Lease {0}: {1}")]
    Setup(String, kube_lease_manager::LeaseManagerError),
    #[error("the Lease watcher stopped")]
    WatcherStopped,
}

/// Seconds a Lease is held without renewal, and the grace before it is taken.
const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;

/// The operator's run: seeks the Lease and reconciles the ImageJobs `api` sees
/// while holding it, each term hearing the words `told` carries from then on, until
/// `shutdown`; then the Lease is released for the next replica.
pub async fn run(
    client: kube::Client,
    lease: &Lease,
    api: Api<Watched>,
    context: Arc<Context>,
    told: &broadcast::Sender<UploadId>,
    shutdown: &CancellationToken,
) -> Result<(), LeaderError> {
    let (is_leader, holder) = elect(client, lease).await?;
    let led = lead_while_elected(is_leader, &lease.identity, shutdown, |stop| {
        controller::run(api.clone(), context.clone(), heard(told), stop)
    })
    .await;
    // The holder, its receiver dropped, releases the Lease.
    let _ = holder.await;
    led
}

/// The words heard from now on; one that falls behind skips ahead (the fallback
/// poll covers what it missed).
fn heard(told: &broadcast::Sender<UploadId>) -> impl Stream<Item = UploadId> + use<> {
    futures::stream::unfold(told.subscribe(), |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(id) => return Some((id, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Seeks the Lease for `lease.identity`: whether this replica leads, as it changes,
/// and the task holding the Lease, which releases it when the receiver is dropped.
pub async fn elect(
    client: kube::Client,
    lease: &Lease,
) -> Result<
    (
        watch::Receiver<bool>,
        JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    ),
    LeaderError,
> {
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await
        .map_err(|e| LeaderError::Setup(format!("{}/{}", lease.namespace, lease.name), e))?;
    Ok(manager.watch().await)
}

/// Runs `lead` while `is_leader` says this replica leads and stands by while it does
/// not, until `shutdown`. Each term of leadership gets its own token, cancelled when
/// the Lease is lost (or at shutdown); the next term starts once `lead` returned.
pub async fn lead_while_elected<F, Fut>(
    mut is_leader: watch::Receiver<bool>,
    identity: &str,
    shutdown: &CancellationToken,
    mut lead: F,
) -> Result<(), LeaderError>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    while !shutdown.is_cancelled() {
        // Wait to lead.
        while !*is_leader.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                changed = is_leader.changed() => {
                    changed.map_err(|_| LeaderError::WatcherStopped)?;
                }
            }
        }
        tracing::info!(%identity, "leading: reconciling ImageJobs");
        println!("minilab operator {identity}: leading");
        // Stop at shutdown or when the Lease is lost, whichever is first.
        let stop = shutdown.child_token();
        let term = lead(stop.clone());
        tokio::pin!(term);
        loop {
            tokio::select! {
                () = &mut term => break,
                changed = is_leader.changed() => {
                    if changed.is_err() || !*is_leader.borrow_and_update() {
                        tracing::warn!("lost the Lease: standing by");
                        stop.cancel();
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Terms started so far and whether the current one runs; `lead` runs until its
    /// token is cancelled.
    #[derive(Default)]
    struct Terms {
        started: usize,
        running: bool,
    }

    async fn until(terms: &Arc<Mutex<Terms>>, what: impl Fn(&Terms) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !what(&terms.lock().unwrap()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the terms never got there");
    }

    #[tokio::test]
    async fn a_replica_reconciles_only_while_it_holds_the_lease() {
        let (leads, is_leader) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let terms = Arc::new(Mutex::new(Terms::default()));
        let seen = terms.clone();
        let loop_stop = shutdown.clone();
        let elected = tokio::spawn(async move {
            lead_while_elected(is_leader, "test", &loop_stop, |stop| {
                let terms = seen.clone();
                async move {
                    {
                        let mut terms = terms.lock().unwrap();
                        terms.started += 1;
                        terms.running = true;
                    }
                    stop.cancelled().await;
                    terms.lock().unwrap().running = false;
                }
            })
            .await
        });

        tokio::task::yield_now().await;
        assert_eq!(terms.lock().unwrap().started, 0, "led without the Lease");
        leads.send(true).unwrap();
        until(&terms, |t| t.running && t.started == 1).await;
        leads.send(false).unwrap();
        until(&terms, |t| !t.running).await;
        leads.send(true).unwrap();
        until(&terms, |t| t.running && t.started == 2).await;

        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), elected).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        assert!(
            !terms.lock().unwrap().running,
            "still leading after shutdown"
        );
    }

    #[tokio::test]
    async fn a_stopped_lease_watcher_is_an_error_not_a_silent_standby() {
        let (leads, is_leader) = watch::channel(false);
        drop(leads);
        let shutdown = CancellationToken::new();
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            lead_while_elected(is_leader, "test", &shutdown, |_| async {}),
        )
        .await
        .expect("the loop did not end");
        assert!(
            matches!(ended, Err(LeaderError::WatcherStopped)),
            "{ended:?}"
        );
    }
}
