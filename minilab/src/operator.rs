//! `minilab operator`: the ImageJob controller on a cluster. One replica leads at a
//! time through a Lease; the others wait, ready to take over.

use anyhow::Context as _;
use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use clap::Args;
use kube::api::{Api, ApiResource, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use minilab_api::tracking::{TrackError, TrackedUpload, UploadTracker};
use minilab_core::UploadId;
use minilab_core::webhook::SIGNATURE_HEADER;
use minilab_operator::ImageJob;
use minilab_operator::controller::{Context, Watched};
use minilab_operator::leader::Lease;
use minilab_operator::metrics::Metrics;
use minilab_operator::observe::{S3Observer, SqsWorkQueue, WorkQueue};
use minilab_operator::status::Settings;
use minilab_service::peer_words::{CHANGES_PATH, PeerWords, Refused};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Address of /livez, /readyz and /metrics.
    #[arg(long, env = "MINILAB_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Watch ImageJobs in this namespace only [default: every namespace].
    #[arg(long, env = "MINILAB_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// The Lease that elects the one active replica.
    #[arg(long, env = "MINILAB_LEASE_NAME", default_value = "minilab-operator")]
    lease_name: String,
    /// The Lease's namespace [default: the pod's, from the service account].
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease [default: the host name].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The workers' SQS queue: batch jobs put one work item per image on it.
    #[arg(long, env = "MINILAB_QUEUE_URL")]
    queue_url: Option<String>,
    /// Work items enqueued per second per batch job.
    #[arg(long, env = "MINILAB_BATCH_RATE", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch_rate: u64,
    /// Seconds without a result before a batch's unfinished images are enqueued again
    /// (up to the job's backoffLimit times).
    #[arg(long, env = "MINILAB_RETRY_AFTER", default_value_t = 600)]
    retry_after: i64,
    #[command(flatten)]
    addressing: crate::flags::PathStyleArgs,
    #[command(flatten)]
    recipes: crate::flags::RecipeArgs,
    /// Kinds made through ACK (group/version/Kind, comma-separated) whose objects in
    /// the pod's namespace are counted by state in minilab_operator_aws_resources.
    #[arg(long, env = "MINILAB_AWS_RESOURCES", value_delimiter = ',',
          value_parser = minilab_operator::aws_resources::parse_kind)]
    aws_resources: Vec<ApiResource>,
    /// The label selector of the release's ACK objects among them.
    #[arg(long, env = "MINILAB_AWS_RESOURCES_SELECTOR", default_value = "")]
    aws_resources_selector: String,
    /// With --peer-secret: take the workers' word that an upload started or finished
    /// and read its job then, polling upload jobs only as a safety net.
    #[command(flatten)]
    peer_secret: crate::flags::PeerSecretArgs,
}

/// `minilab crd`: the ImageJob CustomResourceDefinition as YAML.
pub fn print_crd() -> anyhow::Result<()> {
    print!("{}", minilab_operator::crd::crd_yaml());
    Ok(())
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let sdk = crate::aws::sdk_config().await;
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let words = args
        .peer_secret
        .secret()?
        .map(|secret| Arc::new(PeerWords::new(secret)));
    // Word of changes, for whichever term of leadership is reconciling.
    let (told, _) = broadcast::channel::<UploadId>(1024);

    let listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("listening on {}", args.metrics_listen))?;
    let metrics_address = listener.local_addr()?;
    let health = health_router(&metrics, words.as_ref(), &told);
    let server_stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, health)
            .with_graceful_shutdown(server_stop.cancelled_owned())
            .await;
    });
    if !args.aws_resources.is_empty() {
        tokio::spawn(minilab_operator::aws_resources::watch(
            client.clone(),
            client.default_namespace().to_owned(),
            args.aws_resources_selector.clone(),
            args.aws_resources.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    let signal_stop = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        signal_stop.cancel();
    });

    let lease = lease(&args, &client);
    let settings = settings(&args, words.is_some())?;
    let context = context(&args, &client, &sdk, settings, metrics, &lease.identity).await;
    println!(
        "minilab operator {}: metrics on http://{metrics_address}, waiting for the Lease {}/{}",
        lease.identity, lease.namespace, lease.name
    );
    let api: Api<Watched> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    minilab_operator::run(client, &lease, api, context, &told, &shutdown).await?;
    println!("minilab operator stopped");
    Ok(())
}

/// /livez, /readyz, /metrics and, with a peer secret, the workers' word of changes.
fn health_router(
    metrics: &Arc<Metrics>,
    words: Option<&Arc<PeerWords>>,
    told: &broadcast::Sender<UploadId>,
) -> Router {
    let metrics = metrics.clone();
    let router = Router::new()
        .route("/livez", get(|| async { "ok" }))
        // A standby replica is ready too: it takes over when the leader goes.
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { minilab_service::metrics::response(&metrics.registry) }
            }),
        );
    match words {
        Some(words) => router.route(
            CHANGES_PATH,
            post(take_word).with_state((words.clone(), told.clone())),
        ),
        None => router,
    }
}

/// The Lease and this replica's name in it: by default the pod's namespace and
/// name (the host name).
fn lease(args: &OperatorArgs, client: &kube::Client) -> Lease {
    Lease {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("minilab-operator-{}", std::process::id())),
    }
}

/// What reconciles are told: the batch rate, the retry delay, the recipes the
/// workers know, and whether the workers give word of uploads' progress.
fn settings(args: &OperatorArgs, told_by_workers: bool) -> anyhow::Result<Settings> {
    Ok(Settings {
        rate: usize::try_from(args.batch_rate).unwrap_or(50),
        retry_after: k8s_openapi::jiff::SignedDuration::from_secs(args.retry_after),
        recipes: args
            .recipes
            .load()?
            .iter()
            .map(|recipe| recipe.name.clone())
            .collect(),
        told_by_workers,
        ..Settings::default()
    })
}

/// What every reconcile shares: S3 to observe, the workers' queue for batches, the
/// Event recorder under this replica's name.
async fn context(
    args: &OperatorArgs,
    client: &kube::Client,
    sdk: &aws_config::SdkConfig,
    settings: Settings,
    metrics: Arc<Metrics>,
    identity: &str,
) -> Arc<Context> {
    let s3 = crate::aws::s3_client(sdk, args.addressing.s3_path_style, &metrics.s3_requests).await;
    let queue = args.queue_url.clone().map(|queue_url| {
        Arc::new(SqsWorkQueue {
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url,
        }) as Arc<dyn WorkQueue>
    });
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "minilab-operator".into(),
            instance: Some(identity.to_owned()),
        },
    );
    Arc::new(Context::new(
        client.clone(),
        Arc::new(S3Observer { s3 }),
        queue,
        settings,
        recorder,
        metrics,
        Arc::new(k8s_openapi::jiff::Timestamp::now),
    ))
}

/// A worker's word that an upload changed: its job is reconciled now.
async fn take_word(
    State((words, told)): State<(Arc<PeerWords>, broadcast::Sender<UploadId>)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match words.take(signature, &body) {
        Ok(id) => {
            // No reconciling term listening (a standby replica) is not an error.
            let _ = told.send(id);
            StatusCode::NO_CONTENT
        }
        Err(Refused::BadSignature) => StatusCode::UNAUTHORIZED,
        Err(Refused::Replayed) => StatusCode::CONFLICT,
        Err(Refused::BadBody) => StatusCode::BAD_REQUEST,
    }
}

/// `minilab api --kube-tracking`: ImageJobs in the pod's namespace, deleted
/// `ttl_after_finished` seconds after they finish.
pub async fn kube_tracker(ttl_after_finished: i32) -> anyhow::Result<Arc<dyn UploadTracker>> {
    let client = kube::Client::try_default()
        .await
        .context("--kube-tracking: connecting to the Kubernetes API")?;
    Ok(Arc::new(KubeTracker {
        api: Api::default_namespaced(client),
        ttl_after_finished,
    }))
}

/// Creates the ImageJob of each upload through the Kubernetes API.
pub struct KubeTracker {
    pub api: Api<ImageJob>,
    pub ttl_after_finished: i32,
}

#[async_trait]
impl UploadTracker for KubeTracker {
    async fn track(&self, upload: &TrackedUpload) -> Result<(), TrackError> {
        let job = minilab_operator::tracker::upload_job(upload, Some(self.ttl_after_finished));
        self.api
            .create(&PostParams::default(), &job)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    async fn forget(&self, id: minilab_core::UploadId) -> Result<(), TrackError> {
        let name = minilab_operator::tracker::job_name(&id);
        match self.api.delete(&name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
