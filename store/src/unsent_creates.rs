//! Creates whose task never reached the broker, because the API stopped between
//! committing the new rows and sending the task.
//!
//! The API records the task's id with the rows it inserts (`create_task`, the same for
//! the replicas of one request) and, once the broker has confirmed the task, when
//! (`create_sent_at`). A row still in BUILD whose task was never confirmed, longer after
//! its creation than any send takes, and which no taskmanager has taken up (there is no
//! task row with that id), was lost on the way. The taskmanager sweeps for them: a
//! replica request names only rows, so it is sent again under its id (a task row per id
//! keeps it one run); a standalone create carried its databases and users, passwords
//! included, which the control DB never holds, so it is failed with a fault saying so.

use crate::rows::{parse_uuid, take, take_opt_uuid, take_uuid};
use crate::{Store, StoreError};
use mysql_async::Row;
use mysql_async::prelude::Queryable;
use std::time::Duration;
use uuid::Uuid;

/// One create whose task the broker never confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsentCreate {
    /// The id its task was to be sent under.
    pub task: Uuid,
    /// The source, when it is a replica request.
    pub source_id: Option<Uuid>,
    /// Its instances still in BUILD, oldest first.
    pub instances: Vec<Uuid>,
}

/// A live row in BUILD whose create task the broker has not confirmed.
const UNSENT: &str = "status = 'BUILD' AND deleted_at IS NULL AND create_task IS NOT NULL \
     AND create_sent_at IS NULL";

impl Store {
    /// Records that the broker confirmed task `task`: its rows are no longer unsent.
    pub async fn mark_create_sent(&self, task: Uuid) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE instances SET create_sent_at = UTC_TIMESTAMP(3) \
                 WHERE create_task = ? AND create_sent_at IS NULL",
                (task.to_string(),),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The creates whose task was not confirmed sent within `grace` of their rows'
    /// creation and that no taskmanager has recorded, oldest first.
    pub async fn unsent_creates(&self, grace: Duration) -> Result<Vec<UnsentCreate>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let rows: Vec<Row> = conn
                .exec(
                    format!(
                        "SELECT create_task, replica_of, id FROM instances \
                         WHERE {UNSENT} AND created < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND \
                         AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = instances.create_task) \
                         ORDER BY created, server_id"
                    ),
                    (u64::try_from(grace.as_micros()).unwrap_or(u64::MAX),),
                )
                .await?;
            let mut creates: Vec<UnsentCreate> = Vec::new();
            for mut row in rows {
                let task: String = take(&mut row, "create_task")?;
                let task = parse_uuid("create_task", &task)?;
                let source_id = take_opt_uuid(&mut row, "replica_of")?;
                let id = take_uuid(&mut row, "id")?;
                match creates.iter_mut().find(|c| c.task == task) {
                    Some(create) => create.instances.push(id),
                    None => creates.push(UnsentCreate {
                        task,
                        source_id,
                        instances: vec![id],
                    }),
                }
            }
            Ok(creates)
        })
        .await
    }

    /// Marks instance `id` ERROR with `fault` if it is still an unsent row of `task` that
    /// no taskmanager has taken up, all decided in one statement (a taskmanager recording
    /// the task at the same moment either comes first, and this changes nothing, or finds
    /// the instance ERROR and leaves it be). Whether it changed anything.
    pub async fn fail_unsent_create(
        &self,
        id: Uuid,
        task: Uuid,
        fault: &str,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                format!(
                    "UPDATE instances SET status = 'ERROR', fault = ?, fault_at = UTC_TIMESTAMP(3), \
                     updated = UTC_TIMESTAMP(3) \
                     WHERE id = ? AND create_task = ? AND {UNSENT} \
                     AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = ?)"
                ),
                (fault, id.to_string(), task.to_string(), task.to_string()),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }
}
