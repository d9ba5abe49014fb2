//! AWS mode against LocalStack's S3 and SQS: the real `minilab api` and `minilab
//! worker` processes, S3 → SQS notifications, redrive to a dead-letter queue, and
//! the at-least-once promises: duplicates, crashes, SIGTERM, poison, transient faults.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::aws::{EnvOptions, PAGE_ORIGIN, Stack, metric};
use minilab_tests::{expected_outputs, photo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SUCCEEDED: &str = "minilab_worker_jobs_total{outcome=\"succeeded\",reason=\"none\"}";
const DUPLICATES: &str = "minilab_worker_jobs_total{outcome=\"skipped\",reason=\"duplicate\"}";
const SECOND_UPLOADS: &str =
    "minilab_worker_jobs_total{outcome=\"skipped\",reason=\"second-upload\"}";
const NOT_EVENTS: &str = "minilab_worker_jobs_total{outcome=\"skipped\",reason=\"not-an-event\"}";
const RETRIED: &str = "minilab_worker_jobs_total{outcome=\"retried\",reason=\"transient\"}";

fn state(status: &Value) -> &str {
    status["state"].as_str().unwrap_or_default()
}

/// Polls `condition` every 100 ms for at most `limit`; S3 and metrics have no
/// notification to await.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn an_upload_goes_through_s3_and_sqs_and_comes_back_presigned() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_api, api) = stack.api(
        &env,
        &[
            "--serve-images",
            "--image-base-url",
            "https://photos.example.com/",
        ],
    );
    let (_worker, metrics) = stack.worker(&env, &[]);

    let bytes = photo("photo-12mp.jpg");
    let ticket = api.ticket("photo.jpg", "image/jpeg", &bytes, "web").await;
    assert!(
        ticket["upload"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&stack.endpoint)
    );
    let id = ticket["id"].as_str().unwrap().to_owned();
    api.upload(&ticket, bytes.clone(), "image/jpeg").await;
    let status = api.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    let outputs = api.download_outputs(&status).await;
    assert_eq!(outputs, expected_outputs(&bytes, "web"));
    // The same bytes at each output's stable address, read from S3 by the API; the
    // status names it on the CDN's host.
    for (output, (name, downloaded)) in status["outputs"].as_array().unwrap().iter().zip(&outputs) {
        let image_url = output["imageUrl"].as_str().unwrap();
        let path = image_url
            .strip_prefix("https://photos.example.com")
            .unwrap();
        assert!(path.starts_with(&format!("/i/{id}/{name}.")), "{image_url}");
        let served = api.get(path).await;
        assert_eq!(served.status(), 200, "{path}");
        assert_eq!(
            served.headers()["content-type"],
            output["contentType"].as_str().unwrap()
        );
        assert_eq!(
            &served.bytes().await.unwrap().to_vec(),
            downloaded,
            "{path}"
        );
    }
    let manifest = api.get(&format!("/i/{id}/manifest.json")).await;
    assert_eq!(manifest.status(), 404);
    assert_eq!(
        stack.keys(&env.processed, &id).await,
        [
            format!("{id}/claim"),
            format!("{id}/large-webp.webp"),
            format!("{id}/large.jpg"),
            format!("{id}/manifest.json"),
            format!("{id}/thumb-webp.webp"),
            format!("{id}/thumb.jpg")
        ]
    );
    assert_eq!(metric(&api.http, &metrics, SUCCEEDED).await, 1.0);
    let ready = api
        .http
        .get(format!("{metrics}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn a_duplicated_event_leaves_one_correct_set_of_outputs() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_api, api) = stack.api(&env, &[]);
    let bytes = photo("photo-8mp-progressive.jpg");
    let id = api.upload_jpeg("p.jpg", &bytes, "web").await;

    // Take S3's event off the queue before any worker runs, and deliver it four
    // times; a worker with four slots handles the copies concurrently.
    let event = stack
        .take_message(&env.queue_url, &id, Duration::from_secs(30))
        .await
        .expect("S3 sent the event");
    for _ in 0..4 {
        stack.send_message(&env.queue_url, &event).await;
    }
    let (_worker, metrics) = stack.worker(&env, &["--concurrency", "4"]);
    let status = api.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    eventually(
        Duration::from_secs(30),
        "all four copies handled",
        || async {
            metric(&api.http, &metrics, SUCCEEDED).await
                + metric(&api.http, &metrics, DUPLICATES).await
                == 4.0
        },
    )
    .await;
    assert_eq!(
        stack.keys(&env.processed, &id).await,
        [
            format!("{id}/claim"),
            format!("{id}/large-webp.webp"),
            format!("{id}/large.jpg"),
            format!("{id}/manifest.json"),
            format!("{id}/thumb-webp.webp"),
            format!("{id}/thumb.jpg")
        ]
    );
    assert_eq!(
        api.download_outputs(&status).await,
        expected_outputs(&bytes, "web")
    );
}

/// The worker's S3 requests, by operation, from its metrics.
async fn s3_requests(http: &reqwest::Client, metrics: &str) -> BTreeMap<String, f64> {
    let text = http
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("minilab_worker_s3_requests_total{operation=\"")?;
            let (operation, count) = rest.split_once("\"} ")?;
            Some((operation.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn an_upload_costs_the_worker_its_claim_source_outputs_and_manifest_only() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_api, api) = stack.api(&env, &[]);
    let id = api
        .upload_jpeg("p.jpg", &photo("photo-small.jpg"), "web")
        .await;
    let event = stack
        .take_message(&env.queue_url, &id, Duration::from_secs(30))
        .await
        .expect("S3 sent the event");
    stack.send_message(&env.queue_url, &event).await;
    let (_worker, metrics) = stack.worker(&env, &[]);
    let status = api.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    eventually(Duration::from_secs(30), "the upload handled", || async {
        metric(&api.http, &metrics, SUCCEEDED).await == 1.0
    })
    .await;
    // The claim, the outputs and the manifest written; the source read; nothing
    // else (no look for a manifest: a claim made now says there is none).
    let outputs = status["outputs"].as_array().unwrap().len() as f64;
    let expected = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    assert_eq!(
        s3_requests(&api.http, &metrics).await,
        expected(&[("GetObject", 1.0), ("PutObject", outputs + 2.0)])
    );
    // The same event again, after the end: the claim is its own, so it looks for
    // the manifest, finds it, and writes nothing.
    stack.send_message(&env.queue_url, &event).await;
    eventually(Duration::from_secs(30), "the copy handled", || async {
        metric(&api.http, &metrics, DUPLICATES).await == 1.0
    })
    .await;
    assert_eq!(
        s3_requests(&api.http, &metrics).await,
        expected(&[
            ("GetObject", 2.0),
            ("HeadObject", 1.0),
            ("PutObject", outputs + 3.0)
        ])
    );
}

/// Uploads `count` copies of `bytes`; returns their ids.
async fn upload_many(api: &minilab_tests::Api, bytes: &[u8], count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(
            api.upload_jpeg(&format!("photo-{i}.jpg"), bytes, "web")
                .await,
        );
    }
    ids
}

/// Every upload succeeded with exactly the pipeline's bytes.
async fn assert_all_correct(
    api: &minilab_tests::Api,
    ids: &[String],
    expected: &[(String, Vec<u8>)],
) {
    for id in ids {
        let status = api.wait_final(id).await;
        assert_eq!(state(&status), "succeeded", "{status}");
        assert_eq!(api.download_outputs(&status).await, expected, "upload {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn a_worker_killed_in_the_middle_of_a_batch_loses_nothing() {
    let stack = Stack::connect().await;
    // A short visibility timeout brings the dead worker's messages back quickly.
    let env = stack
        .env(EnvOptions {
            visibility_timeout: 3,
            max_receive_count: 10,
        })
        .await;
    let (_api, api) = stack.api(&env, &[]);
    let bytes = photo("photo-12mp.jpg");
    let expected = expected_outputs(&bytes, "web");
    let ids = upload_many(&api, &bytes, 20).await;

    let (first, _) = stack.worker(&env, &["--concurrency", "2", "--visibility-timeout", "3"]);
    eventually(Duration::from_secs(60), "the first manifest", || async {
        stack.manifest_count(&env.processed).await >= 1
    })
    .await;
    first.kill();
    let done_at_kill = stack.manifest_count(&env.processed).await;
    assert!(
        done_at_kill < 20,
        "the batch finished before the kill; the test proves nothing"
    );

    let (_second, _) = stack.worker(&env, &["--concurrency", "2"]);
    assert_all_correct(&api, &ids, &expected).await;
    assert_eq!(stack.manifest_count(&env.processed).await, 20);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn sigterm_drains_within_the_grace_period_and_loses_nothing() {
    let stack = Stack::connect().await;
    let env = stack
        .env(EnvOptions {
            visibility_timeout: 3,
            max_receive_count: 10,
        })
        .await;
    let (_api, api) = stack.api(&env, &[]);
    let bytes = photo("photo-12mp.jpg");
    let expected = expected_outputs(&bytes, "web");
    // Enough work that a drain of the two in flight cannot finish the batch.
    let ids = upload_many(&api, &bytes, 12).await;

    let (mut worker, _) = stack.worker(&env, &["--concurrency", "2", "--drain-timeout", "10"]);
    eventually(Duration::from_secs(60), "the first manifest", || async {
        stack.manifest_count(&env.processed).await >= 1
    })
    .await;
    let stopping = Instant::now();
    worker.terminate();
    let status = worker
        .wait_exit(Duration::from_secs(15))
        .expect("the worker exits within its grace period");
    assert!(status.success(), "{status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(12),
        "took {:?}",
        stopping.elapsed()
    );
    assert!(
        stack.manifest_count(&env.processed).await < 12,
        "the batch finished before SIGTERM"
    );

    let (_next, _) = stack.worker(&env, &["--concurrency", "2"]);
    assert_all_correct(&api, &ids, &expected).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn poison_and_unparsable_messages_are_not_retried_forever() {
    let stack = Stack::connect().await;
    let env = stack
        .env(EnvOptions {
            visibility_timeout: 1,
            max_receive_count: 2,
        })
        .await;
    let (_api, api) = stack.api(&env, &[]);
    // This worker can never write its results: every attempt fails transiently.
    let (_worker, metrics) = stack.worker(
        &env,
        &[
            "--processed-bucket",
            "no-such-bucket-anywhere",
            "--visibility-timeout",
            "1",
        ],
    );
    stack
        .send_message(&env.queue_url, "this is not an S3 event")
        .await;
    let id = api
        .upload_jpeg("poison.jpg", &photo("photo-small.jpg"), "web")
        .await;

    let dead = stack
        .take_message(&env.dlq_url, &id, Duration::from_secs(60))
        .await
        .expect("the poison message reaches the dead-letter queue");
    assert!(dead.contains("ObjectCreated"), "{dead}");
    assert!(metric(&api.http, &metrics, RETRIED).await >= 2.0);
    assert_eq!(metric(&api.http, &metrics, NOT_EVENTS).await, 1.0);
    eventually(Duration::from_secs(10), "both queues drained", || async {
        stack.queue_depth(&env.queue_url).await == 0 && stack.queue_depth(&env.dlq_url).await == 0
    })
    .await;
    let ready = api
        .http
        .get(format!("{metrics}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        503,
        "a worker that cannot reach its bucket is not ready"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn a_briefly_missing_processed_bucket_is_retried_and_then_succeeds() {
    let stack = Stack::connect().await;
    let env = stack
        .env(EnvOptions {
            visibility_timeout: 1,
            max_receive_count: 50,
        })
        .await;
    let (_api, api) = stack.api(&env, &[]);
    let (_worker, metrics) =
        stack.worker(&env, &["--concurrency", "1", "--visibility-timeout", "1"]);
    stack
        .s3
        .delete_bucket()
        .bucket(&env.processed)
        .send()
        .await
        .unwrap();

    let bytes = photo("photo-small.jpg");
    let id = api.upload_jpeg("later.jpg", &bytes, "web").await;
    eventually(Duration::from_secs(30), "a transient failure", || async {
        metric(&api.http, &metrics, RETRIED).await >= 1.0
    })
    .await;
    stack.create_bucket(&env.processed).await;
    let status = api.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    assert_eq!(
        api.download_outputs(&status).await,
        expected_outputs(&bytes, "web")
    );
}

/// One ticket, one processing. S3 takes the same form POSTed twice (no condition
/// can refuse a POST to an existing key) and sends two events; a worker handling
/// both at once processes the image once and skips the other write's event.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn an_upload_is_deleted_only_when_finished_and_only_with_its_token() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_api, api) = stack.api(&env, &["--serve-images"]);
    let bytes = photo("photo-small.jpg");
    let ticket = api.ticket("d.jpg", "image/jpeg", &bytes, "web").await;
    let id = ticket["id"].as_str().unwrap().to_owned();
    let token = ticket["deleteToken"].as_str().unwrap();
    let delete = |token: &str| {
        api.http
            .delete(format!("{}/api/v1/uploads/{id}", api.url))
            .header("x-delete-token", token)
            .send()
    };
    api.upload(&ticket, bytes.clone(), "image/jpeg").await;
    // Stored, no worker yet: deleting under a worker would leave its outputs behind.
    let early = delete(token).await.unwrap();
    assert_eq!(early.status(), 409);
    let body: Value = early.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not-finished", "{body}");

    let (_worker, metrics) = stack.worker(&env, &[]);
    let status = api.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    assert_eq!(stack.keys(&env.processed, &id).await.len(), 6);
    assert_eq!(
        delete("0123456789abcdefghijkl").await.unwrap().status(),
        403
    );
    assert_eq!(delete(token).await.unwrap().status(), 204);
    assert_eq!(
        stack.keys(&env.processed, &id).await,
        [format!("{id}/claim"), format!("{id}/manifest.json")],
        "the claim and a tombstone only"
    );
    let source = minilab_core::keys::source_key(id.parse().unwrap());
    assert!(stack.keys(&env.uploads, &source).await.is_empty());
    let status = api.status(&id, 0).await;
    assert_eq!(state(&status), "deleted", "{status}");
    assert_eq!(api.get(&format!("/i/{id}/large.jpg")).await.status(), 404);
    // The ticket still takes a POST (S3 has no condition for one), but the claim
    // that stayed holds another write: nothing is processed, the upload stays
    // deleted.
    api.upload(&ticket, bytes, "image/jpeg").await;
    eventually(
        Duration::from_secs(30),
        "the second upload handled",
        || async { metric(&api.http, &metrics, SECOND_UPLOADS).await == 1.0 },
    )
    .await;
    let status = api.status(&id, 0).await;
    assert_eq!(state(&status), "deleted", "{status}");
}

/// What a stand-in for CloudFront's API was asked: path, Authorization, body.
type Asked = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A stand-in for CloudFront's API on loopback (nothing real runs here): it notes
/// each request and answers 201, or 500 for distribution `EBROKEN`.
async fn cloudfront_stand_in() -> (String, Asked) {
    use axum::extract::{Path, State};
    let asked = Asked::default();
    let app = axum::Router::new()
        .route(
            "/2020-05-31/distribution/{id}/invalidation",
            axum::routing::post(
                |State(asked): State<Asked>,
                 Path(id): Path<String>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    let authorization = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    asked
                        .lock()
                        .unwrap()
                        .push((id.clone(), authorization, body));
                    if id == "EBROKEN" {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::CREATED
                    }
                },
            ),
        )
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn deleting_an_upload_asks_cloudfront_to_forget_its_images() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (endpoint, asked) = cloudfront_stand_in().await;
    let (_worker, _) = stack.worker(&env, &[]);
    let bytes = photo("photo-small.jpg");
    for (distribution, result) in [("EGOOD1", "asked"), ("EBROKEN", "failed")] {
        let (_api, api) = stack.api(
            &env,
            &[
                "--serve-images",
                "--cdn-distribution-id",
                distribution,
                "--cloudfront-endpoint",
                &endpoint,
            ],
        );
        let ticket = api.ticket("c.jpg", "image/jpeg", &bytes, "web").await;
        let id = ticket["id"].as_str().unwrap().to_owned();
        api.upload(&ticket, bytes.clone(), "image/jpeg").await;
        assert_eq!(state(&api.wait_final(&id).await), "succeeded");
        let deleted = api.delete_upload(&ticket).await;
        // The images are gone from S3 whatever the CDN answers.
        assert_eq!(deleted.status(), 204, "{distribution}");
        let sample = format!("minilab_api_cdn_invalidations_total{{result=\"{result}\"}}");
        assert_eq!(metric(&api.http, &api.url, &sample).await, 1.0, "{sample}");
        let (path, authorization, body) = asked.lock().unwrap().pop().unwrap();
        assert_eq!(path, distribution);
        assert!(
            body.contains(&format!(
                "<Quantity>1</Quantity><Items><Path>/i/{id}/*</Path></Items>"
            )),
            "{body}"
        );
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=")
                && authorization.contains("/us-east-1/cloudfront/aws4_request"),
            "{authorization}"
        );
    }
    assert!(asked.lock().unwrap().is_empty(), "one request per deletion");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn a_ticket_posted_twice_is_processed_once() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_api, api) = stack.api(&env, &[]);
    let bytes = photo("photo-8mp-progressive.jpg");
    let ticket = api.ticket("p.jpg", "image/jpeg", &bytes, "web").await;
    let id = ticket["id"].as_str().unwrap().to_owned();
    // Both events off the queue before any worker runs, then back at once.
    let mut events = Vec::new();
    for _ in 0..2 {
        api.upload(&ticket, bytes.clone(), "image/jpeg").await;
        let event = stack
            .take_message(&env.queue_url, &id, Duration::from_secs(30))
            .await
            .expect("S3 sent the event");
        events.push(event);
    }
    assert_ne!(events[0], events[1], "two writes, two different events");
    for event in &events {
        stack.send_message(&env.queue_url, event).await;
    }
    let (_worker, metrics) = stack.worker(&env, &["--concurrency", "2"]);
    let status = api.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    eventually(Duration::from_secs(30), "both events handled", || async {
        metric(&api.http, &metrics, SUCCEEDED).await
            + metric(&api.http, &metrics, SECOND_UPLOADS).await
            + metric(&api.http, &metrics, DUPLICATES).await
            == 2.0
    })
    .await;
    assert_eq!(metric(&api.http, &metrics, SUCCEEDED).await, 1.0);
    assert_eq!(
        api.download_outputs(&status).await,
        expected_outputs(&bytes, "web")
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn s3_refuses_tampered_expired_and_oversized_posts_and_foreign_origins() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_api, api) = stack.api(&env, &["--max-upload-bytes", "1000000"]);
    let small = photo("photo-small.jpg");
    let not_stored = |ticket: &Value| {
        let key = ticket["upload"]["fields"]["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let s3 = stack.s3.clone();
        let bucket = env.uploads.clone();
        async move {
            s3.head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .is_err()
        }
    };

    // Oversized: more bytes than content-length-range allows.
    let ticket = api.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let url = ticket["upload"]["url"].as_str().unwrap();
    let fields = ticket["upload"]["fields"].as_object().unwrap().clone();
    match api
        .try_post_form(url, &fields, photo("photo-12mp.jpg"), "image/jpeg")
        .await
    {
        Ok((status, body)) => assert!(
            status == 400 && body.contains("EntityTooLarge"),
            "{status} {body}"
        ),
        Err(err) => assert!(err.is_request(), "{err}"),
    }
    assert!(not_stored(&ticket).await);

    // The policy pins the declared size exactly (the budget charged it): one byte
    // more or less, well within the limit, is refused.
    let ticket = api.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let fields = ticket["upload"]["fields"].as_object().unwrap().clone();
    let longer = [small.as_slice(), b"\0"].concat();
    let (status, body) = api.post_form(url, &fields, longer, "image/jpeg").await;
    assert!(
        status == 400 && body.contains("EntityTooLarge"),
        "{status} {body}"
    );
    let shorter = small[..small.len() - 1].to_vec();
    let (status, body) = api.post_form(url, &fields, shorter, "image/jpeg").await;
    assert!(
        status == 400 && body.contains("EntityTooSmall"),
        "{status} {body}"
    );
    assert!(not_stored(&ticket).await);

    // Tampered: another key than the signed one. (LocalStack 4.14 checks a POST
    // policy's conditions and expiry but not its signature, so an edited policy
    // document is proven refused against the embedded store, in tests/up.rs.)
    let ticket = api.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let mut fields = ticket["upload"]["fields"].as_object().unwrap().clone();
    fields.insert("key".into(), "uploads/chosen-by-the-browser".into());
    let (status, body) = api
        .post_form(url, &fields, small.clone(), "image/jpeg")
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(not_stored(&ticket).await);
    let elsewhere = stack
        .s3
        .head_object()
        .bucket(&env.uploads)
        .key("uploads/chosen-by-the-browser")
        .send()
        .await;
    assert!(elsewhere.is_err(), "stored under the browser's key");

    // Another Content-Type than the signed one.
    let ticket = api.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let mut fields = ticket["upload"]["fields"].as_object().unwrap().clone();
    fields.insert("Content-Type".into(), "text/html".into());
    let (status, body) = api
        .post_form(url, &fields, small.clone(), "image/jpeg")
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(not_stored(&ticket).await);

    // Expired: a policy signed with the real credentials, whose time has passed.
    let now = chrono::Utc::now();
    let key = format!("uploads/{}", minilab_core::UploadId::new(now));
    let credentials = aws_credential_types::Credentials::new("test", "test", None, None, "test");
    let policy = |expires_at| minilab_api::post_policy::PostPolicy {
        bucket: &env.uploads,
        key: &key,
        content_type: "image/jpeg",
        size: small.len() as u64,
        metadata: &[("recipe", "web")],
        expires_at,
    };
    let to_fields =
        |signed: minilab_api::post_policy::FormFields| -> serde_json::Map<String, Value> {
            signed
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        };
    let expired =
        to_fields(policy(now - chrono::Duration::seconds(1)).sign(&credentials, "us-east-1", now));
    let (status, body) = api
        .post_form(url, &expired, small.clone(), "image/jpeg")
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_lowercase().contains("expired"), "{body}");
    // The same policy with time left is accepted: the refusal was for its expiry.
    let fresh =
        to_fields(policy(now + chrono::Duration::minutes(5)).sign(&credentials, "us-east-1", now));
    let (status, body) = api.post_form(url, &fresh, small, "image/jpeg").await;
    assert!((200..300).contains(&status), "{status} {body}");

    // CORS: the page's origin may POST; another origin's preflight is refused.
    for (origin, allowed) in [(PAGE_ORIGIN, true), ("http://evil.minilab.test", false)] {
        let response = api
            .http
            .request(reqwest::Method::OPTIONS, url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        let allow = response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        if allowed {
            assert_eq!(response.status(), 200);
            assert_eq!(allow.as_deref(), Some(origin));
        } else {
            assert_eq!(response.status(), 403);
            assert_eq!(allow, None);
        }
    }
}

#[tokio::test]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn publish_web_puts_the_page_with_its_types_cache_headers_and_api_base() {
    let stack = Stack::connect().await;
    let bucket = format!("site-{}", minilab_core::UploadId::new(chrono::Utc::now()));
    stack.create_bucket(&bucket).await;

    let done = stack
        .publish_web(&bucket, &["--api-base", "https://api.photos.example.com/"])
        .await;
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let stdout = String::from_utf8(done.stdout).unwrap();
    let written: Vec<&str> = stdout
        .lines()
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(written.len(), 4, "{stdout}");
    assert_eq!(
        written[3],
        format!("s3://{bucket}/index.html"),
        "index.html goes last"
    );

    let get = |key: String| {
        let s3 = stack.s3.clone();
        let bucket = bucket.clone();
        async move {
            s3.get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap()
        }
    };
    let index = get("index.html".into()).await;
    assert_eq!(index.content_type(), Some("text/html; charset=utf-8"));
    assert_eq!(index.cache_control(), Some("no-cache"));
    let html = String::from_utf8(index.body.collect().await.unwrap().to_vec()).unwrap();
    assert!(html.contains(r#"<meta name="minilab-api" content="https://api.photos.example.com">"#));

    let web = std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../web");
    let in_bucket = format!("s3://{bucket}/");
    for (source, prefix, content_type) in [
        (
            "vendor/thumbhash.js",
            "vendor/thumbhash.",
            "text/javascript; charset=utf-8",
        ),
        ("app.js", "app.", "text/javascript; charset=utf-8"),
        ("style.css", "style.", "text/css; charset=utf-8"),
    ] {
        let key = written
            .iter()
            .find_map(|uri| {
                uri.strip_prefix(&in_bucket)
                    .filter(|k| k.starts_with(prefix))
            })
            .unwrap()
            .to_owned();
        assert_ne!(key, source, "a content-hashed name");
        assert!(
            html.contains(&format!("\"{key}\"")),
            "index.html names {key}"
        );
        let object = get(key.clone()).await;
        assert_eq!(object.content_type(), Some(content_type));
        assert_eq!(
            object.cache_control(),
            Some("public, max-age=31536000, immutable")
        );
        let body = object.body.collect().await.unwrap().to_vec();
        assert_eq!(body, std::fs::read(web.join(source)).unwrap(), "{key}");
    }

    // Publishing again writes the same names (nothing piles up between releases of
    // the same page).
    let again = stack.publish_web(&bucket, &[]).await;
    assert!(again.status.success());
    assert_eq!(stack.keys(&bucket, "").await.len(), 4);

    // A base URL that could break out of the attribute is refused before anything is
    // written; a missing bucket is a clear error naming what failed.
    let empty = format!("{bucket}-empty");
    stack.create_bucket(&empty).await;
    let refused = stack
        .publish_web(&empty, &["--api-base", "javascript:alert(1)"])
        .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("API base URL"));
    assert_eq!(stack.keys(&empty, "").await, Vec::<String>::new());
    let missing = stack.publish_web(&format!("{bucket}-missing"), &[]).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains(&format!("s3://{bucket}-missing/")),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn the_apis_readiness_is_about_itself_and_its_metrics_have_their_own_port() {
    // S3 unreachable (nothing listens on port 1): the instance can still answer, so it
    // stays ready; an S3 brownout must not empty the load balancer of every instance.
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let unreachable = std::ffi::OsStr::new("http://127.0.0.1:1");
    let (mut process, api) = stack.api_with(
        &env,
        &["--metrics-listen", "127.0.0.1:0", "--shutdown-delay", "3"],
        &[("AWS_ENDPOINT_URL", unreachable)],
    );
    let metrics = process.wait_line("minilab api metrics on ");
    let get = |url: String| {
        let http = api.http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    let ready = get(format!("{}/readyz", api.url)).await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.headers().get("connection"), None, "kept alive");
    // /metrics only on its own port, never where the internet may reach.
    assert_eq!(get(format!("{}/metrics", api.url)).await.status(), 404);
    let scraped = get(format!("{metrics}/metrics")).await;
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("minilab_api_"));

    // SIGTERM: not ready at once, yet still serving until the delay ends, then gone.
    let stopped = Instant::now();
    process.terminate();
    eventually(Duration::from_secs(2), "/readyz answering 503", || async {
        get(format!("{}/readyz", api.url)).await.status() == 503
    })
    .await;
    let draining: Value = get(format!("{}/readyz", api.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(draining["error"]["code"], "draining");
    // Served, and its connection closed after it: a client's next request goes to an
    // instance that stays, not onto a connection this one closes when it stops.
    let served = get(format!("{}/api/v1/recipes", api.url)).await;
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let exited = process
        .wait_exit(Duration::from_secs(10))
        .expect("the api exits after its delay");
    assert!(exited.success(), "{exited:?}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "it served for the whole delay"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn presigned_urls_never_outlive_the_credentials_that_signed_them() {
    // Role credentials from a container endpoint, as EKS Pod Identity hands them out,
    // with 20 minutes left, while the API is told to make hour-long URLs: a URL signed
    // by them would die after 20 minutes whatever it says.
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let expiry = chrono::Utc::now() + chrono::Duration::minutes(20);
    let fetched = Arc::new(AtomicUsize::new(0));
    let counter = fetched.clone();
    let credentials = axum::Router::new().route(
        "/credentials",
        get(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                axum::Json(serde_json::json!({
                    "AccessKeyId": "test", "SecretAccessKey": "test", "Token": "role-session",
                    "Expiration": expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/credentials", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, credentials).await });
    let mut command = stack.command("api", &env);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &endpoint)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upload-ttl",
            "3600",
            "--download-ttl",
            "3600",
        ]);
    let process = minilab_tests::Process::start(&mut command, "minilab api listening on ");
    let api = minilab_tests::Api::new(process.ready_line.clone());
    let (_worker, _) = stack.worker(&env, &[]);

    let bytes = photo("photo-small.jpg");
    let mut tickets = Vec::new();
    for n in 0..5 {
        tickets.push(
            api.ticket(&format!("p{n}.jpg"), "image/jpeg", &bytes, "grayscale")
                .await,
        );
    }
    for ticket in &tickets {
        let expires: chrono::DateTime<chrono::Utc> =
            ticket["expiresAt"].as_str().unwrap().parse().unwrap();
        assert!(
            expires <= expiry,
            "the upload outlives its credentials: {expires} > {expiry}"
        );
        assert!(
            expires > expiry - chrono::Duration::seconds(30),
            "{expires}"
        );
        assert_eq!(
            ticket["upload"]["fields"]["x-amz-security-token"],
            "role-session"
        );
    }
    let id = tickets[0]["id"].as_str().unwrap().to_owned();
    api.upload(&tickets[0], bytes, "image/jpeg").await;
    let status = api.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    let url = status["outputs"][0]["url"].as_str().unwrap();
    let query: std::collections::HashMap<String, String> = url
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let lifetime: i64 = query["X-Amz-Expires"].parse().unwrap();
    assert!(
        (1170..=1200).contains(&lifetime),
        "X-Amz-Expires={lifetime}, credentials had 1200 s"
    );
    assert_eq!(query["X-Amz-Security-Token"], "role-session");
    assert_eq!(
        api.download_outputs(&status).await.len(),
        1,
        "the capped URL works"
    );
    // Five tickets and a status: the credentials were fetched for the signer once
    // (and by the S3 client's own cache), not once per URL.
    assert!(
        fetched.load(Ordering::Relaxed) <= 2,
        "{} credential fetches",
        fetched.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn one_client_bursting_for_tickets_is_limited_while_another_is_served() {
    // Behind one trusted proxy (an ALB appends the address it saw to X-Forwarded-For).
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (mut process, api) = stack.api(
        &env,
        &[
            "--tickets-per-minute",
            "60",
            "--ticket-burst",
            "5",
            "--trusted-proxy-hops",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let metrics = process.wait_line("minilab api metrics on ");
    let started = Instant::now();
    // 500 at once from one client, some of them claiming to be someone else: the
    // entry left of the proxy's is the client's own words and never picks the key.
    let burst = (0..500).map(|n| {
        let forwarded = if n % 2 == 0 {
            "203.0.113.5"
        } else {
            "198.51.100.77, 203.0.113.5"
        };
        ticket_from(&api, forwarded, 1000)
    });
    let answers = futures_join_all(burst).await;
    let elapsed = started.elapsed().as_secs();
    let served = answers.iter().filter(|r| r.status() == 201).count();
    let limited: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(served + limited.len(), 500);
    assert!(
        (5..=6 + elapsed as usize).contains(&served),
        "{served} served in {elapsed} s"
    );
    let retry: u64 = limited[0].headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Meanwhile another client is served normally.
    for _ in 0..5 {
        assert_eq!(ticket_from(&api, "198.51.100.9", 1000).await.status(), 201);
    }
    let refused: Value = ticket_from(&api, "203.0.113.5", 1000)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refused["error"]["code"], "rate-limited");
    let counted = metric(
        &api.http,
        &metrics,
        "minilab_api_refused_total{reason=\"rate-limited\"}",
    )
    .await;
    assert_eq!(counted as usize, limited.len() + 1);
}

/// Awaits every future at once (no extra crate for join_all).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn the_byte_budget_refuses_the_ticket_that_would_exceed_it() {
    // Many small tickets must not add up to a large bill: each charges its exact size.
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_process, api) = stack.api(
        &env,
        &[
            "--upload-bytes-per-hour",
            "100000",
            "--trusted-proxy-hops",
            "1",
        ],
    );
    assert_eq!(ticket_from(&api, "203.0.113.5", 40_000).await.status(), 201);
    assert_eq!(ticket_from(&api, "203.0.113.5", 40_000).await.status(), 201);
    let refused = ticket_from(&api, "203.0.113.5", 40_000).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((715..=720).contains(&retry), "Retry-After {retry}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upload-budget-exceeded");
    // What is left may still be used; other clients have budgets of their own.
    assert_eq!(ticket_from(&api, "203.0.113.5", 20_000).await.status(), 201);
    assert_eq!(
        ticket_from(&api, "198.51.100.9", 40_000).await.status(),
        201
    );
}

/// `POST /api/v1/uploads` for a `size`-byte JPEG as if through a proxy that saw `forwarded`.
fn ticket_from(
    api: &minilab_tests::Api,
    forwarded: &'static str,
    size: u64,
) -> impl std::future::Future<Output = reqwest::Response> + Send + 'static {
    let request = api
        .http
        .post(format!("{}/api/v1/uploads", api.url))
        .header("x-forwarded-for", forwarded)
        .json(&serde_json::json!({
            "filename": "a.jpg", "contentType": "image/jpeg", "size": size, "recipe": "web"
        }));
    async move { request.send().await.unwrap() }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn a_worker_wakes_the_requests_waiting_on_every_api_instance() {
    // Two API instances (two pods) and a worker told where both are: a long poll on
    // each is woken by the worker's word, not by its own 2 s read of S3.
    const SECRET: &str = "peers-shared-secret-for-tests";
    const WORD: &str = "minilab_api_status_wakes_total{by=\"word\"}";
    const SENT: &str = "minilab_worker_announcements_total{result=\"sent\"}";
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let internal = ["--metrics-listen", "127.0.0.1:0", "--peer-secret", SECRET];
    let (mut first_process, first) = stack.api(&env, &internal);
    let (mut second_process, second) = stack.api(&env, &internal);
    let first_internal = first_process.wait_line("minilab api metrics on ");
    let second_internal = second_process.wait_line("minilab api metrics on ");
    let targets = [&first_internal, &second_internal]
        .map(|url| url.trim_start_matches("http://").to_owned())
        .join(",");
    let (_worker, worker_metrics) =
        stack.worker(&env, &["--announce-to", &targets, "--peer-secret", SECRET]);

    // Word only where the cluster reaches, and only signed with the secret.
    let forged = first
        .http
        .post(format!("{first_internal}/internal/v1/changes"))
        .header("minilab-signature", "t=1,v1=00")
        .body(r#"{"id":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad-signature");
    let public = first
        .http
        .post(format!("{}/internal/v1/changes", first.url))
        .body(r#"{"id":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    // A word signed with the secret is taken once; the same bytes again are a replay.
    let word = format!(
        r#"{{"id":"{}","nonce":"0"}}"#,
        minilab_core::UploadId::new(chrono::Utc::now())
    );
    let signature = minilab_core::webhook::sign(
        SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        word.as_bytes(),
    );
    let mut answers = Vec::new();
    for _ in 0..2 {
        let answer = first
            .http
            .post(format!("{first_internal}/internal/v1/changes"))
            .header("minilab-signature", &signature)
            .body(word.clone())
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        answers.push((status, answer.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, 204, "{answers:?}");
    assert_eq!(answers[1].0, 409, "{answers:?}");
    assert!(answers[1].1.contains(r#""code":"replayed""#), "{answers:?}");

    let bytes = photo("photo-12mp.jpg");
    let ticket = first.ticket("photo.jpg", "image/jpeg", &bytes, "web").await;
    let id = ticket["id"].as_str().unwrap().to_owned();
    let (on_first, on_second, ()) = tokio::join!(
        first.wait_final(&id),
        second.wait_final(&id),
        first.upload(&ticket, bytes, "image/jpeg")
    );
    assert_eq!(state(&on_first), "succeeded", "{on_first}");
    assert_eq!(state(&on_second), "succeeded", "{on_second}");
    for metrics in [&first_internal, &second_internal] {
        let woken = metric(&first.http, metrics, WORD).await;
        assert!(woken >= 1.0, "{metrics}: woken by word {woken} times");
    }
    // Its start and its end, to each of the two.
    eventually(Duration::from_secs(5), "4 announcements sent", || async {
        metric(&first.http, &worker_metrics, SENT).await == 4.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn a_waiting_request_looks_for_a_stored_source_once() {
    // A long poll on a stored upload no worker has finished: each word of a change
    // makes it read S3 again, the manifest only; the source it saw stored stays.
    const SECRET: &str = "peers-shared-secret-for-tests";
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let flags = ["--metrics-listen", "127.0.0.1:0", "--peer-secret", SECRET];
    let (mut process, api) = stack.api(&env, &flags);
    let internal = process.wait_line("minilab api metrics on ");
    let id = api
        .upload_jpeg("p.jpg", &photo("photo-small.jpg"), "web")
        .await;
    let requests = |operation: &'static str| {
        let (http, internal) = (api.http.clone(), internal.clone());
        async move {
            let sample = format!("minilab_api_s3_requests_total{{operation=\"{operation}\"}}");
            metric(&http, &internal, &sample).await
        }
    };
    let (gets, heads) = (requests("GetObject").await, requests("HeadObject").await);
    let waiting = {
        let (api, id) = (api.clone(), id.clone());
        tokio::spawn(async move { api.status(&id, 20).await })
    };
    eventually(Duration::from_secs(10), "the first read", || async {
        requests("GetObject").await == gets + 1.0 && requests("HeadObject").await == heads + 1.0
    })
    .await;
    for nonce in 1..=2 {
        let word = format!(r#"{{"id":"{id}","nonce":"{nonce}"}}"#);
        let signature = minilab_core::webhook::sign(
            SECRET.as_bytes(),
            chrono::Utc::now().timestamp(),
            word.as_bytes(),
        );
        let taken = api
            .http
            .post(format!("{internal}/internal/v1/changes"))
            .header("minilab-signature", &signature)
            .body(word)
            .send()
            .await
            .unwrap();
        assert_eq!(taken.status(), 204);
        let read = gets + 1.0 + f64::from(nonce);
        eventually(Duration::from_secs(10), "a read at the word", || async {
            requests("GetObject").await == read
        })
        .await;
    }
    // The second word's read began after the first's ended: whatever the first
    // read, it is counted by now.
    assert_eq!(requests("HeadObject").await, heads + 1.0);
    waiting.abort();
}
