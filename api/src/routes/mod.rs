//! The routes, mounted as Trove's v1.0 API: everything under `/v1.0/{tenant}/` (behind the
//! token check, [`auth::require_token`]), plus the legacy shell's auth handshake at `/auth`.
//! One module per resource.

pub mod create;
pub mod datastores;
pub mod flavors;
pub mod instances;

use crate::auth;
use crate::fault;
use crate::panics;
use crate::state::AppState;
use crate::trace;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let project = Router::new()
        .route("/instances", get(instances::list).post(create::create))
        .route("/instances/detail", get(instances::list))
        .route(
            "/instances/{id}",
            get(instances::show)
                .put(instances::update)
                .delete(instances::delete),
        )
        .route("/instances/{id}/action", post(instances::action))
        .route("/flavors", get(flavors::list))
        .route("/flavors/{id}", get(flavors::show))
        .route("/datastores", get(datastores::list))
        .route(
            "/datastores/versions/{version_id}",
            get(datastores::show_version_by_id),
        )
        .route("/datastores/{datastore}", get(datastores::show))
        .route(
            "/datastores/{datastore}/versions",
            get(datastores::list_versions),
        )
        .route(
            "/datastores/{datastore}/versions/{version}",
            get(datastores::show_version),
        )
        .fallback(fault::unknown_route)
        .method_not_allowed_fallback(fault::wrong_method)
        // Also wraps the fallbacks: nothing under /v1.0/{tenant}/ answers without a token.
        .layer(from_fn_with_state(state.clone(), auth::require_token));
    let api = Router::new()
        .nest("/v1.0/{tenant}", project)
        .route("/auth", get(auth::legacy_handshake))
        .fallback(fault::unknown_route)
        .method_not_allowed_fallback(fault::wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn(trace::request_span))
        .with_state(state);
    // Outermost, so that a panic anywhere below, the request span's middleware included,
    // is answered and logged.
    panics::catch_panics(api)
}
