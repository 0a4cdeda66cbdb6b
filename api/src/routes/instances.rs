//! `GET /instances[/detail]`, `GET`, `PUT` and `DELETE /instances/{id}`: reading instances,
//! detaching a replica from its source, and deleting. `POST /instances/{id}/action` names
//! the actions Trove has and this service does not run yet.
//!
//! Changes are recorded as a guarded status transition in the control DB (so concurrent
//! requests cannot both pass a check) and then cast to the taskmanager. When the cast
//! fails, the transition is undone and the client gets a 503: nothing is left waiting for
//! a task that was never sent.

use crate::auth::Tenant;
use crate::busy::{self, Action};
use crate::extract::{BaseUrl, Body, Params, QueryMap};
use crate::fault::Fault;
use crate::liveness::Liveness;
use crate::state::AppState;
use crate::trace::record_instance;
use crate::validate;
use crate::views::{InstanceRenderer, InstanceView, Link, Linker};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ferrotrove_proto::queues;
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_proto::taskmanager::TaskRequest;
use ferrotrove_store::{DeleteStart, DetachStart, Instance, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Deserialize)]
pub struct InstancePath {
    id: String,
}

/// The tenant's live instance named by id or name; 404 when there is none.
pub async fn load_instance(
    state: &AppState,
    tenant: &str,
    id_or_name: &str,
) -> Result<Instance, Fault> {
    match state.store.get_tenant_instance(tenant, id_or_name).await {
        Ok(instance) => {
            record_instance(instance.id);
            Ok(instance)
        }
        Err(StoreError::NotFound(_)) => Err(Fault::not_found(format!(
            "Instance {id_or_name} could not be found."
        ))),
        Err(other) => Err(other.into()),
    }
}

/// Renders instances with their heartbeats and replicas, fetched for all of them at once
/// (with the heartbeats of the sources of replicas in BUILD, whose snapshot seeds them).
pub async fn render(
    state: &AppState,
    linker: &Linker,
    instances: &[Instance],
) -> Result<Vec<InstanceView>, Fault> {
    let ids: Vec<_> = instances.iter().map(|i| i.id).collect();
    let guests = state
        .store
        .guest_liveness(&heartbeat_ids(instances))
        .await?;
    let replicas = state.store.replicas_of_many(&ids).await?;
    let datastores = state.store.list_datastores().await?;
    let renderer = InstanceRenderer {
        linker,
        region: &state.region,
        heartbeat_expiry: state.heartbeat_expiry,
        datastores: &datastores,
        now: OffsetDateTime::now_utc(),
    };
    Ok(instances
        .iter()
        .map(|i| {
            renderer.render(
                i,
                guests.get(&i.id),
                i.replica_of.and_then(|source| guests.get(&source)),
                replicas.get(&i.id).map_or(&[], Vec::as_slice),
            )
        })
        .collect())
}

/// The instances whose heartbeats rendering `instances` reads: each of them, and the
/// sources of those replicas still in BUILD.
fn heartbeat_ids(instances: &[Instance]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
    let sources = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Build)
        .filter_map(|i| i.replica_of);
    for source in sources {
        if !ids.contains(&source) {
            ids.push(source);
        }
    }
    ids
}

/// The instance's status as actions judge it (ACTIVE needs a live server).
pub async fn liveness(state: &AppState, instance: &Instance) -> Result<Liveness, Fault> {
    let guest = state.store.guest_liveness(&[instance.id]).await?;
    Ok(Liveness::of(
        instance.status,
        instance.updated,
        guest.get(&instance.id),
    ))
}

/// `GET /instances` and `/instances/detail`: `limit` and `marker` page the list (a `next`
/// link is added when more remain); `include_clustered` is accepted and ignored (there
/// are no clusters).
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    QueryMap(query): QueryMap,
) -> Result<Json<InstanceList>, Fault> {
    let limit = query
        .get("limit")
        .map(|l| {
            l.parse::<u32>()
                .ok()
                .filter(|l| *l > 0)
                .ok_or_else(|| Fault::bad_request("limit must be a positive whole number."))
        })
        .transpose()?;
    let marker = query
        .get("marker")
        .map(|m| {
            uuid::Uuid::parse_str(m)
                .map_err(|_| Fault::bad_request(format!("marker {m:?} is not an instance id.")))
        })
        .transpose()?;
    let mut instances = match state
        .store
        .list_instances(&tenant, limit.map(|l| l.saturating_add(1)), marker)
        .await
    {
        Ok(instances) => instances,
        Err(StoreError::NotFound(message)) => return Err(Fault::bad_request(message)),
        Err(other) => return Err(other.into()),
    };
    let linker = Linker { base, tenant };
    let mut links = Vec::new();
    if let Some(limit) = limit.map(|l| l as usize).filter(|l| instances.len() > *l) {
        instances.truncate(limit);
        if let Some(last) = instances.last() {
            let href = format!(
                "{}?limit={limit}&marker={}",
                linker.collection("instances"),
                last.id
            );
            links.push(Link { href, rel: "next" });
        }
    }
    // Serialized straight from the views: going through a `serde_json::Value` tree first
    // took half the time of a list of 1,000.
    Ok(Json(InstanceList {
        instances: render(&state, &linker, &instances).await?,
        links,
    }))
}

/// The body of a list: the page, and a `next` link when more remain.
#[derive(Serialize)]
pub struct InstanceList {
    instances: Vec<InstanceView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<Link>,
}

/// `GET /instances/{id or name}`.
pub async fn show(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    BaseUrl(base): BaseUrl,
    Params(path): Params<InstancePath>,
) -> Result<Json<Value>, Fault> {
    let instance = load_instance(&state, &tenant, &path.id).await?;
    let linker = Linker { base, tenant };
    let view = render(&state, &linker, std::slice::from_ref(&instance))
        .await?
        .pop();
    Ok(Json(json!({ "instance": view })))
}

/// `PUT /instances/{id}`: `{"instance": {"replica_of": null}}` (or `slave_of`) detaches a
/// replica from its source; `name` renames. Anything else is refused rather than ignored,
/// so nobody believes a change was made that was not.
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Params(path): Params<InstancePath>,
    Body(body): Body<Value>,
) -> Result<StatusCode, Fault> {
    let fields = body
        .get("instance")
        .and_then(Value::as_object)
        .ok_or_else(|| Fault::bad_request("The request body must be {\"instance\": {...}}."))?;
    let mut detach = false;
    let mut rename = None;
    for (key, value) in fields {
        match key.as_str() {
            "replica_of" | "slave_of" if value.is_null() => detach = true,
            "replica_of" | "slave_of" => {
                return Err(Fault::bad_request(format!(
                    "Only detaching is supported: set {key} to null. To replicate from a source, create a replica of it."
                )));
            }
            "name" => {
                let name = value
                    .as_str()
                    .ok_or_else(|| Fault::bad_request("name must be a string."))?;
                validate::instance_name(name)?;
                rename = Some(name);
            }
            other => {
                return Err(Fault::bad_request(format!(
                    "Updating {other} is not supported; only name, and replica_of set to null (detach), are."
                )));
            }
        }
    }
    if !detach && rename.is_none() {
        return Err(Fault::bad_request(
            "Nothing to update: give name, or replica_of: null to detach.",
        ));
    }
    let instance = load_instance(&state, &tenant, &path.id).await?;
    // Detach first: when it is refused, the request changes nothing.
    if detach {
        if !instance.is_replica() {
            return Err(Fault::bad_request(format!(
                "Instance {} is not a replica.",
                instance.id
            )));
        }
        // Starting a detach needs a live replica; asking again while it detaches only
        // resends its task.
        if instance.status != InstanceStatus::Detach {
            ensure_active(&state, &instance, Action::Detach).await?;
        }
        let (task, started) = match state.store.start_detach(instance.id).await? {
            DetachStart::Started(_, task) => (task, true),
            DetachStart::AlreadyDetaching(_, task) => (task, false),
            DetachStart::Refused(now, activity) => {
                return Err(busy::refusal(
                    &now,
                    activity.as_ref(),
                    now.status.as_str(),
                    Action::Detach,
                ));
            }
        };
        let request = TaskRequest::DetachReplica {
            instance_id: instance.id,
        };
        send_task(&state, &instance, &request, task, started).await?;
    }
    if let Some(name) = rename {
        state.store.rename_instance(instance.id, name).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// Refuses `action` unless `instance` is ACTIVE with a live server (422, saying what it
/// is busy with, or what its status is).
pub async fn ensure_active(
    state: &AppState,
    instance: &Instance,
    action: Action,
) -> Result<(), Fault> {
    let live = liveness(state, instance).await?;
    if live.status == InstanceStatus::Active {
        return Ok(());
    }
    let activity = state.store.activity(instance).await?;
    Err(busy::refusal(
        instance,
        activity.as_ref(),
        &live.explain(state.heartbeat_expiry),
        action,
    ))
}

/// `DELETE /instances/{id}`: a source with live replicas is refused (403, as Trove); a busy
/// instance (see [`busy`]) gets 422 saying with what. Deleting an instance already being
/// deleted is accepted again and sends its delete task again (see [`send_task`]).
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Params(path): Params<InstancePath>,
) -> Result<StatusCode, Fault> {
    let instance = load_instance(&state, &tenant, &path.id).await?;
    let (task, started) = match state.store.start_delete(instance.id).await? {
        DeleteStart::Started(_, task) => (task, true),
        DeleteStart::AlreadyDeleting(_, task) => (task, false),
        DeleteStart::HasReplicas(..) => {
            return Err(Fault::forbidden(
                "Detach replicas before deleting replica source.",
            ));
        }
        DeleteStart::Busy(now, activity) => {
            return Err(busy::busy(&now, &activity, Action::Delete));
        }
    };
    let request = TaskRequest::DeleteInstance {
        instance_id: instance.id,
    };
    send_task(&state, &instance, &request, task, started).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Sends the task a request's status waits for (DELETING, DETACH), under the id recorded
/// with that status: a task lost on the way (the API stopped before sending it) is sent
/// when the request is made again, and one already queued or running stays the only one
/// (the taskmanager runs one task per id). When sending fails and this request `started`
/// the status, nothing was done yet: `before`'s status and fault are put back.
async fn send_task(
    state: &AppState,
    before: &Instance,
    request: &TaskRequest,
    task: Uuid,
    started: bool,
) -> Result<(), Fault> {
    let Err(e) = state.bus.cast_as(queues::TASKMANAGER, request, task).await else {
        return Ok(());
    };
    if started
        && let Err(undo) = state
            .store
            .set_status(before.id, before.status, before.fault.as_deref())
            .await
    {
        tracing::error!(error = %undo, task = request.subject().0, "could not undo the status after a failed cast");
    }
    Err(e.into())
}

/// Trove's instance actions; none is implemented yet (the taskmanager has no task for them).
const ACTIONS: &[&str] = &[
    "promote_to_replica_source",
    "eject_replica_source",
    "restart",
    "resize",
    "reset_status",
];

/// `POST /instances/{id}/action`: says plainly which actions are not supported yet, rather
/// than a 404 that reads as "no such instance".
pub async fn action(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Params(path): Params<InstancePath>,
    Body(body): Body<Value>,
) -> Result<StatusCode, Fault> {
    let action = body
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.keys().next().cloned())
        .ok_or_else(|| {
            Fault::bad_request("The request body must name one action, as {\"<action>\": {...}}.")
        })?;
    if !ACTIONS.contains(&action.as_str()) {
        return Err(Fault::bad_request(format!(
            "Unknown action {action:?}; Trove's are {}.",
            ACTIONS.join(", ")
        )));
    }
    let instance = load_instance(&state, &tenant, &path.id).await?;
    Err(Fault::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "Action {action} is not supported yet; instance {} is unchanged.",
            instance.id
        ),
    ))
}
