//! The dispatcher: each [`AgentRequest`] from the bus goes to its module, and its result
//! becomes the matching [`AgentResponse`] or a typed [`RemoteError`].
//!
//! Mutating commands run one at a time in their lane (a tokio mutex each), while Ping and
//! Status never wait for them, so a long snapshot or restore does not make the agent look
//! dead. There is one lane for the server (prepare, replication users, attach, detach,
//! shutdown) and one per snapshot id (take it, delete it): a source keeps making
//! replication users for replicas that restore its snapshot while it is still being
//! taken, and two requests' snapshots do not wait for each other. A command that carries
//! an operation id and succeeded is remembered: the same operation delivered again (a
//! retry, a redelivery after a crash of the caller) waits for its lane and gets the first
//! answer instead of running twice.

use crate::error::Result;
use crate::instance::Instance;
use crate::operations::FinishedOperations;
use crate::{prepare, replication, snapshot, status};
use ferrotrove_bus::{Handler, RequestContext};
use ferrotrove_proto::RemoteError;
use ferrotrove_proto::agent::{AgentInfo, AgentRequest, AgentResponse};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use tracing::Instrument;
use uuid::Uuid;

/// The agent's answer to its queue. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct AgentService {
    inner: Arc<ServiceState>,
}

struct ServiceState {
    instance: Arc<Instance>,
    /// Finished operations: looked up before a mutating command runs, recorded after.
    finished: std::sync::Mutex<FinishedOperations>,
    /// Held for the whole of each mutating command on the server.
    server: Arc<Mutex<()>>,
    /// One lock per snapshot id being taken or deleted; unused ones are dropped.
    snapshots: std::sync::Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    shutdown_tx: watch::Sender<bool>,
}

/// Which commands a mutating command waits for.
#[derive(Clone, Copy)]
enum Lane {
    Server,
    Snapshot(Uuid),
}

impl AgentService {
    pub fn new(instance: Arc<Instance>) -> AgentService {
        let (shutdown_tx, _) = watch::channel(false);
        AgentService {
            inner: Arc::new(ServiceState {
                instance: instance.clone(),
                finished: std::sync::Mutex::new(FinishedOperations::load(
                    &instance.paths.operations_dir,
                )),
                server: Arc::new(Mutex::new(())),
                snapshots: std::sync::Mutex::new(HashMap::new()),
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
                    .exclusive(Lane::Server, operation_id, async {
                        prepare::prepare(instance, &request)
                            .await
                            .map(AgentResponse::Prepared)
                    })
                    .await
            }
            AgentRequest::CreateSnapshot(request) => {
                state
                    .exclusive(Lane::Snapshot(request.snapshot_id), operation_id, async {
                        snapshot::create(instance, &request)
                            .await
                            .map(AgentResponse::Snapshot)
                    })
                    .await
            }
            AgentRequest::DeleteSnapshot(request) => {
                state
                    .exclusive(Lane::Snapshot(request.snapshot_id), operation_id, async {
                        snapshot::delete(instance, request.snapshot_id)
                            .await
                            .map(|()| AgentResponse::SnapshotDeleted)
                    })
                    .await
            }
            AgentRequest::CreateReplicationUser(user) => {
                state
                    .exclusive(Lane::Server, operation_id, async {
                        replication::create_user(instance, &user)
                            .await
                            .map(|()| AgentResponse::ReplicationUserCreated)
                    })
                    .await
            }
            AgentRequest::DropReplicationUser(user) => {
                state
                    .exclusive(Lane::Server, operation_id, async {
                        replication::drop_user(instance, &user)
                            .await
                            .map(|()| AgentResponse::ReplicationUserDropped)
                    })
                    .await
            }
            AgentRequest::Attach(request) => {
                state
                    .exclusive(Lane::Server, operation_id, async {
                        replication::attach(instance, &request)
                            .await
                            .map(AgentResponse::Attached)
                    })
                    .await
            }
            AgentRequest::AttachFollowing(request) => {
                state
                    .exclusive(Lane::Server, operation_id, async {
                        replication::attach_following(instance, &request)
                            .await
                            .map(AgentResponse::Attached)
                    })
                    .await
            }
            AgentRequest::Detach => {
                state
                    .exclusive(Lane::Server, operation_id, async {
                        replication::detach(instance)
                            .await
                            .map(AgentResponse::Detached)
                    })
                    .await
            }
            AgentRequest::Shutdown => {
                state
                    .exclusive(Lane::Server, operation_id, async {
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
    /// Runs `work` alone in its lane, or answers with the remembered result of the same
    /// operation.
    async fn exclusive(
        &self,
        lane: Lane,
        operation_id: Option<Uuid>,
        work: impl Future<Output = Result<AgentResponse>>,
    ) -> Result<AgentResponse, RemoteError> {
        let guard = self.enter(lane).await;
        let done_before = operation_id.and_then(|id| self.journal().get(id));
        let outcome = match done_before {
            Some(response) => {
                tracing::info!("operation already done; answering with its result");
                Ok(response)
            }
            None => match work.await {
                Ok(response) => {
                    tracing::info!("done");
                    if let Some(id) = operation_id {
                        self.journal().remember(id, response.clone());
                    }
                    Ok(response)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "failed");
                    Err(err.into())
                }
            },
        };
        drop(guard);
        if let Lane::Snapshot(_) = lane {
            self.snapshot_locks()
                .retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        outcome
    }

    async fn enter(&self, lane: Lane) -> OwnedMutexGuard<()> {
        let lock = match lane {
            Lane::Server => self.server.clone(),
            Lane::Snapshot(id) => self.snapshot_locks().entry(id).or_default().clone(),
        };
        lock.lock_owned().await
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, FinishedOperations> {
        self.finished.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot_locks(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Mutex<()>>>> {
        self.snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
