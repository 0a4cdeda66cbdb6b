//! Extractors whose failures are Trove faults, not axum's plain-text rejections.

use crate::fault::Fault;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::HOST;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::error::Error as _;

/// A JSON request body; an unreadable one is a 400 (415 without a JSON content type, 413
/// over the body limit) saying what is wrong with it.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Fault;

    async fn from_request(req: Request, state: &S) -> Result<Self, Fault> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_fault(rejection)),
        }
    }
}

fn json_fault(rejection: JsonRejection) -> Fault {
    // The innermost cause is serde's own message (with the field path for data errors).
    let cause = |e: &dyn std::error::Error| {
        let mut inner = e;
        while let Some(next) = inner.source() {
            inner = next;
        }
        inner.to_string()
    };
    match rejection {
        JsonRejection::JsonSyntaxError(e) => Fault::bad_request(format!(
            "The request body is not valid JSON: {}.",
            cause(&e)
        )),
        JsonRejection::JsonDataError(e) => {
            let path_and_cause = e
                .source()
                .map(|s| s.to_string())
                .unwrap_or_else(|| cause(&e));
            Fault::bad_request(format!(
                "The request body has the wrong shape: {path_and_cause}."
            ))
        }
        JsonRejection::MissingJsonContentType(_) => Fault::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request body must be JSON, sent with Content-Type: application/json.",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Fault::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is larger than 1 MiB.",
            )
        }
        JsonRejection::BytesRejection(e) => Fault::bad_request(format!(
            "The request body could not be read: {}.",
            cause(&e)
        )),
        other => Fault::bad_request(format!(
            "The request body is unusable: {}.",
            other.body_text()
        )),
    }
}

/// One named segment of the request path (`{tenant}`, `{id}`, ...).
pub async fn path_param(parts: &mut Parts, name: &str) -> Result<String, Fault> {
    let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, &())
        .await
        .map_err(|e| {
            Fault::bad_request(format!("The request path is unusable: {}.", e.body_text()))
        })?;
    params
        .remove(name)
        .ok_or_else(|| Fault::internal(format!("route has no {{{name}}} segment")))
}

/// The query string as `key → value`; repeated keys keep the last value.
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Fault> {
        match Query::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Query(map)) => Ok(QueryMap(map)),
            Err(e) => Err(Fault::bad_request(format!(
                "The query string is unusable: {}.",
                e.body_text()
            ))),
        }
    }
}

/// `http://<Host>`: where this request reached us, for the `links` in responses.
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Fault> {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
            })
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        let scheme = match parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
        {
            Some("https") => "https",
            _ => "http",
        };
        Ok(BaseUrl(format!("{scheme}://{host}")))
    }
}

/// Named path segments deserialized into `T` (a struct with the names it needs); the
/// project segment is read by [`crate::auth::Tenant`].
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Fault> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Params(value)),
            Err(e) => Err(Fault::bad_request(format!(
                "The request path is unusable: {}.",
                e.body_text()
            ))),
        }
    }
}
