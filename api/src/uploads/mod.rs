//! The uploads area of the API: issuing an upload ([`create`]), its status
//! ([`status`], with a long poll), its progress as Server-Sent Events ([`events`])
//! and deleting it ([`delete`]).

pub mod create;
pub mod delete;
pub mod events;
pub mod status;

use crate::{ApiState, auth, limits};
use axum::Router;
use axum::routing::{delete, get, post};
use std::sync::Arc;

/// The uploads routes, each behind sign-in (when on) and the per-client limits:
/// tickets by count and bytes, reads by count.
pub fn router(state: &ApiState) -> Router<ApiState> {
    let limits = state.config.rate_limits;
    let guard = |rate| limits::Guard::new(rate, limits.trusted_hops, state.metrics.clone());
    let limited =
        |guard: limits::Guard| axum::middleware::from_fn_with_state(Arc::new(guard), limits::guard);
    // Sign-in runs first (the outer layer), so the limits key by its subject.
    let signed_in = axum::middleware::from_fn_with_state(state.clone(), auth::require);
    let router = Router::new()
        .route(
            "/api/v1/uploads",
            post(create::create)
                .route_layer(limited(
                    guard(limits.tickets).with_budget(limits.upload_bytes_per_hour),
                ))
                .route_layer(signed_in.clone()),
        )
        .route(
            "/api/v1/uploads/{id}",
            get(status::status)
                .route_layer(limited(guard(limits.reads)))
                .merge(delete(delete::delete).route_layer(limited(guard(limits.tickets))))
                .route_layer(signed_in.clone()),
        )
        .route(
            "/api/v1/uploads/{id}/events",
            get(events::events)
                .route_layer(limited(guard(limits.reads)))
                .route_layer(signed_in),
        );
    // Outputs at stable addresses: read like statuses, without sign-in.
    if state.config.serve_images {
        router.route(
            "/i/{id}/{file}",
            get(crate::images::image).route_layer(limited(guard(limits.reads))),
        )
    } else {
        router
    }
}
