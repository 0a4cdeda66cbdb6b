//! Why a task step failed. The Display text becomes the instance's fault message, so it
//! says what failed in words a user can act on, and never carries a secret.

use ferrotrove_bus::BusError;
use ferrotrove_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("control DB: {0}")]
    Store(#[from] StoreError),
    #[error("provisioning failed: {0}")]
    Provision(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    State(String),
}

impl TaskError {
    /// Adds what the step was doing in front of the error, for the fault message.
    pub fn during(self, step: impl std::fmt::Display) -> TaskError {
        TaskError::State(format!("{step}: {self}"))
    }

    /// Whether an agent answered that it does not know the method (an older agent).
    pub fn is_unknown_method(&self) -> bool {
        matches!(self, TaskError::Bus(BusError::Remote { error, .. })
            if error.kind == ferrotrove_proto::ErrorKind::UnknownMethod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotrove_proto::{ErrorKind, RemoteError};

    #[test]
    fn an_older_agent_is_told_by_its_unknown_method_answer() {
        let answer = |kind| {
            TaskError::Bus(BusError::Remote {
                queue: "guestagent.x".into(),
                method: "AttachFollowing".into(),
                error: RemoteError::new(kind, "cannot handle method \"AttachFollowing\""),
            })
        };
        assert!(answer(ErrorKind::UnknownMethod).is_unknown_method());
        assert!(!answer(ErrorKind::Conflict).is_unknown_method());
        assert!(!TaskError::State("unknown method".into()).is_unknown_method());
    }
}
