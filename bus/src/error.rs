//! What can go wrong on the bus, with kinds callers can branch on.

use ferrotrove_proto::envelope::CodecError;
use ferrotrove_proto::{ErrorKind, RemoteError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to the message broker at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("the message broker at {url} did not complete the connection within {after:?}")]
    ConnectTimeout { url: String, after: Duration },
    /// The URL cannot be parsed; the message names it without its password.
    #[error("{0}")]
    InvalidUrl(String),
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
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
    /// The broker took neither the message nor a refusal within the confirm timeout: it
    /// may be blocking publishers (a disk or memory alarm). The message may still arrive.
    #[error(
        "the message broker did not confirm the message for {queue} within {after:?} \
         (it may be blocking publishers on a disk or memory alarm)"
    )]
    Unconfirmed { queue: String, after: Duration },
    /// The broker said it blocks this connection's publishing (a disk or memory alarm),
    /// and has not said it stopped.
    #[error("the message broker blocks publishing (a disk or memory alarm)")]
    Blocked,
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
            | BusError::ConnectTimeout { .. }
            | BusError::NotListening { .. }
            | BusError::Nacked { .. }
            | BusError::Unconfirmed { .. }
            | BusError::Blocked
            | BusError::Amqp(_)
            | BusError::Closed => ErrorKind::Unavailable,
            BusError::Codec(_)
            | BusError::Protocol(_)
            | BusError::TlsFile { .. }
            | BusError::InvalidUrl(_) => ErrorKind::Internal,
        }
    }

    /// The remote error, when the peer answered with one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            BusError::Remote { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the connection to the broker was lost or cannot be made: the message may or
    /// may not have arrived, and sending it again once the broker is back is the remedy
    /// (safe when the receiver recognises the operation id).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            BusError::Closed
                | BusError::Connect { .. }
                | BusError::ConnectTimeout { .. }
                | BusError::Amqp(_)
        )
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded
        )
    }
}
