//! Load: 200 uploads of real photos through LocalStack's S3 and SQS, processed by
//! two `minilab worker` processes (one image each at a time). Prints throughput and
//! upload-to-manifest latency; checks every upload succeeded with the pipeline's
//! exact bytes. Run it with `bench/load` (which starts LocalStack); not a test.

use minilab_tests::aws::{EnvOptions, Stack};
use minilab_tests::{expected_outputs, photo};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PHOTOS: &[&str] = &[
    "photo-12mp.jpg",
    "photo-8mp-progressive.jpg",
    "photo-exif-rotate6.jpg",
    "photo-small.jpg",
];

#[tokio::main]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let stack = Stack::connect().await;
    let env = stack
        .env(EnvOptions {
            visibility_timeout: 30,
            max_receive_count: 5,
        })
        .await;
    let (_api_process, api) = stack.api(
        &env,
        &[
            "--tickets-per-minute",
            "0",
            "--reads-per-minute",
            "0",
            "--upload-bytes-per-hour",
            "0",
        ],
    );
    let workers: Vec<_> = (0..2)
        .map(|_| stack.worker(&env, &["--concurrency", "1"]))
        .collect();

    let photos: Vec<(String, Vec<u8>)> = PHOTOS
        .iter()
        .map(|name| (name.to_string(), photo(name)))
        .collect();
    let expected: HashMap<String, Vec<(String, Vec<u8>)>> = photos
        .iter()
        .map(|(name, bytes)| (name.clone(), expected_outputs(bytes, "web")))
        .collect();

    // Upload with 4 at a time, as several browsers would; note when each landed.
    let started = Instant::now();
    let wall_start = chrono::Utc::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(4));
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..count {
        let (name, bytes) = photos[i % photos.len()].clone();
        let (api, slots) = (api.clone(), slots.clone());
        uploads.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore");
            let id = api.upload_jpeg(&name, &bytes, "web").await;
            (id, name, chrono::Utc::now())
        });
    }
    let mut landed = Vec::with_capacity(count);
    while let Some(upload) = uploads.join_next().await {
        landed.push(upload.expect("upload task"));
    }
    let uploaded_in = started.elapsed();

    let mut latencies = Vec::with_capacity(count);
    let mut last_finish = wall_start;
    for (id, name, uploaded_at) in &landed {
        let status = api.wait_final(id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        assert_eq!(
            &api.download_outputs(&status).await,
            &expected[name],
            "upload {id} differs from the pipeline's bytes"
        );
        let manifest = stack
            .s3
            .get_object()
            .bucket(&env.processed)
            .key(format!("{id}/manifest.json"))
            .send()
            .await
            .expect("manifest");
        let manifest: serde_json::Value =
            serde_json::from_slice(&manifest.body.collect().await.expect("body").into_bytes())
                .expect("JSON");
        let finished: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(manifest["finishedAt"].clone()).expect("finishedAt");
        last_finish = last_finish.max(finished);
        latencies.push((finished - *uploaded_at).to_std().unwrap_or(Duration::ZERO));
    }
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let total = (last_finish - wall_start)
        .to_std()
        .unwrap_or(Duration::ZERO);
    println!(
        "uploads: {count} ({} distinct photos), all succeeded with the pipeline's exact bytes",
        photos.len()
    );
    println!("uploads landed in {:.2} s", uploaded_in.as_secs_f64());
    println!(
        "first upload to last manifest: {:.2} s = {:.1} images/s with 2 workers",
        total.as_secs_f64(),
        count as f64 / total.as_secs_f64()
    );
    println!(
        "upload landed → manifest written: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(0.5).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    drop(workers);
}
