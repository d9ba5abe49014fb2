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
use minilab_operator::controller::{self, BatchSettings, Context};
use minilab_operator::metrics::Metrics;
use minilab_operator::observe::{S3Observer, SqsWorkQueue, WorkQueue};
use minilab_tests::aws::{EnvOptions, Stack, metric};
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
    let context = context(stack, client, now, None);
    let metrics = context.metrics.clone();
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

fn context(
    stack: &Stack,
    client: kube::Client,
    now: Timestamp,
    queue: Option<Arc<dyn WorkQueue>>,
) -> Arc<Context> {
    Arc::new(Context {
        client: client.clone(),
        observer: Arc::new(S3Observer {
            s3: stack.s3.clone(),
        }),
        queue,
        batch: BatchSettings {
            rate: 10,
            ..BatchSettings::default()
        },
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "minilab-operator".into(),
                instance: None,
            },
        ),
        metrics: Arc::new(Metrics::default()),
        clock: Arc::new(move || now),
        manifests: Default::default(),
    })
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
        id: Some(id),
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
    // Absurd values from a spec end in no deadline at all, not a panic.
    let forever = upload_job(
        &id,
        &env.uploads,
        &env.processed,
        json!({"activeDeadlineSeconds": i64::MAX, "source": {"bucket": env.uploads, "key": format!("uploads/{id}"),
            "uploadExpiresAt": "9999-12-30T21:59:30Z"}}),
        json!({"phase": "Running", "startTime": at(0).to_string(), "total": 1, "progress": "0/1"}),
    );
    reconcile(
        &stack,
        forever,
        at(50),
        vec![Expect::PatchStatus(Box::new(|s| {
            assert_eq!(s["phase"], "Running")
        }))],
    )
    .await;
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

/// Answers every request as an API server would (status patches are applied to
/// `job`), keeping the latest status; for multi-step scenarios whose exact
/// sequence the tests above already pin down.
async fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    job: Arc<std::sync::Mutex<Value>>,
) {
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body: Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap())
                .unwrap_or(Value::Null);
        let reply = if method == Method::PATCH && path.ends_with("/status") {
            let mut job = job.lock().unwrap();
            job["status"] = body["status"].clone();
            job.clone()
        } else {
            assert_eq!(method, Method::POST, "{path}");
            assert!(path.ends_with("/events"), "{path}");
            body
        };
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }
}

/// A batch of 30 real photos (one of them damaged) under a prefix: the operator
/// enqueues 10 per reconcile, a real worker processes them, one image is delivered
/// twice, and the status counts exactly: 30/30, 29 succeeded, 1 failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_thirty_photos_becomes_thirty_results_counted_exactly() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let photos = [
        "photo-small.jpg",
        "photo-alpha.png",
        "photo-exif-rotate6.jpg",
    ];
    for i in 0..30 {
        let name = photos[i % photos.len()];
        let mut bytes = minilab_tests::photo(name);
        if i == 7 {
            bytes.truncate(bytes.len() / 2); // a damaged upload: corrupt-image
        }
        put(
            &stack,
            &env.uploads,
            &format!("shoot/2026/{i:02}-{name}"),
            bytes,
        )
        .await;
    }
    let (_worker, metrics_url) = stack.worker(&env, &[]);
    let queue: Arc<dyn WorkQueue> = Arc::new(SqsWorkQueue {
        sqs: stack.sqs.clone(),
        queue_url: env.queue_url.clone(),
    });
    let mut job = json!({
        "apiVersion": "minilab.dev/v1alpha1",
        "kind": "ImageJob",
        "metadata": {"name": "reshoot", "namespace": "photos", "uid": "5f0c1a2e-0000-4000-8000-000000000002",
            "generation": 1, "resourceVersion": "7", "creationTimestamp": CREATED},
        "spec": {
            "source": {"bucket": env.uploads, "prefix": "shoot/2026/"},
            "recipe": "thumbnail",
            "destination": {"bucket": env.processed, "prefix": "batches/reshoot/"}
        }
    });
    let shared = Arc::new(std::sync::Mutex::new(job.clone()));
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, shared.clone()));
    let client = kube::Client::new(service, "photos");

    // Three reconciles enqueue 10 each, a second apart.
    let mut now = 1;
    for enqueued in [10, 20, 30] {
        let ctx = context(&stack, client.clone(), at(now), Some(queue.clone()));
        let action =
            controller::reconcile(Arc::new(serde_json::from_value(job.clone()).unwrap()), ctx)
                .await
                .unwrap();
        job = shared.lock().unwrap().clone();
        assert_eq!(job["status"]["enqueued"], enqueued, "{}", job["status"]);
        assert_eq!(job["status"]["total"], 30);
        assert_eq!(job["status"]["phase"], "Running");
        let more = enqueued < 30;
        if more {
            assert_eq!(action, Action::requeue(Duration::from_secs(1)));
        }
        now += 1;
    }
    // One image delivered twice (as SQS may): the worker skips the copy.
    let item = minilab_core::event::WorkItem {
        job: "photos/reshoot".into(),
        bucket: env.uploads.clone(),
        key: "shoot/2026/00-photo-small.jpg".into(),
        recipe: "thumbnail".into(),
        destination_bucket: env.processed.clone(),
        destination_prefix: "batches/reshoot/00-photo-small.jpg/".into(),
    };
    queue.send(&[item]).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while stack.manifest_count(&env.processed).await < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not finish the batch"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let handled = || async {
        metric(
            &reqwest::Client::new(),
            &metrics_url,
            "minilab_worker_jobs_total{outcome=\"skipped\",reason=\"duplicate\"}",
        )
        .await
    };
    while handled().await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the duplicate was never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ctx = context(&stack, client.clone(), at(now), Some(queue.clone()));
    let action = controller::reconcile(Arc::new(serde_json::from_value(job.clone()).unwrap()), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let status = shared.lock().unwrap()["status"].clone();
    assert_eq!(status["phase"], "Failed", "{status}");
    assert_eq!(
        (
            status["total"].as_i64(),
            status["succeeded"].as_i64(),
            status["failed"].as_i64()
        ),
        (Some(30), Some(29), Some(1))
    );
    assert_eq!(status["progress"], "30/30");
    assert_eq!(status["message"], "1 of 30 images failed");
    assert_eq!(
        status["source"],
        format!("s3://{}/shoot/2026/*", env.uploads)
    );
    assert_eq!(status["conditions"][0]["reason"], "ImagesFailed");
    let keys = stack
        .keys(&env.processed, "batches/reshoot/00-photo-small.jpg/")
        .await;
    assert_eq!(
        keys,
        [
            "batches/reshoot/00-photo-small.jpg/manifest.json",
            "batches/reshoot/00-photo-small.jpg/square.jpg"
        ]
    );
    drop(client);
    server.abort();
}

/// Images without a manifest `retryAfter` after the last enqueue go back on the
/// queue, `backoffLimit` times; then the job fails. Exact requests, real SQS.
#[tokio::test(flavor = "multi_thread")]
async fn unfinished_batch_images_are_retried_up_to_the_backoff_limit() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    // Sources in a bucket without notifications, so the queue holds only work items.
    for key in ["src/0.jpg", "src/1.jpg", "src/2.jpg"] {
        put(&stack, &env.processed, key, b"x".to_vec()).await;
    }
    put(
        &stack,
        &env.processed,
        "out/1.jpg/manifest.json",
        manifest(&new_id(), &env.uploads, false),
    )
    .await;
    let queue: Arc<dyn WorkQueue> = Arc::new(SqsWorkQueue {
        sqs: stack.sqs.clone(),
        queue_url: env.queue_url.clone(),
    });
    let job = |status: Value| {
        json!({
            "apiVersion": "minilab.dev/v1alpha1",
            "kind": "ImageJob",
            "metadata": {"name": "retry", "namespace": "photos", "uid": "5f0c1a2e-0000-4000-8000-000000000003",
                "generation": 1, "resourceVersion": "9", "creationTimestamp": CREATED},
            "spec": {
                "source": {"bucket": env.processed, "prefix": "src/"},
                "recipe": "web",
                "destination": {"bucket": env.processed, "prefix": "out/"},
                "backoffLimit": 1
            },
            "status": status
        })
    };
    let source = format!("s3://{}/src/*", env.processed);
    let enqueued = json!({"phase": "Running", "observedGeneration": 1, "startTime": at(0).to_string(),
        "total": 3, "succeeded": 1, "failed": 0, "enqueued": 3, "progress": "1/3", "source": source,
        "lastEnqueueTime": at(0).to_string()});
    let run = |job: Value, now: Timestamp, script: Vec<Expect>| {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let verifier = tokio::spawn(verify(handle, job.clone(), script));
        let ctx = context(
            &stack,
            kube::Client::new(service, "photos"),
            now,
            Some(queue.clone()),
        );
        async move {
            let action = controller::reconcile(Arc::new(serde_json::from_value(job).unwrap()), ctx)
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), verifier)
                .await
                .unwrap()
                .unwrap();
            action
        }
    };

    // LocalStack greets a new notification configuration with a test event.
    let _ = stack
        .take_message(&env.queue_url, "s3:TestEvent", Duration::from_secs(3))
        .await;
    // Within retryAfter (600 s): nothing written, nothing sent.
    let action = run(job(enqueued.clone()), at(300), vec![]).await;
    requeue_secs(&action, 30.0);
    assert_eq!(stack.queue_depth(&env.queue_url).await, 0);

    // Past it: the two unfinished images go back on the queue, once.
    run(
        job(enqueued.clone()),
        at(601),
        vec![Expect::PatchStatus(Box::new(|s| {
            assert_eq!(s["retries"], 1);
            assert_eq!(s["lastEnqueueTime"], at(601).to_string());
            assert_eq!(
                (s["phase"].as_str(), s["progress"].as_str()),
                (Some("Running"), Some("1/3"))
            );
        }))],
    )
    .await;
    assert_eq!(stack.queue_depth(&env.queue_url).await, 2);
    let mut items = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while items.len() < 2 && tokio::time::Instant::now() < deadline {
        let received = stack
            .sqs
            .receive_message()
            .queue_url(&env.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            match minilab_core::event::parse_message(message.body().unwrap()).unwrap() {
                minilab_core::event::Message::Work(item) => {
                    items.push((item.key, item.destination_prefix))
                }
                other => panic!("only work items: {other:?}"),
            }
            stack
                .sqs
                .delete_message()
                .queue_url(&env.queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    items.sort();
    assert_eq!(
        items,
        [
            ("src/0.jpg".to_owned(), "out/0.jpg/".to_owned()),
            ("src/2.jpg".to_owned(), "out/2.jpg/".to_owned())
        ]
    );

    // Still unfinished after the last allowed retry: Failed.
    let mut retried = enqueued;
    retried["retries"] = json!(1);
    retried["lastEnqueueTime"] = json!(at(601).to_string());
    run(
        job(retried),
        at(1202),
        vec![
            Expect::PatchStatus(Box::new(|s| {
                assert_eq!(s["phase"], "Failed");
                assert_eq!(s["conditions"][0]["reason"], "BackoffLimitExceeded");
                assert_eq!(s["message"], "2 of 3 images never finished after 1 retries");
            })),
            Expect::Event("Failed", "Warning"),
        ],
    )
    .await;
    assert_eq!(
        stack.queue_depth(&env.queue_url).await,
        0,
        "nothing more was sent"
    );
}
