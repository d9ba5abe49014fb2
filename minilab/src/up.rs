//! `minilab up`: the whole system in one process, on loopback, on embedded defaults.

use crate::store::{self, StoreConfig, StoreCredentials};
use anyhow::Context;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::http::HeaderValue;
use clap::Args;
use minilab_api::{ApiConfig, ApiDeps, ApiState, Word};
use minilab_core::event::object_created_body;
use minilab_core::image_links::ImageAddresses;
use minilab_worker::queue::{LocalQueue, LocalSender};
use minilab_worker::runner::RunOptions;
use minilab_worker::{Worker, WorkerConfig, WorkerDeps};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const UPLOADS_BUCKET: &str = "minilab-uploads";
const PROCESSED_BUCKET: &str = "minilab-processed";
const REGION: &str = "us-east-1";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Address of the API and the web page.
    #[arg(long, env = "MINILAB_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the embedded S3-compatible store (the browser uploads to it).
    #[arg(long, env = "MINILAB_S3_LISTEN", default_value = "127.0.0.1:9000")]
    s3_listen: SocketAddr,
    /// Where the store keeps buckets, objects and its credentials.
    #[arg(long, env = "MINILAB_DATA_DIR", default_value = "./minilab-data")]
    data_dir: PathBuf,
    /// Images processed at once [default: the number of cores]. 0 stores uploads
    /// without processing them (they are processed at the next start).
    #[arg(long, env = "MINILAB_WORKERS")]
    workers: Option<usize>,
    #[command(flatten)]
    upload_size: crate::flags::UploadSizeArgs,
    #[command(flatten)]
    presign: crate::flags::PresignArgs,
    #[command(flatten)]
    recipes: crate::flags::RecipeArgs,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
    #[command(flatten)]
    client_limits: crate::limits::ClientLimitArgs,
    #[command(flatten)]
    webhooks: crate::webhooks::WebhookArgs,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let (s3_root, credentials) = prepare_data_dir(&args.data_dir)?;
    // Bind both first: with port 0 the real addresses are only known now, and the
    // store's CORS needs the page's origin.
    let api_listener = bind(args.listen).await?;
    let s3_listener = bind(args.s3_listen).await?;
    let api_addr = api_listener.local_addr()?;
    let s3_url = format!("http://{}", s3_listener.local_addr()?);

    let max_upload_bytes = args.upload_size.max_upload_bytes;
    let (events, queue) = LocalQueue::new(10_000);
    let store = store::router(StoreConfig {
        root: &s3_root,
        credentials: &credentials,
        notify_bucket: UPLOADS_BUCKET.into(),
        events: events.clone(),
        allowed_origins: page_origins(api_addr),
        // A multipart form adds its fields and boundaries to the file.
        max_post_bytes: max_upload_bytes + 64 * 1024,
    })?;
    tokio::spawn(serve(s3_listener, store, "store"));

    let provider = SharedCredentialsProvider::new(Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        None,
        None,
        "minilab-up",
    ));
    let s3 = store_client(&s3_url, provider.clone());
    let recipes = args.recipes.load()?;
    requeue_unfinished(&s3, events).await?;

    let shutdown = CancellationToken::new();
    // The worker tells the API's waiting requests the moment an upload changes.
    let changes = minilab_service::changes::Changes::default();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let worker = Worker::new(
        WorkerConfig {
            uploads_bucket: UPLOADS_BUCKET.into(),
            processed_bucket: PROCESSED_BUCKET.into(),
            recipes: recipes.clone(),
            limits: args.limits.limits(max_upload_bytes),
        },
        WorkerDeps {
            s3: s3.clone(),
            metrics: Arc::default(),
            announce: Some(Arc::new(changes.clone())),
            // Images are served at this process's API address.
            webhooks: args
                .webhooks
                .webhooks(ImageAddresses::new(format!("http://{api_addr}"), None))?,
        },
    );
    start_workers(worker, queue, workers, &shutdown);

    let config = api_config(&args, &s3_url, recipes)?;
    let deps = ApiDeps {
        s3,
        // One client for the API and the workers: its requests are not counted.
        s3_requests: Default::default(),
        signer: Arc::new(minilab_api::signing::Signer::new(provider)),
        tracker: None,
        cdn: None,
        sign_in: None,
        // The worker is in this process: nothing else announces.
        word: Word::InProcess(changes),
    };
    let config = ApiState::new(config, deps);
    let api = minilab_api::router(config.clone()).merge(minilab_api::internal_router(config));
    tokio::spawn(serve(api_listener, api, "api"));

    greet(api_addr, &s3_url, &args.data_dir, workers);
    crate::shutdown_signal().await;
    tracing::info!("stopping");
    shutdown.cancel();
    Ok(())
}

/// The API's settings on the embedded store: its buckets, the page served, the
/// per-client limits (none on loopback unless asked for).
fn api_config(
    args: &UpArgs,
    s3_url: &str,
    recipes: Arc<minilab_core::RecipeBook>,
) -> anyhow::Result<ApiConfig> {
    Ok(ApiConfig {
        region: REGION.into(),
        uploads_bucket: UPLOADS_BUCKET.into(),
        processed_bucket: PROCESSED_BUCKET.into(),
        upload_url: format!("{s3_url}/{UPLOADS_BUCKET}"),
        recipes,
        max_upload_bytes: args.upload_size.max_upload_bytes,
        upload_ttl: args.presign.upload_ttl(),
        download_ttl: args.presign.download_ttl(),
        serve_web: true,
        serve_images: true,
        images: Default::default(),
        rate_limits: args
            .client_limits
            .rate_limits(default_client_limits(args.listen)),
        webhooks: args.webhooks.allow_list()?,
    })
}

/// The data directory (the owner's only: photos, outputs, the store's credentials)
/// with a folder per bucket; the store's root and its credentials.
fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<(PathBuf, StoreCredentials)> {
    create_private_dir(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let s3_root = data_dir.join("s3");
    for bucket in [UPLOADS_BUCKET, PROCESSED_BUCKET] {
        let dir = s3_root.join(bucket);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let credentials = load_or_create_credentials(data_dir)?;
    Ok((s3_root, credentials))
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))
}

/// A client of the embedded store: on loopback, plain HTTP, path-style.
fn store_client(s3_url: &str, provider: SharedCredentialsProvider) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(s3_url)
            .force_path_style(true)
            .credentials_provider(provider)
            .build(),
    )
}

/// Uploads that arrived before a stop but never finished, put on the queue again.
async fn requeue_unfinished(s3: &aws_sdk_s3::Client, events: LocalSender) -> anyhow::Result<()> {
    let unfinished =
        minilab_worker::recovery::unfinished_uploads(s3, UPLOADS_BUCKET, PROCESSED_BUCKET)
            .await
            .context("listing unfinished uploads")?;
    if !unfinished.is_empty() {
        tracing::info!(
            count = unfinished.len(),
            "re-enqueueing uploads that have no manifest"
        );
    }
    tokio::spawn(async move {
        for object in unfinished {
            let body = object_created_body(
                "Post",
                &object.bucket,
                &object.key,
                object.size,
                chrono::Utc::now(),
            );
            if events.send(body).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// `workers` images processed at once from the in-process queue, until `shutdown`;
/// none: uploads wait in the queue until the next start.
fn start_workers(worker: Worker, queue: LocalQueue, workers: usize, shutdown: &CancellationToken) {
    if workers == 0 {
        tracing::warn!("--workers 0: uploads are stored but not processed until the next start");
        // Keep the receiving side alive so the store's events wait instead of failing.
        std::mem::forget(queue);
        return;
    }
    let options = RunOptions {
        concurrency: workers,
        visibility: Duration::from_secs(60),
        drain: Duration::from_secs(0),
        hold: RunOptions::hold_for(worker.time_budget(), Duration::from_secs(60)),
    };
    tokio::spawn(minilab_worker::runner::run(
        Arc::new(worker),
        Arc::new(queue),
        options,
        shutdown.clone(),
    ));
}

/// What `up` tells the person who started it.
fn greet(api_addr: SocketAddr, s3_url: &str, data_dir: &Path, workers: usize) {
    println!("minilab is up: open http://{api_addr}/");
    println!(
        "S3-compatible store: {s3_url} (data in {})",
        data_dir.display()
    );
    let decoder = if minilab_core::pipeline::uses_libjpeg_turbo() {
        "libjpeg-turbo"
    } else {
        "pure Rust (libjpeg-turbo was not found at build time)"
    };
    println!(
        "processing {workers} image(s) at a time, JPEGs decoded by {decoder}; press Ctrl-C to stop"
    );
}

/// Serves `router` to requests for its address ([`crate::hosts`]), telling it each
/// request's peer address (the per-client limits count by it).
async fn serve(listener: TcpListener, router: axum::Router, name: &'static str) {
    let listen = match listener.local_addr() {
        Ok(listen) => listen,
        Err(err) => {
            tracing::error!(server = name, error = %err, "server not started");
            return;
        }
    };
    let router = router.layer(axum::middleware::from_fn_with_state(
        listen,
        crate::hosts::check,
    ));
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(err) = axum::serve(listener, service).await {
        tracing::error!(server = name, error = %err, "server stopped");
    }
}

/// The page's origins: the address it is served from, and `localhost` for a
/// loopback address, since people type either.
fn page_origins(api_addr: SocketAddr) -> Vec<HeaderValue> {
    let mut origins = vec![format!("http://{api_addr}")];
    if api_addr.ip().is_loopback() {
        origins.push(format!("http://localhost:{}", api_addr.port()));
    }
    origins
        .into_iter()
        .filter_map(|o| HeaderValue::from_str(&o).ok())
        .collect()
}

/// The store's credentials, created at the first start and kept in the data
/// directory (readable by the owner only), so presigned URLs survive a restart.
fn load_or_create_credentials(data_dir: &Path) -> anyhow::Result<StoreCredentials> {
    let path = data_dir.join("credentials.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()));
    }
    let random = |len: usize| {
        use rand::Rng;
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut rng = rand::rng();
        (0..len)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect::<String>()
    };
    let credentials = StoreCredentials {
        access_key_id: format!("MINILAB{}", random(13)),
        secret_access_key: random(40),
    };
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let text = serde_json::to_string_pretty(&credentials)?;
    write_private(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok(credentials)
}

/// `dir` and its parents; `dir` itself, when made here, readable by the owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// One person on their own machine (loopback) has nothing to limit; served to a
/// network, `up` limits clients as `api` does.
fn default_client_limits(listen: SocketAddr) -> minilab_api::limits::RateLimits {
    if listen.ip().is_loopback() {
        minilab_api::limits::RateLimits::OFF
    } else {
        minilab_api::limits::RateLimits::API
    }
}
