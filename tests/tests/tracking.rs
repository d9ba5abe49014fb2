//! `minilab api --kube-tracking`: each upload becomes an ImageJob, and a Kubernetes
//! API that fails costs a counted warning, never the upload. The API runs in-process
//! against LocalStack; the Kubernetes API is kube's `tower-test` mock.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use http::{Method, Request, Response};
use kube::api::Api as KubeApi;
use kube::client::Body;
use minilab_api::ApiConfig;
use minilab_api::tracking::ApiMetrics;
use minilab_core::RecipeBook;
use minilab_operator::tracker::KubeTracker;
use minilab_tests::Api;
use minilab_tests::aws::{EnvOptions, REGION, Stack, metric};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn each_upload_becomes_an_image_job_and_a_failing_cluster_never_fails_an_upload() {
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "photos");
    let metrics = Arc::new(ApiMetrics::default());
    let router = minilab_api::router(ApiConfig {
        s3: stack.s3.clone(),
        credentials: SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "test",
        )),
        region: REGION.into(),
        uploads_bucket: env.uploads.clone(),
        processed_bucket: env.processed.clone(),
        upload_url: format!("{}/{}", stack.endpoint, env.uploads),
        recipes: Arc::new(RecipeBook::builtin()),
        max_upload_bytes: 25 << 20,
        upload_ttl: Duration::from_secs(900),
        download_ttl: Duration::from_secs(3600),
        serve_web: false,
        tracker: Some(Arc::new(KubeTracker {
            api: KubeApi::namespaced(client, "photos"),
        })),
        metrics,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let api = Api::new(url.clone());
    let metrics_url = url.clone();
    let photo = minilab_tests::photo("photo-small.jpg");

    // Accepted by the cluster: the ImageJob carries the upload's key, buckets and expiry.
    let ticket = api.ticket("photo.jpg", "image/jpeg", &photo, "web").await;
    let id = ticket["id"].as_str().unwrap().to_owned();
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the ImageJob is created within the tracking timeout")
        .unwrap();
    assert_eq!(request.method(), Method::POST);
    assert_eq!(
        request.uri().path(),
        "/apis/minilab.dev/v1alpha1/namespaces/photos/imagejobs"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    let job: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(job["metadata"]["name"], format!("upload-{id}"));
    assert_eq!(job["metadata"]["labels"]["minilab.dev/origin"], "upload");
    assert_eq!(job["spec"]["recipe"], "web");
    assert_eq!(job["spec"]["source"]["bucket"], env.uploads.as_str());
    assert_eq!(job["spec"]["source"]["key"], format!("uploads/{id}"));
    assert_eq!(job["spec"]["destination"]["bucket"], env.processed.as_str());
    assert_eq!(job["spec"]["destination"]["prefix"], format!("{id}/"));
    let expires = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let drift = expires(&job["spec"]["source"]["uploadExpiresAt"]) - expires(&ticket["expiresAt"]);
    assert!(drift.num_milliseconds().abs() < 1000, "{drift}");
    send.send_response(
        Response::builder()
            .status(201)
            .body(Body::from(body))
            .unwrap(),
    );
    wait_for(
        &api,
        &metrics_url,
        "minilab_api_kube_tracking_total{result=\"ok\"}",
    )
    .await;

    // The cluster refuses: the ticket was already answered, the upload goes through,
    // and the failure is counted.
    let ticket = api.ticket("photo.jpg", "image/jpeg", &photo, "web").await;
    let (_, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
    send.send_response(
        Response::builder()
            .status(500)
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap(),
    );
    wait_for(
        &api,
        &metrics_url,
        "minilab_api_kube_tracking_total{result=\"failed\"}",
    )
    .await;
    api.upload(&ticket, photo, "image/jpeg").await;
    let keys = stack.keys(&env.uploads, "uploads/").await;
    assert!(
        keys.contains(&format!("uploads/{}", ticket["id"].as_str().unwrap())),
        "{keys:?}"
    );
    assert_eq!(
        metric(&api.http, &metrics_url, "minilab_api_uploads_issued_total").await,
        2.0
    );
}

/// Waits (at most 10 s) for a counter to reach 1.
async fn wait_for(api: &Api, metrics_url: &str, sample: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&api.http, metrics_url, sample).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} never reached 1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
