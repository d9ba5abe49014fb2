//! Test harness: a real `minilab up` process on free loopback ports with its own
//! data directory, driven over HTTP only.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a `minilab up` may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest an upload may take to reach a final state.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(90);

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

/// A photo from `shared/images`.
pub fn photo(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A running `minilab up`; stopped (SIGKILL) when dropped.
pub struct Lab {
    child: Child,
    pub api: String,
    pub s3: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
}

impl Lab {
    /// Starts `minilab up` on free ports in `data_dir`, with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Lab {
        let mut child = Command::new(minilab_bin())
            .arg("up")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--s3-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("MINILAB_LOG", "warn,s3s=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting minilab up");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut api, mut s3) = (None, None);
        while api.is_none() || s3.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = received.recv_timeout(left).unwrap_or_else(|_| {
                panic!("minilab up did not print its addresses within {START_TIMEOUT:?}")
            });
            if let Some(url) = line.strip_prefix("minilab is up: open ") {
                api = Some(url.trim_end_matches('/').to_owned());
            } else if let Some(rest) = line.strip_prefix("S3-compatible store: ") {
                s3 = rest.split_whitespace().next().map(str::to_owned);
            }
        }
        Lab {
            child,
            api: api.expect("api"),
            s3: s3.expect("s3"),
            data_dir: data_dir.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    /// Stops the process at once, as a crash or `kill -9` would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
            .post(format!("{}/api/v1/uploads", self.api))
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

    /// Like [`Lab::post_form`], but a connection the store closed while the body was
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

    /// `GET /api/v1/uploads/{id}`.
    pub async fn status(&self, id: &str, wait: u64) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/uploads/{id}?wait={wait}", self.api))
            .send()
            .await
            .expect("GET status");
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON status")
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
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
