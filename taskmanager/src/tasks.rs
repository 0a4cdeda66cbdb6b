//! The orchestrations: create, create replicas, detach, delete.
//!
//! The control DB holds the intent; a task message only names the rows to act on. Each
//! step is safe to run again (provisioning reuses what exists, prepare is idempotent on the
//! agent, users are created if absent), and the message is acked only when the task has
//! finished, so a taskmanager that dies mid-task has it redelivered and run again.
//! A failed task leaves its instance in ERROR with the fault, and the source untouched.
//!
//! Creating replicas overlaps its steps: the source takes one snapshot while the replicas
//! are built, and each replica restores it as soon as it is built, following it in the
//! store while it is written (`AttachFollowing`). The recorded steps are "snapshot and
//! provision", then "attach" once the snapshot is taken (replicas may be attaching
//! already), then "delete snapshot".

use crate::config::{SeedingConfig, Timeouts};
use crate::error::TaskError;
use crate::guest::{Guest, TASK_OPERATION};
use crate::in_flight::{Claim, InFlight};
use crate::provisioner::{Endpoint, Provisioner};
use ferrotrove_bus::{Bus, Handler, RequestContext};
use ferrotrove_proto::agent::{
    AttachFollowingRequest, AttachRequest, PrepareRequest, ReplicationUser, ReplicationUserName,
    SnapshotInfo, UserSpec,
};
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_proto::taskmanager::TaskRequest;
use ferrotrove_proto::{ErrorKind, RemoteError, Secret};
use ferrotrove_store::{Instance, Store, TaskClaim};
use hmac::{Hmac, Mac};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

/// How often, and how long, the snapshot of a failed seeding is asked to be deleted.
const SNAPSHOT_CLEANUP_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);
const SNAPSHOT_CLEANUP_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// How the snapshot of a seeding ended, for the replicas restoring it: `None` while it is
/// being taken, then its record or the fault its replicas get.
type SnapshotOutcome = Option<Result<SnapshotInfo, String>>;

/// Runs tasks; one per message on the `taskmanager` queue.
pub struct Tasks<P> {
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) provisioner: Arc<P>,
    pub(crate) timeouts: Timeouts,
    pub(crate) in_flight: InFlight,
    pub(crate) seeding: SeedingConfig,
    /// This process, as task rows name their holder: `<host>:<pid>:<uuid>`.
    pub(crate) owner: String,
}

impl<P> Clone for Tasks<P> {
    fn clone(&self) -> Self {
        Tasks {
            store: self.store.clone(),
            bus: self.bus.clone(),
            provisioner: self.provisioner.clone(),
            timeouts: self.timeouts.clone(),
            in_flight: self.in_flight.clone(),
            seeding: self.seeding.clone(),
            owner: self.owner.clone(),
        }
    }
}

impl<P: Provisioner> Handler for Tasks<P> {
    type Request = TaskRequest;
    type Response = ();

    async fn handle(&self, request: TaskRequest, ctx: RequestContext) -> Result<(), RemoteError> {
        // The message id is the same on every delivery of this task's message.
        let operation_id = ctx.message_id;
        let _running = match self.in_flight.claim(operation_id) {
            Claim::Run(guard) => guard,
            Claim::Running(run) => {
                tracing::info!(%operation_id, "task delivered again while it runs; waiting for that run");
                run.finished().await;
                return Ok(());
            }
        };
        let (kind, instance_id) = request.subject();
        let instances = request.instances();
        let lease = self.timeouts.task_lease();
        loop {
            match self
                .store
                .claim_task(
                    operation_id,
                    kind,
                    instance_id,
                    &instances,
                    &self.owner,
                    lease,
                )
                .await
            {
                Ok(TaskClaim::Run { attempt, step }) => {
                    if attempt > 1 {
                        tracing::info!(%operation_id, %instance_id, kind, attempt, step, "resuming a task");
                    }
                    break;
                }
                Ok(TaskClaim::Finished) => {
                    tracing::info!(%operation_id, %instance_id, kind, "task finished before; nothing to do");
                    return Ok(());
                }
                Ok(TaskClaim::HeldBy { owner }) => {
                    tracing::info!(%operation_id, %instance_id, kind, %owner, "another taskmanager holds this task; waiting");
                    tokio::time::sleep(lease / 3).await;
                }
                Err(error) => {
                    return Err(RemoteError::new(ErrorKind::Database, error.to_string()));
                }
            }
        }
        let renewal = self.keep_lease(operation_id, lease);
        let task = async {
            match request {
                TaskRequest::CreateInstance {
                    instance_id,
                    databases,
                    users,
                } => {
                    let span = tracing::info_span!("create", %instance_id, %operation_id);
                    self.create_instance(instance_id, databases, users)
                        .instrument(span)
                        .await
                }
                TaskRequest::CreateReplicas {
                    source_id,
                    replica_ids,
                } => {
                    let span = tracing::info_span!("create_replicas", instance_id = %source_id, %operation_id);
                    self.create_replicas(source_id, replica_ids, operation_id)
                        .instrument(span)
                        .await
                }
                TaskRequest::DetachReplica { instance_id } => {
                    let span = tracing::info_span!("detach", %instance_id, %operation_id);
                    self.detach(instance_id).instrument(span).await
                }
                TaskRequest::DeleteInstance { instance_id } => {
                    let span = tracing::info_span!("delete", %instance_id, %operation_id);
                    self.delete(instance_id).instrument(span).await
                }
            }
        };
        let result = TASK_OPERATION.scope(operation_id, task).await;
        renewal.abort();
        // A task's failure is recorded on its instances; only a failure to record it is
        // reported back to the bus (the message is then redelivered, and the task resumed).
        result.map_err(|e| RemoteError::new(ErrorKind::Database, e.to_string()))?;
        if let Err(error) = self
            .store
            .finish_task(operation_id, &self.owner, None)
            .await
        {
            tracing::warn!(%operation_id, %error, "cannot mark the task finished");
        }
        Ok(())
    }
}

impl<P: Provisioner> Tasks<P> {
    /// Renews this taskmanager's lease on task `id` until aborted.
    fn keep_lease(&self, id: Uuid, lease: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let (store, owner) = (self.store.clone(), self.owner.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store.renew_task_lease(id, &owner, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(task = %id, "lost the lease of a running task");
                        return;
                    }
                    Err(error) => tracing::warn!(task = %id, %error, "cannot renew a task's lease"),
                }
            }
        })
    }

    /// Records that the running task reached `step` (before the step starts), so that a
    /// task resumed after a crash says where it stopped.
    async fn step(&self, step: &str) {
        let Ok(task) = TASK_OPERATION.try_with(|id| *id) else {
            return;
        };
        tracing::info!(step, "task step");
        if let Err(error) = self.store.record_task_step(task, &self.owner, step).await {
            tracing::warn!(%task, step, %error, "cannot record a task step");
        }
    }

    /// The agent of `instance_id`, spoken to with the instance's secret.
    async fn guest(&self, instance_id: Uuid) -> Result<Guest<'_>, TaskError> {
        let secret = self.store.instance_secret(instance_id).await?;
        Ok(Guest::new(&self.bus, &self.timeouts, instance_id, secret))
    }

    /// Loads an instance that must be in `expected` status; `None` means the task has
    /// nothing to do (finished before, or the instance is gone).
    async fn load(
        &self,
        id: Uuid,
        expected: InstanceStatus,
    ) -> Result<Option<Instance>, TaskError> {
        match self.store.get_instance(id).await? {
            Some(instance) if instance.status == expected => Ok(Some(instance)),
            Some(instance) => {
                tracing::info!(instance_id = %id, status = %instance.status, "nothing to do in this status");
                Ok(None)
            }
            None => {
                tracing::info!(instance_id = %id, "instance is gone");
                Ok(None)
            }
        }
    }

    /// Records the outcome of a step on an instance: ACTIVE, or ERROR with the fault.
    async fn finish(&self, id: Uuid, outcome: Result<(), TaskError>) -> Result<(), TaskError> {
        match outcome {
            Ok(()) => {
                tracing::info!(instance_id = %id, "task done");
                self.store
                    .set_status(id, InstanceStatus::Active, None)
                    .await?;
            }
            Err(error) => {
                tracing::warn!(instance_id = %id, %error, "task failed");
                self.store
                    .set_status(id, InstanceStatus::Error, Some(&error.to_string()))
                    .await?;
            }
        }
        Ok(())
    }

    async fn create_instance(
        &self,
        id: Uuid,
        databases: Vec<String>,
        users: Vec<UserSpec>,
    ) -> Result<(), TaskError> {
        let Some(instance) = self.load(id, InstanceStatus::Build).await? else {
            return Ok(());
        };
        self.step("provision and prepare").await;
        let outcome = self.build(&instance, databases, users, false).await;
        self.finish(id, outcome.map(|_| ())).await
    }

    /// Provisions a host and prepares its server; returns where the server listens.
    async fn build(
        &self,
        instance: &Instance,
        databases: Vec<String>,
        users: Vec<UserSpec>,
        read_only: bool,
    ) -> Result<Endpoint, TaskError> {
        let secret = self
            .store
            .instance_secret(instance.id)
            .await?
            .ok_or_else(|| TaskError::State(format!("instance {} has no secret", instance.id)))?;
        let endpoint = self.provisioner.provision(instance, &secret).await?;
        self.store
            .set_endpoint(instance.id, &endpoint.host, endpoint.port)
            .await?;
        let flavor = self
            .store
            .get_flavor(&instance.flavor_id)
            .await?
            .ok_or_else(|| {
                TaskError::State(format!("flavor {} no longer exists", instance.flavor_id))
            })?;
        let request = PrepareRequest {
            server_id: instance.server_id,
            memory_mb: u64::from(flavor.ram_mb),
            databases,
            users,
            read_only,
        };
        Guest::new(&self.bus, &self.timeouts, instance.id, Some(secret))
            .prepare(request)
            .await
            .map_err(|e| e.during("preparing the database server"))?;
        Ok(endpoint)
    }

    async fn create_replicas(
        &self,
        source_id: Uuid,
        replica_ids: Vec<Uuid>,
        operation_id: Uuid,
    ) -> Result<(), TaskError> {
        let mut replicas = Vec::new();
        for id in replica_ids {
            if let Some(replica) = self.load(id, InstanceStatus::Build).await? {
                replicas.push(replica);
            }
        }
        if replicas.is_empty() {
            return Ok(());
        }
        let source = match self.store.get_instance(source_id).await? {
            Some(source) if source.host.is_some() && source.port.is_some() => source,
            _ => {
                let fault = format!("replica source {source_id} is gone or was never built");
                for replica in &replicas {
                    self.finish(replica.id, Err(TaskError::State(fault.clone())))
                        .await?;
                }
                return Ok(());
            }
        };
        // One snapshot seeds every replica of the request. The replicas build meanwhile,
        // and each starts restoring it as soon as it is built, while the source is still
        // taking it. Derived from the task, so a redelivered task asks for the same snapshot.
        let snapshot_id = Uuid::new_v5(&operation_id, source_id.as_bytes());
        self.step("snapshot and provision").await;
        let source_guest = self.guest(source_id).await?;
        let (outcome, taken) = watch::channel::<SnapshotOutcome>(None);
        let snapshot = async {
            let result = source_guest
                .create_snapshot(snapshot_id, self.seeding.method)
                .await;
            let shared = match &result {
                Ok(snapshot) => {
                    tracing::info!(%snapshot_id, size = snapshot.size_bytes, gtid = %snapshot.gtid_pos, "snapshot taken");
                    // The replicas finish restoring it and attach.
                    self.step("attach").await;
                    Ok(snapshot.clone())
                }
                Err(error) => Err(format!("snapshot of source {source_id}: {error}")),
            };
            outcome.send_replace(Some(shared));
            result
        };
        let seedings = futures::future::join_all(replicas.iter().map(|replica| {
            let span = tracing::info_span!("seed", replica_id = %replica.id, %snapshot_id);
            self.seed(&source, replica, snapshot_id, taken.clone())
                .instrument(span)
        }));
        let (snapshot, recorded) = tokio::join!(snapshot, seedings);
        if snapshot.is_ok() {
            self.step("delete snapshot").await;
            if let Err(error) = source_guest.delete_snapshot(snapshot_id).await {
                tracing::warn!(%snapshot_id, %error, "could not delete the snapshot");
            }
        } else {
            // The source may still write the snapshot (a late delivery of the command to
            // its restarted agent): delete it once the agent answers again.
            self.delete_snapshot_later(source_id, snapshot_id);
        }
        recorded.into_iter().collect()
    }

    /// Builds one replica and seeds it from the snapshot while the source takes it, then
    /// records the outcome on the replica: ACTIVE, or ERROR with the fault. A failed
    /// snapshot fails the replica with the snapshot's fault at once (its agent, following
    /// the snapshot, gives up by itself and puts its previous data back).
    async fn seed(
        &self,
        source: &Instance,
        replica: &Instance,
        snapshot_id: Uuid,
        taken: watch::Receiver<SnapshotOutcome>,
    ) -> Result<(), TaskError> {
        let outcome = async {
            // A build runs to its end whatever the snapshot does: a half-made host would
            // be harder to delete than a whole one.
            let endpoint = self.build(replica, Vec::new(), Vec::new(), true).await?;
            tokio::select! {
                attached = self.attach(source, replica.id, &endpoint, snapshot_id, taken.clone()) => attached,
                fault = snapshot_failed(taken.clone()) => {
                    self.drop_replication_user(replica.id).await;
                    Err(TaskError::State(fault))
                }
            }
        }
        .await;
        // A replica that noticed the snapshot's failure before the taskmanager did (the
        // source removed it) gets the snapshot's fault, which says more. The source's
        // answer follows at once, or its agent's death within a ping or two; a replica
        // that failed for reasons of its own does not wait for a snapshot still going.
        let outcome = match outcome {
            Err(error) => {
                let patience = self.timeouts.ping() * 2;
                match tokio::time::timeout(patience, snapshot_result(taken)).await {
                    Ok(Err(fault)) => Err(TaskError::State(fault)),
                    Ok(Ok(_)) | Err(_) => Err(error),
                }
            }
            Ok(()) => Ok(()),
        };
        self.finish(replica.id, outcome).await
    }

    /// Deletes a snapshot whose source agent does not answer now, trying every
    /// [`SNAPSHOT_CLEANUP_PAUSE`] in the background for up to [`SNAPSHOT_CLEANUP_FOR`].
    fn delete_snapshot_later(&self, source_id: Uuid, snapshot_id: Uuid) {
        let tasks = self.clone();
        let span = tracing::info_span!("snapshot_cleanup", instance_id = %source_id, %snapshot_id);
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                while started.elapsed() < SNAPSHOT_CLEANUP_FOR {
                    tokio::time::sleep(SNAPSHOT_CLEANUP_PAUSE).await;
                    let deleted = match tasks.guest(source_id).await {
                        Ok(guest) => guest.delete_snapshot(snapshot_id).await,
                        Err(error) => Err(error),
                    };
                    match deleted {
                        Ok(()) => {
                            tracing::info!("deleted the snapshot of a failed seeding");
                            return;
                        }
                        Err(error) => tracing::debug!(%error, "snapshot not deleted yet"),
                    }
                }
                tracing::warn!("gave up deleting the snapshot of a failed seeding");
            }
            .instrument(span),
        );
    }

    /// Creates the replica's replication user on the source and attaches the replica,
    /// which restores the snapshot as the source writes it. An agent too old to follow a
    /// snapshot is sent `Attach` once the snapshot is taken.
    async fn attach(
        &self,
        source: &Instance,
        replica_id: Uuid,
        replica: &Endpoint,
        snapshot_id: Uuid,
        taken: watch::Receiver<SnapshotOutcome>,
    ) -> Result<(), TaskError> {
        let (Some(source_host), Some(source_port)) = (source.host.clone(), source.port) else {
            return Err(TaskError::State(format!(
                "source {} has no endpoint",
                source.id
            )));
        };
        let source_secret = self
            .store
            .instance_secret(source.id)
            .await?
            .ok_or_else(|| TaskError::State(format!("source {} has no secret", source.id)))?;
        let user = ReplicationUser {
            name: replication_user_name(replica_id),
            host: replica.host.clone(),
            password: replication_password(&source_secret, replica_id),
        };
        self.store
            .record_replication_user(replica_id, source.id, &user.name, &user.host)
            .await?;
        self.guest(source.id)
            .await?
            .create_replication_user(user.clone())
            .await
            .map_err(|e| {
                e.during(format!(
                    "creating the replication user on source {}",
                    source.id
                ))
            })?;
        let guest = self.guest(replica_id).await?;
        let request = AttachFollowingRequest {
            snapshot_id,
            source_host: source_host.clone(),
            source_port,
            user: user.name.clone(),
            password: user.password.clone(),
        };
        let attached = match guest.attach_following(request).await {
            Err(error) if error.is_unknown_method() => {
                tracing::info!(%replica_id, "the replica's agent cannot follow a snapshot; attaching once it is taken");
                match snapshot_result(taken).await {
                    Ok(snapshot) => {
                        let request = AttachRequest {
                            snapshot,
                            source_host,
                            source_port,
                            user: user.name.clone(),
                            password: user.password.clone(),
                        };
                        guest.attach(request).await.map(|_| ())
                    }
                    Err(fault) => Err(TaskError::State(fault)),
                }
            }
            other => other.map(|_| ()),
        };
        if let Err(error) = attached {
            self.drop_replication_user(replica_id).await;
            return Err(error.during("attaching the replica"));
        }
        Ok(())
    }

    /// Drops a replica's replication user on its source, if one is recorded. Best effort:
    /// a source that is down keeps the user until it is deleted itself.
    async fn drop_replication_user(&self, replica_id: Uuid) {
        let row = match self.store.replication_user_of(replica_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%replica_id, %error, "cannot read the replication user");
                return;
            }
        };
        let name = ReplicationUserName {
            name: row.user_name.clone(),
            host: row.user_host.clone(),
        };
        let dropped = match self.guest(row.source_id).await {
            Ok(guest) => guest.drop_replication_user(name).await,
            Err(error) => Err(error),
        };
        match dropped {
            Ok(()) => {
                if let Err(error) = self.store.forget_replication_user(replica_id).await {
                    tracing::warn!(%replica_id, %error, "cannot forget the replication user");
                }
            }
            Err(error) => {
                tracing::warn!(%replica_id, source_id = %row.source_id, %error, "could not drop the replication user on the source")
            }
        }
    }

    async fn detach(&self, id: Uuid) -> Result<(), TaskError> {
        let Some(replica) = self.load(id, InstanceStatus::Detach).await? else {
            return Ok(());
        };
        self.step("detach").await;
        let outcome = async {
            self.guest(replica.id)
                .await?
                .detach()
                .await
                .map_err(|e| e.during("detaching the replica"))?;
            self.store.set_replica_of(replica.id, None).await?;
            self.drop_replication_user(replica.id).await;
            Ok(())
        }
        .await;
        self.finish(id, outcome).await
    }

    async fn delete(&self, id: Uuid) -> Result<(), TaskError> {
        let Some(instance) = self.load(id, InstanceStatus::Deleting).await? else {
            return Ok(());
        };
        self.step("delete").await;
        if instance.replica_of.is_some() {
            self.drop_replication_user(instance.id).await;
        }
        let secret = self.store.instance_secret(instance.id).await?;
        match self.provisioner.destroy(instance.id, secret).await {
            Ok(()) => {
                self.store.mark_deleted(instance.id).await?;
                tracing::info!(instance_id = %id, "deleted");
                Ok(())
            }
            Err(error) => {
                self.finish(id, Err(TaskError::from(error).during("deleting")))
                    .await
            }
        }
    }
}

/// Waits for the snapshot to fail; never returns if it is taken.
async fn snapshot_failed(mut taken: watch::Receiver<SnapshotOutcome>) -> String {
    loop {
        if let Some(Err(fault)) = &*taken.borrow_and_update() {
            return fault.clone();
        }
        if taken.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Waits for the snapshot's outcome.
async fn snapshot_result(
    mut taken: watch::Receiver<SnapshotOutcome>,
) -> Result<SnapshotInfo, String> {
    match taken.wait_for(Option::is_some).await {
        Ok(outcome) => outcome
            .clone()
            .unwrap_or_else(|| Err("the snapshot's outcome is unknown".to_owned())),
        Err(_) => Err("the snapshot step ended without an outcome".to_owned()),
    }
}

/// The replication user of one replica: unique, and traceable to the replica by name.
fn replication_user_name(replica_id: Uuid) -> String {
    format!("ftrepl_{}", &replica_id.simple().to_string()[..16])
}

/// The password of `replica_id`'s replication user: derived from the source's secret, the
/// task and the replica, so a task resumed after a crash sends the same `Attach` (and the
/// agent recognises it) while nobody without the source's secret can compute it.
fn replication_password(source_secret: &Secret, replica_id: Uuid) -> Secret {
    let task = TASK_OPERATION
        .try_with(|id| *id)
        .unwrap_or_else(|_| Uuid::now_v7());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(source_secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"ferrotrove replication password\0");
    mac.update(task.as_bytes());
    mac.update(replica_id.as_bytes());
    Secret::new(hex::encode(&mac.finalize().into_bytes()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_user_names_are_short_and_per_replica() {
        let a = replication_user_name(Uuid::now_v7());
        let b = replication_user_name(Uuid::new_v4());
        assert_ne!(a, b);
        assert!(a.len() <= 32 && a.starts_with("ftrepl_"), "{a}");
    }
}
