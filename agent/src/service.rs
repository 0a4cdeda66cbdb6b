//! The dispatcher: each [`AgentRequest`] from the bus goes to its module, and its result
//! becomes the matching [`AgentResponse`] or a typed [`RemoteError`].
//!
//! Mutating commands run one at a time (a tokio mutex), while Ping and Status never wait
//! for them, so a long snapshot or restore does not make the agent look dead. A command
//! that carries an operation id and succeeded is remembered: the same operation delivered
//! again (a retry, a redelivery after a crash of the caller) gets the first answer instead
//! of running twice.

use crate::error::Result;
use crate::instance::Instance;
use crate::operations::FinishedOperations;
use crate::{prepare, replication, snapshot, status};
use ferrotrove_bus::{Handler, RequestContext};
use ferrotrove_proto::RemoteError;
use ferrotrove_proto::agent::{AgentInfo, AgentRequest, AgentResponse};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};
use tracing::Instrument;
use uuid::Uuid;

/// The agent's answer to its queue. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct AgentService {
    inner: Arc<ServiceState>,
}

struct ServiceState {
    instance: Arc<Instance>,
    /// Held for the whole of each mutating command.
    exclusive: Mutex<FinishedOperations>,
    shutdown_tx: watch::Sender<bool>,
}

impl AgentService {
    pub fn new(instance: Arc<Instance>) -> AgentService {
        let (shutdown_tx, _) = watch::channel(false);
        AgentService {
            inner: Arc::new(ServiceState {
                instance: instance.clone(),
                exclusive: Mutex::new(FinishedOperations::load(&instance.paths.operations_dir)),
                shutdown_tx,
            }),
        }
    }

    /// Becomes `true` once a Shutdown command has stopped the server: the process should
    /// exit (after a moment, so that the reply goes out).
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.inner.shutdown_tx.subscribe()
    }

    /// Handles one request; the bus-independent core of [`Handler::handle`].
    pub async fn dispatch(
        &self,
        request: AgentRequest,
        operation_id: Option<Uuid>,
    ) -> Result<AgentResponse, RemoteError> {
        let state = &*self.inner;
        let instance = &*state.instance;
        match request {
            AgentRequest::Ping => Ok(AgentResponse::Pong(AgentInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                server_up: instance.server.answers().await,
            })),
            AgentRequest::Status => Ok(AgentResponse::Status(status::read(instance).await)),
            AgentRequest::Prepare(request) => {
                state
                    .exclusive(operation_id, async {
                        prepare::prepare(instance, &request)
                            .await
                            .map(AgentResponse::Prepared)
                    })
                    .await
            }
            AgentRequest::CreateSnapshot(request) => {
                state
                    .exclusive(operation_id, async {
                        snapshot::create(instance, &request)
                            .await
                            .map(AgentResponse::Snapshot)
                    })
                    .await
            }
            AgentRequest::DeleteSnapshot(request) => {
                state
                    .exclusive(operation_id, async {
                        snapshot::delete(instance, request.snapshot_id)
                            .await
                            .map(|()| AgentResponse::SnapshotDeleted)
                    })
                    .await
            }
            AgentRequest::CreateReplicationUser(user) => {
                state
                    .exclusive(operation_id, async {
                        replication::create_user(instance, &user)
                            .await
                            .map(|()| AgentResponse::ReplicationUserCreated)
                    })
                    .await
            }
            AgentRequest::DropReplicationUser(user) => {
                state
                    .exclusive(operation_id, async {
                        replication::drop_user(instance, &user)
                            .await
                            .map(|()| AgentResponse::ReplicationUserDropped)
                    })
                    .await
            }
            AgentRequest::Attach(request) => {
                state
                    .exclusive(operation_id, async {
                        replication::attach(instance, &request)
                            .await
                            .map(AgentResponse::Attached)
                    })
                    .await
            }
            AgentRequest::Detach => {
                state
                    .exclusive(operation_id, async {
                        replication::detach(instance)
                            .await
                            .map(AgentResponse::Detached)
                    })
                    .await
            }
            AgentRequest::Shutdown => {
                state
                    .exclusive(operation_id, async {
                        instance.server.stop().await?;
                        state.shutdown_tx.send_replace(true);
                        Ok(AgentResponse::ShuttingDown)
                    })
                    .await
            }
        }
    }
}

impl ServiceState {
    /// Runs `work` alone, or answers with the remembered result of the same operation.
    async fn exclusive(
        &self,
        operation_id: Option<Uuid>,
        work: impl Future<Output = Result<AgentResponse>>,
    ) -> Result<AgentResponse, RemoteError> {
        let mut finished = self.exclusive.lock().await;
        if let Some(response) = operation_id.and_then(|id| finished.get(id)) {
            tracing::info!("operation already done; answering with its result");
            return Ok(response);
        }
        match work.await {
            Ok(response) => {
                tracing::info!("done");
                if let Some(id) = operation_id {
                    finished.remember(id, response.clone());
                }
                Ok(response)
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed");
                Err(err.into())
            }
        }
    }
}

impl Handler for AgentService {
    type Request = AgentRequest;
    type Response = AgentResponse;

    fn handle(
        &self,
        request: AgentRequest,
        ctx: RequestContext,
    ) -> impl Future<Output = Result<AgentResponse, RemoteError>> + Send {
        let span = tracing::info_span!(
            "request",
            instance_id = %self.inner.instance.config.instance_id,
            method = ctx.method,
            operation_id = ?ctx.operation_id,
            sender = %ctx.sender,
        );
        let service = self.clone();
        async move { service.dispatch(request, ctx.operation_id).await }.instrument(span)
    }
}
