//! Which user each replica replicates with, so a detach or delete can drop exactly that
//! user on the source. Names only: the password is made for the replica, handed to it and
//! its source, and never stored here.

use crate::rows::{take, take_time, take_uuid};
use crate::{Store, StoreError};
use mysql_async::Row;
use mysql_async::prelude::Queryable;
use time::OffsetDateTime;
use uuid::Uuid;

/// A replica's replication user on its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationUserRow {
    pub replica_id: Uuid,
    pub source_id: Uuid,
    pub user_name: String,
    /// The account's host part: where the replica connects from.
    pub user_host: String,
    pub created: OffsetDateTime,
}

impl ReplicationUserRow {
    fn from_row(mut row: Row) -> Result<ReplicationUserRow, StoreError> {
        Ok(ReplicationUserRow {
            replica_id: take_uuid(&mut row, "replica_id")?,
            source_id: take_uuid(&mut row, "source_id")?,
            user_name: take(&mut row, "user_name")?,
            user_host: take(&mut row, "user_host")?,
            created: take_time(&mut row, "created")?,
        })
    }
}

const COLUMNS: &str = "replica_id, source_id, user_name, user_host, created";

impl Store {
    /// Records (or replaces) the replication user of `replica_id` on `source_id`.
    /// Recording the same user again is harmless, so a retried task step may repeat it.
    pub async fn record_replication_user(
        &self,
        replica_id: Uuid,
        source_id: Uuid,
        name: &str,
        host: &str,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "INSERT INTO replication_users (replica_id, source_id, user_name, user_host, created) \
                 VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3)) \
                 ON DUPLICATE KEY UPDATE source_id = VALUES(source_id), user_name = VALUES(user_name), \
                 user_host = VALUES(user_host), created = VALUES(created)",
                (replica_id.to_string(), source_id.to_string(), name, host),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The replication user of `replica_id`, if one is recorded.
    pub async fn replication_user_of(
        &self,
        replica_id: Uuid,
    ) -> Result<Option<ReplicationUserRow>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let row: Option<Row> = conn
                .exec_first(
                    format!("SELECT {COLUMNS} FROM replication_users WHERE replica_id = ?"),
                    (replica_id.to_string(),),
                )
                .await?;
            row.map(ReplicationUserRow::from_row).transpose()
        })
        .await
    }

    /// Every replication user recorded on `source_id`, oldest first.
    pub async fn replication_users_on(
        &self,
        source_id: Uuid,
    ) -> Result<Vec<ReplicationUserRow>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let rows: Vec<Row> = conn
                .exec(
                    format!("SELECT {COLUMNS} FROM replication_users WHERE source_id = ? ORDER BY created, replica_id"),
                    (source_id.to_string(),),
                )
                .await?;
            rows.into_iter().map(ReplicationUserRow::from_row).collect()
        })
        .await
    }

    /// Forgets the replication user of `replica_id` (after dropping it on the source).
    /// Absent is fine.
    pub async fn forget_replication_user(&self, replica_id: Uuid) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "DELETE FROM replication_users WHERE replica_id = ?",
                (replica_id.to_string(),),
            )
            .await?;
            Ok(())
        })
        .await
    }
}
