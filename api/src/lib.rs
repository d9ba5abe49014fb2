//! minilab's HTTP API: issues presigned uploads, answers status from the manifests
//! in S3, lists recipes, and (when asked) serves the upload page.
//!
//! The API keeps no state of its own: an upload id carries its creation time, the
//! uploads bucket says whether the file arrived, and the manifest says how it ended.

// What the binary and the tests use: sign-in, the CDN, error codes, limits, the
// POST policy, signing, tracking and the page.
pub mod auth;
pub mod cdn;
pub mod error;
pub mod limits;
pub mod post_policy;
pub mod signing;
pub mod tracking;
pub mod web;

// The handlers and what only they use.
pub(crate) mod best_effort;
pub(crate) mod images;
pub(crate) mod metrics;
pub(crate) mod openapi;
pub(crate) mod peers;
pub(crate) mod probes;
pub(crate) mod recipes;
pub(crate) mod renders;
pub(crate) mod uploads;

pub use error::{ApiError, Code};
pub use metrics::ApiMetrics;
pub use signing::Signer;
pub use tracking::{TrackError, TrackedUpload, UploadTracker};

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{BoxError, Router};
use minilab_core::RecipeBook;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

/// The API's shared state: its clients, settings and metrics; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// What this instance was told: buckets, signing lifetimes, limits, recipes.
    pub config: Arc<ApiConfig>,
    pub(crate) s3: aws_sdk_s3::Client,
    /// Signs upload policies and download URLs, and says how long they may live.
    pub(crate) signer: Arc<signing::Signer>,
    /// Told about every upload (an ImageJob each, on a cluster); `None` off-cluster.
    pub(crate) tracker: Option<Arc<dyn tracking::UploadTracker>>,
    pub(crate) cdn: Option<Arc<dyn cdn::CdnPurge>>,
    pub(crate) metrics: Arc<metrics::ApiMetrics>,
    /// Whether this instance still takes new requests (`/readyz`).
    pub readiness: Readiness,
    /// Sign-in for uploads and their status (`None`: open to anyone, the default).
    pub(crate) sign_in: Option<Arc<dyn auth::Authenticator>>,
    /// Refused sign-ins per address, bounded.
    pub(crate) sign_in_failures: Arc<auth::SignInFailures>,
    /// Word of uploads' changes, when something announces them to this instance (the
    /// worker of `minilab up`); `None`: waiting requests read S3 at a steady rate.
    pub(crate) changes: Option<minilab_service::changes::Changes>,
    /// The secret workers sign word of changes with (`POST /internal/v1/changes`),
    /// and the words taken lately; `None`: this instance takes no word from other
    /// processes.
    pub(crate) peer_words: Option<Arc<peers::PeerWords>>,
    /// The Server-Sent Event streams open now, bounded.
    pub(crate) event_streams: uploads::events::EventStreams,
    /// Long polls and event streams open now per client, bounded.
    pub(crate) waits: limits::Waits,
    /// Outputs being made at other widths, and how many each client may have made.
    pub(crate) renders: Arc<renders::Renders>,
}

/// What an API instance is told: its buckets, what it signs, its limits.
pub struct ApiConfig {
    /// The uploads bucket's region, part of the signature.
    pub region: String,
    pub uploads_bucket: String,
    pub processed_bucket: String,
    /// Where the browser POSTs an upload: the uploads bucket's URL.
    pub upload_url: String,
    pub recipes: Arc<RecipeBook>,
    /// The most bytes one upload may have.
    pub max_upload_bytes: u64,
    pub upload_ttl: Duration,
    pub download_ttl: Duration,
    /// Serve the upload page at `/`.
    pub serve_web: bool,
    /// Serve outputs at stable addresses, `GET /i/{id}/{output}.{ext}` (with
    /// sign-in only signed: the address is the only key), and name them in statuses.
    pub serve_images: bool,
    /// How statuses name those addresses: under the CDN's `https://host` or the path
    /// alone (relative to the API), and, when signed, the signer; with a signer only
    /// signed addresses are served ([`minilab_core::image_links`]).
    pub images: minilab_core::image_links::ImageAddresses,
    pub rate_limits: limits::RateLimits,
    /// Where uploads may ask their final status to be sent.
    pub webhooks: minilab_core::webhook::AllowList,
}

/// What an API instance works with, made outside it.
pub struct ApiDeps {
    pub s3: aws_sdk_s3::Client,
    /// What counts `s3`'s requests, served in the API's metrics.
    pub s3_requests: minilab_service::s3_requests::S3Requests,
    pub signer: Arc<signing::Signer>,
    pub tracker: Option<Arc<dyn tracking::UploadTracker>>,
    /// The CDN in front of `/i/`, told when an upload is deleted.
    pub cdn: Option<Arc<dyn cdn::CdnPurge>>,
    pub sign_in: Option<Arc<dyn auth::Authenticator>>,
    pub word: Word,
}

/// Where word of uploads' changes comes from, if anywhere.
pub enum Word {
    /// Nowhere: waiting requests read S3 at a steady rate.
    None,
    /// A worker in this process (`minilab up`) announces to these changes.
    InProcess(minilab_service::changes::Changes),
    /// Workers elsewhere post it, signed with this secret (`POST
    /// /internal/v1/changes`).
    FromPeers(Arc<[u8]>),
}

impl ApiState {
    /// The state of one API instance; its metrics, readiness, sign-in failures and
    /// bounds on open streams and waits are its own, made here.
    pub fn new(config: ApiConfig, deps: ApiDeps) -> Self {
        let (changes, peer_words) = match deps.word {
            Word::None => (None, None),
            Word::InProcess(changes) => (Some(changes), None),
            Word::FromPeers(secret) => (
                Some(Default::default()),
                Some(Arc::new(peers::PeerWords::new(secret))),
            ),
        };
        let renders = Arc::new(renders::Renders::new(config.rate_limits.tickets));
        ApiState {
            config: Arc::new(config),
            s3: deps.s3,
            signer: deps.signer,
            tracker: deps.tracker,
            cdn: deps.cdn,
            metrics: Arc::new(ApiMetrics::new(deps.s3_requests)),
            readiness: Default::default(),
            sign_in: deps.sign_in,
            sign_in_failures: Default::default(),
            changes,
            peer_words,
            event_streams: Default::default(),
            waits: Default::default(),
            renders,
        }
    }
}

/// Whether this instance still takes new requests: `/readyz` answers 200 until
/// [`Readiness::drain`], then 503 `draining`, so a load balancer stops sending
/// requests before the server stops accepting them. It says nothing about S3: an S3
/// brownout must not take every instance out of the load balancer at once.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<std::sync::atomic::AtomicBool>);

impl Readiness {
    /// From now on `/readyz` answers 503 `draining`; requests are still served.
    pub fn drain(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn draining(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Most requests the API handles at once; more are answered 503 `overloaded`.
const MAX_CONCURRENT_REQUESTS: usize = 512;
/// Longest a request may take; long polls are capped below it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest JSON body the API reads.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The API, the page (with `serve_web`) and the probes; `/metrics` and the workers'
/// word of changes are in [`internal_router`], served on a port of its own or merged
/// into this one.
pub fn router(state: ApiState) -> Router {
    let serve_web = state.config.serve_web;
    let readiness = state.readiness.clone();
    // The probes stay outside the concurrency limit: requests that wait (long polls,
    // event streams) may fill it, and a pod that cannot answer its probes is taken
    // out of service and restarted.
    let probes = Router::new()
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .with_state(state.clone());
    let api = uploads::router(&state)
        .route("/api/v1/recipes", get(recipes::recipes))
        .route("/api/v1/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint") })
        .with_state(state);
    let app = if serve_web {
        api.merge(web::router())
    } else {
        api
    };
    app.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overload_or_timeout))
            .load_shed()
            .concurrency_limit(MAX_CONCURRENT_REQUESTS)
            .timeout(REQUEST_TIMEOUT),
    )
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .merge(probes)
    .layer(axum::middleware::map_response_with_state(
        readiness,
        close_when_draining,
    ))
}

/// Once draining, each answer closes its connection (`Connection: close`): a client's
/// next request opens a new one, which goes to an instance that stays. Kept alive,
/// the connection would idle until the server stops and closes it, and a request sent
/// at that moment would be lost (hyper's `IncompleteMessage`; a POST is not retried).
async fn close_when_draining(
    axum::extract::State(readiness): axum::extract::State<Readiness>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if readiness.draining() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn overload_or_timeout(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(Code::Timeout, "the request took too long")
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(
            Code::Overloaded,
            "too many requests at once; try again shortly",
        )
    } else {
        ApiError::internal(err)
    }
}

/// What only the cluster reaches: `/metrics` (OpenMetrics text) and, with a peer
/// secret, the workers' word of changes.
pub fn internal_router(state: ApiState) -> Router {
    let router = Router::new().route("/metrics", get(probes::metrics));
    let router = if state.peer_words.is_some() {
        router.route(
            minilab_service::peer_words::CHANGES_PATH,
            axum::routing::post(peers::changed).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
    } else {
        router
    };
    router.with_state(state)
}
