//! The conductor: the only consumer of what guests report (heartbeats today; progress and
//! job results later). It writes each report to the control DB and acks it only then.
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
                let span = tracing::debug_span!("heartbeat", instance_id = %heartbeat.instance_id, seq = heartbeat.seq);
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
