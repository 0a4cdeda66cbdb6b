//! The sweep for creates that the API recorded but never sent to a taskmanager, because it
//! stopped in between (see `ferrotrove_store::UnsentCreate`). Every quarter of
//! `timeouts.unsent_create_secs` (30 s by default) it looks for rows in BUILD whose task
//! the broker never confirmed that long after their creation, and that no taskmanager has
//! taken up:
//! - a replica request names only rows, so it is sent again under the id recorded with
//!   them: it runs once, whichever copy comes first;
//! - a standalone create carried its databases and users, passwords included, which the
//!   control DB never holds, so it cannot be sent again: the instance is failed with a
//!   fault that says to delete it and create it again. Nothing was built for it.
//!
//! Several taskmanagers may sweep at once: a resend is keyed by its task id, and failing
//! an instance is one conditional statement.

use crate::TaskError;
use ferrotrove_bus::Bus;
use ferrotrove_proto::queues;
use ferrotrove_proto::taskmanager::TaskRequest;
use ferrotrove_store::{Store, UnsentCreate};
use std::time::Duration;

/// The fault of a create whose task was lost.
pub(crate) const LOST_CREATE_FAULT: &str = "The API stopped before this create request reached a taskmanager, so nothing was built, and its databases and users (which are never stored) are gone. Delete it and create it again.";

/// Sweeps every `grace / 4` (at least once a second, at most once a minute), for ever.
pub(crate) async fn sweep_periodically(store: Store, bus: Bus, grace: Duration) {
    let every = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = sweep(&store, &bus, grace).await {
            tracing::warn!(%error, "looking for creates the API never sent");
        }
    }
}

/// One pass: deals with every unsent create found.
async fn sweep(store: &Store, bus: &Bus, grace: Duration) -> Result<(), TaskError> {
    for create in store.unsent_creates(grace).await? {
        let span = tracing::info_span!("unsent create", task = %create.task);
        let _entered = span.enter();
        match create.source_id {
            Some(source_id) => resend_replicas(store, bus, &create, source_id).await?,
            None => fail_create(store, &create).await?,
        }
    }
    Ok(())
}

async fn resend_replicas(
    store: &Store,
    bus: &Bus,
    create: &UnsentCreate,
    source_id: uuid::Uuid,
) -> Result<(), TaskError> {
    let request = TaskRequest::CreateReplicas {
        source_id,
        replica_ids: create.instances.clone(),
    };
    bus.cast_as(queues::TASKMANAGER, &request, create.task)
        .await?;
    store.mark_create_sent(create.task).await?;
    tracing::warn!(
        %source_id,
        replicas = ?create.instances,
        "sent a replica request again: the API that recorded it never sent it"
    );
    Ok(())
}

async fn fail_create(store: &Store, create: &UnsentCreate) -> Result<(), TaskError> {
    for id in &create.instances {
        if store
            .fail_unsent_create(*id, create.task, LOST_CREATE_FAULT)
            .await?
        {
            tracing::warn!(
                instance_id = %id,
                "failed a create the API never sent (its users cannot be sent again)"
            );
        }
    }
    Ok(())
}
