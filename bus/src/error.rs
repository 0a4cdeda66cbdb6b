//! What can go wrong on the bus, with kinds callers can branch on.

use ferrotrove_proto::envelope::CodecError;
use ferrotrove_proto::{ErrorKind, RemoteError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to the message broker at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("{queue} is not listening (no queue bound for it)")]
    NotListening { queue: String },
    #[error("{method} to {queue} got no reply within {after:?}")]
    Timeout {
        queue: String,
        method: String,
        after: Duration,
    },
    #[error("{queue} answered {method} with an error: {error}")]
    Remote {
        queue: String,
        method: String,
        error: RemoteError,
    },
    #[error("the broker refused the message for {queue}")]
    Nacked { queue: String },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("message broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the bus connection is closed")]
    Closed,
    #[error("{0}")]
    Protocol(String),
}

impl BusError {
    /// The error kind, as it would travel on the wire.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BusError::Remote { error, .. } => error.kind,
            BusError::Timeout { .. } => ErrorKind::DeadlineExceeded,
            BusError::Connect { .. }
            | BusError::NotListening { .. }
            | BusError::Nacked { .. }
            | BusError::Amqp(_)
            | BusError::Closed => ErrorKind::Unavailable,
            BusError::Codec(_) | BusError::Protocol(_) => ErrorKind::Internal,
        }
    }

    /// The remote error, when the peer answered with one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            BusError::Remote { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded
        )
    }
}
