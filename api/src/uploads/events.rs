//! `GET /api/v1/uploads/{id}/events`: the upload's state as Server-Sent Events, one
//! `status` event (the same body as `GET /api/v1/uploads/{id}`) each time the state
//! changes, the first at once, ending after the final one. Woken like the long poll
//! ([`Watch`]). A failure to read the state ends the stream with an `api-error` event
//! (`{"error": {code, message}}`): the page then falls back to the long poll.

use super::status::{UploadState, Watch, visible_upload};
use crate::ApiState;
use crate::auth::Subject;
use crate::error::{ApiError, Code, ErrorBody, Result};
use crate::limits::{Client, MAX_WAITS_PER_CLIENT, WaitPermit};
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Most event streams one API instance keeps open; more are refused `overloaded`.
pub const MAX_STREAMS: usize = 1024;
/// Longest one stream stays open; an EventSource reconnects by itself after it.
const MAX_STREAM_AGE: Duration = Duration::from_secs(10 * 60);

/// The streams open now, bounded by [`MAX_STREAMS`].
#[derive(Clone, Debug)]
pub struct EventStreams(Arc<Semaphore>);

impl Default for EventStreams {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_STREAMS)))
    }
}

/// The upload's status as Server-Sent Events: `event: status` with an `UploadStatus`
/// as its data, at once and at each change of `state`; the stream ends after the
/// final one. `event: api-error` with an `ErrorBody` ends it when the state cannot
/// be read. Comments (`:`) keep the connection alive every 15 s.
#[utoipa::path(get, path = "/api/v1/uploads/{id}/events", tag = "uploads",
    params(("id" = String, Path, description = "The upload's id")),
    responses(
        (status = 200, description = "The stream: `status` events (data: `UploadStatus`), maybe one `api-error` (data: `ErrorBody`)",
         content_type = "text/event-stream", body = String),
        (status = 401, description = "`token-*` (sign-in on)", body = ErrorBody),
        (status = 404, description = "`not-found`", body = ErrorBody),
        (status = 429, description = "`rate-limited` (with `Retry-After`): too many requests, or too many waiting from this client", body = ErrorBody),
        (status = 503, description = "`overloaded`: too many streams open", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<ApiState>,
    subject: Option<Extension<Subject>>,
    client: Option<Extension<Client>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let id = visible_upload(&id, subject)?;
    let place = match client {
        Some(Extension(Client(client))) => Some(state.waits.start(client).ok_or_else(|| {
            ApiError::too_many(
                Code::RateLimited,
                format!(
                    "this client has {MAX_WAITS_PER_CLIENT} requests waiting already; poll the status instead"
                ),
                1,
            )
        })?),
        None => None,
    };
    let permit = state
        .event_streams
        .0
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                Code::Overloaded,
                "too many event streams are open; poll the status instead",
            )
        })?;
    let stream = OpenStream {
        watch: Watch::new(&state, id),
        state,
        last: None,
        deadline: Instant::now() + MAX_STREAM_AGE,
        _permit: permit,
        _place: place,
    };
    Ok(
        Sse::new(futures::stream::unfold(Some(stream), next_event))
            .keep_alive(KeepAlive::default()),
    )
}

/// One open stream: what it last sent, and until when it stays open.
struct OpenStream {
    state: ApiState,
    watch: Watch,
    last: Option<UploadState>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
    /// Its place among its client's waiting requests.
    _place: Option<WaitPermit>,
}

/// The stream's next event, and what is left of it (`None`: it ends after this one).
async fn next_event(
    stream: Option<OpenStream>,
) -> Option<(std::result::Result<Event, Infallible>, Option<OpenStream>)> {
    let mut stream = stream?;
    loop {
        let status = match stream.watch.read(&stream.state).await {
            Ok(status) => status,
            Err(err) => {
                let data = serde_json::to_string(&err.into_body()).unwrap_or_default();
                return Some((Ok(Event::default().event("api-error").data(data)), None));
            }
        };
        if stream.last != Some(status.state) {
            let data = serde_json::to_string(&status).unwrap_or_default();
            let event = Event::default().event("status").data(data);
            let last = status.state.is_final();
            stream.last = Some(status.state);
            return Some((Ok(event), (!last).then_some(stream)));
        }
        if Instant::now() >= stream.deadline {
            return None;
        }
        stream.watch.next(stream.deadline).await;
    }
}
