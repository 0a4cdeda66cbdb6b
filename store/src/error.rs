//! The store's one error type: callers branch on its variants (a missing row is a 404, a
//! refused transition is a conflict, an unreachable database is retried).

use ferrotrove_proto::ErrorKind;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row named does not exist (or is deleted). The message names it.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (for example, a name that several
    /// instances share). The message says what to do instead.
    #[error("{0}")]
    Conflict(String),
    /// The configuration is unusable: a bad database name, a URL that does not parse.
    /// Never carries the URL itself, which may hold a password.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The database server refused a statement or could not be reached. (Its message is
    /// in this error's own text, so it is not also reported as the `source`.)
    #[error("control database error: {0}")]
    Database(mysql_async::Error),
    /// The control DB did not answer within `store.timeout_secs` (a connection, or a
    /// statement's answer): the server hangs, or its host cannot be reached. What the
    /// operation did may or may not have been committed.
    #[error("the control database did not answer within {} s", .0.as_secs())]
    Timeout(std::time::Duration),
    /// A stored value that this build cannot read (an unknown status word, a malformed
    /// UUID): a bug or a newer schema, never the user's fault.
    #[error("unreadable row in the control database: {0}")]
    Corrupt(String),
}

impl From<mysql_async::Error> for StoreError {
    fn from(e: mysql_async::Error) -> StoreError {
        StoreError::Database(e)
    }
}

impl StoreError {
    /// The error's kind on the wire, for callers that pass it on or map it to HTTP.
    ///
    /// Connection-level failures are `Unavailable` (retry later); statements the server
    /// rejected are `Database`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::Config(_) => ErrorKind::BadRequest,
            StoreError::Database(mysql_async::Error::Server(_)) => ErrorKind::Database,
            StoreError::Database(_) | StoreError::Timeout(_) => ErrorKind::Unavailable,
            StoreError::Corrupt(_) => ErrorKind::Internal,
        }
    }

    /// Whether the row was not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// Whether the request contradicted what is stored.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}
