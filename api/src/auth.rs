//! Who is asking: the project (tenant) in the URL, and the token.
//!
//! Tokens are not checked yet: mapping a token to the projects it may act for is a later
//! issue, and until then the API runs as if in a no-auth mode, trusting the URL's project.
//! Every query is scoped to that project, so a project never sees another's instances.
//!
//! The legacy `trove` shell also needs a v1 auth handshake (`GET <auth-url>`), answered
//! here at `/auth`.

use crate::extract::{BaseUrl, path_param};
use crate::fault::Fault;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The project a request acts for, from the `{tenant}` path segment.
pub struct Tenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Fault> {
        let tenant = path_param(parts, "tenant").await?;
        if tenant.is_empty() || tenant.chars().count() > 64 || tenant.chars().any(char::is_control)
        {
            return Err(Fault::bad_request(
                "The project id in the URL must be 1 to 64 characters.",
            ));
        }
        tracing::Span::current().record("tenant", tenant.as_str());
        Ok(Tenant(tenant))
    }
}

/// `GET /auth`: the legacy shell's v1 handshake. It needs a 2xx with `X-Auth-Token` and
/// `X-Server-Management-Url` (which `--bypass-url` then replaces). The password
/// (`X-Auth-Key`) is neither checked nor kept.
pub async fn legacy_handshake(BaseUrl(base): BaseUrl, headers: HeaderMap) -> Response {
    let project = ["x-auth-project-id", "x-auth-user"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .find(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .unwrap_or("tenant");
    let token = uuid::Uuid::new_v4().to_string();
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    for (name, value) in [
        ("x-auth-token", token),
        ("x-server-management-url", format!("{base}/v1.0/{project}")),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    }
    response
}
