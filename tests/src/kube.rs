//! The real Kubernetes API server: `./tests/run` starts kube-apiserver and etcd
//! (tests/kube/kube.sh) and exports an admin `KUBECONFIG`. Each [`Cluster`] is a
//! fresh namespace holding the chart's CRD, ServiceAccounts and RBAC as the Helm engine
//! renders them; components run as processes with their ServiceAccount's token, so
//! each has exactly the permissions the chart grants.

use crate::Process;
use crate::aws::{Env, Stack};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Who the tests talk to a Kubernetes API server as: an admin's kubeconfig and the
/// kubectl to use with it.
#[derive(Clone)]
pub struct Admin {
    kubectl: String,
    kubeconfig: String,
}

impl Admin {
    /// The API server without a node that `./tests/run` starts (tests/kube/kube.sh):
    /// its kubeconfig in `MINILAB_KUBE_DIR`, the kubectl it found in `KUBECTL`.
    pub fn api_server() -> Admin {
        Admin {
            kubectl: std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()),
            kubeconfig: std::env::var("MINILAB_KUBE_DIR")
                .map(|dir| format!("{dir}/admin.kubeconfig"))
                .expect("MINILAB_KUBE_DIR is not set: run these tests through ./tests/run, which starts kube-apiserver"),
        }
    }

    /// The single-node cluster `./tests/run` starts (tests/kube/node.sh), through its
    /// kubectl that refuses to run while the node's bridge is missing.
    pub fn node() -> Admin {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run these tests through ./tests/run, which starts the node"
                )
            })
        };
        Admin {
            kubectl: var("MINILAB_NODE_KUBECTL"),
            kubeconfig: var("MINILAB_NODE_KUBECONFIG"),
        }
    }

    /// `kubectl` as this admin, to be given its arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }
}

/// The Python that has the Helm engine (`./tests/run` exports `MINILAB_CHART_PYTHON`).
fn chart_python() -> String {
    std::env::var("MINILAB_CHART_PYTHON")
        .expect("MINILAB_CHART_PYTHON is not set: run these tests through ./tests/run")
}

/// Runs one of tests/chart's scripts with the chart's Python (against `kubeconfig`'s
/// cluster when given): its output, or a panic with its errors.
fn chart_script(script: &str, args: &[&str], kubeconfig: Option<&str>) -> Vec<u8> {
    let mut command = Command::new(chart_python());
    command
        .arg(repository().join("tests/chart").join(script))
        .args(args);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let done = command
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        done.status.success(),
        "{script} {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&done.stderr)
    );
    done.stdout
}

/// Cluster-wide objects (CRDs): two tests applying one at once both find it missing
/// and both create it, and one gets AlreadyExists.
static CLUSTER_WIDE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repository() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("..")
}

/// One test's namespace, with the chart's cluster objects installed as release
/// `{namespace}` (so its ServiceAccounts are `{namespace}-api`, `-operator`, ...).
pub struct Cluster {
    pub namespace: String,
    pub admin: Admin,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A fresh, empty namespace.
    pub fn new(admin: Admin) -> Cluster {
        let suffix = minilab_core::UploadId::new(chrono::Utc::now())
            .to_string()
            .to_lowercase();
        let cluster = Cluster {
            namespace: format!("minilab-{}", &suffix[suffix.len() - 10..]),
            admin,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        cluster.kubectl(&["create", "namespace", &cluster.namespace]);
        cluster
    }

    /// A fresh namespace on the API server without a node and the chart's objects
    /// for it, rendered with `values`.
    pub fn install(values: &Value) -> Cluster {
        let cluster = Cluster::new(Admin::api_server());
        let namespace = &cluster.namespace;
        let rendered = chart_script(
            "render.py",
            &[namespace, namespace, &values.to_string()],
            None,
        );
        {
            let _one_at_a_time = CLUSTER_WIDE.lock().unwrap_or_else(|e| e.into_inner());
            cluster.apply(&String::from_utf8(rendered).expect("YAML"));
        }
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/imagejobs.minilab.dev",
        ]);
        cluster
    }

    /// `helm install` or `helm upgrade` of charts/minilab as `release` in this
    /// namespace with `values`, by the real Helm engine (tests/chart/helm.py); returns
    /// the release (its `manifest`, `notes`, ...). Nothing is waited for.
    pub fn helm(&self, action: &str, release: &str, values: &Value) -> Value {
        let args = [action, release, &self.namespace, &values.to_string()];
        let done = chart_script("helm.py", &args, Some(&self.admin.kubeconfig));
        serde_json::from_slice(&done).expect("the release as JSON")
    }

    /// `kubectl ARGS` as the admin in this namespace; bounded, and must succeed.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.try_kubectl(args, None);
        assert!(
            output.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("kubectl output")
    }

    /// `kubectl ARGS` (with `stdin`), whatever its outcome.
    pub fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .admin
            .command()
            .args(["--namespace", &self.namespace, "--request-timeout=30s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting kubectl");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("kubectl stdin");
        drop(input);
        child.wait_with_output().expect("kubectl")
    }

    /// Every CRD of tests/data/crds (cluster-wide, kept) as the tests' 1.20 servers
    /// take them (tests/chart/crds.py), applied server-side, as the chart tests do,
    /// and Established.
    pub fn install_crds(&self) {
        let yaml = String::from_utf8(chart_script("crds.py", &[], None)).expect("YAML");
        let _one_at_a_time = CLUSTER_WIDE.lock().unwrap_or_else(|e| e.into_inner());
        let args = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--validate=false",
            "-f",
            "-",
        ];
        let output = self.try_kubectl(&args, Some(&yaml));
        assert!(
            output.status.success(),
            "kubectl apply of tests/data/crds: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let names = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect::<Vec<_>>();
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        wait.extend(names.iter().map(String::as_str));
        self.kubectl(&wait);
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        let output = self.try_kubectl(&["apply", "-f", "-"], Some(yaml));
        assert!(
            output.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `kubectl wait --for=CONDITION imagejob/NAME`, within `limit`.
    pub fn wait_job(&self, name: &str, condition: &str, limit: Duration) {
        let output = self.try_kubectl(
            &[
                "wait",
                &format!("--for={condition}"),
                &format!("--timeout={}s", limit.as_secs()),
                &format!("imagejob/{name}"),
            ],
            None,
        );
        assert!(
            output.status.success(),
            "imagejob/{name} did not reach {condition} within {limit:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.kubectl(&["get", "imagejob", name, "-o", "yaml"])
        );
    }

    /// Watches the ImageJob (`kubectl get -w`) until `done` holds for it, within
    /// `limit`; returns it then.
    pub fn watch_job(&self, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let mut child = self
            .admin
            .command()
            .args([
                "--namespace",
                &self.namespace,
                "get",
                "imagejob",
                name,
                "--watch",
                "-o",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting kubectl get --watch");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, objects) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for object in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
                if object.map(|o| sender.send(o)).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        let found = loop {
            match objects.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(object) if done(&object) => break Some(object),
                Ok(object) => last = object,
                Err(_) => break None,
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        found.unwrap_or_else(|| {
            panic!("imagejob/{name} never got there within {limit:?}; last seen: {last}")
        })
    }

    /// The ImageJob as JSON.
    pub fn job(&self, name: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", "imagejob", name, "-o", "json"]))
            .expect("ImageJob JSON")
    }

    /// A kubeconfig authenticated as the chart's ServiceAccount for `component`
    /// (`kubectl create token`), its namespace this one.
    pub fn kubeconfig(&self, component: &str) -> PathBuf {
        let account = format!("{}-{component}", self.namespace);
        let token = self.kubectl(&["create", "token", &account, "--duration=2h"]);
        let admin: Value =
            serde_json::from_str(&self.kubectl(&["config", "view", "--raw", "-o", "json"]))
                .expect("kubeconfig JSON");
        let cluster = &admin["clusters"][0]["cluster"];
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": token.trim()}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": account, "namespace": self.namespace}}],
            "current-context": "test",
        });
        let path = self.dir.path().join(format!("{component}.kubeconfig"));
        std::fs::write(&path, config.to_string()).expect("writing a kubeconfig");
        path
    }

    /// `minilab operator` as the chart's operator ServiceAccount, watching this
    /// namespace, with its Lease in it; returns it with its metrics URL.
    pub fn operator(&self, stack: &Stack, env: &Env, extra: &[&str]) -> (Process, String) {
        self.operator_as(&self.kubeconfig("operator"), stack, env, extra)
    }

    /// Like [`Cluster::operator`], with a kubeconfig made already (replicas share one).
    pub fn operator_as(
        &self,
        kubeconfig: &Path,
        stack: &Stack,
        env: &Env,
        extra: &[&str],
    ) -> (Process, String) {
        let process = Process::start(
            stack
                .command("operator", env)
                .env("KUBECONFIG", kubeconfig)
                .args(["--watch-namespace", &self.namespace])
                .args(["--queue-url", &env.queue_url])
                .args(["--metrics-listen", "127.0.0.1:0"])
                .args(extra),
            "minilab operator ",
        );
        let metrics = process
            .ready_line
            .split("metrics on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .expect("the operator's metrics address")
            .to_owned();
        (process, metrics)
    }

    /// The holder of the operator's Lease, if any.
    pub fn lease_holder(&self) -> Option<String> {
        let holder = self.kubectl(&[
            "get",
            "lease",
            "minilab-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        Some(holder).filter(|h| !h.is_empty())
    }
}

impl Drop for Cluster {
    /// Best effort: without kube-controller-manager (the API server without a node)
    /// the namespace's objects stay in etcd, but the test server is thrown away after
    /// the run.
    fn drop(&mut self) {
        let _ = self
            .admin
            .command()
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The API server process `./tests/run` started (tests/kube/kube.sh), to stop and
/// start again.
pub struct ApiServer {
    dir: PathBuf,
}

impl ApiServer {
    pub fn from_env() -> ApiServer {
        let dir = std::env::var("MINILAB_KUBE_DIR")
            .expect("MINILAB_KUBE_DIR is not set: run these tests through ./tests/run");
        ApiServer { dir: dir.into() }
    }

    fn pid(&self) -> String {
        std::fs::read_to_string(self.dir.join("apiserver.pid"))
            .expect("apiserver.pid")
            .trim()
            .to_owned()
    }

    fn ready(&self) -> bool {
        Admin::api_server()
            .command()
            .args(["get", "--raw", "/readyz", "--request-timeout=2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGKILL (a crash: a graceful stop waits for open watches), then waits (at most
    /// 30 s) for the process to be gone.
    pub fn stop(&self) {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(Instant::now() < deadline, "kube-apiserver did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again with the same flags and waits (at most 60 s) until it is ready.
    pub fn start(&self) {
        // setsid --fork: the server is nobody's child here, so it outlives this test
        // and `./tests/run` stops it through apiserver.pid.
        let started = Command::new("setsid")
            .arg("--fork")
            .arg(self.dir.join("run-apiserver"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("starting kube-apiserver");
        assert!(started.success(), "setsid run-apiserver: {started}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "kube-apiserver did not come back"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Puts `count` real photos under `prefix` in a bucket of their own (no event
/// notifications: only the operator's work items reach the workers); returns it.
pub async fn photos_bucket(stack: &Stack, prefix: &str, count: usize) -> String {
    let bucket = format!("src-{}", minilab_core::UploadId::new(chrono::Utc::now()));
    stack.create_bucket(&bucket).await;
    let photos = [
        "photo-small.jpg",
        "photo-alpha.png",
        "photo-exif-rotate6.jpg",
    ];
    for i in 0..count {
        let name = photos[i % photos.len()];
        stack
            .s3
            .put_object()
            .bucket(&bucket)
            .key(format!("{prefix}{i:02}-{name}"))
            .body(crate::photo(name).into())
            .send()
            .await
            .expect("putting a photo");
    }
    bucket
}

/// A batch ImageJob `name` over `bucket`/`prefix` with the `thumbnail` recipe, its
/// outputs under `batches/{name}/` of `processed`; `extra` is more YAML for it.
pub fn batch_job(name: &str, bucket: &str, prefix: &str, processed: &str, extra: &str) -> String {
    format!(
        "apiVersion: minilab.dev/v1alpha1
kind: ImageJob
metadata: {{name: {name}}}
spec:
  source: {{bucket: {bucket}, prefix: {prefix}}}
  recipe: thumbnail
  destination: {{bucket: {processed}, prefix: batches/{name}/}}
{extra}"
    )
}

/// An ImageJob `name` that reprocesses the uploads of `uploads` under `prefix` with
/// `recipe`, back into `processed`.
pub fn reprocess_job(
    name: &str,
    uploads: &str,
    prefix: &str,
    recipe: &str,
    processed: &str,
) -> String {
    format!(
        "apiVersion: minilab.dev/v1alpha1
kind: ImageJob
metadata: {{name: {name}}}
spec:
  source: {{bucket: {uploads}, prefix: {prefix}}}
  recipe: {recipe}
  destination: {{bucket: {processed}}}
  reprocess: true
"
    )
}
