//! What an instance is busy with, derived from stored facts only: its status, the replicas
//! being seeded from it (in BUILD), and the running task rows (`tasks.rs`) that work on it.
//!
//! The API refuses an action on a busy instance with the [`Activity`] it found, so the
//! user reads what the instance is doing, which step its task reached and since when.
//! Ages are computed by the database server (`UTC_TIMESTAMP`), like every stored time, so
//! the API's clock does not matter.
//!
//! A task is *in progress* while a taskmanager holds its lease. An instance in a task
//! status (BUILD, DETACH, ...) without such a task is waiting for a taskmanager to take
//! its task from the queue, or was left behind by a taskmanager that died; either way no
//! taskmanager acts on it at this moment, which is what lets an operator delete it.
//!
//! Which task works on an instance: a replica in BUILD is seeded by the running
//! `create_replicas` task of its source whose row names it among its `instances`; a
//! source is busy with the running `create_replicas` tasks that name any of its replicas
//! in BUILD. So a replica left in BUILD by a task that died reads as such (and may be
//! deleted) while another request's task seeds other replicas of the same source. A task
//! recorded before rows named their instances is taken to work on every replica in BUILD
//! of its source, as it was then, unless another task names the replica; any other task
//! works on the instance it is about (`instance_id`).
//!
//! Read inside the transaction that decides (with `lock`), the task rows are read with
//! `FOR UPDATE`: every running task row about the instance, or for a replica about its
//! source, whatever instances it names, and the index gap after them. A taskmanager that
//! claims a task for the same instance or source meanwhile waits for that transaction (its
//! insert or update of the task row needs the locks taken), and so sees the instance's new
//! status when it loads it.

use crate::Store;
use crate::StoreError;
use crate::instances::Instance;
use crate::rows::{parse_uuid, take, take_uuid};
use crate::tasks::parse_instances;
use ferrotrove_proto::status::InstanceStatus;
use mysql_async::Row;
use mysql_async::prelude::Queryable;
use uuid::Uuid;

/// A task row in state `running`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningTask {
    pub id: Uuid,
    /// The taskmanager's word for it: `create`, `create_replicas`, `detach`, `delete`.
    pub kind: String,
    /// The step it reached; empty before its first step.
    pub step: String,
    /// Seconds since a taskmanager first took it up.
    pub age_secs: u64,
    /// Whether a taskmanager holds its lease now. When not, the taskmanager that ran it
    /// died and no other has taken it over yet.
    pub held: bool,
}

/// What keeps an instance busy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusyWith {
    /// In BUILD, not a replica: being provisioned and prepared.
    Creating,
    /// A replica in BUILD, being seeded from its source.
    SeededFrom {
        source_id: Uuid,
        source_name: String,
    },
    /// The source of these replicas in BUILD (names, oldest first).
    SeedingReplicas { replicas: Vec<String> },
    /// In DETACH.
    Detaching,
    /// In DELETING.
    Deleting,
    /// Another status only a task sets (PROMOTE, EJECT, BACKUP).
    Status(InstanceStatus),
}

/// What an instance is busy with, and the task doing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    pub busy_with: BusyWith,
    /// The running task doing it, once a taskmanager has taken one up (see the module's
    /// doc for which; among several, a held one first, then the oldest).
    pub task: Option<RunningTask>,
    /// Seconds since the instance last changed (seeding: since the newest replica did).
    pub since_secs: u64,
}

impl Activity {
    /// Whether a taskmanager is working on it at this moment (holds the task's lease).
    pub fn in_progress(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.held)
    }
}

impl Store {
    /// What the live instance `instance` is busy with, if anything; `None` also for an
    /// ACTIVE or ERROR instance without replicas in BUILD. For messages: decisions are
    /// made inside the transactions of `instances.rs`, which read the same facts.
    pub async fn activity(&self, instance: &Instance) -> Result<Option<Activity>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            read_activity(&mut conn, instance, false).await
        })
        .await
    }
}

/// What `instance` is busy with, read through `q` (a transaction when `lock`, which then
/// locks the replicas in BUILD and the task rows it reads).
pub(crate) async fn read_activity<Q: Queryable>(
    q: &mut Q,
    instance: &Instance,
    lock: bool,
) -> Result<Option<Activity>, StoreError> {
    let for_update = if lock { " FOR UPDATE" } else { "" };
    let id = instance.id;
    // (what, the instance its task is about, the task's kind if it is known)
    let (busy_with, subject, kind) = match instance.status {
        InstanceStatus::Build => match instance.replica_of {
            Some(source_id) => {
                let name: Option<String> = q
                    .exec_first(
                        "SELECT name FROM instances WHERE id = ?",
                        (source_id.to_string(),),
                    )
                    .await?;
                let source_name = name.unwrap_or_else(|| source_id.to_string());
                let since = since_updated(q, id).await?;
                let tasks =
                    running_tasks(q, source_id, Some("create_replicas"), for_update).await?;
                return Ok(Some(Activity {
                    busy_with: BusyWith::SeededFrom {
                        source_id,
                        source_name,
                    },
                    task: seeding_task(tasks, id),
                    since_secs: since,
                }));
            }
            None => (BusyWith::Creating, id, Some("create")),
        },
        InstanceStatus::Detach => (BusyWith::Detaching, id, Some("detach")),
        InstanceStatus::Deleting => (BusyWith::Deleting, id, Some("delete")),
        s @ (InstanceStatus::Promote | InstanceStatus::Eject | InstanceStatus::Backup) => {
            (BusyWith::Status(s), id, None)
        }
        InstanceStatus::Active | InstanceStatus::Error | InstanceStatus::Shutdown => {
            let rows: Vec<(String, String, i64)> = q
                .exec(
                    format!(
                        "SELECT id, name, TIMESTAMPDIFF(SECOND, updated, UTC_TIMESTAMP(3)) FROM instances \
                         WHERE replica_of = ? AND deleted_at IS NULL AND status = 'BUILD' \
                         ORDER BY created, server_id{for_update}"
                    ),
                    (id.to_string(),),
                )
                .await?;
            let Some(since) = rows.iter().map(|(_, _, age)| *age).min() else {
                return Ok(None);
            };
            let mut building = Vec::with_capacity(rows.len());
            let mut replicas = Vec::with_capacity(rows.len());
            for (replica, name, _) in rows {
                building.push(parse_uuid("id", &replica)?);
                replicas.push(name);
            }
            let tasks = running_tasks(q, id, Some("create_replicas"), for_update).await?;
            return Ok(Some(Activity {
                busy_with: BusyWith::SeedingReplicas { replicas },
                task: source_task(tasks, &building),
                since_secs: non_negative(since),
            }));
        }
        InstanceStatus::Deleted => return Ok(None),
    };
    let since = since_updated(q, id).await?;
    let task = running_tasks(q, subject, kind, for_update)
        .await?
        .into_iter()
        .next()
        .map(|candidate| candidate.task);
    Ok(Some(Activity {
        busy_with,
        task,
        since_secs: since,
    }))
}

/// Seconds since the instance's row last changed.
async fn since_updated<Q: Queryable>(q: &mut Q, id: Uuid) -> Result<u64, StoreError> {
    let since: Option<i64> = q
        .exec_first(
            "SELECT TIMESTAMPDIFF(SECOND, updated, UTC_TIMESTAMP(3)) FROM instances WHERE id = ?",
            (id.to_string(),),
        )
        .await?;
    Ok(non_negative(since.unwrap_or(0)))
}

/// A running task row and the instances it names (`None`: recorded before rows named
/// them).
struct Candidate {
    task: RunningTask,
    instances: Option<Vec<Uuid>>,
}

/// The task seeding `replica`, among the running `create_replicas` tasks of its source
/// (held first, then oldest): the one that names it; else, when none does, one recorded
/// without its instances (which may be seeding it).
fn seeding_task(candidates: Vec<Candidate>, replica: Uuid) -> Option<RunningTask> {
    let (named, unnamed): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .filter(|c| {
            c.instances
                .as_ref()
                .is_none_or(|ids| ids.contains(&replica))
        })
        .partition(|c| c.instances.is_some());
    named
        .into_iter()
        .chain(unnamed)
        .next()
        .map(|candidate| candidate.task)
}

/// The task a source seeding the replicas `building` is busy with, among its running
/// `create_replicas` tasks (held first, then oldest): the first that names one of them or
/// was recorded without its instances.
fn source_task(candidates: Vec<Candidate>, building: &[Uuid]) -> Option<RunningTask> {
    candidates
        .into_iter()
        .find(|c| {
            c.instances
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| building.contains(id)))
        })
        .map(|candidate| candidate.task)
}

/// The running tasks about `subject` (of `kind`, when given): those a taskmanager holds
/// first, then the oldest. With `FOR UPDATE`, every task row of `subject` read and the
/// index gap after them are locked, so no task about it can be claimed or inserted
/// meanwhile.
async fn running_tasks<Q: Queryable>(
    q: &mut Q,
    subject: Uuid,
    kind: Option<&str>,
    for_update: &str,
) -> Result<Vec<Candidate>, StoreError> {
    let rows: Vec<Row> = q
        .exec(
            format!(
                "SELECT id, kind, step, instances, \
                 TIMESTAMPDIFF(SECOND, created, UTC_TIMESTAMP(3)) AS age, \
                 COALESCE(lease_until >= UTC_TIMESTAMP(3), 0) AS held \
                 FROM tasks WHERE instance_id = ? AND state = 'running' AND (? IS NULL OR kind = ?) \
                 ORDER BY held DESC, created, id{for_update}"
            ),
            (subject.to_string(), kind, kind),
        )
        .await?;
    rows.into_iter()
        .map(|mut row| {
            let age: i64 = take(&mut row, "age")?;
            let held: i64 = take(&mut row, "held")?;
            let instances: Option<String> = take(&mut row, "instances")?;
            Ok(Candidate {
                task: RunningTask {
                    id: take_uuid(&mut row, "id")?,
                    kind: take(&mut row, "kind")?,
                    step: take(&mut row, "step")?,
                    age_secs: non_negative(age),
                    held: held != 0,
                },
                instances: instances.map(|text| parse_instances(&text)).transpose()?,
            })
        })
        .collect()
}

fn non_negative(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0)
}
