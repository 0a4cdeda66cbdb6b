//! `GET /flavors` and `GET /flavors/{id}`: what instance sizes exist. Lookups are by id
//! only: a name is a 404, after which both CLIs search the list by name themselves.

use crate::auth::Tenant;
use crate::extract::{BaseUrl, Params};
use crate::fault::Fault;
use crate::state::AppState;
use crate::views::{self, Linker};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
) -> Result<Json<Value>, Fault> {
    let linker = Linker { base, tenant };
    let flavors = state.store.list_flavors().await?;
    let views: Vec<_> = flavors.iter().map(|f| views::flavor(&linker, f)).collect();
    Ok(Json(json!({ "flavors": views })))
}

#[derive(Deserialize)]
pub struct FlavorPath {
    id: String,
}

pub async fn show(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    Params(path): Params<FlavorPath>,
) -> Result<Json<Value>, Fault> {
    let linker = Linker { base, tenant };
    let flavor = state
        .store
        .get_flavor(&path.id)
        .await?
        .ok_or_else(|| Fault::not_found(format!("Flavor {} could not be found.", path.id)))?;
    Ok(Json(json!({ "flavor": views::flavor(&linker, &flavor) })))
}
