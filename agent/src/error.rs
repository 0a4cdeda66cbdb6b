//! The agent's error type, and how each error crosses the wire.
//!
//! Every variant maps to one [`ErrorKind`], so the taskmanager can branch (retry on
//! `Unavailable`, never on `BadRequest`). Messages never carry secrets: errors from statements
//! that contain a password are built without the server's text (see [`crate::db`]).

use ferrotrove_proto::{ErrorKind, RemoteError};
use std::path::{Path, PathBuf};

/// Why a command (or a step of one) failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed (a bad name, a missing password); resending will not help.
    #[error("{0}")]
    BadRequest(String),

    /// The thing named (a snapshot file) does not exist.
    #[error("{0}")]
    NotFound(String),

    /// The server is in a state that forbids the request (not prepared, not a replica...).
    #[error("{0}")]
    Conflict(String),

    /// The database server cannot be reached; retrying later may help.
    #[error("database server unavailable: {0}")]
    Unavailable(String),

    /// The database server refused or failed a statement.
    #[error("{what} failed: {message}")]
    Database {
        /// The step, e.g. "create database".
        what: &'static str,
        /// The server's error code, when the server answered.
        code: Option<u16>,
        /// The server's message, or only its code when the statement carried a secret.
        message: String,
    },

    /// A file operation failed on this host.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What the agent was doing, as a verb phrase ("create directory").
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A helper program (install-db, dump, client) failed or could not be run.
    #[error("{program} failed: {message}")]
    Command { program: String, message: String },

    /// The database server process did not start, or did not stop, in time.
    #[error("{0}")]
    Server(String),

    /// The file system holding the named directory has no room left.
    #[error("{0}")]
    DiskFull(String),

    /// A snapshot's bytes do not match its recorded size or checksum.
    #[error("{0}")]
    SnapshotMismatch(String),

    /// A snapshot being read while it was written will never be finished: its writer
    /// removed it, or stopped showing signs of life.
    #[error("{0}")]
    SnapshotAbandoned(String),

    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The agent's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    /// A file operation error on `path`.
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> AgentError {
        AgentError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// The kind the caller sees on the wire.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AgentError::BadRequest(_) | AgentError::SnapshotMismatch(_) => ErrorKind::BadRequest,
            AgentError::NotFound(_) => ErrorKind::NotFound,
            AgentError::Conflict(_) | AgentError::SnapshotAbandoned(_) => ErrorKind::Conflict,
            AgentError::Unavailable(_) => ErrorKind::Unavailable,
            AgentError::Database { .. } => ErrorKind::Database,
            AgentError::Io { .. }
            | AgentError::Command { .. }
            | AgentError::Server(_)
            | AgentError::DiskFull(_) => ErrorKind::Io,
            AgentError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<AgentError> for RemoteError {
    fn from(err: AgentError) -> RemoteError {
        RemoteError::new(err.kind(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause() {
        assert_eq!(
            AgentError::BadRequest("x".into()).kind(),
            ErrorKind::BadRequest
        );
        assert_eq!(AgentError::Conflict("x".into()).kind(), ErrorKind::Conflict);
        assert_eq!(
            AgentError::Unavailable("x".into()).kind(),
            ErrorKind::Unavailable
        );
        let db = AgentError::Database {
            what: "create user",
            code: Some(1396),
            message: "m".into(),
        };
        assert_eq!(db.kind(), ErrorKind::Database);
        let io = AgentError::io("open", Path::new("/x"), std::io::Error::other("boom"));
        assert_eq!(io.kind(), ErrorKind::Io);
        assert_eq!(io.to_string(), "cannot open /x: boom");
    }

    #[test]
    fn remote_error_keeps_kind_and_message() {
        let remote: RemoteError = AgentError::Conflict("not a replica".into()).into();
        assert_eq!(
            remote,
            RemoteError::new(ErrorKind::Conflict, "not a replica")
        );
    }
}
