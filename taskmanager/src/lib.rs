//! The taskmanager: runs the multi-step orchestrations (create, create replicas, detach,
//! delete) that the API asks for on the `taskmanager` queue, driving guest agents over the
//! bus and recording every outcome in the control DB.
//!
//! Its provisioners give new instances a host with an agent on it. It must not serve HTTP,
//! touch a database server directly (only agents do), or store user passwords.

pub mod config;
mod error;
mod guest;
mod in_flight;
pub mod provisioner;
mod tasks;
mod unsent_creates;

pub use config::TaskmanagerConfig;
pub use error::TaskError;

use config::ProvisionerKind;
use ferrotrove_bus::{Bus, Verifier};
use ferrotrove_proto::queues;
use ferrotrove_store::Store;
use provisioner::LocalProvisioner;
use std::future::Future;
use std::sync::Arc;
use tasks::Tasks;

/// Runs a taskmanager until `shutdown` resolves, riding out broker restarts.
pub async fn run(
    config: TaskmanagerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.store).await?;
    let bus = Bus::connect_with_retry(&config.bus, "taskmanager", config.startup_timeout()).await?;
    let provisioner = match config.provisioner {
        ProvisionerKind::Local => Arc::new(LocalProvisioner::new(
            config.local.clone(),
            config.bus.clone(),
            bus.clone(),
            config.timeouts.clone(),
        )?),
    };
    let tasks = Tasks {
        store,
        bus: bus.clone(),
        provisioner,
        timeouts: config.timeouts.clone(),
        in_flight: Default::default(),
        seeding: config.seeding.clone(),
        owner: format!(
            "{}:{}:{}",
            host_name(),
            std::process::id(),
            uuid::Uuid::now_v7()
        ),
    };
    tracing::info!(state_dir = %config.local.state_dir.display(), "taskmanager starting");
    let sweeper = tokio::spawn(unsent_creates::sweep_periodically(
        tasks.store.clone(),
        bus.clone(),
        config.timeouts.unsent_create(),
    ));
    ferrotrove_bus::daemon::serve_until_shutdown(
        &bus,
        queues::TASKMANAGER,
        tasks,
        Some(Verifier::Publishers(config.task_publishers().into())),
        None,
        shutdown,
    )
    .await;
    sweeper.abort();
    Ok(())
}

/// This host's name, for task rows (from the kernel; `localhost` when unreadable).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
