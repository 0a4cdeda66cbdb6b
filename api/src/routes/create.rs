//! `POST /instances`: a standalone instance, or replicas of an existing one.
//!
//! The request is checked, the new rows are inserted with status BUILD, and one task is
//! cast to the taskmanager; the response is the full detail view (both CLIs print it) of
//! the instance created, or of the last one for several replicas. Unknown keys (`nics`,
//! `availability_zone`, `access`, `locality`, `modules`, ...) are accepted and ignored,
//! as are a database's `character_set` and `collate`.
//!
//! A replica copies flavor, volume size and datastore from its source. A `flavorRef`,
//! `volume` or `datastore` sent with `replica_of` is ignored, not refused: the legacy
//! `trove create --replica_of` always sends `flavorRef`, and upstream's refusal of it makes
//! that command unusable.

use crate::auth::Tenant;
use crate::busy::{self, Action};
use crate::extract::{BaseUrl, Body};
use crate::fault::Fault;
use crate::routes::instances::{ensure_active, load_instance, render};
use crate::state::AppState;
use crate::validate;
use crate::views::Linker;
use axum::Json;
use axum::extract::State;
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::UserSpec;
use ferrotrove_proto::queues;
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_proto::taskmanager::TaskRequest;
use ferrotrove_store::{Instance, NewInstance, ReplicaInsert, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;
use uuid::Uuid;

#[derive(Deserialize)]
pub struct CreateBody {
    instance: Option<CreateRequest>,
}

#[derive(Deserialize)]
struct CreateRequest {
    name: Option<String>,
    #[serde(rename = "flavorRef")]
    flavor_ref: Option<Value>,
    volume: Option<VolumeRequest>,
    datastore: Option<DatastoreRequest>,
    databases: Option<Vec<DatabaseRequest>>,
    users: Option<Vec<UserRequest>>,
    replica_of: Option<String>,
    /// Trove's older name for `replica_of`.
    slave_of: Option<String>,
    replica_count: Option<Value>,
}

#[derive(Deserialize)]
struct VolumeRequest {
    /// `type` is accepted and ignored: there is one kind of volume.
    size: Option<Value>,
}

#[derive(Deserialize)]
struct DatastoreRequest {
    #[serde(rename = "type")]
    kind: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct DatabaseRequest {
    name: String,
}

#[derive(Deserialize)]
struct UserRequest {
    name: String,
    /// A `Secret`, so no log or error message can print it.
    password: Option<Secret>,
    host: Option<String>,
    databases: Option<Vec<DatabaseRequest>>,
}

pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    Body(body): Body<CreateBody>,
) -> Result<Json<Value>, Fault> {
    let request = body
        .instance
        .ok_or_else(|| Fault::bad_request("The request body must be {\"instance\": {...}}."))?;
    let name = request
        .name
        .clone()
        .ok_or_else(|| Fault::bad_request("The instance name is required."))?;
    validate::instance_name(&name)?;
    let source = match (request.replica_of.as_deref(), request.slave_of.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(Fault::bad_request(
                "replica_of and slave_of name different sources; give one.",
            ));
        }
        (a, b) => a.or(b).filter(|s| !s.is_empty()).map(str::to_owned),
    };
    let count = validate::replica_count(request.replica_count.as_ref())?;
    let instance = match source {
        Some(source) => create_replicas(&state, &tenant, &name, &source, count, &request).await?,
        None if count > 1 => {
            return Err(Fault::bad_request(format!(
                "replica_count is only for replicas: give replica_of, or create {count} instances one by one."
            )));
        }
        None => create_standalone(&state, &tenant, &name, request).await?,
    };
    let linker = Linker { base, tenant };
    let view = render(&state, &linker, std::slice::from_ref(&instance))
        .await?
        .pop();
    Ok(Json(json!({ "instance": view })))
}

async fn create_standalone(
    state: &AppState,
    tenant: &str,
    name: &str,
    request: CreateRequest,
) -> Result<Instance, Fault> {
    let flavor_ref = request
        .flavor_ref
        .as_ref()
        .filter(|f| !f.is_null())
        .ok_or_else(|| Fault::bad_request("A flavor is required: give flavorRef."))?;
    let flavor_id = validate::flavor_id(flavor_ref)?;
    let flavor = state
        .store
        .get_flavor(&flavor_id)
        .await?
        .ok_or_else(|| Fault::not_found(format!("Flavor {flavor_id} could not be found.")))?;
    let volume_size = validate::volume_size(request.volume.as_ref().and_then(|v| v.size.as_ref()))?;
    let (kind, version) = match &request.datastore {
        Some(d) => (d.kind.as_deref(), d.version.as_deref()),
        None => (None, None),
    };
    let (datastore, version) = match state.store.resolve_datastore_version(kind, version).await {
        Ok(found) => found,
        Err(StoreError::NotFound(message)) => return Err(Fault::bad_request(message)),
        Err(other) => return Err(other.into()),
    };
    let databases = databases(request.databases.unwrap_or_default())?;
    let users = users(request.users.unwrap_or_default(), &databases)?;

    let task = Uuid::now_v7();
    let instance = state
        .store
        .insert_instance(&NewInstance {
            id: Uuid::new_v4(),
            tenant_id: tenant.to_owned(),
            name: name.to_owned(),
            flavor_id: flavor.id,
            volume_size,
            datastore: datastore.name,
            datastore_version: version.name,
            status: InstanceStatus::Build,
            replica_of: None,
            create_task: Some(task),
        })
        .await?;
    crate::trace::record_instance(instance.id);
    cast_or_fail(
        state,
        &[instance.id],
        &TaskRequest::CreateInstance {
            instance_id: instance.id,
            databases,
            users,
        },
        task,
    )
    .await?;
    Ok(instance)
}

async fn create_replicas(
    state: &AppState,
    tenant: &str,
    name: &str,
    source_ref: &str,
    count: u64,
    request: &CreateRequest,
) -> Result<Instance, Fault> {
    if request.databases.as_ref().is_some_and(|d| !d.is_empty())
        || request.users.as_ref().is_some_and(|u| !u.is_empty())
    {
        return Err(Fault::bad_request(
            "Databases and users cannot be given for a replica: it copies them from its source.",
        ));
    }
    let source = match load_instance(state, tenant, source_ref).await {
        Err(f) if f.status == axum::http::StatusCode::NOT_FOUND => {
            return Err(Fault::not_found(format!(
                "Replica source {source_ref} could not be found."
            )));
        }
        other => other?,
    };
    if let Some(its_source) = source.replica_of {
        return Err(replica_of_replica(&source, its_source));
    }
    ensure_active(state, &source, Action::Replicate).await?;
    let names: Vec<String> = if count == 1 {
        vec![name.to_owned()]
    } else {
        (1..=count).map(|i| format!("{name}-{i}")).collect()
    };
    for replica_name in &names {
        validate::instance_name(replica_name)?;
    }
    let task = Uuid::now_v7();
    let rows: Vec<NewInstance> = names
        .into_iter()
        .map(|replica_name| NewInstance {
            id: Uuid::new_v4(),
            tenant_id: tenant.to_owned(),
            name: replica_name,
            flavor_id: source.flavor_id.clone(),
            volume_size: source.volume_size,
            datastore: source.datastore.clone(),
            datastore_version: source.datastore_version.clone(),
            status: InstanceStatus::Build,
            replica_of: Some(source.id),
            create_task: Some(task),
        })
        .collect();
    let replicas = match state
        .store
        .insert_replicas(source.id, &[InstanceStatus::Active], &rows)
        .await?
    {
        ReplicaInsert::Inserted(replicas) => replicas,
        // It changed since the check above.
        ReplicaInsert::SourceRefused(now, activity) => {
            return Err(match now.replica_of {
                Some(its_source) => replica_of_replica(&now, its_source),
                None => busy::refusal(
                    &now,
                    activity.as_ref(),
                    now.status.as_str(),
                    Action::Replicate,
                ),
            });
        }
    };
    let replica_ids: Vec<Uuid> = replicas.iter().map(|r| r.id).collect();
    cast_or_fail(
        state,
        &replica_ids,
        &TaskRequest::CreateReplicas {
            source_id: source.id,
            replica_ids: replica_ids.clone(),
        },
        task,
    )
    .await?;
    replicas
        .into_iter()
        .last()
        .ok_or_else(|| Fault::internal("no replica was created"))
}

/// The refusal of a replica of `source`, which replicates from `its_source` (400).
fn replica_of_replica(source: &Instance, its_source: Uuid) -> Fault {
    Fault::bad_request(format!(
        "Cannot create a replica of a replica: {} replicates from {its_source}. Create it from that source instead.",
        source.id
    ))
}

/// Casts `request` under `task`, the id recorded with its rows, and records that the
/// broker took it. If the broker does not take it, the instances it was for are marked
/// ERROR with a fault saying so (instead of staying in BUILD, waiting for a task that was
/// never sent), and the client gets a 503. (If this process stops before either, the
/// taskmanager finds the rows unsent: see `ferrotrove_store::UnsentCreate`.)
async fn cast_or_fail(
    state: &AppState,
    instances: &[Uuid],
    request: &TaskRequest,
    task: Uuid,
) -> Result<(), Fault> {
    let Err(e) = state.bus.cast_as(queues::TASKMANAGER, request, task).await else {
        // Only the sweep for lost creates reads this; a write lost here makes it resend a
        // replica request (one run all the same) or, for a create still queued after its
        // grace, fail it with a fault.
        if let Err(error) = state.store.mark_create_sent(task).await {
            tracing::warn!(%error, %task, "could not record that the create task was sent");
        }
        return Ok(());
    };
    tracing::error!(error = %e, "cast to the taskmanager failed");
    let fault = "The taskmanager could not be reached when this instance was requested, so it was never built. Delete it and try again.";
    for id in instances {
        if let Err(mark) = state
            .store
            .set_status(*id, InstanceStatus::Error, Some(fault))
            .await
        {
            tracing::error!(instance = %id, error = %mark, "could not mark an instance ERROR after a failed cast");
        }
    }
    let ids: Vec<String> = instances.iter().map(Uuid::to_string).collect();
    Err(Fault::unavailable(format!(
        "The taskmanager cannot be reached, so nothing was built; instance {} is marked ERROR. Delete it and try again later.",
        ids.join(", ")
    )))
}

fn databases(requested: Vec<DatabaseRequest>) -> Result<Vec<String>, Fault> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(requested.len());
    for db in requested {
        validate::database_name(&db.name)?;
        if !seen.insert(db.name.clone()) {
            return Err(Fault::bad_request(format!(
                "Database {:?} is requested twice.",
                db.name
            )));
        }
        out.push(db.name);
    }
    Ok(out)
}

fn users(requested: Vec<UserRequest>, databases: &[String]) -> Result<Vec<UserSpec>, Fault> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(requested.len());
    for user in requested {
        validate::user_name(&user.name)?;
        let password = user.password.unwrap_or_default();
        validate::password(&user.name, password.expose())?;
        let host = user.host.unwrap_or_else(|| "%".to_owned());
        validate::user_host(&host)?;
        if !seen.insert((user.name.clone(), host.clone())) {
            return Err(Fault::bad_request(format!(
                "User {:?}@{host:?} is requested twice.",
                user.name
            )));
        }
        let mut grants = Vec::new();
        for db in user.databases.unwrap_or_default() {
            if !databases.contains(&db.name) {
                return Err(Fault::bad_request(format!(
                    "User {:?} is granted database {:?}, which this request does not create; add it to databases.",
                    user.name, db.name
                )));
            }
            grants.push(db.name);
        }
        out.push(UserSpec {
            name: user.name,
            password,
            host,
            databases: grants,
        });
    }
    Ok(out)
}
