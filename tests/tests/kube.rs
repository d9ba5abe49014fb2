//! The operator, `minilab api --kube-tracking` and the chart's RBAC against a real
//! kube-apiserver (started by ./tests/run), with LocalStack for S3 and SQS and real
//! `minilab worker` processes: what a cluster user sees with `kubectl`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::aws::{EnvOptions, Stack, metric};
use minilab_tests::kube::{Cluster, batch_job, photos_bucket, reprocess_job};
use serde_json::{Value, json};
use std::time::Duration;

const FINISH: Duration = Duration::from_secs(180);

fn condition<'a>(job: &'a Value, type_: &str) -> &'a Value {
    job["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// (name, bytes) of each output in a list of outputs, sorted.
fn outputs(list: &Value) -> Vec<(String, u64)> {
    let mut outputs: Vec<(String, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    outputs.sort();
    outputs
}

/// An upload through the API becomes `upload-{id}` and follows the image to its end:
/// Succeeded with its outputs, Failed with the image's error code, or Expired when it
/// never arrives; every status write is one the real API server accepts.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn uploads_become_image_jobs_that_reach_their_final_phase() {
    let cluster = Cluster::install(&json!({}));
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let api_config = cluster.kubeconfig("api");
    let (_worker, _) = stack.worker(&env, &[]);
    let (_api, api) = stack.api_with(
        &env,
        &["--kube-tracking"],
        &[("KUBECONFIG", api_config.as_os_str())],
    );
    // Tickets that lapse at once: this upload never arrives.
    let (_short_api, short_api) = stack.api_with(
        &env,
        &["--kube-tracking", "--upload-ttl", "1"],
        &[("KUBECONFIG", api_config.as_os_str())],
    );
    let (_operator, _) = cluster.operator(&stack, &env, &[]);

    let photo = minilab_tests::photo("photo-small.jpg");
    let good = api.upload_jpeg("photo.jpg", &photo, "web").await;
    let corrupt = api
        .upload_jpeg("broken.jpg", b"\xff\xd8\xff\xe0 not really a JPEG", "web")
        .await;
    let lost = short_api
        .ticket("lost.jpg", "image/jpeg", &photo, "web")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let name = format!("upload-{good}");
    cluster.wait_job(&name, "condition=Complete", FINISH);
    let job = cluster.job(&name);
    assert_eq!(job["metadata"]["labels"]["minilab.dev/origin"], "upload");
    assert_eq!(job["status"]["phase"], "Succeeded");
    assert_eq!(job["status"]["progress"], "1/1");
    assert_eq!(condition(&job, "Complete")["status"], "True");
    let status = api.wait_final(&good).await;
    let from_api = outputs(&status["outputs"]);
    let from_job = outputs(&job["status"]["outputs"]);
    // The placeholder reaches the ImageJob too: the CRD's schema keeps the field
    // (the API server prunes what a structural schema does not name).
    assert!(status["placeholder"]["thumbhash"].is_string(), "{status}");
    assert_eq!(job["status"]["placeholder"], status["placeholder"]);
    assert_eq!(from_job, from_api);
    assert_eq!(from_job.len(), 4, "the web recipe's outputs: {from_job:?}");

    let name = format!("upload-{corrupt}");
    cluster.wait_job(&name, "condition=Failed", FINISH);
    let job = cluster.job(&name);
    assert_eq!(job["status"]["phase"], "Failed");
    assert_eq!(condition(&job, "Failed")["reason"], "ImageFailed");
    let message = job["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("corrupt-image: "), "{message}");

    // The URL lapses after 1 s, then the grace for an upload that started in time.
    let name = format!("upload-{lost}");
    cluster.wait_job(&name, "jsonpath={.status.phase}=Expired", FINISH);
    let job = cluster.job(&name);
    assert_eq!(condition(&job, "Failed")["reason"], "UploadExpired");
}

/// An ImageJob with `reprocess: true` runs finished uploads again under another
/// recipe: each becomes its next revision at new addresses (status and `/i/` name
/// them), every address served before keeps its bytes, and an upload that fails
/// again keeps what it had; the job counts what it did, as kubectl shows.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn reprocessing_makes_each_upload_a_new_revision_at_new_addresses() {
    let cluster = Cluster::install(&json!({}));
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let (_worker, _) = stack.worker(&env, &[]);
    let (_api, api) = stack.api(&env, &["--serve-images"]);
    let (mut operator, _) = cluster.operator(&stack, &env, &[]);
    operator.wait_line("minilab operator ");

    let photo = minilab_tests::photo("photo-small.jpg");
    let good = api.upload_jpeg("a.jpg", &photo, "large").await;
    let corrupt = api
        .upload_jpeg("broken.jpg", b"\xff\xd8\xff\xe0 not really a JPEG", "large")
        .await;
    let first = api.wait_final(&good).await;
    assert_eq!(api.wait_final(&corrupt).await["state"], "failed");
    let path = |status: &Value, output: usize| {
        let url = status["outputs"][output]["imageUrl"].as_str().unwrap();
        url[url.find("/i/").unwrap()..].to_owned()
    };
    let bytes = |path: String| {
        let api = &api;
        async move {
            let response = api.get(&path).await;
            assert_eq!(response.status(), 200, "{path}");
            response.bytes().await.unwrap().to_vec()
        }
    };
    let large = path(&first, 0);
    assert_eq!(large, format!("/i/{good}/large.jpg"));
    let large_bytes = bytes(large.clone()).await;

    // Refused by the operator: a reprocessing writes back to each upload.
    let processed = env.processed.as_str();
    cluster.apply(
        &reprocess_job(
            "elsewhere",
            &env.uploads,
            "uploads/",
            "thumbnail",
            processed,
        )
        .replace(
            &format!("bucket: {processed}}}"),
            &format!("bucket: {processed}, prefix: x/}}"),
        ),
    );
    cluster.wait_job("elsewhere", "condition=Failed", FINISH);
    assert_eq!(
        condition(&cluster.job("elsewhere"), "Failed")["reason"],
        "InvalidSpec"
    );

    cluster.apply(&reprocess_job(
        "squares",
        &env.uploads,
        "uploads/",
        "thumbnail",
        processed,
    ));
    cluster.wait_job("squares", "condition=Failed", FINISH);
    let job = cluster.job("squares");
    assert_eq!(
        (
            job["status"]["succeeded"].as_i64(),
            job["status"]["failed"].as_i64()
        ),
        (Some(1), Some(1)),
        "{job}"
    );
    assert_eq!(condition(&job, "Failed")["reason"], "ImagesFailed");

    // The new revision: the thumbnail recipe's square, at an address of its own.
    let second = api.status(&good, 0).await;
    assert_eq!(second["recipe"], "thumbnail", "{second}");
    let square = path(&second, 0);
    assert_eq!(square, format!("/i/{good}/square.r1.jpg"));
    let expected = minilab_tests::expected_outputs(&photo, "thumbnail");
    assert_eq!(bytes(square.clone()).await, expected[0].1);
    // What was served before still is, the same bytes (cached for a year), and its
    // one-address form too.
    assert_eq!(bytes(large.clone()).await, large_bytes);
    assert_eq!(bytes(format!("/i/{good}/large.auto")).await, large_bytes);
    // The upload that fails again keeps what it had.
    let failed = api.status(&corrupt, 0).await;
    assert_eq!(
        (failed["state"].as_str(), failed["recipe"].as_str()),
        (Some("failed"), Some("large"))
    );

    // Once more, one upload, by its own prefix: revision 2, the others still served.
    cluster.apply(&reprocess_job(
        "again",
        &env.uploads,
        &format!("uploads/{good}"),
        "large",
        processed,
    ));
    cluster.wait_job("again", "condition=Complete", FINISH);
    assert_eq!(cluster.job("again")["status"]["progress"], "1/1");
    let third = api.status(&good, 0).await;
    let large_again = path(&third, 0);
    assert_eq!(large_again, format!("/i/{good}/large.r2.jpg"));
    assert_eq!(
        bytes(large_again).await,
        large_bytes,
        "the same recipe, the same bytes"
    );
    assert_eq!(bytes(square).await, expected[0].1);
    assert_eq!(bytes(large).await, large_bytes);
}

/// Waits (at most 20 s, reading every 50 ms) until a sample on `/metrics` is at
/// least `value` (a counter) or, with `exactly`, is `value` (a gauge, which can go
/// down).
async fn wait_sample(metrics_url: &str, sample: &str, value: f64, exactly: bool) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = metric(&http, metrics_url, sample).await;
        if now == value || (!exactly && now > value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} is {now}, never {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a counter on `/metrics` to reach `value`.
async fn wait_metric(metrics_url: &str, sample: &str, value: f64) {
    wait_sample(metrics_url, sample, value, false).await;
}

/// Waits for a gauge on `/metrics` to read exactly `value`.
async fn wait_gauge(metrics_url: &str, sample: &str, value: f64) {
    wait_sample(metrics_url, sample, value, true).await;
}

/// What the ACK controllers write into the conditions of the release's AWS
/// resources reaches `minilab_operator_aws_resources` (the PrometheusRule's
/// Terminal and NotSynced alerts), read by the operator with the chart's RBAC for
/// the kinds it makes: pending, Terminal, fixed, deleted; another release's objects
/// are not counted.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn the_operator_counts_what_ack_reports_of_the_releases_aws_resources() {
    let cluster = Cluster::install(&json!({
        "queueUrl": "",
        "awsIdentity": "irsa",
        "ack": {"enabled": true, "accountId": "111122223333",
                "oidcProvider": "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE",
                "manage": {"buckets": false}},
    }));
    cluster.install_crds();
    let release = cluster.namespace.clone(); // render.py names the release after it
    let queue = |name: &str, instance: &str| {
        format!(
            "apiVersion: sqs.services.k8s.aws/v1alpha1\nkind: Queue\nmetadata:\n  name: {name}\n  \
             labels: {{app.kubernetes.io/instance: {instance}}}\nspec: {{queueName: {name}}}\n"
        )
    };
    for (name, instance) in [
        ("events", release.as_str()),
        ("events-dlq", release.as_str()),
        ("theirs", "other"),
    ] {
        cluster.apply(&queue(name, instance));
    }
    let report = |name: &str, conditions: &[(&str, &str)]| {
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|(type_, status)| json!({"type": type_, "status": status}))
            .collect();
        let patch = json!({"status": {"conditions": conditions}}).to_string();
        cluster.kubectl(&[
            "patch",
            "queue",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
    };
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let selector = format!("app.kubernetes.io/instance={release}");
    let (_operator, metrics) = cluster.operator(
        &stack,
        &env,
        &[
            "--aws-resources",
            "sqs.services.k8s.aws/v1alpha1/Queue",
            "--aws-resources-selector",
            &selector,
        ],
    );
    let sample =
        |state: &str| format!("minilab_operator_aws_resources{{kind=\"Queue\",state=\"{state}\"}}");

    // Made, nothing reported yet: both pending.
    wait_gauge(&metrics, &sample("pending"), 2.0).await;
    wait_gauge(&metrics, &sample("terminal"), 0.0).await;
    // SQS refused one (ACK does not retry), synced the other.
    report(
        "events",
        &[("ACK.ResourceSynced", "False"), ("ACK.Terminal", "True")],
    );
    report("events-dlq", &[("ACK.ResourceSynced", "True")]);
    wait_gauge(&metrics, &sample("terminal"), 1.0).await;
    wait_gauge(&metrics, &sample("synced"), 1.0).await;
    wait_gauge(&metrics, &sample("pending"), 0.0).await;
    // Fixed; then one deleted.
    report(
        "events",
        &[("ACK.ResourceSynced", "True"), ("ACK.Terminal", "False")],
    );
    wait_gauge(&metrics, &sample("terminal"), 0.0).await;
    wait_gauge(&metrics, &sample("synced"), 2.0).await;
    cluster.kubectl(&["delete", "queue", "events-dlq"]);
    wait_gauge(&metrics, &sample("synced"), 1.0).await;
}

/// The operator takes the worker's word that an upload started and finished (signed
/// with the peer secret, as the API does): the upload's job is Succeeded within
/// seconds, though without word it would next be read a minute after its creation
/// (the fallback poll), and its reads of S3 are the few the words call for.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn the_operator_takes_the_workers_word_of_an_uploads_progress() {
    const SECRET: &str = "the peers' shared secret, for tests";
    let cluster = Cluster::install(&json!({}));
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let api_config = cluster.kubeconfig("api");
    let (_api, api) = stack.api_with(
        &env,
        &["--kube-tracking"],
        &[("KUBECONFIG", api_config.as_os_str())],
    );
    let (_operator, operator) = cluster.operator(&stack, &env, &["--peer-secret", SECRET]);
    let told = operator.trim_start_matches("http://");
    let (_worker, _) = stack.worker(&env, &["--announce-to", told, "--peer-secret", SECRET]);

    let started = std::time::Instant::now();
    let photo = minilab_tests::photo("photo-small.jpg");
    let id = api.upload_jpeg("photo.jpg", &photo, "thumbnail").await;
    assert_eq!(api.wait_final(&id).await["state"], "succeeded");
    let job = format!("upload-{id}");
    cluster.watch_job(&job, Duration::from_secs(30), |job| {
        job["status"]["phase"] == "Succeeded"
    });
    eprintln!(
        "ticket to Succeeded on the worker's word: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    // Created (the source's HEAD), the start (HEAD, then the manifest's GET), the end
    // (the manifest's GET): at most 4 reads; no poll in between.
    let http = reqwest::Client::new();
    let mut reads = 0.0;
    for operation in ["GetObject", "HeadObject", "ListObjectsV2"] {
        let sample = format!("minilab_operator_s3_requests_total{{operation=\"{operation}\"}}");
        reads += metric(&http, &operator, &sample).await;
    }
    assert!(
        (1.0..=4.0).contains(&reads),
        "{reads} reads of S3 for one upload"
    );
}

/// `minilab api --kube-tracking` as the chart's api ServiceAccount writes
/// `upload-{id}` with the upload's key, buckets, expiry and a TTL; a cluster that
/// refuses (RBAC: the worker's account may not create ImageJobs) or cannot be reached
/// never fails an upload, and each failure is counted.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn tracking_records_each_upload_and_a_failing_cluster_never_fails_one() {
    let cluster = Cluster::install(&json!({}));
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let photo = minilab_tests::photo("photo-small.jpg");
    let tracked = "minilab_api_kube_tracking_total{result=\"ok\"}";
    let failed = "minilab_api_kube_tracking_total{result=\"failed\"}";

    let config = cluster.kubeconfig("api");
    let (_api, api) = stack.api_with(
        &env,
        &["--kube-tracking", "--kube-tracking-ttl", "600"],
        &[("KUBECONFIG", config.as_os_str())],
    );
    let ticket = api.ticket("photo.jpg", "image/jpeg", &photo, "web").await;
    let id = ticket["id"].as_str().unwrap();
    wait_metric(&api.url, tracked, 1.0).await;
    let job = cluster.job(&format!("upload-{id}"));
    assert_eq!(job["metadata"]["labels"]["minilab.dev/origin"], "upload");
    let spec = &job["spec"];
    assert_eq!(spec["recipe"], "web");
    assert_eq!(spec["source"]["bucket"], env.uploads.as_str());
    assert_eq!(spec["source"]["key"], format!("uploads/{id}"));
    assert_eq!(spec["destination"]["bucket"], env.processed.as_str());
    assert_eq!(spec["destination"]["prefix"], format!("{id}/"));
    assert_eq!(spec["ttlSecondsAfterFinished"], 600);
    let time = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let drift = time(&spec["source"]["uploadExpiresAt"]) - time(&ticket["expiresAt"]);
    assert!(drift.num_milliseconds().abs() < 1000, "{drift}");

    // Deleting the upload deletes its ImageJob, as the chart's Role allows the API.
    api.upload(&ticket, photo.clone(), "image/jpeg").await;
    let (_worker, _) = stack.worker(&env, &[]);
    assert_eq!(api.wait_final(id).await["state"], "succeeded");
    let deleted = api.delete_upload(&ticket).await;
    assert_eq!(deleted.status(), 204);
    wait_metric(
        &api.url,
        "minilab_api_kube_tracking_total{result=\"forgotten\"}",
        1.0,
    )
    .await;
    let gone = cluster.try_kubectl(&["get", "imagejob", &format!("upload-{id}")], None);
    assert!(
        !gone.status.success(),
        "the ImageJob of deleted upload {id}"
    );

    // Refused by RBAC: the worker's ServiceAccount may not create ImageJobs.
    let worker_config = cluster.kubeconfig("worker");
    let (_refused, refused) = stack.api_with(
        &env,
        &["--kube-tracking"],
        &[("KUBECONFIG", worker_config.as_os_str())],
    );
    // Unreachable: the same account, at a port nothing listens on.
    let dir = tempfile::tempdir().unwrap();
    let unreachable_config = dir.path().join("unreachable.kubeconfig");
    let mut kubeconfig: Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    kubeconfig["clusters"][0]["cluster"]["server"] = json!("https://127.0.0.1:9");
    std::fs::write(&unreachable_config, kubeconfig.to_string()).unwrap();
    let (_unreachable, unreachable) = stack.api_with(
        &env,
        &["--kube-tracking"],
        &[("KUBECONFIG", unreachable_config.as_os_str())],
    );
    for api in [&refused, &unreachable] {
        let ticket = api.ticket("photo.jpg", "image/jpeg", &photo, "web").await;
        wait_metric(&api.url, failed, 1.0).await;
        assert_eq!(metric(&api.http, &api.url, tracked).await, 0.0);
        api.upload(&ticket, photo.clone(), "image/jpeg").await;
        let id = ticket["id"].as_str().unwrap();
        assert!(
            stack
                .keys(&env.uploads, "uploads/")
                .await
                .contains(&format!("uploads/{id}"))
        );
        let missing = cluster.try_kubectl(&["get", "imagejob", &format!("upload-{id}")], None);
        assert!(!missing.status.success(), "no ImageJob for upload {id}");
    }
}

/// `kubectl patch` of `spec.suspend`, as a user suspends or resumes a job.
fn suspend(cluster: &Cluster, name: &str, on: bool) {
    let patch = json!({"spec": {"suspend": on}}).to_string();
    cluster.kubectl(&["patch", "imagejob", name, "--type=merge", "-p", &patch]);
}

/// `kubectl get` output as rows of whitespace-separated cells.
fn table(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// A batch over 30 photos: suspend stops enqueueing (work already queued finishes),
/// resume continues to 30/30 and Complete, as `kubectl get` and `kubectl wait` show
/// it; jobs that make no sense get InvalidSpec and the watch goes on; a deadline
/// fails a job with DeadlineExceeded; a TTL deletes a finished one.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn batch_jobs_run_suspend_resume_fail_and_expire_as_kubectl_shows() {
    let cluster = Cluster::install(&json!({}));
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let bucket = photos_bucket(&stack, "shoot/", 30).await;
    let (_worker, _) = stack.worker(&env, &[]);
    let (mut operator, operator_metrics) = cluster.operator(&stack, &env, &["--batch-rate", "2"]);
    operator.wait_line("minilab operator ");

    // Accepted by the schema, refused by the operator: the watch goes on.
    let processed = env.processed.as_str();
    cluster
        .apply(&batch_job("sepia", &bucket, "shoot/", processed, "").replace("thumbnail", "sepia"));
    cluster.apply(
        &batch_job("both", &bucket, "shoot/", processed, "").replace(
            "prefix: shoot/}",
            "prefix: shoot/, key: shoot/00-photo-small.jpg}",
        ),
    );
    for name in ["sepia", "both"] {
        cluster.wait_job(name, "condition=Failed", FINISH);
        let job = cluster.job(name);
        assert_eq!(condition(&job, "Failed")["reason"], "InvalidSpec", "{job}");
    }
    assert!(
        condition(&cluster.job("sepia"), "Failed")["message"]
            .as_str()
            .unwrap()
            .contains("unknown recipe \"sepia\"")
    );

    cluster.apply(&batch_job("reshoot", &bucket, "shoot/", processed, ""));
    cluster.watch_job("reshoot", FINISH, |job| {
        job["status"]["enqueued"].as_i64() >= Some(4)
    });
    suspend(&cluster, "reshoot", true);
    cluster.wait_job("reshoot", "condition=Suspended", FINISH);
    let enqueued = cluster.job("reshoot")["status"]["enqueued"]
        .as_i64()
        .unwrap();
    assert!((4..30).contains(&enqueued), "{enqueued}");
    // What was queued finishes; nothing more is enqueued while suspended.
    cluster.wait_job(
        "reshoot",
        &format!("jsonpath={{.status.progress}}={enqueued}/30"),
        FINISH,
    );
    assert_eq!(stack.queue_depth(&env.queue_url).await, 0);
    let job = cluster.job("reshoot");
    assert_eq!(job["status"]["enqueued"], enqueued);
    assert_eq!(job["status"]["phase"], "Running");
    assert_eq!(stack.manifest_count(processed).await, enqueued as usize);

    suspend(&cluster, "reshoot", false);
    cluster.wait_job("reshoot", "condition=Complete", FINISH);
    let job = cluster.job("reshoot");
    assert_eq!(job["status"]["phase"], "Succeeded");
    assert_eq!(
        (
            job["status"]["succeeded"].as_i64(),
            job["status"]["failed"].as_i64()
        ),
        (Some(30), Some(0))
    );
    assert_eq!(condition(&job, "Suspended")["status"], "False");
    assert_eq!(
        stack
            .keys(processed, "batches/reshoot/00-photo-small.jpg/")
            .await,
        [
            "batches/reshoot/00-photo-small.jpg/manifest.json",
            "batches/reshoot/00-photo-small.jpg/square.jpg"
        ]
    );

    let rows = table(&cluster.kubectl(&["get", "imagejobs"]));
    assert_eq!(rows[0], ["NAME", "PHASE", "PROGRESS", "RECIPE", "AGE"]);
    let row = rows.iter().find(|r| r[0] == "reshoot").unwrap();
    assert_eq!(row[1..4], ["Succeeded", "30/30", "thumbnail"]);
    assert!(
        row[4].ends_with('s') || row[4].ends_with('m'),
        "an age: {row:?}"
    );
    let row = rows.iter().find(|r| r[0] == "sepia").unwrap();
    assert_eq!(row[1..4], ["Failed", "0/0", "sepia"]);
    let wide = table(&cluster.kubectl(&["get", "ij", "-o", "wide"]));
    assert_eq!(
        wide[0],
        [
            "NAME", "PHASE", "PROGRESS", "RECIPE", "AGE", "SOURCE", "MESSAGE"
        ]
    );
    let row = wide.iter().find(|r| r[0] == "reshoot").unwrap();
    assert_eq!(
        row[5..],
        [format!("s3://{bucket}/shoot/*")],
        "no message: {row:?}"
    );
    let row = wide.iter().find(|r| r[0] == "both").unwrap();
    assert_eq!(row[6..9], ["spec.source", "needs", "exactly"]);
    let described = cluster.kubectl(&["describe", "imagejob", "reshoot"]);
    let events = &described[described.find("Events:").expect("an Events section")..];
    for reason in ["Running", "Suspended", "Resumed", "Succeeded"] {
        assert!(
            events
                .lines()
                .any(|l| l.contains("Normal") && l.contains(reason)),
            "{reason} in {events}"
        );
    }
    let described = cluster.kubectl(&["describe", "imagejob", "sepia"]);
    assert!(
        described.contains("Warning") && described.contains("InvalidSpec"),
        "{described}"
    );

    // A deadline shorter than the batch (30 items at 2 a second) fails it.
    cluster.apply(&batch_job(
        "late",
        &bucket,
        "shoot/",
        processed,
        "  activeDeadlineSeconds: 2\n",
    ));
    cluster.wait_job("late", "condition=Failed", FINISH);
    let job = cluster.job("late");
    assert_eq!(condition(&job, "Failed")["reason"], "DeadlineExceeded");
    assert!(job["status"]["enqueued"].as_i64().unwrap() < 30, "{job}");

    // A finished job with a TTL is deleted; its images stay.
    cluster.apply(&batch_job(
        "brief",
        &bucket,
        "shoot/0",
        processed,
        "  ttlSecondsAfterFinished: 1\n",
    ));
    let deleted = cluster.try_kubectl(
        &["wait", "--for=delete", "--timeout=180s", "imagejob/brief"],
        None,
    );
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert_eq!(
        stack
            .keys(processed, "batches/brief/")
            .await
            .iter()
            .filter(|k| k.ends_with("manifest.json"))
            .count(),
        10
    );

    let http = reqwest::Client::new();
    for (sample, least) in [
        (
            "minilab_operator_phase_transitions_total{phase=\"Succeeded\"}",
            2.0,
        ),
        ("minilab_operator_ttl_deletions_total", 1.0),
    ] {
        assert!(
            metric(&http, &operator_metrics, sample).await >= least,
            "{sample}"
        );
    }
}

/// Two operator replicas: only the Lease holder reconciles; SIGKILL the holder mid-batch
/// and the other takes over within the Lease's duration (15 s) plus a few seconds and
/// finishes with exact counts; SIGTERM releases the Lease at once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack and a kube-apiserver: ./tests/run starts them and runs this"]
async fn one_replica_leads_and_another_takes_over_when_it_dies() {
    let cluster = Cluster::install(&json!({}));
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    let bucket = photos_bucket(&stack, "shoot/", 30).await;
    let (_worker, _) = stack.worker(&env, &[]);
    let config = cluster.kubeconfig("operator");
    let rate = ["--batch-rate", "2"];
    let (mut first, _) = cluster.operator_as(
        &config,
        &stack,
        &env,
        &[&rate[..], &["--identity", "first"]].concat(),
    );
    first.wait_line("minilab operator first: leading");
    let (mut second, second_metrics) = cluster.operator_as(
        &config,
        &stack,
        &env,
        &[&rate[..], &["--identity", "second"]].concat(),
    );
    assert_eq!(cluster.lease_holder().as_deref(), Some("first"));

    cluster.apply(&batch_job("relay", &bucket, "shoot/", &env.processed, ""));
    cluster.watch_job("relay", FINISH, |job| {
        job["status"]["enqueued"].as_i64() >= Some(6)
    });
    let http = reqwest::Client::new();
    let reconciles = "minilab_operator_reconcile_seconds_count";
    assert_eq!(
        metric(&http, &second_metrics, reconciles).await,
        0.0,
        "a standby never reconciles"
    );

    first.kill();
    let killed = std::time::Instant::now();
    second.wait_line("minilab operator second: leading");
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(15 + 10),
        "took over after {takeover:?}"
    );
    assert_eq!(cluster.lease_holder().as_deref(), Some("second"));
    cluster.wait_job("relay", "condition=Complete", FINISH);
    let job = cluster.job("relay");
    let counts = ["total", "succeeded", "failed", "enqueued"].map(|c| job["status"][c].as_i64());
    assert_eq!(counts, [Some(30), Some(30), Some(0), Some(30)], "{job}");
    assert_eq!(job["status"]["progress"], "30/30");
    assert!(metric(&http, &second_metrics, reconciles).await > 0.0);

    // SIGTERM: the Lease is released on the way out, so a new replica leads at once.
    second.terminate();
    assert!(
        second
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    assert_eq!(cluster.lease_holder(), None);
    let started = std::time::Instant::now();
    let (mut third, _) = cluster.operator_as(&config, &stack, &env, &["--identity", "third"]);
    third.wait_line("minilab operator third: leading");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
