//! Flavors: how much memory, CPU and disk an instance gets. Seeded by a migration; read-only
//! for now.

use crate::rows::take;
use crate::{Store, StoreError};
use mysql_async::Row;
use mysql_async::prelude::Queryable;

/// One flavor, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flavor {
    /// A string, usually a small number (`"7"`); Trove's may be UUIDs.
    pub id: String,
    pub name: String,
    pub ram_mb: u32,
    pub vcpus: u32,
    pub disk_gb: u32,
}

impl Flavor {
    fn from_row(mut row: Row) -> Result<Flavor, StoreError> {
        Ok(Flavor {
            id: take(&mut row, "id")?,
            name: take(&mut row, "name")?,
            ram_mb: take(&mut row, "ram_mb")?,
            vcpus: take(&mut row, "vcpus")?,
            disk_gb: take(&mut row, "disk_gb")?,
        })
    }
}

const COLUMNS: &str = "id, name, ram_mb, vcpus, disk_gb";

impl Store {
    /// Every flavor, numeric ids in numeric order.
    pub async fn list_flavors(&self) -> Result<Vec<Flavor>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let rows: Vec<Row> = conn
                .exec(
                    format!("SELECT {COLUMNS} FROM flavors ORDER BY LENGTH(id), id"),
                    (),
                )
                .await?;
            rows.into_iter().map(Flavor::from_row).collect()
        })
        .await
    }

    /// The flavor with this id (not name), if any.
    pub async fn get_flavor(&self, id: &str) -> Result<Option<Flavor>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let row: Option<Row> = conn
                .exec_first(format!("SELECT {COLUMNS} FROM flavors WHERE id = ?"), (id,))
                .await?;
            row.map(Flavor::from_row).transpose()
        })
        .await
    }
}
