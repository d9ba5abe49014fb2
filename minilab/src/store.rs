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
        // As s3s-fs resolves it: objects are files at {root}/{bucket}/{key}.
        root: std::env::current_dir()?.join(config.root).canonicalize()?,
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
    Ok(axum::Router::new()
        .fallback_service(service)
        .layer(axum::middleware::map_request(small_chunks))
        .layer(cors))
}

/// The largest body chunk handed to s3s.
const MAX_CHUNK: usize = 16 * 1024;

/// s3s 0.14.1's multipart parser fails a POST upload (`BoundaryBufferTooLarge`)
/// when a body chunk ends in a prefix of the boundary (a lone `\r` in the image
/// data will do) and the next chunk is over 64 KiB, as Chromium's often are. Slicing
/// form uploads into small chunks (zero-copy) keeps it under that limit. Other
/// requests keep their bodies as they are (s3s reads the size of those from them).
async fn small_chunks(request: axum::extract::Request) -> axum::extract::Request {
    use futures::StreamExt;
    let is_form = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if request.method() != Method::POST || !is_form {
        return request;
    }
    request.map(|body| {
        let pieces = body.into_data_stream().flat_map(|item| {
            let pieces: Vec<Result<bytes::Bytes, axum::Error>> = match item {
                Ok(mut bytes) => {
                    let mut pieces = Vec::with_capacity(bytes.len() / MAX_CHUNK + 1);
                    while bytes.len() > MAX_CHUNK {
                        pieces.push(Ok(bytes.split_to(MAX_CHUNK)));
                    }
                    pieces.push(Ok(bytes));
                    pieces
                }
                Err(err) => vec![Err(err)],
            };
            futures::stream::iter(pieces)
        });
        axum::body::Body::from_stream(pieces)
    })
}

struct NotifyingStore {
    fs: s3s_fs::FileSystem,
    root: std::path::PathBuf,
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

    /// The whole object at `bucket`/`key` in one read, if it is a plain file under the
    /// root of `length` bytes. s3s-fs streams a file in 4 KiB reads, each a trip to
    /// tokio's blocking pool: about 50 ms for a 2 MB photo, most of it thread wake-ups.
    async fn read_whole(&self, bucket: &str, key: &str, length: i64) -> Option<bytes::Bytes> {
        if length > MAX_WHOLE_READ {
            return None;
        }
        let bytes = tokio::fs::read(self.object_path(bucket, key)?).await.ok()?;
        (i64::try_from(bytes.len()).ok() == Some(length)).then(|| bytes.into())
    }

    /// Where s3s-fs keeps an object, for a plain key (no `..`, no root).
    fn object_path(&self, bucket: &str, key: &str) -> Option<std::path::PathBuf> {
        let relative = Path::new(bucket).join(key);
        let plain = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        plain.then(|| self.root.join(relative))
    }
}

/// `body` as one chunk, so that s3s-fs writes it in one go: it writes chunk by chunk
/// through an 8 KiB `BufWriter` over tokio's `File`, a blocking-pool trip for each
/// chunk (a form upload arrives in 16 KiB pieces: ~115 trips for a 1.8 MB photo).
/// Bodies larger than [`MAX_WHOLE_READ`] stream as they are.
async fn in_one_piece(body: Option<StreamingBlob>) -> S3Result<Option<StreamingBlob>> {
    use futures::StreamExt;
    use s3s::stream::ByteStream;
    let Some(mut body) = body else {
        return Ok(None);
    };
    let known = body.remaining_length().exact();
    if known.is_none_or(|n| n as u64 > MAX_WHOLE_READ as u64) {
        return Ok(Some(body));
    }
    let mut whole = bytes::BytesMut::with_capacity(known.unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| s3s::s3_error!(IncompleteBody, "{e}"))?;
        whole.extend_from_slice(&chunk);
    }
    Ok(Some(StreamingBlob::from(s3s::Body::from(whole.freeze()))))
}

/// The largest object [`NotifyingStore::read_whole`] reads at once (uploads are at
/// most 25 MB by default; larger ones stream).
const MAX_WHOLE_READ: i64 = 64 << 20;

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
        let mut req = req;
        req.input.body = in_one_piece(req.input.body.take()).await?;
        let response = self.fs.put_object(req).await?;
        self.notify("Put", &bucket, &key, size).await;
        Ok(response)
    }

    /// A form upload is a ticket's one upload: a second POST to a key that exists is
    /// refused (412 PreconditionFailed), as a PUT with `If-None-Match: *` would be.
    /// (S3 has no such condition for POST; there the worker's claim makes a second
    /// POST cost no second processing.)
    async fn post_object(
        &self,
        req: S3Request<PostObjectInput>,
    ) -> S3Result<S3Response<PostObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        if let Some(path) = self.object_path(&bucket, &key)
            && tokio::fs::try_exists(path).await.unwrap_or(false)
        {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "an object exists at this key: an upload ticket uploads once"
            ));
        }
        let size = req.input.content_length.and_then(|n| u64::try_from(n).ok());
        let mut req = req;
        req.input.body = in_one_piece(req.input.body.take()).await?;
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
    /// S3 honours them, and the page's download links rely on it. A whole object is
    /// read at once ([`NotifyingStore::read_whole`]).
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let disposition = req.input.response_content_disposition.clone();
        let content_type = req.input.response_content_type.clone();
        let whole = req.input.range.is_none() && req.input.part_number.is_none();
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let mut response = self.fs.get_object(req).await?;
        if whole {
            let length = response.output.content_length.unwrap_or(-1);
            if let Some(bytes) = self.read_whole(&bucket, &key, length).await {
                response.output.body = Some(StreamingBlob::from(s3s::Body::from(bytes)));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use minilab_api::post_policy::PostPolicy;
    use tower::ServiceExt;

    async fn chunks_of(blob: StreamingBlob) -> Vec<bytes::Bytes> {
        use futures::StreamExt;
        blob.map(|chunk| chunk.unwrap()).collect().await
    }

    /// Chunks whose total length is known.
    struct Pieces(std::collections::VecDeque<bytes::Bytes>);

    impl futures::Stream for Pieces {
        type Item = Result<bytes::Bytes, s3s::StdError>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    impl s3s::stream::ByteStream for Pieces {
        fn remaining_length(&self) -> s3s::stream::RemainingLength {
            s3s::stream::RemainingLength::new_exact(self.0.iter().map(|p| p.len()).sum())
        }
    }

    #[tokio::test]
    async fn a_body_of_known_length_is_written_in_one_piece() {
        let pieces: Vec<bytes::Bytes> = (0..100u8).map(|i| vec![i; 16 * 1024].into()).collect();
        let whole: Vec<u8> = pieces.iter().flatten().copied().collect();
        let body = s3s::Body::from(whole.clone());
        let one = in_one_piece(Some(StreamingBlob::from(body))).await.unwrap();
        let chunks = chunks_of(one.unwrap()).await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0], whole);

        // Many chunks with their length known (as s3s hands a form's file over)
        // come out as one.
        let blob = StreamingBlob::new(Pieces(pieces.into()));
        let chunks = chunks_of(in_one_piece(Some(blob)).await.unwrap().unwrap()).await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0], whole);
    }

    /// A browser-like POST whose body arrives in the chunks given, through the
    /// whole store router.
    async fn post_in_chunks(file: &[u8], split_at: &[usize]) -> (StatusCode, Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("uploads-test")).unwrap();
        let credentials = StoreCredentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "secret".into(),
        };
        let (events, mut queue) = tokio::sync::mpsc::channel(4);
        let router = router(StoreConfig {
            root: dir.path(),
            credentials: &credentials,
            notify_bucket: "uploads-test".into(),
            events,
            allowed_origins: Vec::new(),
            max_post_bytes: 1 << 20,
        })
        .unwrap();
        let now = Utc::now();
        let fields = PostPolicy {
            bucket: "uploads-test",
            key: "uploads/x",
            content_type: "image/jpeg",
            size: file.len() as u64,
            metadata: &[],
            expires_at: now + chrono::Duration::minutes(5),
        }
        .sign(
            &aws_credential_types::Credentials::new("AKIDTEST", "secret", None, None, "test"),
            "us-east-1",
            now,
        );
        let boundary = "----WebKitFormBoundaryMinilabTest";
        let mut body = Vec::new();
        for (name, value) in &fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
            )
            .as_bytes(),
        );
        let file_start = body.len();
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

        let mut chunks = Vec::new();
        let mut at = 0;
        for &split in split_at {
            chunks.push(Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(
                &body[at..file_start + split],
            )));
            at = file_start + split;
        }
        chunks.push(Ok(bytes::Bytes::copy_from_slice(&body[at..])));
        let request = http::Request::post("/uploads-test")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("content-length", body.len())
            .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let text = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&text)
        );
        (status, queue.try_recv().ok())
    }

    #[tokio::test]
    async fn a_chunk_ending_in_a_carriage_return_before_a_large_chunk_uploads() {
        // 200 KiB of image-like bytes with a lone '\r' at the end of the first chunk.
        let mut file: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8 | 0x01).collect();
        file[999] = b'\r';
        let (status, event) = post_in_chunks(&file, &[1000, 1000 + 150 * 1024]).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let event = event.expect("an ObjectCreated event");
        assert!(
            event.contains("ObjectCreated:Post") && event.contains("uploads/x"),
            "{event}"
        );
    }
}
