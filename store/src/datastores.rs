//! Datastores and their versions, and how a name a client types becomes one of them.
//!
//! Clients send a datastore and a version as typed, by name or by id, and Trove's own
//! documentation says `mysql` / `5.7`; aliases let those name what this build runs. The
//! tables are tiny, so resolution loads them whole and matches in memory.

use crate::migrations::MARIADB_DATASTORE_ID;
use crate::rows::{take, take_opt_uuid, take_uuid};
use crate::{Store, StoreError};
use mysql_async::Row;
use mysql_async::prelude::Queryable;
use uuid::Uuid;

/// A kind of database server, with its versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datastore {
    pub id: Uuid,
    /// The canonical name, the one instances record (`mariadb`).
    pub name: String,
    /// The version used when a request names none.
    pub default_version_id: Option<Uuid>,
    /// Other names accepted for it (`mysql`).
    pub aliases: Vec<String>,
    /// Ordered by name.
    pub versions: Vec<DatastoreVersion>,
}

/// One version of a datastore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatastoreVersion {
    pub id: Uuid,
    pub datastore_id: Uuid,
    /// The canonical name, the one instances record (`10.11`).
    pub name: String,
    /// The version number (Trove's `version_number`).
    pub version: String,
    /// Whether new instances may use it.
    pub active: bool,
    /// Other names accepted for it within its datastore (`5.7`).
    pub aliases: Vec<String>,
}

impl Datastore {
    /// Whether `id_or_name` names this datastore (its id, name or an alias; names ignore case).
    pub fn is_named(&self, id_or_name: &str) -> bool {
        self.id.to_string().eq_ignore_ascii_case(id_or_name)
            || self.name.eq_ignore_ascii_case(id_or_name)
            || self
                .aliases
                .iter()
                .any(|a| a.eq_ignore_ascii_case(id_or_name))
    }

    /// The version named `id_or_name` (its id, name or an alias).
    pub fn version(&self, id_or_name: &str) -> Option<&DatastoreVersion> {
        self.versions.iter().find(|v| {
            v.id.to_string().eq_ignore_ascii_case(id_or_name)
                || v.name.eq_ignore_ascii_case(id_or_name)
                || v.aliases.iter().any(|a| a.eq_ignore_ascii_case(id_or_name))
        })
    }

    /// The version used when none is named.
    pub fn default_version(&self) -> Option<&DatastoreVersion> {
        let id = self.default_version_id?;
        self.versions.iter().find(|v| v.id == id)
    }
}

impl Store {
    /// Every datastore with its versions and aliases, ordered by name.
    pub async fn list_datastores(&self) -> Result<Vec<Datastore>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let ds_rows: Vec<Row> = conn
                .exec(
                    "SELECT id, name, default_version_id FROM datastores ORDER BY name",
                    (),
                )
                .await?;
            let alias_rows: Vec<(String, String)> = conn
                .exec(
                    "SELECT datastore_id, alias FROM datastore_aliases ORDER BY alias",
                    (),
                )
                .await?;
            let version_rows: Vec<Row> = conn
                .exec("SELECT id, datastore_id, name, version, active FROM datastore_versions ORDER BY name", ())
                .await?;
            let version_alias_rows: Vec<(String, String)> = conn
                .exec(
                    "SELECT version_id, alias FROM datastore_version_aliases ORDER BY alias",
                    (),
                )
                .await?;

            let mut versions = Vec::with_capacity(version_rows.len());
            for mut row in version_rows {
                let id = take_uuid(&mut row, "id")?;
                versions.push(DatastoreVersion {
                    id,
                    datastore_id: take_uuid(&mut row, "datastore_id")?,
                    name: take(&mut row, "name")?,
                    version: take(&mut row, "version")?,
                    active: take(&mut row, "active")?,
                    aliases: aliases_of(&version_alias_rows, id),
                });
            }
            let mut datastores = Vec::with_capacity(ds_rows.len());
            for mut row in ds_rows {
                let id = take_uuid(&mut row, "id")?;
                datastores.push(Datastore {
                    id,
                    name: take(&mut row, "name")?,
                    default_version_id: take_opt_uuid(&mut row, "default_version_id")?,
                    aliases: aliases_of(&alias_rows, id),
                    versions: versions
                        .iter()
                        .filter(|v| v.datastore_id == id)
                        .cloned()
                        .collect(),
                });
            }
            Ok(datastores)
        })
        .await
    }

    /// The datastore `id_or_name` names (id, name or alias), if any.
    pub async fn find_datastore(&self, id_or_name: &str) -> Result<Option<Datastore>, StoreError> {
        Ok(self
            .list_datastores()
            .await?
            .into_iter()
            .find(|d| d.is_named(id_or_name)))
    }

    /// What a create request's `datastore: {type, version}` means: both optional, each a
    /// name, id or alias. No datastore means MariaDB; no version means the datastore's
    /// default. Unknown or inactive ones are [`StoreError::NotFound`] with a message that
    /// lists what exists.
    pub async fn resolve_datastore_version(
        &self,
        datastore: Option<&str>,
        version: Option<&str>,
    ) -> Result<(Datastore, DatastoreVersion), StoreError> {
        let all = self.list_datastores().await?;
        let known = || {
            all.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ds = match datastore {
            Some(name) => all.iter().find(|d| d.is_named(name)).ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Datastore '{name}' cannot be found; known datastores: {}.",
                    known()
                ))
            })?,
            None => all
                .iter()
                .find(|d| d.id.to_string() == MARIADB_DATASTORE_ID)
                .or(all.first())
                .ok_or_else(|| StoreError::NotFound("No datastore is configured.".to_owned()))?,
        };
        let versions = || {
            ds.versions
                .iter()
                .filter(|v| v.active)
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ver = match version {
            Some(name) => ds.version(name).filter(|v| v.active).ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Datastore version '{name}' of datastore '{}' cannot be found; known versions: {}.",
                    ds.name,
                    versions()
                ))
            })?,
            None => ds.default_version().filter(|v| v.active).ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Datastore '{}' has no default version; name one of: {}.",
                    ds.name,
                    versions()
                ))
            })?,
        };
        Ok((ds.clone(), ver.clone()))
    }
}

fn aliases_of(rows: &[(String, String)], id: Uuid) -> Vec<String> {
    let id = id.to_string();
    rows.iter()
        .filter(|(owner, _)| owner.eq_ignore_ascii_case(&id))
        .map(|(_, alias)| alias.clone())
        .collect()
}
