//! `minilab api` and `minilab worker`: the services as they run on EKS. Everything
//! about AWS (region, endpoint, credentials, IRSA or Pod Identity) comes from the
//! SDK's standard chain, so the same flags work against AWS and LocalStack.

use anyhow::Context;
use aws_config::BehaviorVersion;
use clap::Args;
use minilab_api::limits::RateLimits;
use minilab_api::{ApiConfig, ApiDeps, ApiState, Word};
use minilab_service::s3_requests::S3Requests;
use minilab_worker::runner::RunOptions;
use minilab_worker::sqs::SqsQueue;
use minilab_worker::{Worker, WorkerConfig, WorkerDeps};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Flags both services share.
#[derive(Args, Debug)]
pub struct StorageArgs {
    /// The bucket browsers upload to.
    #[arg(long, env = "MINILAB_UPLOADS_BUCKET")]
    uploads_bucket: String,
    /// The bucket the worker writes outputs and manifests to.
    #[arg(long, env = "MINILAB_PROCESSED_BUCKET")]
    processed_bucket: String,
    #[command(flatten)]
    addressing: crate::flags::PathStyleArgs,
    #[command(flatten)]
    upload_size: crate::flags::UploadSizeArgs,
    #[command(flatten)]
    recipes: crate::flags::RecipeArgs,
}

#[derive(Args, Debug)]
pub struct ApiArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Address to serve the API on.
    #[arg(long, env = "MINILAB_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Serve the upload page at `/` too (on EKS the page is in the site bucket).
    #[arg(long, env = "MINILAB_SERVE_WEB", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    serve_web: bool,
    /// Serve outputs at stable addresses, `GET /i/{id}/{output}.{ext}`, cacheable for
    /// a year (for `<img src>` and a CDN); statuses name them as `imageUrl`. With
    /// sign-in only with --image-link-secret: such uploads are private, and an
    /// unsigned address would be their only key.
    #[arg(long, env = "MINILAB_SERVE_IMAGES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    serve_images: bool,
    #[command(flatten)]
    images: crate::flags::ImageAddressArgs,
    /// The URL browsers POST uploads to [default: the uploads bucket's S3 URL].
    #[arg(long, env = "MINILAB_UPLOAD_URL")]
    upload_url: Option<String>,
    #[command(flatten)]
    presign: crate::flags::PresignArgs,
    /// Record every upload as an ImageJob in this pod's namespace (on a cluster).
    /// A failure to do so never fails the upload; it is logged and counted.
    #[arg(long, env = "MINILAB_KUBE_TRACKING", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    kube_tracking: bool,
    /// Seconds after it finishes that an upload's ImageJob is deleted (its
    /// ttlSecondsAfterFinished; the images stay), so tracking does not grow without
    /// bound. 0 deletes it as soon as it finishes.
    #[arg(long, env = "MINILAB_KUBE_TRACKING_TTL", default_value_t = 86_400,
          value_parser = clap::value_parser!(i32).range(0..))]
    kube_tracking_ttl: i32,
    /// Serve /metrics on this address instead of on --listen (so that what faces the
    /// internet never shows it).
    #[arg(long, env = "MINILAB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds between SIGTERM and no longer accepting requests: /readyz answers 503
    /// at once, so load balancers take this instance out while it still serves.
    #[arg(long, env = "MINILAB_SHUTDOWN_DELAY", default_value_t = 0)]
    shutdown_delay: u64,
    #[command(flatten)]
    client_limits: crate::limits::ClientLimitArgs,
    #[command(flatten)]
    sign_in: SignInArgs,
    #[command(flatten)]
    webhooks: crate::webhooks::WebhookArgs,
    /// With --peer-secret: take workers' word of uploads' changes (on
    /// --metrics-listen when given): waiting requests then answer at once, and read
    /// S3 only every 2 s as a safety net (without it, every 200 ms).
    #[command(flatten)]
    peer_secret: crate::flags::PeerSecretArgs,
    /// The CloudFront distribution in front of /i/: asked to forget a deleted
    /// upload's images (an invalidation of /i/{id}/*, with the API's credentials).
    #[arg(long, env = "MINILAB_CDN_DISTRIBUTION_ID")]
    cdn_distribution_id: Option<String>,
    /// Where CloudFront's API is (tests point it elsewhere).
    #[arg(long, env = "MINILAB_CLOUDFRONT_ENDPOINT", default_value = crate::cdn::ENDPOINT)]
    cloudfront_endpoint: String,
}

/// Optional sign-in (see docs/architecture.md): off unless --oidc-issuer is given.
#[derive(Args, Debug)]
pub struct SignInArgs {
    /// Require OIDC bearer tokens from this issuer (`iss`) for uploads and their
    /// status; limits then apply per subject, and an upload is visible only to its own.
    #[arg(long, env = "MINILAB_OIDC_ISSUER", requires = "oidc_audience")]
    oidc_issuer: Option<String>,
    /// The audience (`aud`) tokens must name: this API's client id at the issuer.
    #[arg(long, env = "MINILAB_OIDC_AUDIENCE", requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// The issuer's JWKS URL (its discovery document's `jwks_uri`).
    #[arg(
        long,
        env = "MINILAB_OIDC_JWKS_URL",
        requires = "oidc_issuer",
        conflicts_with = "oidc_jwks_file"
    )]
    oidc_jwks_url: Option<String>,
    /// A JWKS file instead of a URL (a mounted ConfigMap, say).
    #[arg(long, env = "MINILAB_OIDC_JWKS_FILE", requires = "oidc_issuer")]
    oidc_jwks_file: Option<PathBuf>,
    /// Seconds the issuer's keys are used before they are fetched again (a token
    /// signed by a key not among them fetches them at most every 30 s).
    #[arg(long, env = "MINILAB_OIDC_REFRESH", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    oidc_refresh: u64,
}

impl SignInArgs {
    /// Sign-in as configured, its keys loaded; `None` when it is off.
    async fn sign_in(&self) -> anyhow::Result<Option<Arc<dyn minilab_api::auth::Authenticator>>> {
        use minilab_api::auth::oidc::{KeySource, SignIn, SignInConfig};
        let (Some(issuer), Some(audience)) = (&self.oidc_issuer, &self.oidc_audience) else {
            return Ok(None);
        };
        let keys = match (&self.oidc_jwks_url, &self.oidc_jwks_file) {
            (Some(url), _) => KeySource::Url(url.clone()),
            (None, Some(file)) => KeySource::File(file.clone()),
            (None, None) => {
                anyhow::bail!("--oidc-issuer needs --oidc-jwks-url or --oidc-jwks-file")
            }
        };
        let sign_in = SignIn::new(SignInConfig {
            issuer: issuer.clone(),
            audience: audience.clone(),
            keys,
            refresh: Duration::from_secs(self.oidc_refresh),
        })?;
        sign_in.load().await.context("loading the issuer's keys")?;
        Ok(Some(Arc::new(sign_in)))
    }
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// The SQS queue that receives the uploads bucket's event notifications.
    #[arg(long, env = "MINILAB_QUEUE_URL")]
    queue_url: String,
    /// Address of /livez, /readyz and /metrics.
    #[arg(long, env = "MINILAB_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Images processed at once [default: the number of cores].
    #[arg(long, env = "MINILAB_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Seconds a received message stays hidden per heartbeat (heartbeats come at half).
    #[arg(long, env = "MINILAB_VISIBILITY_TIMEOUT", default_value_t = 60)]
    visibility_timeout: u64,
    /// Seconds to finish images in flight after SIGTERM before handing them back.
    #[arg(long, env = "MINILAB_DRAIN_TIMEOUT", default_value_t = 25)]
    drain_timeout: u64,
    /// Seconds one receive long-polls (0-20).
    #[arg(long, env = "MINILAB_RECEIVE_WAIT", default_value_t = 20)]
    receive_wait: u64,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
    #[command(flatten)]
    webhooks: crate::webhooks::WebhookArgs,
    /// Webhooks name each output's stable address under this base (signed with
    /// --image-link-secret, as the API signs them).
    #[command(flatten)]
    images: crate::flags::ImageAddressArgs,
    /// The API instances to tell when an upload starts and finishes, comma-separated
    /// `host:port` of their metrics address, each name resolved to all its addresses
    /// (a headless Service: every API pod); needs --peer-secret.
    #[arg(
        long,
        env = "MINILAB_ANNOUNCE_TO",
        value_delimiter = ',',
        requires = "peer_secret"
    )]
    announce_to: Vec<String>,
    #[command(flatten)]
    peer_secret: crate::flags::PeerSecretArgs,
}

/// The SDK's configuration from its standard chain, with the HTTPS client the SDK
/// would make by default (rustls, proxies from the environment, connector settings
/// and sleeps from the runtime) but on ring instead of aws-lc: kube already brings
/// ring, and aws-lc is a C library a first build would compile from source.
pub(crate) async fn sdk_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
    let http = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

pub(crate) async fn s3_client(
    sdk: &aws_config::SdkConfig,
    path_style: bool,
    requests: &S3Requests,
) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(path_style);
    aws_sdk_s3::Client::from_conf(requests.counting(config).build())
}

/// Where browsers POST: `endpoint/bucket` with path-style addressing or a custom
/// endpoint, otherwise the bucket's virtual-hosted S3 URL.
fn upload_url(sdk: &aws_config::SdkConfig, bucket: &str, path_style: bool, region: &str) -> String {
    match sdk.endpoint_url() {
        Some(endpoint) if path_style => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        Some(endpoint) => {
            let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
            format!("{scheme}://{bucket}.{}", host.trim_end_matches('/'))
        }
        None if path_style => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
    }
}

pub async fn run_api(args: ApiArgs) -> anyhow::Result<()> {
    let sdk = sdk_config().await;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .context("no AWS region: set AWS_REGION")?;
    let credentials = sdk
        .credentials_provider()
        .context("no AWS credentials provider in the environment")?;
    let storage = &args.storage;
    let path_style = storage.addressing.s3_path_style;
    let s3_requests = S3Requests::default();
    let s3 = s3_client(&sdk, path_style, &s3_requests).await;
    let upload_url = args
        .upload_url
        .clone()
        .unwrap_or_else(|| upload_url(&sdk, &storage.uploads_bucket, path_style, &region));
    let tracker = if args.kube_tracking {
        Some(crate::operator::kube_tracker(args.kube_tracking_ttl).await?)
    } else {
        None
    };
    let config = ApiConfig {
        region,
        uploads_bucket: storage.uploads_bucket.clone(),
        processed_bucket: storage.processed_bucket.clone(),
        upload_url,
        recipes: storage.recipes.load()?,
        max_upload_bytes: storage.upload_size.max_upload_bytes,
        upload_ttl: args.presign.upload_ttl(),
        download_ttl: args.presign.download_ttl(),
        serve_web: args.serve_web,
        serve_images: args.serve_images,
        images: args.images.addresses()?,
        rate_limits: args.client_limits.rate_limits(RateLimits::API),
        webhooks: args.webhooks.allow_list()?,
    };
    let sign_in = args.sign_in.sign_in().await?;
    if args.serve_images && sign_in.is_some() && config.images.links().is_none() {
        anyhow::bail!(
            "--serve-images with sign-in needs --image-link-secret: signed-in uploads are private, and an unsigned stable address would be open to anyone who has it, for ever"
        );
    }
    let signer = Arc::new(minilab_api::signing::Signer::new(credentials));
    let cdn = match &args.cdn_distribution_id {
        Some(id) => {
            let cloudfront =
                crate::cdn::CloudFront::new(&args.cloudfront_endpoint, id, signer.clone())?;
            Some(Arc::new(cloudfront) as Arc<dyn minilab_api::cdn::CdnPurge>)
        }
        None => None,
    };
    let deps = ApiDeps {
        s3,
        s3_requests,
        signer,
        tracker,
        cdn,
        sign_in,
        // Word from the workers, when they are told where this instance is.
        word: match args.peer_secret.secret()? {
            Some(secret) => Word::FromPeers(secret),
            None => Word::None,
        },
    };
    serve_api(
        ApiState::new(config, deps),
        args.listen,
        args.metrics_listen,
        args.shutdown_delay,
    )
    .await
}

/// The API on `listen` and its internal routes (/metrics, the workers' word) on
/// `metrics_listen`, or beside it; at SIGTERM not ready at once, serving for
/// `shutdown_delay` seconds more.
async fn serve_api(
    state: ApiState,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    shutdown_delay: u64,
) -> anyhow::Result<()> {
    let readiness = state.readiness.clone();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let internal = minilab_api::internal_router(state.clone());
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        ),
        None => None,
    };
    // The API's address first: tools wait for these two lines in this order.
    println!("minilab api listening on http://{}", listener.local_addr()?);
    let router = match metrics_listener {
        Some(metrics_listener) => {
            println!(
                "minilab api metrics on http://{}",
                metrics_listener.local_addr()?
            );
            tokio::spawn(async move {
                if let Err(err) = axum::serve(metrics_listener, internal).await {
                    tracing::error!(error = %err, "the metrics server stopped");
                }
            });
            minilab_api::router(state)
        }
        None => minilab_api::router(state).merge(internal),
    };
    let delay = Duration::from_secs(shutdown_delay);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        crate::shutdown_signal().await;
        readiness.drain();
        tracing::info!(?delay, "SIGTERM: not ready; serving until the delay ends");
        tokio::time::sleep(delay).await;
    })
    .await?;
    Ok(())
}

pub async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let sdk = sdk_config().await;
    let storage = &args.storage;
    let metrics = Arc::<minilab_worker::metrics::Metrics>::default();
    let s3 = s3_client(&sdk, storage.addressing.s3_path_style, &metrics.s3_requests).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let announce = match (args.peer_secret.secret()?, args.announce_to.is_empty()) {
        (Some(secret), false) => {
            let peers = minilab_worker::peers::Peers::new(
                args.announce_to.clone(),
                secret.to_vec(),
                metrics.clone(),
            )?;
            Some(Arc::new(peers) as Arc<dyn minilab_service::changes::Announce>)
        }
        _ => None,
    };
    let worker = Arc::new(Worker::new(
        WorkerConfig {
            uploads_bucket: storage.uploads_bucket.clone(),
            processed_bucket: storage.processed_bucket.clone(),
            recipes: storage.recipes.load()?,
            limits: args.limits.limits(storage.upload_size.max_upload_bytes),
        },
        WorkerDeps {
            s3,
            metrics,
            announce,
            webhooks: args.webhooks.webhooks(args.images.addresses()?)?,
        },
    ));
    let queue: Arc<dyn minilab_worker::queue::Queue> = Arc::new(SqsQueue::new(
        sqs,
        &args.queue_url,
        Duration::from_secs(args.receive_wait),
    ));
    let shutdown = CancellationToken::new();

    let listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("listening on {}", args.metrics_listen))?;
    let metrics_addr = listener.local_addr()?;
    let probes = minilab_worker::http::router(worker.clone(), queue.clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, probes).await {
            tracing::error!(error = %err, "the metrics server stopped");
        }
    });

    let concurrency = args
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let options = RunOptions {
        concurrency,
        visibility: Duration::from_secs(args.visibility_timeout.max(1)),
        drain: Duration::from_secs(args.drain_timeout),
        hold: RunOptions::hold_for(
            worker.time_budget(),
            Duration::from_secs(args.visibility_timeout.max(1)),
        ),
    };
    println!(
        "minilab worker consuming {} with {concurrency} slot(s); metrics on http://{metrics_addr}",
        args.queue_url
    );
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        tracing::info!("SIGTERM: no more receiving; draining");
        signal.cancel();
    });
    minilab_worker::runner::run(worker, queue, options, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_urls_follow_the_addressing_style() {
        let local = aws_config::SdkConfig::builder()
            .endpoint_url("http://127.0.0.1:4566")
            .build();
        assert_eq!(
            upload_url(&local, "up", true, "us-east-1"),
            "http://127.0.0.1:4566/up"
        );
        assert_eq!(
            upload_url(&local, "up", false, "us-east-1"),
            "http://up.127.0.0.1:4566"
        );
        let aws = aws_config::SdkConfig::builder().build();
        assert_eq!(
            upload_url(&aws, "up", false, "eu-west-1"),
            "https://up.s3.eu-west-1.amazonaws.com"
        );
    }
}
