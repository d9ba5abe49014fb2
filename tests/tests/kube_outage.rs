//! The Kubernetes API server stopped for a while mid-run (its own test binary: it stops
//! the server every other kube test shares). The data path never needs it: uploads
//! keep succeeding end to end, tracking failures are counted, and the operator
//! converges once the server is back.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::aws::{EnvOptions, Stack, metric};
use minilab_tests::kube::{ApiServer, Cluster};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn uploads_succeed_while_the_api_server_is_down_and_the_operator_catches_up() {
    let cluster = Cluster::install(&json!({}));
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let config = cluster.kubeconfig("api");
    let (_worker, _) = stack.worker(&env, &[]);
    let (_api, api) = stack.api_with(
        &env,
        &["--kube-tracking"],
        &[("KUBECONFIG", config.as_os_str())],
    );
    let (_operator, _) = cluster.operator(&stack, &env, &[]);
    let photo = minilab_tests::photo("photo-small.jpg");
    let http = reqwest::Client::new();
    let tracked = "minilab_api_kube_tracking_total{result=\"ok\"}";

    // Tracked before the outage, uploaded during it.
    let before = api.ticket("before.jpg", "image/jpeg", &photo, "web").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(&http, &api.url, tracked).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first upload was never tracked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let server = ApiServer::from_env();
    server.stop();
    api.upload(&before, photo.clone(), "image/jpeg").await;
    let mut during = Vec::new();
    for i in 0..3 {
        during.push(
            api.upload_jpeg(&format!("during-{i}.jpg"), &photo, "web")
                .await,
        );
    }
    for id in during
        .iter()
        .chain([before["id"].as_str().unwrap().to_owned()].iter())
    {
        let status = api.wait_final(id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
    }
    let refused = || async {
        metric(
            &http,
            &api.url,
            "minilab_api_kube_tracking_total{result=\"failed\"}",
        )
        .await
            + metric(
                &http,
                &api.url,
                "minilab_api_kube_tracking_total{result=\"timeout\"}",
            )
            .await
    };
    // Tracking runs after each answer, bounded by its 5 s timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while refused().await < 3.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tracking failures were not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        refused().await,
        3.0,
        "each tracking attempt during the outage, once"
    );

    server.start();
    let name = format!("upload-{}", before["id"].as_str().unwrap());
    cluster.wait_job(&name, "condition=Complete", Duration::from_secs(120));
    assert_eq!(cluster.job(&name)["status"]["progress"], "1/1");
}
