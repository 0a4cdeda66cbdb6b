//! Provisioners give a new instance a host with a running agent on it, and take it away.
//!
//! One trait, one implementation per kind of host: `local` (agent processes on this host)
//! today; pools of pre-built hosts and cloud APIs later.

mod broker_users;
mod local;

pub use local::LocalProvisioner;

use ferrotrove_proto::Secret;
use ferrotrove_store::Instance;
use std::future::Future;
use uuid::Uuid;

/// Where a provisioned instance's database server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

pub trait Provisioner: Send + Sync + 'static {
    /// Gives `instance` a host and starts its agent; returns once the agent answers.
    /// Idempotent: provisioning an instance again reuses what exists.
    /// `secret` is the instance's message-signing secret, which its agent is given.
    fn provision(
        &self,
        instance: &Instance,
        secret: &Secret,
    ) -> impl Future<Output = Result<Endpoint, ProvisionError>> + Send;

    /// Stops the instance's agent and database server and removes its data and host.
    /// Idempotent: destroying what is gone succeeds.
    fn destroy(
        &self,
        instance_id: Uuid,
        secret: Option<Secret>,
    ) -> impl Future<Output = Result<(), ProvisionError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the agent of instance {instance_id} did not start: {detail}")]
    AgentDidNotStart { instance_id: Uuid, detail: String },
    #[error("{0}")]
    Other(String),
}

impl From<ProvisionError> for crate::error::TaskError {
    fn from(e: ProvisionError) -> Self {
        crate::error::TaskError::Provision(e.to_string())
    }
}
