//! The AWS resources the chart makes through ACK (buckets, queues, roles, the
//! distribution, ...), as their controllers report them in each object's
//! conditions: how many of each kind are synced, pending, retrying an error
//! (`ACK.Recoverable`) or stopped on one (`ACK.Terminal`, which ACK never retries: a
//! person must act). A gauge per kind and state, kept current by a watch, lets an
//! alert name the kind; Prometheus sees nothing of AWS otherwise.

use crate::metrics::Metrics;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What ACK's conditions say of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// `ACK.ResourceSynced` True: AWS matches the spec.
    Synced,
    /// Not synced yet, and no error reported (being created or updated).
    Pending,
    /// `ACK.Recoverable` True: an error the controller retries.
    Recoverable,
    /// `ACK.Terminal` True: an error the controller does not retry.
    Terminal,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Synced,
        State::Pending,
        State::Recoverable,
        State::Terminal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Synced => "synced",
            State::Pending => "pending",
            State::Recoverable => "recoverable",
            State::Terminal => "terminal",
        }
    }
}

/// The state of an object from its `status` (ACK's conditions): Terminal first (a
/// person must act), then Recoverable, then whether it is synced.
pub fn state(status: Option<&Value>) -> State {
    let conditions = status
        .and_then(|status| status.get("conditions"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    };
    if holds("ACK.Terminal") {
        State::Terminal
    } else if holds("ACK.Recoverable") {
        State::Recoverable
    } else if holds("ACK.ResourceSynced") {
        State::Synced
    } else {
        State::Pending
    }
}

/// How many objects are in each state (every state, zeros included).
pub fn counts<'a>(statuses: impl IntoIterator<Item = Option<&'a Value>>) -> [(State, i64); 4] {
    let mut counts = State::ALL.map(|state| (state, 0));
    for status in statuses {
        let found = state(status);
        if let Some((_, count)) = counts.iter_mut().find(|(state, _)| *state == found) {
            *count += 1;
        }
    }
    counts
}

/// A kind that is not written `group/version/Kind`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a kind as group/version/Kind (e.g. sqs.services.k8s.aws/v1alpha1/Queue)")]
pub struct BadKind(String);

/// A kind written `group/version/Kind`, e.g. `sqs.services.k8s.aws/v1alpha1/Queue`.
pub fn parse_kind(text: &str) -> Result<ApiResource, BadKind> {
    match text.split('/').collect::<Vec<_>>()[..] {
        [group, version, kind]
            if [group, version, kind].iter().all(|part| !part.is_empty())
                && kind.starts_with(|c: char| c.is_ascii_uppercase()) =>
        {
            Ok(ApiResource::from_gvk(&GroupVersionKind::gvk(
                group, version, kind,
            )))
        }
        _ => Err(BadKind(text.to_owned())),
    }
}

/// Keeps the gauge of each of `kinds` current for the objects in `namespace` that
/// match `selector`, until `stop`. A kind the cluster does not serve, or may not be
/// listed, is logged and retried with the watcher's backoff.
pub async fn watch(
    client: kube::Client,
    namespace: String,
    selector: String,
    kinds: Vec<ApiResource>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let watches = kinds.into_iter().map(|kind| {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &kind);
        let writer = reflector::store::Writer::<DynamicObject>::new(kind.clone());
        let store = writer.as_reader();
        let config = watcher::Config::default().labels(&selector);
        let metrics = metrics.clone();
        reflector(writer, watcher(api, config))
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(_) => {
                        let objects = store.state();
                        let counts = counts(objects.iter().map(|o| o.data.get("status")));
                        metrics.aws_resources(&kind.kind, counts);
                    }
                    Err(e) => {
                        tracing::warn!(kind = %kind.kind, error = %e, "watching AWS resources")
                    }
                }
                async {}
            })
    });
    tokio::select! {
        _ = futures::future::join_all(watches) => {}
        () = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(conditions: &[(&str, &str)]) -> Value {
        json!({"conditions": conditions.iter()
            .map(|(t, s)| json!({"type": t, "status": s}))
            .collect::<Vec<_>>()})
    }

    #[test]
    fn terminal_wins_then_recoverable_then_synced() {
        let cases = [
            (None, State::Pending),
            (Some(json!({})), State::Pending),
            (
                Some(status(&[("ACK.ResourceSynced", "False")])),
                State::Pending,
            ),
            (
                Some(status(&[("ACK.ResourceSynced", "True")])),
                State::Synced,
            ),
            (
                Some(status(&[
                    ("ACK.ResourceSynced", "False"),
                    ("ACK.Recoverable", "True"),
                ])),
                State::Recoverable,
            ),
            (
                Some(status(&[
                    ("ACK.ResourceSynced", "True"),
                    ("ACK.Terminal", "True"),
                ])),
                State::Terminal,
            ),
            (
                Some(status(&[
                    ("ACK.Terminal", "False"),
                    ("ACK.ResourceSynced", "True"),
                ])),
                State::Synced,
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(state(status.as_ref()), expected, "{status:?}");
        }
    }

    #[test]
    fn counts_name_every_state() {
        let synced = status(&[("ACK.ResourceSynced", "True")]);
        let terminal = status(&[("ACK.Terminal", "True")]);
        let counted = counts([Some(&synced), Some(&terminal), Some(&synced), None]);
        assert_eq!(
            counted,
            [
                (State::Synced, 2),
                (State::Pending, 1),
                (State::Recoverable, 0),
                (State::Terminal, 1)
            ]
        );
    }

    #[test]
    fn kinds_are_group_version_kind() {
        let queue = parse_kind("sqs.services.k8s.aws/v1alpha1/Queue").unwrap();
        assert_eq!(
            (
                queue.group.as_str(),
                queue.version.as_str(),
                queue.plural.as_str()
            ),
            ("sqs.services.k8s.aws", "v1alpha1", "queues")
        );
        assert_eq!(
            parse_kind("iam.services.k8s.aws/v1alpha1/Policy")
                .unwrap()
                .plural,
            "policies"
        );
        for bad in [
            "Queue",
            "sqs.services.k8s.aws/Queue",
            "a/v1/queue",
            "a//Queue",
            "",
        ] {
            assert!(parse_kind(bad).is_err(), "{bad}");
        }
    }
}
