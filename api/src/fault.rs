//! Errors as Trove clients expect them: `{"<faultName>": {"code": N, "message": "..."}}`
//! with `Content-Type: application/json`, for every failure, including ones axum itself
//! detects (unknown route, wrong method, unreadable body).
//!
//! This is the one place where store and bus errors become HTTP statuses. Internal details
//! (SQL errors, broker errors) are logged here and replaced by a message for users.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrotrove_bus::BusError;
use ferrotrove_store::StoreError;

/// A failure to report to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub status: StatusCode,
    pub message: String,
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Fault {
        Fault {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::FORBIDDEN, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The fault's name in the body, as upstream Trove (and nova, for the codes Trove
    /// does not name) spells it.
    pub fn name(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            422 => "unprocessableEntity",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "instanceFault",
        }
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ self.name(): { "code": self.status.as_u16(), "message": self.message } });
        // Json sets Content-Type: application/json.
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Fault {
        match e {
            StoreError::NotFound(message) => Fault::not_found(message),
            StoreError::Conflict(message) => Fault::new(StatusCode::CONFLICT, message),
            other if other.kind() == ferrotrove_proto::ErrorKind::Unavailable => {
                tracing::error!(error = %other, "control DB unreachable");
                Fault::unavailable("The control database is unreachable; try again later.")
            }
            other => {
                tracing::error!(error = %other, "control DB request failed");
                Fault::internal(
                    "The control database failed the request; the operator will find the cause in the API's log.",
                )
            }
        }
    }
}

impl From<BusError> for Fault {
    fn from(e: BusError) -> Fault {
        tracing::error!(error = %e, "cast to the taskmanager failed");
        Fault::unavailable("The taskmanager cannot be reached; try again later.")
    }
}

/// The fallback for paths no route serves.
pub async fn unknown_route() -> Fault {
    Fault::not_found("The resource could not be found.")
}

/// The fallback for a known path with a method it does not serve.
pub async fn wrong_method() -> Fault {
    Fault::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "This method is not allowed on this resource.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_trove() {
        assert_eq!(Fault::bad_request("x").name(), "badRequest");
        assert_eq!(Fault::not_found("x").name(), "itemNotFound");
        assert_eq!(Fault::unauthorized("x").name(), "unauthorized");
        assert_eq!(Fault::forbidden("x").name(), "forbidden");
        assert_eq!(Fault::unprocessable("x").name(), "unprocessableEntity");
        assert_eq!(Fault::internal("x").name(), "instanceFault");
        assert_eq!(Fault::unavailable("x").name(), "serviceUnavailable");
        assert_eq!(
            Fault::new(StatusCode::METHOD_NOT_ALLOWED, "x").name(),
            "badMethod"
        );
    }

    #[test]
    fn store_errors_map_by_kind() {
        assert_eq!(
            Fault::from(StoreError::NotFound("gone".into())).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            Fault::from(StoreError::Conflict("two".into())).status,
            StatusCode::CONFLICT
        );
        let timeout = Fault::from(StoreError::Timeout(std::time::Duration::from_secs(10)));
        assert_eq!(
            (timeout.status, timeout.message.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The control database is unreachable; try again later."
            )
        );
        let corrupt = Fault::from(StoreError::Corrupt("bad row".into()));
        assert_eq!(corrupt.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!corrupt.message.contains("bad row"));
    }
}
