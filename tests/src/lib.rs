//! Test harness: real `minilab` processes on free loopback ports, driven over HTTP.
//! [`Lab`] is a `minilab up`; [`aws`] sets up LocalStack resources and runs
//! `minilab api` and `minilab worker` against them.

pub mod ack;
pub mod aws;
pub mod kube;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a process may take to print that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest an upload may take to reach a final state.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(120);

/// The `minilab` binary: `MINILAB_BIN`, or the one built beside this test.
pub fn minilab_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MINILAB_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("minilab");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p minilab` first (./tests/run does)",
        bin.display()
    );
    bin
}

/// The path of a test photo: `$MINILAB_IMAGES` if set, else the repository's own
/// `tests/data/images`.
pub fn photo_path(name: &str) -> PathBuf {
    std::env::var_os("MINILAB_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../tests/data/images")
        })
        .join(name)
}

/// A test photo.
pub fn photo(name: &str) -> Vec<u8> {
    let path = photo_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A running `minilab` process; killed when dropped.
pub struct Process {
    child: Child,
    /// The first stdout line that started with the awaited prefix, without it.
    pub ready_line: String,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `minilab ARGS` and waits for a stdout line starting with `ready`.
    pub fn start(command: &mut Command, ready: &str) -> Process {
        Self::start_logging_to(command, ready, Stdio::inherit())
    }

    /// [`Process::start`], with the logs (stderr) going to `logs`.
    pub fn start_logging_to(command: &mut Command, ready: &str, logs: Stdio) -> Process {
        let mut child = command
            .env(
                "MINILAB_LOG",
                std::env::var("MINILAB_TEST_LOG").unwrap_or_else(|_| "warn,s3s=off".into()),
            )
            .stdout(Stdio::piped())
            .stderr(logs)
            .spawn()
            .expect("starting minilab");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Process {
            child,
            ready_line: String::new(),
            lines,
        };
        process.ready_line = process.wait_line(ready);
        process
    }

    /// Waits (bounded) for the next stdout line starting with `prefix`.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(_) => panic!("minilab did not print {prefix:?} within {START_TIMEOUT:?}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or an evicted pod.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as Kubernetes stops a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `minilab up`.
pub struct Lab {
    process: Process,
    pub client: Api,
    pub s3: String,
    pub data_dir: PathBuf,
}

impl std::ops::Deref for Lab {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.client
    }
}

impl Lab {
    /// Starts `minilab up` on free ports in `data_dir`, with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Lab {
        let mut process = Process::start(
            Command::new(minilab_bin())
                .arg("up")
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--s3-listen",
                    "127.0.0.1:0",
                    "--data-dir",
                ])
                .arg(data_dir)
                .args(extra),
            "minilab is up: open ",
        );
        let api = process.ready_line.trim_end_matches('/').to_owned();
        let s3 = process.wait_line("S3-compatible store: ");
        Lab {
            process,
            client: Api::new(api),
            s3: s3.split_whitespace().next().expect("store URL").to_owned(),
            data_dir: data_dir.to_owned(),
        }
    }

    /// Stops the process at once, as a crash or `kill -9` would.
    pub fn kill(self) {
        self.process.kill();
    }
}

/// An open stream of Server-Sent Events.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The next event's name and JSON data (comments skipped); `None` when the
    /// server ended the stream. Bounded by the client's timeout.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).expect("JSON data")));
            }
            let chunk = self.response.chunk().await.expect("reading events")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

/// A client of minilab's HTTP API (and of the store it hands out URLs for).
#[derive(Clone)]
pub struct Api {
    /// The API's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub http: reqwest::Client,
}

impl Api {
    /// `GET {url}{path}`, which must answer 2xx, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    /// `GET {url}{path}`, whatever it answers.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET")
    }

    pub fn new(url: String) -> Api {
        Self::client(url, reqwest::Client::builder())
    }

    /// The same API as another client: requests from 127.0.0.2, so the per-address
    /// limits count them apart.
    pub fn from_another_address(&self) -> Api {
        let builder =
            reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2]));
        Self::client(self.url.clone(), builder)
    }

    /// The same API as a signed-in client: every request carries `token` as its bearer.
    pub fn signed_in(&self, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Self::client(
            self.url.clone(),
            reqwest::Client::builder().default_headers(headers),
        )
    }

    fn client(url: String, builder: reqwest::ClientBuilder) -> Api {
        Api {
            url,
            http: builder
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    /// `GET /api/v1/recipes`: the recipes, the limits and the accepted types.
    pub async fn recipes(&self) -> Value {
        self.http
            .get(format!("{}/api/v1/recipes", self.url))
            .send()
            .await
            .expect("GET /api/v1/recipes")
            .json()
            .await
            .expect("a JSON body")
    }

    /// `POST /api/v1/uploads`; returns the status and the JSON body.
    pub async fn create_upload(
        &self,
        filename: &str,
        content_type: &str,
        size: usize,
        recipe: &str,
    ) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/uploads", self.url))
            .json(&json!({ "filename": filename, "contentType": content_type, "size": size, "recipe": recipe }))
            .send()
            .await
            .expect("POST /api/v1/uploads");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// A ticket for `bytes`, or a panic with the API's answer.
    pub async fn ticket(
        &self,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
        recipe: &str,
    ) -> Value {
        let (status, body) = self
            .create_upload(filename, content_type, bytes.len(), recipe)
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// POSTs `bytes` with the ticket's fields (as a browser form would) to the store.
    pub async fn post_form(
        &self,
        url: &str,
        fields: &serde_json::Map<String, Value>,
        bytes: Vec<u8>,
        file_type: &str,
    ) -> (u16, String) {
        self.try_post_form(url, fields, bytes, file_type)
            .await
            .expect("POST to the store")
    }

    /// Like [`Api::post_form`], but a connection the store closed while the body was
    /// still being sent (as S3 may do when it refuses an upload early) is an `Err`.
    pub async fn try_post_form(
        &self,
        url: &str,
        fields: &serde_json::Map<String, Value>,
        bytes: Vec<u8>,
        file_type: &str,
    ) -> Result<(u16, String), reqwest::Error> {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(
                name.clone(),
                value.as_str().expect("string field").to_owned(),
            );
        }
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name("upload")
            .mime_str(file_type)
            .expect("mime");
        form = form.part("file", part);
        let response = self.http.post(url).multipart(form).send().await?;
        Ok((
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        ))
    }

    /// Uploads `bytes` with the ticket, expecting the store to accept them.
    pub async fn upload(&self, ticket: &Value, bytes: Vec<u8>, file_type: &str) {
        let (status, body) = self
            .post_form(
                ticket["upload"]["url"].as_str().expect("url"),
                ticket["upload"]["fields"].as_object().expect("fields"),
                bytes,
                file_type,
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "the store refused the upload: {status} {body}"
        );
    }

    /// A ticket for a JPEG, uploaded; returns the upload id.
    pub async fn upload_jpeg(&self, name: &str, bytes: &[u8], recipe: &str) -> String {
        let ticket = self.ticket(name, "image/jpeg", bytes, recipe).await;
        self.upload(&ticket, bytes.to_vec(), "image/jpeg").await;
        ticket["id"].as_str().expect("id").to_owned()
    }

    /// `DELETE /api/v1/uploads/{id}` with the ticket's delete token.
    pub async fn delete_upload(&self, ticket: &Value) -> reqwest::Response {
        self.http
            .delete(format!(
                "{}/api/v1/uploads/{}",
                self.url,
                ticket["id"].as_str().expect("id")
            ))
            .header(
                "x-delete-token",
                ticket["deleteToken"].as_str().expect("deleteToken"),
            )
            .send()
            .await
            .expect("DELETE the upload")
    }

    /// `GET /api/v1/uploads/{id}`.
    pub async fn status(&self, id: &str, wait: u64) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/uploads/{id}?wait={wait}", self.url))
            .send()
            .await
            .expect("GET status");
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON status")
    }

    /// `GET /api/v1/uploads/{id}/events`, opened; read it with [`Events::next`].
    pub async fn events(&self, id: &str) -> Events {
        let response = self
            .http
            .get(format!("{}/api/v1/uploads/{id}/events", self.url))
            .send()
            .await
            .expect("GET events");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().ok(),
            Some("text/event-stream")
        );
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// Long-polls until the upload is in a final state, within [`FINISH_TIMEOUT`].
    pub async fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + FINISH_TIMEOUT;
        loop {
            let status = self.status(id, 10).await;
            let state = status["state"].as_str().unwrap_or_default();
            if !matches!(state, "awaiting_upload" | "processing") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "upload {id} still {state} after {FINISH_TIMEOUT:?}"
            );
        }
    }

    /// Downloads every output of a final status; returns (name, bytes).
    pub async fn download_outputs(&self, status: &Value) -> Vec<(String, Vec<u8>)> {
        let mut outputs = Vec::new();
        for output in status["outputs"].as_array().expect("outputs") {
            let response = self
                .http
                .get(output["url"].as_str().expect("url"))
                .send()
                .await
                .expect("GET output");
            assert_eq!(response.status(), 200);
            let bytes = response.bytes().await.expect("body").to_vec();
            outputs.push((output["name"].as_str().expect("name").to_owned(), bytes));
        }
        outputs
    }
}

/// What the pipeline itself makes of `bytes` with a built-in recipe: (name, bytes).
/// Encoding is deterministic, so a service's outputs must equal these.
pub fn expected_outputs(bytes: &[u8], recipe: &str) -> Vec<(String, Vec<u8>)> {
    let recipes = minilab_core::RecipeBook::builtin();
    let recipe = recipes.get(recipe).expect("built-in recipe");
    minilab_core::pipeline::process(bytes, recipe, &minilab_core::Limits::default())
        .expect("the photo processes")
        .outputs
        .into_iter()
        .map(|o| (o.name, o.bytes))
        .collect()
}

/// Ends the whole test process (status 101, with `what` said) if it is still alive
/// `limit` from now: a bound on a test whose parts wait on things outside it (a
/// cluster, its network), where one unbounded wait would otherwise hang the run.
/// Dropping it disarms it.
pub struct Watchdog {
    _disarm: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub fn arm(limit: Duration, what: String) -> Self {
        let (disarm, armed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
                eprintln!("{what}: still running after {limit:?}; ending the test process");
                std::process::exit(101);
            }
        });
        Self { _disarm: disarm }
    }
}

/// Runs `command` to its end: its stdout, or a panic with its stderr when it fails.
pub fn stdout_of(command: &mut Command) -> String {
    let done = command.output().expect("run the command");
    assert!(
        done.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    String::from_utf8(done.stdout).expect("UTF-8 stdout")
}

/// A webhook receiver on loopback at `{prefix}done`: returns the prefix to allow
/// (`http://ADDR/hooks/`) and each delivery's headers and body as it arrives; the
/// n-th delivery (from 0) is answered `answer(n)`.
pub async fn webhook_receiver(
    answer: fn(usize) -> axum::http::StatusCode,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, String)>,
) {
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let receiver = axum::Router::new().route(
        "/hooks/done",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (sender, calls) = (sender.clone(), calls.clone());
            async move {
                let _ = sender.send((headers, body));
                answer(calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let prefix = format!("http://{}/hooks/", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    (prefix, received)
}
