//! The guest agent's API as the taskmanager uses it: one typed method per command, each
//! with the time limit that fits it.
//!
//! A dead agent's queue still exists, so a command to it would wait out its whole time
//! limit (an hour for a snapshot). Every command is therefore watched: the agent is pinged
//! first and then every few seconds while the command runs (it answers pings while it
//! works), and the command fails as soon as a ping goes unanswered.

use crate::config::Timeouts;
use crate::error::TaskError;
use ferrotrove_bus::{Bus, BusError, SigningKey};
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::{
    AgentInfo, AgentRequest, AgentResponse, AttachFollowingRequest, AttachRequest, PrepareRequest,
    ReplicationUser, ReplicationUserName, ServerStatus, SnapshotInfo, SnapshotMethod,
    SnapshotRequest,
};
use ferrotrove_proto::queues;
use std::time::{Duration, Instant};
use uuid::Uuid;

tokio::task_local! {
    /// The task this code runs for: the id of its `taskmanager` message, the same on every
    /// redelivery. Commands sent within it get operation ids derived from it, so a task
    /// run again after a crash sends the same operation ids and agents answer what they
    /// already did with its first result.
    pub static TASK_OPERATION: Uuid;
}

/// The operation id of one command of a task: the same task, instance and request give the
/// same id; anything else a new one.
fn step_operation(task: Uuid, instance_id: Uuid, request: &AgentRequest) -> Uuid {
    match ferrotrove_proto::envelope::encode(request) {
        Ok(mut bytes) => {
            bytes.extend_from_slice(instance_id.as_bytes());
            Uuid::new_v5(&task, &bytes)
        }
        Err(_) => Uuid::now_v7(),
    }
}

/// Talks to one instance's agent, signing with the instance's secret.
pub struct Guest<'a> {
    bus: Bus,
    timeouts: &'a Timeouts,
    instance_id: Uuid,
    queue: String,
}

impl<'a> Guest<'a> {
    /// A guest whose messages are signed with `secret` (and whose replies must be). Only
    /// instances made before secrets existed have none.
    pub fn new(
        bus: &Bus,
        timeouts: &'a Timeouts,
        instance_id: Uuid,
        secret: Option<Secret>,
    ) -> Guest<'a> {
        let bus = match secret {
            Some(secret) => bus.signed_by(SigningKey {
                key_id: instance_id,
                secret,
            }),
            None => bus.clone(),
        };
        Guest {
            bus,
            timeouts,
            instance_id,
            queue: queues::guest(instance_id),
        }
    }

    /// Sends `request` and waits for its answer. While the broker is unreachable the
    /// command is sent again, with the same operation id, for up to
    /// `timeouts.broker_outage`: the agent runs one operation once and answers a repeat
    /// with the first result, so a broker restart loses no command and runs none twice.
    async fn call(
        &self,
        request: AgentRequest,
        timeout: Duration,
    ) -> Result<AgentResponse, TaskError> {
        let method = ferrotrove_proto::Method::name(&request);
        let operation = TASK_OPERATION
            .try_with(|task| step_operation(*task, self.instance_id, &request))
            .unwrap_or_else(|_| Uuid::now_v7());
        let mut outage_ends = None;
        loop {
            match self.watched_call(&request, timeout, operation).await {
                Err(Attempt::BrokerLost(error)) => {
                    let ends = *outage_ends
                        .get_or_insert_with(|| Instant::now() + self.timeouts.broker_outage());
                    if Instant::now() >= ends {
                        return Err(error.into());
                    }
                    tracing::warn!(instance_id = %self.instance_id, method, %operation, %error,
                        "lost the message broker; sending the command again once it is back");
                    tokio::time::sleep(BROKER_RETRY_PAUSE).await;
                }
                Err(Attempt::Failed(error)) => return Err(error),
                Ok(response) => return Ok(response),
            }
        }
    }

    /// One sending of a command, watched by pings.
    async fn watched_call(
        &self,
        request: &AgentRequest,
        timeout: Duration,
        operation: Uuid,
    ) -> Result<AgentResponse, Attempt> {
        let method = ferrotrove_proto::Method::name(request);
        tracing::debug!(instance_id = %self.instance_id, method, %operation, "calling agent");
        let ping_every = self.timeouts.ping();
        let call = self
            .bus
            .call_in_operation(&self.queue, request, timeout, operation);
        tokio::pin!(call);
        // The first tick is immediate: the agent is checked before the command waits.
        let mut watch = tokio::time::interval(ping_every);
        loop {
            // The ping is polled together with the command, never instead of it: the
            // command may hold the bus's reconnection, which the ping would wait for.
            let ping = async {
                watch.tick().await;
                self.bus
                    .call::<_, AgentResponse>(&self.queue, &AgentRequest::Ping, ping_every)
                    .await
            };
            tokio::select! {
                result = &mut call => return result.map_err(Attempt::from),
                pinged = ping => match pinged {
                    Ok(_) => {}
                    Err(error) if error.is_connection_lost() => return Err(Attempt::BrokerLost(error)),
                    Err(error) => return Err(Attempt::Failed(TaskError::State(format!(
                        "the agent stopped answering during {method}: {error}"
                    )))),
                }
            }
        }
    }

    pub async fn ping(&self, timeout: Duration) -> Result<AgentInfo, TaskError> {
        match self
            .bus
            .call(&self.queue, &AgentRequest::Ping, timeout)
            .await?
        {
            AgentResponse::Pong(info) => Ok(info),
            other => Err(unexpected("Ping", &other)),
        }
    }

    pub async fn prepare(&self, request: PrepareRequest) -> Result<ServerStatus, TaskError> {
        match self
            .call(AgentRequest::Prepare(request), self.timeouts.prepare())
            .await?
        {
            AgentResponse::Prepared(status) => Ok(status),
            other => Err(unexpected("Prepare", &other)),
        }
    }

    pub async fn create_snapshot(
        &self,
        snapshot_id: Uuid,
        method: SnapshotMethod,
    ) -> Result<SnapshotInfo, TaskError> {
        let request = AgentRequest::CreateSnapshot(SnapshotRequest {
            snapshot_id,
            method,
        });
        match self.call(request, self.timeouts.seed()).await? {
            AgentResponse::Snapshot(info) => Ok(info),
            other => Err(unexpected("CreateSnapshot", &other)),
        }
    }

    pub async fn delete_snapshot(&self, snapshot_id: Uuid) -> Result<(), TaskError> {
        let request = AgentRequest::DeleteSnapshot(SnapshotRequest {
            snapshot_id,
            method: SnapshotMethod::default(),
        });
        match self.call(request, self.timeouts.short()).await? {
            AgentResponse::SnapshotDeleted => Ok(()),
            other => Err(unexpected("DeleteSnapshot", &other)),
        }
    }

    pub async fn create_replication_user(&self, user: ReplicationUser) -> Result<(), TaskError> {
        match self
            .call(
                AgentRequest::CreateReplicationUser(user),
                self.timeouts.short(),
            )
            .await?
        {
            AgentResponse::ReplicationUserCreated => Ok(()),
            other => Err(unexpected("CreateReplicationUser", &other)),
        }
    }

    pub async fn drop_replication_user(&self, user: ReplicationUserName) -> Result<(), TaskError> {
        match self
            .call(
                AgentRequest::DropReplicationUser(user),
                self.timeouts.short(),
            )
            .await?
        {
            AgentResponse::ReplicationUserDropped => Ok(()),
            other => Err(unexpected("DropReplicationUser", &other)),
        }
    }

    pub async fn attach(&self, request: AttachRequest) -> Result<ServerStatus, TaskError> {
        match self
            .call(AgentRequest::Attach(request), self.timeouts.seed())
            .await?
        {
            AgentResponse::Attached(status) => Ok(status),
            other => Err(unexpected("Attach", &other)),
        }
    }

    /// Attach that restores the snapshot while its source still takes it. An agent too old
    /// for it answers with a remote `UnknownMethod` error ([`TaskError::is_unknown_method`]).
    pub async fn attach_following(
        &self,
        request: AttachFollowingRequest,
    ) -> Result<ServerStatus, TaskError> {
        match self
            .call(AgentRequest::AttachFollowing(request), self.timeouts.seed())
            .await?
        {
            AgentResponse::Attached(status) => Ok(status),
            other => Err(unexpected("AttachFollowing", &other)),
        }
    }

    pub async fn detach(&self) -> Result<ServerStatus, TaskError> {
        match self
            .call(AgentRequest::Detach, self.timeouts.short())
            .await?
        {
            AgentResponse::Detached(status) => Ok(status),
            other => Err(unexpected("Detach", &other)),
        }
    }

    pub async fn shutdown(&self) -> Result<(), TaskError> {
        match self
            .call(AgentRequest::Shutdown, self.timeouts.short())
            .await?
        {
            AgentResponse::ShuttingDown => Ok(()),
            other => Err(unexpected("Shutdown", &other)),
        }
    }
}

/// How long to wait before sending a command again after losing the broker.
const BROKER_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How one sending of a command ended, when it did not end with an answer.
enum Attempt {
    /// The connection to the broker went away: send the command again.
    BrokerLost(BusError),
    Failed(TaskError),
}

impl From<BusError> for Attempt {
    fn from(error: BusError) -> Attempt {
        if error.is_connection_lost() {
            Attempt::BrokerLost(error)
        } else {
            Attempt::Failed(error.into())
        }
    }
}

fn unexpected(method: &str, response: &AgentResponse) -> TaskError {
    TaskError::Protocol(format!(
        "the agent answered {method} with {}",
        ferrotrove_proto::Method::name(response)
    ))
}
