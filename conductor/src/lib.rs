//! The conductor: the only consumer of what guests report (heartbeats, with the progress of
//! a running snapshot or restore; job results later). It writes each report to the control
//! DB and acks it only then.
//!
//! It must not command agents or run orchestrations (that is the taskmanager's), and it
//! never trusts a report's claim about which instance it is from beyond what the control
//! DB knows (a heartbeat for an unknown or deleted instance is dropped).

pub mod config;

use ferrotrove_bus::{Bus, Handler, KeyLookup, RequestContext, Verifier};
use ferrotrove_proto::Secret;
use ferrotrove_proto::conductor::ConductorMessage;
use ferrotrove_proto::{ErrorKind, RemoteError, queues};
use ferrotrove_store::Store;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

pub use config::ConductorConfig;

/// Writes guest reports to the control DB.
#[derive(Clone)]
pub struct Conductor {
    store: Store,
}

impl Handler for Conductor {
    type Request = ConductorMessage;
    type Response = ();

    async fn handle(
        &self,
        message: ConductorMessage,
        ctx: RequestContext,
    ) -> Result<(), RemoteError> {
        match message {
            ConductorMessage::Heartbeat(heartbeat) => {
                // A guest speaks only for its own instance.
                if ctx.key_id != Some(heartbeat.instance_id) {
                    tracing::warn!(
                        instance_id = %heartbeat.instance_id,
                        signed_by = ?ctx.key_id,
                        "ignoring a heartbeat signed by another instance's key"
                    );
                    return Err(RemoteError::new(
                        ErrorKind::BadRequest,
                        "heartbeat signed by another instance's key",
                    ));
                }
                let span = tracing::debug_span!(
                    "heartbeat",
                    instance_id = %heartbeat.instance_id,
                    seq = heartbeat.seq,
                    progress = heartbeat.progress.as_ref().map(|p| p.stage.as_str()),
                );
                // The whole heartbeat, progress included: the store applies all of it or,
                // when an older one arrives late, none of it.
                let applied = self
                    .store
                    .record_heartbeat(&heartbeat)
                    .instrument(span)
                    .await
                    .map_err(|e| RemoteError::new(ErrorKind::Database, e.to_string()))?;
                if !applied {
                    tracing::debug!(instance_id = %heartbeat.instance_id, seq = heartbeat.seq, "stale or unknown heartbeat ignored");
                }
                Ok(())
            }
        }
    }
}

/// Instances' secrets, from the control DB: a report is believed only when signed with
/// the secret of a live instance. An instance's secret never changes, so each is read once
/// (a deleted instance's reports still fail: the store ignores them).
struct InstanceKeys {
    store: Store,
    known: std::sync::Mutex<HashMap<Uuid, Secret>>,
}

/// How many secrets are kept before the cache starts again from empty.
const KNOWN_SECRETS: usize = 100_000;

impl InstanceKeys {
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Secret>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KeyLookup for InstanceKeys {
    fn secret(&self, key_id: Uuid) -> Pin<Box<dyn Future<Output = Option<Secret>> + Send + '_>> {
        Box::pin(async move {
            if let Some(secret) = self.known().get(&key_id) {
                return Some(secret.clone());
            }
            match self.store.instance_secret(key_id).await {
                Ok(Some(secret)) => {
                    let mut known = self.known();
                    if known.len() >= KNOWN_SECRETS {
                        known.clear();
                    }
                    known.insert(key_id, secret.clone());
                    Some(secret)
                }
                Ok(None) => None,
                Err(error) => {
                    tracing::warn!(%key_id, %error, "cannot read the instance's secret");
                    None
                }
            }
        })
    }
}

/// Runs a conductor until `shutdown` resolves, riding out broker restarts.
pub async fn run(
    config: ConductorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.store).await?;
    let bus = Bus::connect_with_retry(&config.bus, "conductor", config.startup_timeout()).await?;
    tracing::info!(exchange = %config.bus.exchange, "conductor starting");
    let verifier = Verifier::Lookup(Arc::new(InstanceKeys {
        store: store.clone(),
        known: Default::default(),
    }));
    ferrotrove_bus::daemon::serve_until_shutdown(
        &bus,
        queues::CONDUCTOR,
        Conductor { store },
        Some(verifier),
        shutdown,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotrove_proto::agent::{Progress, ServerStatus};
    use ferrotrove_proto::conductor::{Heartbeat, HostStats};
    use ferrotrove_proto::status::InstanceStatus;
    use ferrotrove_store::{NewInstance, StoreConfig};

    /// A control DB of its own in the development MariaDB (`deploy/dev/services.sh`).
    async fn test_store() -> Store {
        let config = StoreConfig {
            url: "mysql://ferrotrove:ferrotrove@127.0.0.1:3306".to_owned(),
            database: format!("ft_test_conductor_{}", Uuid::new_v4().simple()),
            pool_max: 2,
        };
        Store::connect(&config)
            .await
            .expect("connect to the development MariaDB")
    }

    fn context(key_id: Uuid) -> RequestContext {
        RequestContext {
            message_id: Uuid::new_v4(),
            operation_id: None,
            sender: "agent".to_owned(),
            method: "Heartbeat",
            redelivered: false,
            key_id: Some(key_id),
        }
    }

    fn heartbeat(
        instance_id: Uuid,
        boot_id: Uuid,
        seq: u64,
        progress: Option<Progress>,
    ) -> Heartbeat {
        Heartbeat {
            instance_id,
            boot_id,
            seq,
            server: ServerStatus::default(),
            host: HostStats::default(),
            progress,
        }
    }

    #[tokio::test]
    async fn heartbeats_store_their_progress() {
        let store = test_store().await;
        let id = Uuid::new_v4();
        store
            .insert_instance(&NewInstance {
                id,
                tenant_id: "t".to_owned(),
                name: "r1".to_owned(),
                flavor_id: "7".to_owned(),
                volume_size: 1,
                datastore: "mariadb".to_owned(),
                datastore_version: "10.11".to_owned(),
                status: InstanceStatus::Build,
                replica_of: None,
            })
            .await
            .unwrap();
        let conductor = Conductor {
            store: store.clone(),
        };
        let restoring = Progress {
            operation: "restore".to_owned(),
            stage: "copying".to_owned(),
            bytes_done: 1 << 20,
            bytes_total: Some(1 << 30),
            started_at_ms: 1_767_225_600_000,
        };
        let boot = Uuid::now_v7();
        let send = |hb: Heartbeat| conductor.handle(ConductorMessage::Heartbeat(hb), context(id));
        send(heartbeat(id, boot, 1, Some(restoring.clone())))
            .await
            .unwrap();
        let stored = store.guest_status(id).await.unwrap().unwrap();
        assert_eq!(stored.progress, Some(restoring));
        send(heartbeat(id, boot, 2, None)).await.unwrap();
        let stored = store.guest_status(id).await.unwrap().unwrap();
        assert_eq!((stored.seq, stored.progress), (2, None));
        store.drop_database().await.unwrap();
    }
}
