//! `GET /datastores[/{ds}[/versions[/{v}]]]` and `GET /datastores/versions/{id}`: what
//! database servers can be created. Datastores and versions are named by id, name or
//! alias (`mysql`, `5.7`), as clients type them.

use crate::auth::Tenant;
use crate::extract::{BaseUrl, Params};
use crate::fault::Fault;
use crate::state::AppState;
use crate::views::{self, Linker};
use axum::Json;
use axum::extract::State;
use ferrotrove_store::Datastore;
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
) -> Result<Json<Value>, Fault> {
    let linker = Linker { base, tenant };
    let datastores = state.store.list_datastores().await?;
    let views: Vec<_> = datastores
        .iter()
        .map(|d| views::datastore(&linker, d))
        .collect();
    Ok(Json(json!({ "datastores": views })))
}

#[derive(Deserialize)]
pub struct DatastorePath {
    datastore: String,
}

#[derive(Deserialize)]
pub struct VersionPath {
    datastore: String,
    version: String,
}

#[derive(Deserialize)]
pub struct VersionIdPath {
    version_id: String,
}

async fn find(state: &AppState, name: &str) -> Result<Datastore, Fault> {
    state
        .store
        .find_datastore(name)
        .await?
        .ok_or_else(|| Fault::not_found(format!("Datastore {name} could not be found.")))
}

pub async fn show(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    Params(path): Params<DatastorePath>,
) -> Result<Json<Value>, Fault> {
    let linker = Linker { base, tenant };
    let datastore = find(&state, &path.datastore).await?;
    Ok(Json(
        json!({ "datastore": views::datastore(&linker, &datastore) }),
    ))
}

pub async fn list_versions(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    Params(path): Params<DatastorePath>,
) -> Result<Json<Value>, Fault> {
    let linker = Linker { base, tenant };
    let datastore = find(&state, &path.datastore).await?;
    let views: Vec<_> = datastore
        .versions
        .iter()
        .map(|v| views::version(&linker, v))
        .collect();
    Ok(Json(json!({ "versions": views })))
}

pub async fn show_version(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    Params(path): Params<VersionPath>,
) -> Result<Json<Value>, Fault> {
    let linker = Linker { base, tenant };
    let datastore = find(&state, &path.datastore).await?;
    let version = datastore.version(&path.version).ok_or_else(|| {
        Fault::not_found(format!(
            "Datastore version {} of datastore {} could not be found.",
            path.version, datastore.name
        ))
    })?;
    Ok(Json(json!({ "version": views::version(&linker, version) })))
}

pub async fn show_version_by_id(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    Params(path): Params<VersionIdPath>,
) -> Result<Json<Value>, Fault> {
    let linker = Linker { base, tenant };
    let datastores = state.store.list_datastores().await?;
    let version = datastores
        .iter()
        .flat_map(|d| d.versions.iter())
        .find(|v| v.id.to_string().eq_ignore_ascii_case(&path.version_id))
        .ok_or_else(|| {
            Fault::not_found(format!(
                "Datastore version {} could not be found.",
                path.version_id
            ))
        })?;
    Ok(Json(json!({ "version": views::version(&linker, version) })))
}
