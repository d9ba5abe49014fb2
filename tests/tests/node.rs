//! The chart as pods on a real single-node Kubernetes (tests/kube/node.sh, started by
//! ./tests/run): `helm install` of charts/minilab by the real Helm engine, unmodified,
//! with the image tests/kube/node/image.py builds from the Dockerfile's runtime stage,
//! and LocalStack for S3 and SQS (the pods reach it on the node's bridge). What a
//! user's first install on a cluster meets: the image, its user and file system, the
//! probes, the environment, ServiceAccount tokens, Services and cluster DNS.
//!
//! The tests share one release (the node has 2 cores) and take turns.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::Api;
use minilab_tests::ack::Controllers;
use minilab_tests::aws::{Env, EnvOptions, Stack};
use minilab_tests::kube::{Admin, Cluster, batch_job, photos_bucket};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard, OnceCell};

const RELEASE: &str = "demo";
const COMPONENTS: [&str; 3] = ["api", "worker", "operator"];

/// The release every test uses, installed by the first test to need it.
struct Release {
    cluster: Cluster,
    env: Env,
    /// The API's Service, as the host reaches it (its ClusterIP, through kube-proxy).
    api_url: String,
}

static RELEASE_ONCE: OnceCell<Release> = OnceCell::const_new();
static TURNS: Mutex<()> = Mutex::const_new(());

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run these tests through ./tests/run, which starts the node")
    })
}

/// The image ./tests/run imported into the node's containerd (never pulled: no
/// registry is reachable).
fn node_image() -> Value {
    let (repository, tag) = var("MINILAB_NODE_IMAGE")
        .rsplit_once(':')
        .map(|(r, t)| (r.to_owned(), t.to_owned()))
        .unwrap();
    json!({"repository": repository, "tag": tag, "pullPolicy": "Never"})
}

/// LocalStack as the pods reach it, through `extraEnv`: its endpoint, path-style
/// addressing, and `access_key` (LocalStack's account when it is 12 digits).
fn localstack_env(access_key: &str) -> Value {
    json!([
        {"name": "AWS_ENDPOINT_URL", "value": var("MINILAB_NODE_LOCALSTACK_URL")},
        {"name": "MINILAB_S3_PATH_STYLE", "value": "true"},
        {"name": "AWS_ACCESS_KEY_ID", "value": access_key},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "test"},
    ])
}

/// Values for LocalStack as the pods reach it (credentials from extraEnv: no IAM
/// roles), the queue at that address, the node's image. Everything else is the
/// chart's defaults, but for a smaller worker CPU request (the node has 2 cores).
fn values(env: &Env) -> Value {
    let endpoint = var("MINILAB_NODE_LOCALSTACK_URL");
    let queue_path = env.queue_url.splitn(4, '/').nth(3).unwrap();
    json!({
        "image": node_image(),
        "region": minilab_tests::aws::REGION,
        "buckets": {"uploads": env.uploads, "processed": env.processed},
        "queueUrl": format!("{endpoint}/{queue_path}"),
        "awsIdentity": "none",
        "extraEnv": localstack_env("test"),
        "worker": {"resources": {"requests": {"cpu": "500m"}}},
        // Batches trickle in (2 items a second), so faults land mid-batch.
        "operator": {"batchRate": 2},
        // The chart's own shutdown delay (15 s): with 3 s, kube-proxy on this loaded
        // node still sent new connections to a pod that had stopped listening, and the
        // rolling restart refused a request. One test client uploads without pause:
        // no per-client limits.
        "api": {"rateLimits": {"ticketsPerMinute": 0, "readsPerMinute": 0}},
    })
}

/// Longest one test may hold its turn (the install included): past it the test
/// process ends with a report instead of waiting on the cluster for ever.
const TURN_LIMIT: Duration = Duration::from_secs(480);

/// This test's turn on the node, bounded by [`TURN_LIMIT`].
struct Turn {
    _turn: MutexGuard<'static, ()>,
    _watchdog: minilab_tests::Watchdog,
}

/// The shared release (installed once, all its pods ready) and this test's turn.
async fn release() -> (&'static Release, Turn) {
    let turn = Turn {
        _turn: TURNS.lock().await,
        // libtest names each test's thread after the test.
        _watchdog: minilab_tests::Watchdog::arm(
            TURN_LIMIT,
            std::thread::current()
                .name()
                .unwrap_or("a test on the node")
                .to_owned(),
        ),
    };
    let release = RELEASE_ONCE
        .get_or_init(|| async {
            let stack = Stack::connect().await;
            let env = stack.env(EnvOptions::default()).await;
            let cluster = Cluster::new(Admin::node());
            // The chart installs the CRD and keeps it; one kept by an earlier run on
            // this node (`tests/kube/up --node`) belongs to another release.
            cluster.kubectl(&[
                "delete",
                "crd",
                "imagejobs.minilab.dev",
                "--ignore-not-found",
            ]);
            let started = Instant::now();
            cluster.helm("install", RELEASE, &values(&env));
            for component in COMPONENTS {
                rollout_status(&cluster, component);
            }
            eprintln!(
                "helm install to every pod ready: {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Release {
                api_url: api_url(&cluster, RELEASE),
                cluster,
                env,
            }
        })
        .await;
    (release, turn)
}

/// `kubectl rollout status` of a component's Deployment, within 3 minutes.
fn rollout_status(cluster: &Cluster, component: &str) {
    rollout_status_of(cluster, RELEASE, component);
}

/// `kubectl rollout status` of a release's component, within 3 minutes.
fn rollout_status_of(cluster: &Cluster, release: &str, component: &str) {
    cluster.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{release}-minilab-{component}"),
        "--timeout=180s",
    ]);
}

/// The API's Service of a release, as the host reaches it (its ClusterIP, through
/// kube-proxy).
fn api_url(cluster: &Cluster, release: &str) -> String {
    let ip = cluster.kubectl(&[
        "get",
        "service",
        &format!("{release}-minilab-api"),
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    format!("http://{}", ip.trim())
}

/// The name of the component's first pod.
fn pod_name(cluster: &Cluster, component: &str) -> String {
    pods(cluster, component)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A batch of `count` photos under a prefix of its own, watched until it finishes;
/// `during` runs once `fault_at` items are done. Returns the finished job.
async fn batch_with_fault(
    release: &Release,
    name: &str,
    count: usize,
    fault_at: u64,
    during: impl FnOnce(),
) -> Value {
    let stack = Stack::connect().await;
    let bucket = photos_bucket(&stack, &format!("{name}/"), count).await;
    let cluster = &release.cluster;
    cluster.apply(&batch_job(
        name,
        &bucket,
        &format!("{name}/"),
        &release.env.processed,
        "",
    ));
    cluster.watch_job(name, Duration::from_secs(120), |job| {
        job["status"]["succeeded"].as_u64().unwrap_or(0) >= fault_at
    });
    during();
    let job = cluster.watch_job(name, Duration::from_secs(300), |job| {
        matches!(
            job["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
    });
    assert_eq!(job["status"]["phase"], "Succeeded", "{job}");
    assert_eq!(
        job["status"]["progress"],
        format!("{count}/{count}"),
        "{job}"
    );
    assert_eq!(job["status"]["succeeded"], count, "{job}");
    assert_eq!(job["status"]["failed"], 0, "{job}");
    let manifests = stack
        .keys(&release.env.processed, &format!("batches/{name}/"))
        .await
        .into_iter()
        .filter(|key| key.ends_with("/manifest.json"))
        .count();
    assert_eq!(manifests, count);
    job
}

/// The component's pods as JSON objects.
fn pods(cluster: &Cluster, component: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(&cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/component={component}"),
        "-o",
        "json",
    ]))
    .unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Every pod of the release Ready, none restarted: each component took every
/// variable and flag the chart sets (a refused one exits and crash-loops) and
/// answered its probes on the port the chart names.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn every_pod_of_the_chart_starts_ready_and_stays_up() {
    let (release, _turn) = release().await;
    for component in COMPONENTS {
        let pods = pods(&release.cluster, component);
        assert!(!pods.is_empty(), "no {component} pod");
        for pod in pods {
            let name = pod["metadata"]["name"].as_str().unwrap();
            let ready = pod["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            assert!(ready, "{name} is not Ready: {}", pod["status"]);
            let container = &pod["status"]["containerStatuses"][0];
            assert_eq!(
                container["restartCount"], 0,
                "{name} restarted: {container}"
            );
        }
    }
}

/// The pods run as the chart says: as user 65532, on a read-only root file system
/// (nothing may be written outside what the chart mounts), with no capabilities.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn pods_run_non_root_on_a_read_only_root_file_system() {
    let (release, _turn) = release().await;
    for component in COMPONENTS {
        let pod = pods(&release.cluster, component)[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let exec = |script: &str| {
            release
                .cluster
                .try_kubectl(&["exec", &pod, "--", "/bin/sh", "-c", script], None)
        };
        let ids = exec("id -u; id -g; grep CapEff /proc/self/status");
        let ids = String::from_utf8(ids.stdout).unwrap();
        let lines: Vec<&str> = ids.lines().collect();
        assert_eq!(lines[..2], ["65532", "65532"], "{component}: {ids}");
        assert_eq!(
            lines[2].split_whitespace().nth(1),
            Some("0000000000000000"),
            "{component}: {ids}"
        );
        for path in ["/probe", "/tmp/probe", "/usr/local/bin/probe"] {
            let written = exec(&format!("echo x > {path}"));
            assert!(!written.status.success(), "{component} could write {path}");
            assert!(
                String::from_utf8_lossy(&written.stderr).contains("Read-only file system"),
                "{component} writing {path}: {}",
                String::from_utf8_lossy(&written.stderr)
            );
        }
    }
}

/// A photo uploaded through the API's Service reaches a worker pod (S3 event, SQS)
/// and its outputs come back; the API pod recorded it as an ImageJob, which the
/// operator pod brings to Succeeded, as `kubectl get ij` shows.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn an_upload_through_the_api_service_is_processed_by_a_worker_pod() {
    let (release, _turn) = release().await;
    let api = Api::new(release.api_url.clone());
    let started = Instant::now();
    let photo = minilab_tests::photo("photo-small.jpg");
    let id = api.upload_jpeg("photo.jpg", &photo, "thumbnail").await;
    let status = api.wait_final(&id).await;
    eprintln!(
        "upload to final status through the pods: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status["state"], "succeeded", "{status}");
    let outputs = api.download_outputs(&status).await;
    assert!(!outputs.is_empty());
    for (name, bytes) in outputs {
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert!(decoded.width() > 0, "{name}");
    }
    let logs = release.cluster.kubectl(&[
        "logs",
        "-l",
        "app.kubernetes.io/component=worker",
        "--tail=-1",
    ]);
    assert!(logs.contains(&id), "no worker pod logged {id}:\n{logs}");

    let job = format!("upload-{id}");
    release
        .cluster
        .watch_job(&job, Duration::from_secs(120), |job| {
            job["status"]["phase"] == "Succeeded"
        });
    let table = release.cluster.kubectl(&["get", "ij", &job]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], [job.as_str(), "Succeeded", "1/1"], "{table}");
}

/// A batch ImageJob over 30 photos: the operator pod enqueues them, worker pods
/// process them, and the job counts 30/30.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn a_batch_of_30_photos_reaches_30_of_30_through_worker_pods() {
    let (release, _turn) = release().await;
    let stack = Stack::connect().await;
    let bucket = photos_bucket(&stack, "shoot/", 30).await;
    release.cluster.apply(&batch_job(
        "shoot",
        &bucket,
        "shoot/",
        &release.env.processed,
        "",
    ));
    let job = release
        .cluster
        .watch_job("shoot", Duration::from_secs(300), |job| {
            job["status"]["phase"] == "Succeeded"
        });
    assert_eq!(job["status"]["progress"], "30/30", "{job}");
    assert_eq!(job["status"]["succeeded"], 30, "{job}");
    assert_eq!(job["status"]["failed"], 0, "{job}");
    let manifests = stack
        .keys(&release.env.processed, "batches/shoot/")
        .await
        .into_iter()
        .filter(|key| key.ends_with("/manifest.json"))
        .count();
    assert_eq!(manifests, 30);
}

/// A worker pod deleted mid-batch (SIGTERM: it drains, or hands its messages back)
/// loses nothing: its replacement finishes the batch, 30/30.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn a_worker_pod_deleted_mid_batch_loses_no_image() {
    let (release, _turn) = release().await;
    let cluster = &release.cluster;
    let worker = pod_name(cluster, "worker");
    batch_with_fault(release, "worker-gone", 30, 5, || {
        cluster.kubectl(&["delete", "pod", &worker, "--wait=false"]);
    })
    .await;
    rollout_status(cluster, "worker");
    // The deleted pod drains, then goes (a Terminating pod still lists for a while).
    cluster.kubectl(&[
        "wait",
        "--for=delete",
        &format!("pod/{worker}"),
        "--timeout=120s",
    ]);
}

/// The operator pod holding the Lease deleted mid-batch: the other replica takes the
/// Lease and finishes the batch with exact counts.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn the_other_operator_finishes_the_batch_when_the_leader_goes() {
    let (release, _turn) = release().await;
    let cluster = &release.cluster;
    let holder = || {
        cluster
            .kubectl(&[
                "get",
                "lease",
                "minilab-operator",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .trim()
            .to_owned()
    };
    let leader = holder();
    assert!(
        pods(cluster, "operator")
            .iter()
            .any(|p| p["metadata"]["name"] == leader.as_str()),
        "{leader}"
    );
    batch_with_fault(release, "leader-gone", 30, 5, || {
        cluster.kubectl(&["delete", "pod", &leader, "--wait=false"]);
    })
    .await;
    let successor = holder();
    assert_ne!(successor, leader);
    assert!(
        pods(cluster, "operator")
            .iter()
            .any(|p| p["metadata"]["name"] == successor.as_str())
    );
    rollout_status(cluster, "operator");
}

/// `kubectl rollout restart` of the API while a client uploads without pause: every
/// request answers (readiness turns 503 at SIGTERM, the pod serves on through the
/// shutdown delay while kube-proxy takes it out, closing each connection after its
/// answer), and every upload succeeds.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn a_rolling_restart_of_the_api_fails_no_request() {
    let (release, _turn) = release().await;
    let cluster = &release.cluster;
    let api = Api::new(release.api_url.clone());
    let photo = minilab_tests::photo("photo-small.jpg");
    let started = Instant::now();
    let step = |what: &str| {
        eprintln!(
            "rolling restart +{:.1} s: {what}",
            started.elapsed().as_secs_f64()
        )
    };
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    let (count, mut uploads) = tokio::sync::watch::channel(0usize);
    let client = {
        let (api, done, finished) = (api.clone(), done.clone(), finished.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while !done.load(Ordering::SeqCst) {
                ids.push(api.upload_jpeg("photo.jpg", &photo, "thumbnail").await);
                count.send_replace(ids.len());
            }
            for id in &ids {
                let status = api.wait_final(id).await;
                assert_eq!(status["state"], "succeeded", "{status}");
                finished.fetch_add(1, Ordering::SeqCst);
            }
            ids.len()
        })
    };
    let before = pods(cluster, "api");
    cluster.kubectl(&[
        "rollout",
        "restart",
        &format!("deployment/{RELEASE}-minilab-api"),
    ]);
    rollout_status(cluster, "api");
    step("new API pods ready");
    // Until the old pods are gone, not only the new ones ready.
    let old: Vec<&str> = before
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    for name in &old {
        cluster.kubectl(&[
            "wait",
            "--for=delete",
            &format!("pod/{name}"),
            "--timeout=120s",
        ]);
    }
    let during = *uploads.borrow();
    step(&format!("old API pods gone; {during} uploads so far"));
    // A few more through the new pods only (a failed request ends the client: then
    // its panic is the report).
    let more = tokio::time::timeout(
        Duration::from_secs(60),
        uploads.wait_for(|&n| n >= during + 3),
    )
    .await
    .is_ok_and(|seen| seen.is_ok());
    done.store(true, Ordering::SeqCst);
    step("client told to stop");
    let total = tokio::time::timeout(Duration::from_secs(240), client)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the client still runs after 240 s: {} of {} uploads seen final",
                finished.load(Ordering::SeqCst),
                *uploads.borrow()
            )
        })
        .expect("every request answered and every upload succeeded");
    step("every upload final");
    assert!(more, "three more uploads through the new pods within 60 s");
    eprintln!("uploads through a rolling restart of the API: {total}, none failed");
    assert!(during >= 10, "only {during} uploads during the restart");
}

/// `kubectl drain` of the node (every pod evicted or deleted; one node, so nothing
/// can go elsewhere) and `uncordon`: every Deployment comes back and an upload goes
/// through again.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn after_drain_and_uncordon_everything_comes_back() {
    let (release, _turn) = release().await;
    let cluster = &release.cluster;
    let node = cluster.kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    // The PDBs allow one pod of each Deployment down at a time and the pods have no
    // other node to go to: eviction would wait for ever, so drain deletes.
    cluster.kubectl(&[
        "drain",
        node.trim(),
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--disable-eviction",
        "--timeout=120s",
    ]);
    for component in COMPONENTS {
        assert!(
            pods(cluster, component)
                .iter()
                .all(|p| p["status"]["phase"] != "Running"
                    || p["metadata"]["deletionTimestamp"].is_string()),
            "{component} still runs on a drained node"
        );
    }
    cluster.kubectl(&["uncordon", node.trim()]);
    for component in COMPONENTS {
        rollout_status(cluster, component);
    }
    let api = Api::new(release.api_url.clone());
    let id = api
        .upload_jpeg(
            "photo.jpg",
            &minilab_tests::photo("photo-small.jpg"),
            "thumbnail",
        )
        .await;
    assert_eq!(api.wait_final(&id).await["state"], "succeeded");
}

/// `layer` merged into `base`, objects key by key (as Helm merges values files).
fn merged(mut base: Value, layer: Value) -> Value {
    match (&mut base, layer) {
        (Value::Object(base), Value::Object(layer)) => {
            for (key, value) in layer {
                let merged_value = merged(base.remove(&key).unwrap_or(Value::Null), value);
                base.insert(key, merged_value);
            }
        }
        (base, layer) => *base = layer,
    }
    base
}

/// The README's photos.yaml, as written there.
fn readme_photos_yaml() -> Value {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.starts_with("# photos.yaml"))
        .expect("the README's photos.yaml");
    serde_yaml::from_str(block).unwrap()
}

/// The README's "Deploy on EKS" as written, as pods: its photos.yaml, `helm
/// install`, then the `kubectl wait` and `helm upgrade` NOTES.txt names after each
/// step until it names none, with the ACK controllers played against LocalStack
/// (tests/src/ack.rs: the buckets, queues and S3 notification made from the chart's
/// specs); the publish hook puts the page in the site bucket, and a photo uploaded
/// through the API's Service is processed by the worker pod and listed by `kubectl
/// get imagejobs` as Succeeded 1/1 with its recipe, as the README shows. Added to the
/// values: the node's image, LocalStack's address and an access key naming the
/// README's account, a smaller worker CPU request (2 cores), and the ImageJob CRD
/// left to the shared release, which owns it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the node: ./tests/run starts it and runs this"]
async fn the_readmes_install_steps_run_as_pods() {
    let (_shared, _turn) = release().await;
    let release = "photos";
    let cluster = Arc::new(Cluster::new(Admin::node()));
    cluster.install_crds();
    let photos = readme_photos_yaml();
    let account = photos["ack"]["accountId"].as_str().unwrap().to_owned();
    let region = photos["region"].as_str().unwrap().to_owned();
    let values = merged(
        photos.clone(),
        json!({
            "image": node_image(),
            "crds": {"install": false},
            "extraEnv": localstack_env(&account),
            "worker": {"resources": {"requests": {"cpu": "250m"}}},
        }),
    );
    let localstack = minilab_tests::aws::localstack_url();
    let mut controllers = Controllers::new(&localstack, &account, &region).await;
    let stop = Arc::new(AtomicBool::new(false));
    let played = tokio::spawn({
        let (cluster, stop) = (cluster.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                controllers.reconcile(&cluster).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });

    let mut action = "install";
    for step in 1.. {
        let started = Instant::now();
        let done = tokio::task::spawn_blocking({
            let (cluster, values) = (cluster.clone(), values.clone());
            move || cluster.helm(action, release, &values)
        })
        .await
        .unwrap();
        let notes = done["notes"].as_str().unwrap_or_default().to_owned();
        eprintln!(
            "helm {action} (step {step}): {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // What AWS is making, waited for as the notes say (the last step's notes
        // name the distribution and the DNS records).
        let wait = notes
            .lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix("kubectl wait --for=condition=ACK.ResourceSynced")
            })
            .unwrap_or_else(|| panic!("no kubectl wait in the notes:\n{notes}"));
        let mut command = vec!["wait", "--for=condition=ACK.ResourceSynced"];
        command.extend(wait.split_whitespace());
        cluster.kubectl(&command);
        if !notes.contains("NEXT") {
            assert!(
                notes.contains("The site: https://photos.example.com"),
                "{notes}"
            );
            break;
        }
        assert!(step < 3, "still a next step after {step}:\n{notes}");
        let upgrade = format!(
            "helm upgrade {release} CHART -n {} -f VALUES.yaml",
            cluster.namespace
        );
        assert!(notes.contains(&upgrade), "{notes}");
        action = "upgrade";
    }
    for component in COMPONENTS {
        rollout_status_of(&cluster, release, component);
    }
    let site = Controllers::new(&localstack, &account, &region).await;
    let bucket = photos["buckets"]["site"].as_str().unwrap();
    assert!(
        site.has_object(bucket, "index.html").await,
        "the page in {bucket}"
    );

    let api = Api::new(api_url(&cluster, release));
    let id = api
        .upload_jpeg("photo.jpg", &minilab_tests::photo("photo-small.jpg"), "web")
        .await;
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let job = format!("upload-{id}");
    cluster.watch_job(&job, Duration::from_secs(120), |job| {
        job["status"]["phase"] == "Succeeded"
    });
    // As the README shows it: NAME PHASE PROGRESS RECIPE AGE.
    let table = cluster.kubectl(&["get", "imagejobs"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        [job.as_str(), "Succeeded", "1/1", "web"],
        "{table}"
    );

    stop.store(true, Ordering::Relaxed);
    played.await.unwrap();
    // Dropping the cluster deletes its namespace: the release and what it kept.
}
