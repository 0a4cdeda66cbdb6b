//! One tracing span per request, carrying the method, the path, and (recorded by the
//! handlers once known) the project and the instance id. Bodies are never logged: they
//! may hold passwords.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

pub async fn request_span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        tenant = Empty,
        instance = Empty,
    );
    let started = Instant::now();
    async move {
        let response = next.run(request).await;
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if response.status().is_server_error() {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request handled");
        }
        response
    }
    .instrument(span)
    .await
}

/// Records the instance a request is about on its span.
pub fn record_instance(id: uuid::Uuid) {
    tracing::Span::current().record("instance", tracing::field::display(id));
}
