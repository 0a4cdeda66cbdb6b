//! What the API asks of the taskmanager (`taskmanager` queue); all casts.
//!
//! The control DB holds the intent (the instance rows); these messages only say which
//! rows to act on, so a redelivered message re-reads the current state.

use crate::agent::UserSpec;
use crate::envelope::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRequest {
    /// Provision and prepare a new, standalone instance. Databases and users travel here,
    /// not through the control DB, so that user passwords are never stored there.
    CreateInstance {
        instance_id: Uuid,
        #[serde(default)]
        databases: Vec<String>,
        #[serde(default)]
        users: Vec<UserSpec>,
    },
    /// Seed the new replicas of one request from one snapshot of `source_id`, then attach.
    CreateReplicas {
        source_id: Uuid,
        replica_ids: Vec<Uuid>,
    },
    /// Turn a replica into an independent, writable server.
    DetachReplica { instance_id: Uuid },
    /// Stop the instance's server and agent, remove its data and host.
    DeleteInstance { instance_id: Uuid },
}

impl TaskRequest {
    /// The task's kind and the instance it is about (for a replica request, the source).
    pub fn subject(&self) -> (&'static str, Uuid) {
        match self {
            Self::CreateInstance { instance_id, .. } => ("create", *instance_id),
            Self::CreateReplicas { source_id, .. } => ("create_replicas", *source_id),
            Self::DetachReplica { instance_id } => ("detach", *instance_id),
            Self::DeleteInstance { instance_id } => ("delete", *instance_id),
        }
    }

    /// The instances the task builds or changes: for a replica request, its replicas (the
    /// source, which it is about, is only read from); otherwise the instance it is about.
    /// Recorded with the task, so that a replica names the task that seeds it.
    pub fn instances(&self) -> Vec<Uuid> {
        match self {
            Self::CreateReplicas { replica_ids, .. } => replica_ids.clone(),
            Self::CreateInstance { instance_id, .. }
            | Self::DetachReplica { instance_id }
            | Self::DeleteInstance { instance_id } => vec![*instance_id],
        }
    }
}

impl Method for TaskRequest {
    fn name(&self) -> &'static str {
        match self {
            Self::CreateInstance { .. } => "CreateInstance",
            Self::CreateReplicas { .. } => "CreateReplicas",
            Self::DetachReplica { .. } => "DetachReplica",
            Self::DeleteInstance { .. } => "DeleteInstance",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_request_works_on_its_replicas() {
        let (source, r1, r2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let request = TaskRequest::CreateReplicas {
            source_id: source,
            replica_ids: vec![r1, r2],
        };
        assert_eq!(request.subject(), ("create_replicas", source));
        assert_eq!(request.instances(), [r1, r2]);
        let detach = TaskRequest::DetachReplica { instance_id: r1 };
        assert_eq!(detach.instances(), [r1]);
    }
}
