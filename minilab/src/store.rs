//! `minilab up`'s embedded S3-compatible store: s3s-fs on loopback, wrapped so that
//! a completed upload to the uploads bucket emits the event record S3 would send to
//! SQS, with CORS in front so the page can POST to it. The api and worker reach it
//! through `aws-sdk-s3`, exactly as they reach S3.

use async_trait::async_trait;
use axum::error_handling::HandleError;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use chrono::Utc;
use minilab_core::event::object_created_body;
use minilab_worker::queue::LocalSender;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use std::path::Path;
use std::sync::Arc;
use tower_http::cors::CorsLayer;

/// The store's S3 credentials. Generated once per data directory.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Where the store keeps its objects, and what it tells about new ones.
pub struct StoreConfig<'a> {
    pub root: &'a Path,
    pub credentials: &'a StoreCredentials,
    /// Completed uploads to this bucket emit an `ObjectCreated` event.
    pub notify_bucket: String,
    pub events: LocalSender,
    /// Browser origins allowed to POST uploads and GET outputs.
    pub allowed_origins: Vec<HeaderValue>,
    /// Largest POST upload the store buffers, whatever a policy says.
    pub max_post_bytes: u64,
}

/// The store as an axum router, ready to serve.
pub fn router(config: StoreConfig<'_>) -> anyhow::Result<axum::Router> {
    let fs = s3s_fs::FileSystem::new(config.root)
        .map_err(|e| anyhow::anyhow!("opening the store: {e:?}"))?;
    let store = NotifyingStore {
        fs,
        notify_bucket: config.notify_bucket,
        events: config.events,
    };
    let mut builder = s3s::service::S3ServiceBuilder::new(store);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        config.credentials.access_key_id.clone(),
        config.credentials.secret_access_key.clone(),
    ));
    let mut s3_config = s3s::config::S3Config::default();
    s3_config.post_object_max_file_size = config.max_post_bytes;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        s3_config,
    ))));
    let service = HandleError::new(builder.build(), |err: s3s::HttpError| async move {
        tracing::error!(error = ?err, "store error");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    });
    let cors = CorsLayer::new()
        .allow_origin(config.allowed_origins)
        .allow_methods([Method::GET, Method::HEAD, Method::POST])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([HeaderName::from_static("etag")])
        .max_age(std::time::Duration::from_secs(600));
    Ok(axum::Router::new().fallback_service(service).layer(cors))
}

struct NotifyingStore {
    fs: s3s_fs::FileSystem,
    notify_bucket: String,
    events: LocalSender,
}

impl NotifyingStore {
    async fn notify(&self, event_name: &str, bucket: &str, key: &str, size: Option<u64>) {
        if bucket != self.notify_bucket {
            return;
        }
        let body = object_created_body(event_name, bucket, key, size, Utc::now());
        if self.events.send(body).await.is_err() {
            tracing::warn!(
                key,
                "the queue is closed; the upload will be picked up at the next start"
            );
        }
    }
}

/// Delegates what the api, the worker and the page use to s3s-fs, and emits events
/// for completed uploads; anything else is NotImplemented.
#[async_trait]
impl S3 for NotifyingStore {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let size = req.input.content_length.and_then(|n| u64::try_from(n).ok());
        let response = self.fs.put_object(req).await?;
        self.notify("Put", &bucket, &key, size).await;
        Ok(response)
    }

    async fn post_object(
        &self,
        req: S3Request<PostObjectInput>,
    ) -> S3Result<S3Response<PostObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let size = req.input.content_length.and_then(|n| u64::try_from(n).ok());
        let response = self.fs.post_object(req).await?;
        self.notify("Post", &bucket, &key, size).await;
        Ok(response)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.complete_multipart_upload(req).await?;
        self.notify("CompleteMultipartUpload", &bucket, &key, None)
            .await;
        Ok(response)
    }

    /// s3s-fs ignores `response-content-disposition` and `response-content-type`;
    /// S3 honours them, and the page's download links rely on it.
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let disposition = req.input.response_content_disposition.clone();
        let content_type = req.input.response_content_type.clone();
        let mut response = self.fs.get_object(req).await?;
        if disposition.is_some() {
            response.output.content_disposition = disposition;
        }
        if content_type.is_some() {
            response.output.content_type = content_type;
        }
        Ok(response)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}
