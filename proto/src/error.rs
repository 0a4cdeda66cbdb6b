//! Errors that cross process boundaries with their kind intact.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, in words every process understands. The API maps these to HTTP
/// statuses; callers branch on them (retry on `Unavailable`, never on `BadRequest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request itself is wrong; sending it again will not help.
    BadRequest,
    /// The thing named does not exist.
    NotFound,
    /// The thing exists but is in a state that forbids the request.
    Conflict,
    /// The receiver does not know the method (an older or newer peer).
    UnknownMethod,
    /// The receiver does not speak the envelope's protocol version.
    UnsupportedVersion,
    /// The message's deadline passed before it could be handled.
    DeadlineExceeded,
    /// A dependency (the database server, the broker, a peer) is not reachable; retry later.
    Unavailable,
    /// The database server refused or failed a statement.
    Database,
    /// A file or process operation failed on the receiver's host.
    Io,
    /// A bug or an unexpected state on the receiver.
    Internal,
}

/// An error reply: a kind and a message for humans. Messages never carry secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}
