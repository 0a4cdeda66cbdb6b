//! Instance rows: the intent the API records and the tasks act on.
//!
//! An instance's `status` is the task-level status (what the control plane is doing with
//! it); whether its server is alive is in `guest_status`. Rows are never removed: a
//! deleted instance keeps its row with `deleted_at` set, so its `server_id` is never
//! reused and a late heartbeat can tell it is gone.
//!
//! The API's checks and its writes must not race each other (a delete of a source and a
//! replica create of it, two deletes), so the transitions it makes are guarded here: each
//! locks the instance row (`SELECT ... FOR UPDATE`), checks, writes and commits in one
//! transaction, and reports the row as found when it refuses.

use crate::activity::{Activity, BusyWith, read_activity};
use crate::rows::{parse_uuid, take, take_opt_time, take_opt_uuid, take_time, take_uuid};
use crate::{ID_TABLE, Store, StoreError, id_list, is_duplicate_key};
use ferrotrove_proto::status::InstanceStatus;
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Transaction, TxOpts, Value};
use rand::RngCore;
use std::collections::HashMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// An instance row.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub flavor_id: String,
    /// GB.
    pub volume_size: u32,
    /// The datastore's canonical name (`mariadb`).
    pub datastore: String,
    /// The version's canonical name (`10.11`).
    pub datastore_version: String,
    /// The task-level status.
    pub status: InstanceStatus,
    /// Why the last step failed, for users; set with `ERROR`.
    pub fault: Option<String>,
    /// When `fault` was set.
    pub fault_at: Option<OffsetDateTime>,
    /// The source this instance replicates from.
    pub replica_of: Option<Uuid>,
    /// The MariaDB `server_id`, assigned at insert and never reused.
    pub server_id: u32,
    /// Where its server listens, once provisioned.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub created: OffsetDateTime,
    pub updated: OffsetDateTime,
    /// Set when the instance is gone; live instances have `None`.
    pub deleted_at: Option<OffsetDateTime>,
}

/// What [`Store::insert_instance`] needs; the store assigns `server_id` and the times.
#[derive(Clone, Debug, PartialEq)]
pub struct NewInstance {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub flavor_id: String,
    pub volume_size: u32,
    pub datastore: String,
    pub datastore_version: String,
    pub status: InstanceStatus,
    pub replica_of: Option<Uuid>,
    /// The id of the task that will build it, recorded with the row so that a task the API
    /// failed to send is found and dealt with (see `unsent_creates.rs`); `None` for a row
    /// no task builds.
    pub create_task: Option<Uuid>,
}

/// The outcome of [`Store::start_detach`].
#[derive(Clone, Debug, PartialEq)]
pub enum DetachStart {
    /// Now `DETACH`; the row after the change, and the id its detach task must be sent
    /// under.
    Started(Instance, Uuid),
    /// Was `DETACH` already; the row, and the id its detach task is sent under (the one
    /// chosen when the detach started): sending it again resends the same task.
    AlreadyDetaching(Instance, Uuid),
    /// Neither ACTIVE nor DETACH; the row as found, and what it is busy with (`None`: it
    /// is not busy, only in another status, such as ERROR). Nothing changed.
    Refused(Instance, Option<Activity>),
}

/// The outcome of [`Store::start_delete`].
#[derive(Clone, Debug, PartialEq)]
pub enum DeleteStart {
    /// Now `DELETING`; the row after the change, and the id its delete task must be sent
    /// under.
    Started(Instance, Uuid),
    /// Was `DELETING` already; the row, and the id its delete task is sent under (the one
    /// chosen when the delete started): sending it again resends the same task.
    AlreadyDeleting(Instance, Uuid),
    /// It is the source of these live replicas; nothing changed.
    HasReplicas(Instance, Vec<Uuid>),
    /// A taskmanager is working on it, or replicas are being seeded from it; the row as
    /// found, and what it is busy with. Nothing changed.
    Busy(Instance, Activity),
}

/// The outcome of [`Store::insert_replicas`].
// Returned once per request and matched at once; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ReplicaInsert {
    /// The new rows, in the order given.
    Inserted(Vec<Instance>),
    /// The source is itself a replica, or its status is not one of those allowed; the
    /// source as found, and what it is busy with, if anything. Nothing was inserted.
    SourceRefused(Instance, Option<Activity>),
}

const COLUMNS: &str = "id, tenant_id, name, flavor_id, volume_size, datastore, datastore_version, status, \
     fault, fault_at, replica_of, server_id, host, port, created, updated, deleted_at";

impl Instance {
    fn from_row(mut row: Row) -> Result<Instance, StoreError> {
        let status: String = take(&mut row, "status")?;
        let port: Option<i64> = take(&mut row, "port")?;
        Ok(Instance {
            id: take_uuid(&mut row, "id")?,
            tenant_id: take(&mut row, "tenant_id")?,
            name: take(&mut row, "name")?,
            flavor_id: take(&mut row, "flavor_id")?,
            volume_size: take(&mut row, "volume_size")?,
            datastore: take(&mut row, "datastore")?,
            datastore_version: take(&mut row, "datastore_version")?,
            status: status
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("column status: {e}")))?,
            fault: take(&mut row, "fault")?,
            fault_at: take_opt_time(&mut row, "fault_at")?,
            replica_of: take_opt_uuid(&mut row, "replica_of")?,
            server_id: take(&mut row, "server_id")?,
            host: take(&mut row, "host")?,
            port: port
                .map(|p| {
                    u16::try_from(p)
                        .map_err(|_| StoreError::Corrupt(format!("column port: {p} is not a port")))
                })
                .transpose()?,
            created: take_time(&mut row, "created")?,
            updated: take_time(&mut row, "updated")?,
            deleted_at: take_opt_time(&mut row, "deleted_at")?,
        })
    }

    /// Whether it is a replica of some source.
    pub fn is_replica(&self) -> bool {
        self.replica_of.is_some()
    }
}

fn rows_to_instances(rows: Vec<Row>) -> Result<Vec<Instance>, StoreError> {
    rows.into_iter().map(Instance::from_row).collect()
}

fn not_found(id: impl std::fmt::Display) -> StoreError {
    StoreError::NotFound(format!("Instance {id} could not be found."))
}

/// Reads and locks one live instance inside a transaction.
async fn lock_live(tx: &mut Transaction<'_>, id: Uuid) -> Result<Option<Instance>, StoreError> {
    let row: Option<Row> = tx
        .exec_first(
            format!(
                "SELECT {COLUMNS} FROM instances WHERE id = ? AND deleted_at IS NULL FOR UPDATE"
            ),
            (id.to_string(),),
        )
        .await?;
    row.map(Instance::from_row).transpose()
}

/// A request whose status (DELETING, DETACH) waits for one task, whose id is recorded with
/// the status, so that asking again sends that same task again (see migrations 9 and 10).
#[derive(Clone, Copy, Debug)]
enum StatusTask {
    Delete,
    Detach,
}

impl StatusTask {
    fn column(self) -> &'static str {
        match self {
            StatusTask::Delete => "delete_task",
            StatusTask::Detach => "detach_task",
        }
    }

    /// Chooses the id of this request's task for instance `id` (locked in `tx`) and
    /// records it.
    async fn choose(self, tx: &mut Transaction<'_>, id: Uuid) -> Result<Uuid, StoreError> {
        let task = Uuid::now_v7();
        tx.exec_drop(
            format!("UPDATE instances SET {} = ? WHERE id = ?", self.column()),
            (task.to_string(), id.to_string()),
        )
        .await?;
        Ok(task)
    }

    /// The id recorded when this request started for instance `id` (locked in `tx`); one
    /// is chosen now for a row put in the status before ids were recorded.
    async fn recorded(self, tx: &mut Transaction<'_>, id: Uuid) -> Result<Uuid, StoreError> {
        let column = self.column();
        let chosen: Option<Option<String>> = tx
            .exec_first(
                format!("SELECT {column} FROM instances WHERE id = ?"),
                (id.to_string(),),
            )
            .await?;
        match chosen.flatten() {
            Some(task) => parse_uuid(column, &task),
            None => self.choose(tx, id).await,
        }
    }
}

async fn insert_rows(
    tx: &mut Transaction<'_>,
    rows: &[NewInstance],
) -> Result<Vec<Instance>, StoreError> {
    for new in rows {
        let params: Vec<Value> = vec![
            new.id.to_string().into(),
            new.tenant_id.as_str().into(),
            new.name.as_str().into(),
            new.flavor_id.as_str().into(),
            new.volume_size.into(),
            new.datastore.as_str().into(),
            new.datastore_version.as_str().into(),
            new.status.as_str().into(),
            new.replica_of.map(|r| r.to_string()).into(),
            new_secret().into(),
            new.create_task.map(|t| t.to_string()).into(),
        ];
        let inserted = tx
            .exec_drop(
                "INSERT INTO instances (id, tenant_id, name, flavor_id, volume_size, datastore, \
                 datastore_version, status, replica_of, secret, create_task, created, updated) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
                params,
            )
            .await;
        match inserted {
            Err(e) if is_duplicate_key(&e) => {
                return Err(StoreError::Conflict(format!(
                    "Instance {} already exists.",
                    new.id
                )));
            }
            other => other?,
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for new in rows {
        let row: Option<Row> = tx
            .exec_first(
                format!("SELECT {COLUMNS} FROM instances WHERE id = ?"),
                (new.id.to_string(),),
            )
            .await?;
        out.push(
            row.map(Instance::from_row)
                .transpose()?
                .ok_or_else(|| not_found(new.id))?,
        );
    }
    Ok(out)
}

impl Store {
    /// Inserts one instance; the store assigns its `server_id`. Returns the stored row.
    pub async fn insert_instance(&self, new: &NewInstance) -> Result<Instance, StoreError> {
        let mut rows = self.insert_instances(std::slice::from_ref(new)).await?;
        rows.pop().ok_or_else(|| not_found(new.id))
    }

    /// Inserts several instances in one transaction: all or none. Returns the stored rows
    /// in the order given.
    pub async fn insert_instances(
        &self,
        rows: &[NewInstance],
    ) -> Result<Vec<Instance>, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
            let result = insert_rows(&mut tx, rows).await.map(Outcome::Commit);
            finish(tx, result).await
        })
        .await
    }

    /// Inserts the replicas of one request, after checking under a lock on the source
    /// that it is live, not itself a replica, and in one of the `source_statuses`. All or
    /// none. An unknown or deleted source is [`StoreError::NotFound`].
    pub async fn insert_replicas(
        &self,
        source_id: Uuid,
        source_statuses: &[InstanceStatus],
        rows: &[NewInstance],
    ) -> Result<ReplicaInsert, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
            let result = async {
                let source = lock_live(&mut tx, source_id)
                    .await?
                    .ok_or_else(|| not_found(source_id))?;
                if source.is_replica() || !source_statuses.contains(&source.status) {
                    let activity = read_activity(&mut tx, &source, false).await?;
                    return Ok(Outcome::Rollback(ReplicaInsert::SourceRefused(
                        source, activity,
                    )));
                }
                Ok(Outcome::Commit(ReplicaInsert::Inserted(
                    insert_rows(&mut tx, rows).await?,
                )))
            }
            .await;
            finish(tx, result).await
        })
        .await
    }

    /// A live instance of any tenant.
    pub async fn get_instance(&self, id: Uuid) -> Result<Option<Instance>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let row: Option<Row> = conn
                .exec_first(
                    format!("SELECT {COLUMNS} FROM instances WHERE id = ? AND deleted_at IS NULL"),
                    (id.to_string(),),
                )
                .await?;
            row.map(Instance::from_row).transpose()
        })
        .await
    }

    /// A live instance of `tenant`, by id, else by name. Unknown:
    /// [`StoreError::NotFound`]; a name several instances share: [`StoreError::Conflict`].
    pub async fn get_tenant_instance(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<Instance, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            if let Ok(id) = Uuid::parse_str(id_or_name) {
                let row: Option<Row> = conn
                    .exec_first(
                        format!("SELECT {COLUMNS} FROM instances WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL"),
                        (id.to_string(), tenant),
                    )
                    .await?;
                if let Some(row) = row {
                    return Instance::from_row(row);
                }
            }
            let rows: Vec<Row> = conn
                .exec(
                    format!(
                        "SELECT {COLUMNS} FROM instances WHERE tenant_id = ? AND name = ? AND deleted_at IS NULL \
                         ORDER BY created, server_id LIMIT 2"
                    ),
                    (tenant, id_or_name),
                )
                .await?;
            let mut found = rows_to_instances(rows)?;
            match found.len() {
                0 => Err(not_found(id_or_name)),
                1 => Ok(found.remove(0)),
                _ => Err(StoreError::Conflict(format!(
                    "More than one instance is named {id_or_name}; use its id."
                ))),
            }
        })
        .await
    }

    /// The live instances of `tenant`, in creation order (ties, as within one request, by
    /// `server_id`, which counts up), after `marker` (an
    /// instance of the tenant, live or deleted), at most `limit`. A marker that names no
    /// instance of the tenant is [`StoreError::NotFound`].
    pub async fn list_instances(
        &self,
        tenant: &str,
        limit: Option<u32>,
        marker: Option<Uuid>,
    ) -> Result<Vec<Instance>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let mut sql =
                format!("SELECT {COLUMNS} FROM instances WHERE tenant_id = ? AND deleted_at IS NULL");
            let mut params: Vec<Value> = vec![tenant.into()];
            if let Some(marker) = marker {
                let known: Option<i64> = conn
                    .exec_first(
                        "SELECT 1 FROM instances WHERE id = ? AND tenant_id = ?",
                        (marker.to_string(), tenant),
                    )
                    .await?;
                if known.is_none() {
                    return Err(StoreError::NotFound(format!(
                        "Marker {marker} does not name an instance of this project."
                    )));
                }
                sql.push_str(" AND (created, server_id) > (SELECT created, server_id FROM instances WHERE id = ?)");
                params.push(marker.to_string().into());
            }
            sql.push_str(" ORDER BY created, server_id");
            if let Some(limit) = limit {
                sql.push_str(" LIMIT ?");
                params.push(limit.into());
            }
            let rows: Vec<Row> = conn.exec(sql, params).await?;
            rows_to_instances(rows)
        })
        .await
    }

    /// The live replicas of `id`, oldest first.
    pub async fn replicas_of(&self, id: Uuid) -> Result<Vec<Uuid>, StoreError> {
        Ok(self
            .replicas_of_many(&[id])
            .await?
            .remove(&id)
            .unwrap_or_default())
    }

    /// The live replicas of each of `ids` (only sources that have some appear), in one query.
    pub async fn replicas_of_many(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<Uuid>>, StoreError> {
        self.bounded(async {
            let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            if ids.is_empty() {
                return Ok(out);
            }
            let mut conn = self.pool.get_conn().await?;
            // One index lookup per id: a long `IN` list costs the range optimizer more than
            // the lookups themselves (5 ms against 1.5 ms for a page of 1,000).
            let rows: Vec<Row> = conn
                .exec(
                    format!(
                        "SELECT r.id, r.replica_of FROM {ID_TABLE} \
                         JOIN instances AS r ON r.replica_of = ids.id AND r.deleted_at IS NULL \
                         ORDER BY r.created, r.server_id"
                    ),
                    (id_list(ids),),
                )
                .await?;
            for mut row in rows {
                let id = take_uuid(&mut row, "id")?;
                if let Some(source) = take_opt_uuid(&mut row, "replica_of")? {
                    out.entry(source).or_default().push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Sets the task-level status; `fault` is recorded with its time, and `None` clears it.
    /// An unknown or deleted instance is [`StoreError::NotFound`].
    pub async fn set_status(
        &self,
        id: Uuid,
        status: InstanceStatus,
        fault: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update_live(
            id,
            "status = ?, fault = ?, fault_at = CASE WHEN ? IS NULL THEN NULL ELSE UTC_TIMESTAMP(3) END",
            vec![status.as_str().into(), fault.into(), fault.into()],
        )
        .await
    }

    /// Records where the instance's server listens.
    pub async fn set_endpoint(&self, id: Uuid, host: &str, port: u16) -> Result<(), StoreError> {
        self.update_live(id, "host = ?, port = ?", vec![host.into(), port.into()])
            .await
    }

    /// Records which source the instance replicates from (`None`: none).
    pub async fn set_replica_of(&self, id: Uuid, source: Option<Uuid>) -> Result<(), StoreError> {
        self.update_live(
            id,
            "replica_of = ?",
            vec![source.map(|s| s.to_string()).into()],
        )
        .await
    }

    /// Renames the instance.
    pub async fn rename_instance(&self, id: Uuid, name: &str) -> Result<(), StoreError> {
        self.update_live(id, "name = ?", vec![name.into()]).await
    }

    /// Marks the instance gone: status `DELETED`, `deleted_at` now. Idempotent: an
    /// instance deleted already stays as it is. Unknown: [`StoreError::NotFound`].
    pub async fn mark_deleted(&self, id: Uuid) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE instances SET status = 'DELETED', deleted_at = UTC_TIMESTAMP(3), updated = UTC_TIMESTAMP(3) \
                 WHERE id = ? AND deleted_at IS NULL",
                (id.to_string(),),
            )
            .await?;
            if conn.affected_rows() == 0 {
                let exists: Option<i64> = conn
                    .exec_first("SELECT 1 FROM instances WHERE id = ?", (id.to_string(),))
                    .await?;
                if exists.is_none() {
                    return Err(not_found(id));
                }
            }
            Ok(())
        })
        .await
    }

    /// Starts detaching replica `id`: sets `DETACH` if it is ACTIVE, under a row lock, and
    /// records the id its detach task is sent under. Unknown or deleted:
    /// [`StoreError::NotFound`]. Whether it is a replica is the caller's to check.
    pub async fn start_detach(&self, id: Uuid) -> Result<DetachStart, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
            let result = async {
                let found = lock_live(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
                match found.status {
                    InstanceStatus::Detach => {
                        let task = StatusTask::Detach.recorded(&mut tx, id).await?;
                        Ok(Outcome::Commit(DetachStart::AlreadyDetaching(found, task)))
                    }
                    InstanceStatus::Active => {
                        let detaching =
                            set_status_locked(&mut tx, id, InstanceStatus::Detach).await?;
                        let task = StatusTask::Detach.choose(&mut tx, id).await?;
                        Ok(Outcome::Commit(DetachStart::Started(detaching, task)))
                    }
                    _ => {
                        let activity = read_activity(&mut tx, &found, false).await?;
                        Ok(Outcome::Rollback(DetachStart::Refused(found, activity)))
                    }
                }
            }
            .await;
            finish(tx, result).await
        })
        .await
    }

    /// Starts deleting: sets `DELETING` unless the instance is busy or the source of live
    /// replicas, deciding under locks on its row, its replicas' rows and the task rows
    /// about it (replica creation takes the same row lock; a taskmanager claiming a task
    /// about it waits, see `activity.rs`). Unknown or deleted: [`StoreError::NotFound`].
    ///
    /// Busy, in this order: replicas are being seeded from it (any in BUILD); or a
    /// taskmanager holds a task working on it (creating, seeding it, detaching it). Any
    /// other instance may be deleted, whatever its status: ACTIVE, ERROR, and also BUILD
    /// or DETACH when no taskmanager holds its task (still queued, or left by a
    /// taskmanager that died), which the task, when it runs, finds DELETING and leaves be.
    pub async fn start_delete(&self, id: Uuid) -> Result<DeleteStart, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
            let result = async {
                let found = lock_live(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
                if found.status == InstanceStatus::Deleting {
                    let task = StatusTask::Delete.recorded(&mut tx, id).await?;
                    return Ok(Outcome::Commit(DeleteStart::AlreadyDeleting(found, task)));
                }
                let activity = read_activity(&mut tx, &found, true).await?;
                if let Some(seeding) = activity
                    .as_ref()
                    .filter(|a| matches!(a.busy_with, BusyWith::SeedingReplicas { .. }))
                {
                    return Ok(Outcome::Rollback(DeleteStart::Busy(found, seeding.clone())));
                }
                let replicas: Vec<String> = tx
                    .exec(
                        "SELECT id FROM instances WHERE replica_of = ? AND deleted_at IS NULL \
                         ORDER BY created, server_id FOR UPDATE",
                        (id.to_string(),),
                    )
                    .await?;
                if !replicas.is_empty() {
                    let replicas = replicas
                        .iter()
                        .map(|r| parse_uuid("id", r))
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok(Outcome::Rollback(DeleteStart::HasReplicas(found, replicas)));
                }
                if let Some(busy) = activity.filter(Activity::in_progress) {
                    return Ok(Outcome::Rollback(DeleteStart::Busy(found, busy)));
                }
                let deleting = set_status_locked(&mut tx, id, InstanceStatus::Deleting).await?;
                let task = StatusTask::Delete.choose(&mut tx, id).await?;
                Ok(Outcome::Commit(DeleteStart::Started(deleting, task)))
            }
            .await;
            finish(tx, result).await
        })
        .await
    }

    /// `UPDATE instances SET <assignments>, updated = now WHERE id = ? AND live`, and
    /// NotFound when no live row has that id.
    async fn update_live(
        &self,
        id: Uuid,
        assignments: &str,
        mut params: Vec<Value>,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            params.push(id.to_string().into());
            conn.exec_drop(
                format!("UPDATE instances SET {assignments}, updated = UTC_TIMESTAMP(3) WHERE id = ? AND deleted_at IS NULL"),
                params,
            )
            .await?;
            // Zero changed rows: absent, or the same values written within the same millisecond.
            if conn.affected_rows() == 0 {
                let live: Option<i64> = conn
                    .exec_first(
                        "SELECT 1 FROM instances WHERE id = ? AND deleted_at IS NULL",
                        (id.to_string(),),
                    )
                    .await?;
                if live.is_none() {
                    return Err(not_found(id));
                }
            }
            Ok(())
        })
        .await
    }
}

/// What a transaction's body decided.
enum Outcome<T> {
    Commit(T),
    Rollback(T),
}

/// Ends `tx` as its body decided, and rolls back on error too: a transaction dropped
/// unfinished would otherwise keep its locks until the pool gets to clean it up.
async fn finish<T>(
    tx: Transaction<'_>,
    result: Result<Outcome<T>, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(Outcome::Commit(value)) => {
            tx.commit().await?;
            Ok(value)
        }
        Ok(Outcome::Rollback(value)) => {
            tx.rollback().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rolling back after a failed transaction");
            }
            Err(e)
        }
    }
}

/// Sets the status of a row locked by `tx` (clearing any fault) and reads it back.
async fn set_status_locked(
    tx: &mut Transaction<'_>,
    id: Uuid,
    to: InstanceStatus,
) -> Result<Instance, StoreError> {
    tx.exec_drop(
        "UPDATE instances SET status = ?, fault = NULL, fault_at = NULL, updated = UTC_TIMESTAMP(3) WHERE id = ?",
        (to.as_str(), id.to_string()),
    )
    .await?;
    lock_live(tx, id).await?.ok_or_else(|| not_found(id))
}

/// A fresh message-signing secret: 32 bytes from the OS's CSPRNG, as hex.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Store {
    /// The message-signing secret of a live instance, for signing what is sent to its agent
    /// and checking what it sends.
    pub async fn instance_secret(
        &self,
        id: Uuid,
    ) -> Result<Option<ferrotrove_proto::Secret>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let secret: Option<Option<String>> = conn
                .exec_first(
                    "SELECT secret FROM instances WHERE id = ? AND deleted_at IS NULL",
                    (id.to_string(),),
                )
                .await?;
            Ok(secret.flatten().map(ferrotrove_proto::Secret::new))
        })
        .await
    }

    /// The message-signing secrets of every live instance, at most `limit` of them, in one
    /// query: what the conductor checks heartbeats with, loaded at its start so that a
    /// restart does not cost one query per instance while the queue waits.
    pub async fn instance_secrets(
        &self,
        limit: usize,
    ) -> Result<HashMap<Uuid, ferrotrove_proto::Secret>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let rows: Vec<(String, String)> = conn
                .exec(
                    "SELECT id, secret FROM instances WHERE deleted_at IS NULL AND secret IS NOT NULL \
                     LIMIT ?",
                    (u64::try_from(limit).unwrap_or(u64::MAX),),
                )
                .await?;
            rows.into_iter()
                .map(|(id, secret)| {
                    Ok((
                        parse_uuid("id", &id)?,
                        ferrotrove_proto::Secret::new(secret),
                    ))
                })
                .collect()
        })
        .await
    }
}
