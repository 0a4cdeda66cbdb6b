//! Orchestrations as rows: one per task message (its id is the message id, the same on every
//! delivery), with the step it reached, who runs it and until when.
//!
//! A taskmanager runs a task only while it holds the row's lease, which it renews while it
//! works; a second taskmanager that gets the same message (the first lost its broker
//! connection, or died) waits until the task is finished or the lease has lapsed, so two
//! never run one task at once. A finished task is never run again. Times are the database
//! server's, so the taskmanagers' clocks do not matter.
//!
//! A row says which instance the task is about (`instance_id`: for a replica request, the
//! source) and which instances it builds or changes (`instances`: for a replica request,
//! its replicas), so that what an instance is busy with (`activity.rs`) names the task
//! working on that instance, not any task about its source. Both are written by the one
//! statement that records the task, so no reader sees a task without its instances. Rows
//! recorded before migration 8 have no `instances`; the first claim after it fills them in.

use crate::rows::{parse_uuid, take, take_uuid};
use crate::{Store, StoreError, id_list};
use mysql_async::prelude::Queryable;
use std::time::Duration;
use uuid::Uuid;

/// What a taskmanager may do with a task message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskClaim {
    /// Run it: this is the `attempt`-th run (2 and up: resuming after a crash).
    Run { attempt: u32, step: String },
    /// It finished before (a late delivery): acknowledge it and do nothing.
    Finished,
    /// Another taskmanager runs it and its lease has not lapsed.
    HeldBy { owner: String },
}

/// One task's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRow {
    pub id: Uuid,
    pub kind: String,
    pub instance_id: Uuid,
    /// The instances it builds or changes (a replica request: its replicas); `None` for a
    /// task recorded before they were, and not claimed since.
    pub instances: Option<Vec<Uuid>>,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub step: String,
    pub owner: Option<String>,
    pub attempts: u32,
}

impl Store {
    /// Records the task (once), about `instance_id` and building or changing `instances`
    /// (see [`TaskRow::instances`]), and takes its lease for `owner` if nobody else holds
    /// it. A task recorded without its instances (before migration 8) gets them now.
    pub async fn claim_task(
        &self,
        id: Uuid,
        kind: &str,
        instance_id: Uuid,
        instances: &[Uuid],
        owner: &str,
        lease: Duration,
    ) -> Result<TaskClaim, StoreError> {
        self.bounded(async {
            let instances = id_list(instances);
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "INSERT IGNORE INTO tasks (id, kind, instance_id, instances, state, step, attempts) \
                 VALUES (?, ?, ?, ?, 'running', '', 0)",
                (id.to_string(), kind, instance_id.to_string(), &instances),
            )
            .await?;
            conn.exec_drop(
                "UPDATE tasks SET owner = ?, lease_until = UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, \
                 attempts = attempts + 1, instances = COALESCE(instances, ?) \
                 WHERE id = ? AND state = 'running' \
                 AND (owner IS NULL OR owner = ? OR lease_until < UTC_TIMESTAMP(3))",
                (owner, lease.as_micros() as u64, &instances, id.to_string(), owner),
            )
            .await?;
            let claimed = conn.affected_rows() == 1;
            let row: Option<(String, Option<String>, u32, String)> = conn
                .exec_first(
                    "SELECT state, owner, attempts, step FROM tasks WHERE id = ?",
                    (id.to_string(),),
                )
                .await?;
            let Some((state, holder, attempts, step)) = row else {
                return Err(StoreError::Corrupt(format!(
                    "task {id} vanished while claimed"
                )));
            };
            Ok(match (claimed, state.as_str()) {
                (true, _) => TaskClaim::Run {
                    attempt: attempts,
                    step,
                },
                (false, "running") => TaskClaim::HeldBy {
                    owner: holder.unwrap_or_default(),
                },
                (false, _) => TaskClaim::Finished,
            })
        })
        .await
    }

    /// Extends `owner`'s lease; `false` when `owner` no longer holds the task.
    pub async fn renew_task_lease(
        &self,
        id: Uuid,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE tasks SET lease_until = UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND \
                 WHERE id = ? AND owner = ? AND state = 'running'",
                (lease.as_micros() as u64, id.to_string(), owner),
            )
            .await?;
            if conn.affected_rows() == 1 {
                return Ok(true);
            }
            // Zero changed rows: not held, or renewed to the same time within the same
            // millisecond as the claim or the last renewal (the server counts changed
            // rows, not matched ones).
            let held: Option<i64> = conn
                .exec_first(
                    "SELECT 1 FROM tasks WHERE id = ? AND owner = ? AND state = 'running'",
                    (id.to_string(), owner),
                )
                .await?;
            Ok(held.is_some())
        })
        .await
    }

    /// Records that the task reached `step`, before the step starts.
    pub async fn record_task_step(
        &self,
        id: Uuid,
        owner: &str,
        step: &str,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE tasks SET step = ? WHERE id = ? AND owner = ?",
                (step, id.to_string(), owner),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Ends the task: `done`, or `failed` with what went wrong (its instances carry the
    /// fault users see). The lease is released; `owner` stays, saying who finished it.
    pub async fn finish_task(
        &self,
        id: Uuid,
        owner: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE tasks SET state = ?, error = ?, lease_until = NULL \
                 WHERE id = ? AND owner = ?",
                (
                    if error.is_some() { "failed" } else { "done" },
                    error,
                    id.to_string(),
                    owner,
                ),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// One task's row.
    pub async fn get_task(&self, id: Uuid) -> Result<Option<TaskRow>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let row: Option<mysql_async::Row> = conn
                .exec_first(
                    "SELECT id, kind, instance_id, instances, state, step, owner, attempts \
                     FROM tasks WHERE id = ?",
                    (id.to_string(),),
                )
                .await?;
            row.map(|mut row| {
                Ok(TaskRow {
                    id: take_uuid(&mut row, "id")?,
                    kind: take(&mut row, "kind")?,
                    instance_id: take_uuid(&mut row, "instance_id")?,
                    instances: take::<Option<String>>(&mut row, "instances")?
                        .map(|text| parse_instances(&text))
                        .transpose()?,
                    state: take(&mut row, "state")?,
                    step: take(&mut row, "step")?,
                    owner: take(&mut row, "owner")?,
                    attempts: take(&mut row, "attempts")?,
                })
            })
            .transpose()
        })
        .await
    }
}

/// The `instances` column: a JSON array of ids, as [`id_list`] writes it.
pub(crate) fn parse_instances(text: &str) -> Result<Vec<Uuid>, StoreError> {
    let ids: Vec<String> = serde_json::from_str(text).map_err(|e| {
        StoreError::Corrupt(format!(
            "column instances: {text:?} is not a JSON array of ids: {e}"
        ))
    })?;
    ids.iter().map(|id| parse_uuid("instances", id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_read_back_as_written() {
        let ids = [Uuid::now_v7(), Uuid::now_v7()];
        assert_eq!(parse_instances(&id_list(&ids)).unwrap(), ids);
        assert!(parse_instances("[]").unwrap().is_empty());
        assert!(matches!(
            parse_instances("[\"nope\"]"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(parse_instances("{"), Err(StoreError::Corrupt(_))));
    }
}
