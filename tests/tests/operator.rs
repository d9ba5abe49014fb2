//! The operator's reconciler against a mocked Kubernetes API server (kube's
//! `tower-test` pair, the ApiServerVerifier pattern of kube-rs's controller-rs) and
//! real S3 (LocalStack): every transition, with the exact requests it makes.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use http::{Method, Request, Response};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use minilab_core::manifest::{
    ErrorRecord, Manifest, ManifestState, OutputRecord, Source, StageTimings,
};
use minilab_core::{ErrorCode, UploadId};
use minilab_operator::controller::{self, Context};
use minilab_operator::metrics::Metrics;
use minilab_operator::observe::S3Observer;
use minilab_tests::aws::{EnvOptions, Stack};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower_test::mock::Handle;

const CREATED: &str = "2026-11-25T12:00:00Z";

fn at(seconds_after_creation: i64) -> Timestamp {
    CREATED.parse::<Timestamp>().unwrap() + SignedDuration::from_secs(seconds_after_creation)
}

/// An upload's ImageJob as the API creates it, with `extra` merged into the spec.
fn upload_job(id: &str, uploads: &str, processed: &str, spec: Value, status: Value) -> Value {
    let mut job = json!({
        "apiVersion": "minilab.dev/v1alpha1",
        "kind": "ImageJob",
        "metadata": {
            "name": format!("upload-{id}"),
            "namespace": "photos",
            "uid": "5f0c1a2e-0000-4000-8000-000000000001",
            "generation": 1,
            "resourceVersion": "100",
            "creationTimestamp": CREATED,
            "labels": {"minilab.dev/origin": "upload"}
        },
        "spec": {
            "source": {
                "bucket": uploads,
                "key": format!("uploads/{id}"),
                "uploadExpiresAt": at(900).to_string()
            },
            "recipe": "web",
            "destination": {"bucket": processed, "prefix": format!("{id}/")}
        }
    });
    merge(&mut job["spec"], spec);
    if !status.is_null() {
        job["status"] = status;
    }
    job
}

fn merge(target: &mut Value, patch: Value) {
    if let (Some(target), Value::Object(patch)) = (target.as_object_mut(), patch) {
        for (k, v) in patch {
            target.insert(k, v);
        }
    }
}

/// What the mocked API server must see, in order.
enum Expect {
    /// A merge patch of `/status`; the check gets the patch's `status`.
    PatchStatus(Box<dyn FnOnce(&Value) + Send>),
    /// An Event with this reason and type.
    Event(&'static str, &'static str),
    /// The job deleted.
    Delete,
}

/// Answers the reconciler's requests as an API server would, asserting each against
/// `script`, then that nothing else was asked.
async fn verify(
    mut handle: Handle<Request<Body>, Response<Body>>,
    job: Value,
    script: Vec<Expect>,
) {
    let name = job["metadata"]["name"].as_str().unwrap().to_owned();
    let base = format!("/apis/minilab.dev/v1alpha1/namespaces/photos/imagejobs/{name}");
    for step in script {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let reply = match step {
            Expect::PatchStatus(check) => {
                assert_eq!(
                    (method, path.as_str()),
                    (Method::PATCH, format!("{base}/status").as_str())
                );
                assert_eq!(
                    body.as_object().unwrap().len(),
                    1,
                    "only status is patched: {body}"
                );
                check(&body["status"]);
                let mut patched = job.clone();
                patched["status"] = body["status"].clone();
                patched
            }
            Expect::Event(reason, type_) => {
                assert_eq!(
                    (method, path.as_str()),
                    (
                        Method::POST,
                        "/apis/events.k8s.io/v1/namespaces/photos/events"
                    )
                );
                assert_eq!(
                    (body["reason"].as_str(), body["type"].as_str()),
                    (Some(reason), Some(type_)),
                    "{body}"
                );
                assert_eq!(body["regarding"]["name"].as_str(), Some(name.as_str()));
                body
            }
            Expect::Delete => {
                assert_eq!((method, path.as_str()), (Method::DELETE, base.as_str()));
                assert_eq!(body["propagationPolicy"].as_str(), Some("Background"));
                job.clone()
            }
        };
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }
    assert!(handle.next_request().await.is_none(), "no further requests");
}

/// Runs one reconcile of `job` at `now` against the script; returns its Action and the
/// metrics text.
async fn reconcile(
    stack: &Stack,
    job: Value,
    now: Timestamp,
    script: Vec<Expect>,
) -> (Action, String) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let verifier = tokio::spawn(verify(handle, job.clone(), script));
    let client = kube::Client::new(service, "photos");
    let metrics = Arc::new(Metrics::default());
    let context = Arc::new(Context {
        client: client.clone(),
        observer: Arc::new(S3Observer {
            s3: stack.s3.clone(),
        }),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "minilab-operator".into(),
                instance: None,
            },
        ),
        metrics: metrics.clone(),
        clock: Arc::new(move || now),
    });
    let object = serde_json::from_value(job).unwrap();
    let action = controller::reconcile(Arc::new(object), context)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), verifier)
        .await
        .expect("the verifier finishes")
        .unwrap();
    (action, metrics.encode())
}

async fn put(stack: &Stack, bucket: &str, key: &str, body: Vec<u8>) {
    stack
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

fn manifest(id: &str, uploads: &str, failed: bool) -> Vec<u8> {
    let id: UploadId = id.parse().unwrap();
    let manifest = Manifest {
        version: Manifest::VERSION,
        id,
        state: if failed {
            ManifestState::Failed
        } else {
            ManifestState::Succeeded
        },
        recipe: "web".into(),
        source: Source {
            bucket: uploads.into(),
            key: format!("uploads/{id}"),
            bytes: 1234,
            filename: Some("photo.jpg".into()),
            format: Some("jpeg".into()),
            width: Some(4000),
            height: Some(3000),
        },
        outputs: if failed {
            Vec::new()
        } else {
            vec![OutputRecord {
                name: "large".into(),
                key: format!("{id}/large.jpg"),
                width: 1024,
                height: 768,
                bytes: 120_000,
                content_type: "image/jpeg".into(),
            }]
        },
        error: failed.then(|| ErrorRecord {
            code: ErrorCode::CorruptImage,
            message: "the image does not decode".into(),
        }),
        timings: StageTimings::default(),
        finished_at: "2026-11-25T12:00:30Z".parse().unwrap(),
    };
    serde_json::to_vec(&manifest).unwrap()
}

fn new_id() -> String {
    UploadId::new(chrono::Utc::now()).to_string()
}

fn requeue_secs(action: &Action, expected: f64) {
    let wanted = Action::requeue(Duration::from_secs_f64(expected));
    assert_eq!(action, &wanted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_upload_awaits_then_runs_then_succeeds() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let id = new_id();
    let job = upload_job(&id, &env.uploads, &env.processed, json!({}), Value::Null);

    // Nothing uploaded yet: AwaitingUpload, start time set, polled again soon.
    let source = format!("s3://{}/uploads/{id}", env.uploads);
    let (action, metrics) = reconcile(
        &stack,
        job.clone(),
        at(5),
        vec![
            Expect::PatchStatus(Box::new(move |s| {
                assert_eq!(s["phase"], "AwaitingUpload");
                assert_eq!(s["progress"], "0/1");
                assert_eq!(s["total"], 1);
                assert_eq!(s["observedGeneration"], 1);
                assert_eq!(s["startTime"], at(5).to_string());
                assert_eq!(s["source"], source);
                assert!(s.get("conditions").is_none());
            })),
            Expect::Event("AwaitingUpload", "Normal"),
        ],
    )
    .await;
    requeue_secs(&action, 2.0);
    assert!(
        metrics.contains("minilab_operator_reconciles_total{result=\"ok\"} 1"),
        "{metrics}"
    );

    // The same observation again writes nothing.
    let status = json!({"phase": "AwaitingUpload", "observedGeneration": 1, "startTime": at(5).to_string(),
        "total": 1, "succeeded": 0, "failed": 0, "progress": "0/1",
        "source": format!("s3://{}/uploads/{id}", env.uploads)});
    let waiting = upload_job(&id, &env.uploads, &env.processed, json!({}), status.clone());
    let (action, _) = reconcile(&stack, waiting.clone(), at(300), vec![]).await;
    requeue_secs(&action, 30.0);

    // The photo arrives: Running.
    put(
        &stack,
        &env.uploads,
        &format!("uploads/{id}"),
        b"not looked at".to_vec(),
    )
    .await;
    reconcile(
        &stack,
        waiting,
        at(20),
        vec![
            Expect::PatchStatus(Box::new(|s| {
                assert_eq!(s["phase"], "Running");
                assert_eq!(s["startTime"], at(5).to_string(), "kept");
            })),
            Expect::Event("Running", "Normal"),
        ],
    )
    .await;

    // The manifest lands: Succeeded with its outputs and a Complete condition.
    put(
        &stack,
        &env.processed,
        &format!("{id}/manifest.json"),
        manifest(&id, &env.uploads, false),
    )
    .await;
    let mut running = status;
    running["phase"] = json!("Running");
    let job = upload_job(&id, &env.uploads, &env.processed, json!({}), running);
    let id2 = id.clone();
    let (action, metrics) = reconcile(
        &stack,
        job,
        at(40),
        vec![
            Expect::PatchStatus(Box::new(move |s| {
                assert_eq!(s["phase"], "Succeeded");
                assert_eq!(s["progress"], "1/1");
                assert_eq!(s["succeeded"], 1);
                assert_eq!(s["completionTime"], "2026-11-25T12:00:30Z");
                assert_eq!(s["outputs"][0]["key"], format!("{id2}/large.jpg"));
                assert_eq!(s["outputs"][0]["width"], 1024);
                let complete = &s["conditions"][0];
                assert_eq!(
                    (
                        complete["type"].as_str(),
                        complete["status"].as_str(),
                        complete["reason"].as_str()
                    ),
                    (Some("Complete"), Some("True"), Some("Processed"))
                );
                assert_eq!(complete["lastTransitionTime"], at(40).to_string());
                assert_eq!(complete["observedGeneration"], 1);
            })),
            Expect::Event("Succeeded", "Normal"),
        ],
    )
    .await;
    assert_eq!(action, Action::await_change(), "no TTL: nothing more to do");
    assert!(
        metrics.contains("minilab_operator_phase_transitions_total{phase=\"Succeeded\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_image_fails_the_job_with_its_code() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let id = new_id();
    put(
        &stack,
        &env.processed,
        &format!("{id}/manifest.json"),
        manifest(&id, &env.uploads, true),
    )
    .await;
    let job = upload_job(&id, &env.uploads, &env.processed, json!({}), Value::Null);
    reconcile(
        &stack,
        job,
        at(40),
        vec![
            Expect::PatchStatus(Box::new(|s| {
                assert_eq!(s["phase"], "Failed");
                assert_eq!(s["failed"], 1);
                assert_eq!(s["progress"], "1/1");
                assert_eq!(s["message"], "corrupt-image: the image does not decode");
                assert_eq!(s["conditions"][0]["type"], "Failed");
                assert_eq!(s["conditions"][0]["reason"], "ImageFailed");
            })),
            Expect::Event("Failed", "Warning"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_never_arrives_expires_after_its_url_and_grace() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let id = new_id();
    let status = json!({"phase": "AwaitingUpload", "startTime": at(0).to_string(), "total": 1, "progress": "0/1"});
    let job = upload_job(&id, &env.uploads, &env.processed, json!({}), status);
    // The URL lapses at 900 s; an upload started just before may still land for 60 s:
    // at 950 s nothing changes, and the next poll is due at the end of the grace.
    let (action, _) = reconcile(
        &stack,
        job.clone(),
        at(950),
        vec![Expect::PatchStatus(Box::new(|s| {
            assert_eq!(s["phase"], "AwaitingUpload");
            assert_eq!(s["observedGeneration"], 1);
        }))],
    )
    .await;
    requeue_secs(&action, 10.5);
    reconcile(
        &stack,
        job,
        at(961),
        vec![
            Expect::PatchStatus(Box::new(|s| {
                assert_eq!(s["phase"], "Expired");
                assert_eq!(s["completionTime"], at(961).to_string());
                assert!(s["message"].as_str().unwrap().contains("did not arrive"));
                assert_eq!(s["conditions"][0]["type"], "Failed");
                assert_eq!(s["conditions"][0]["reason"], "UploadExpired");
            })),
            Expect::Event("Expired", "Warning"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_pauses_the_deadline_and_resume_restarts_it() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let id = new_id();
    put(
        &stack,
        &env.uploads,
        &format!("uploads/{id}"),
        b"x".to_vec(),
    )
    .await;
    let running = json!({"phase": "Running", "observedGeneration": 1, "startTime": at(0).to_string(),
        "total": 1, "succeeded": 0, "failed": 0, "progress": "0/1",
        "source": format!("s3://{}/uploads/{id}", env.uploads)});
    // Suspended past its deadline: not failed, a Suspended condition.
    let suspended = upload_job(
        &id,
        &env.uploads,
        &env.processed,
        json!({"suspend": true, "activeDeadlineSeconds": 60}),
        running.clone(),
    );
    reconcile(
        &stack,
        suspended,
        at(100),
        vec![Expect::PatchStatus(Box::new(|s| {
            assert_eq!(s["phase"], "Running");
            assert_eq!(s["conditions"][0]["type"], "Suspended");
            assert_eq!(s["conditions"][0]["status"], "True");
            assert_eq!(s["conditions"][0]["reason"], "JobSuspended");
        }))],
    )
    .await;
    // Resumed: the condition turns False and the deadline counts from now.
    let mut was_suspended = running.clone();
    was_suspended["conditions"] = json!([{"type": "Suspended", "status": "True", "reason": "JobSuspended",
        "message": "suspended", "lastTransitionTime": at(100).to_string(), "observedGeneration": 1}]);
    let resumed = upload_job(
        &id,
        &env.uploads,
        &env.processed,
        json!({"suspend": false, "activeDeadlineSeconds": 60}),
        was_suspended,
    );
    let (action, _) = reconcile(
        &stack,
        resumed,
        at(200),
        vec![Expect::PatchStatus(Box::new(|s| {
            assert_eq!(s["phase"], "Running");
            assert_eq!(s["startTime"], at(200).to_string());
            assert_eq!(s["conditions"][0]["status"], "False");
            assert_eq!(s["conditions"][0]["reason"], "JobResumed");
            assert_eq!(
                s["conditions"][0]["lastTransitionTime"],
                at(200).to_string()
            );
        }))],
    )
    .await;
    requeue_secs(&action, 20.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_deadline_fails_and_a_finished_one_is_deleted_after_its_ttl() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let id = new_id();
    put(
        &stack,
        &env.uploads,
        &format!("uploads/{id}"),
        b"x".to_vec(),
    )
    .await;
    let running =
        json!({"phase": "Running", "startTime": at(0).to_string(), "total": 1, "progress": "0/1"});
    let spec = json!({"activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 300});
    let job = upload_job(&id, &env.uploads, &env.processed, spec.clone(), running);
    // Before the deadline the next poll is no later than the deadline itself.
    let (action, _) = reconcile(
        &stack,
        job.clone(),
        at(50),
        vec![Expect::PatchStatus(Box::new(|s| {
            assert_eq!(s["phase"], "Running")
        }))],
    )
    .await;
    requeue_secs(&action, 5.0);
    let (action, _) = reconcile(
        &stack,
        job,
        at(61),
        vec![
            Expect::PatchStatus(Box::new(|s| {
                assert_eq!(s["phase"], "Failed");
                assert_eq!(s["conditions"][0]["reason"], "DeadlineExceeded");
                assert_eq!(s["message"], "the job ran longer than its 60 s deadline");
            })),
            Expect::Event("Failed", "Warning"),
        ],
    )
    .await;
    requeue_secs(&action, 300.0);

    let finished = json!({"phase": "Failed", "completionTime": at(61).to_string(), "total": 1, "progress": "0/1"});
    let job = upload_job(&id, &env.uploads, &env.processed, spec, finished);
    let (action, _) = reconcile(&stack, job.clone(), at(200), vec![]).await;
    requeue_secs(&action, 161.0);
    let (action, metrics) = reconcile(&stack, job, at(361), vec![Expect::Delete]).await;
    assert_eq!(action, Action::await_change());
    assert!(
        metrics.contains("minilab_operator_ttl_deletions_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_job_gets_a_warning_and_nothing_else() {
    let stack = Stack::connect().await;
    let mut job = upload_job(
        "01jbadbadbadbadbadbadbadba",
        "b",
        "c",
        json!({}),
        Value::Null,
    );
    job["spec"]["recipe"] = json!(42);
    job["spec"]["source"] = json!("s3://not-an-object");
    let (action, metrics) = reconcile(
        &stack,
        job,
        at(1),
        vec![Expect::Event("Malformed", "Warning")],
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(
        metrics.contains("minilab_operator_malformed_jobs_total 1"),
        "{metrics}"
    );
}
