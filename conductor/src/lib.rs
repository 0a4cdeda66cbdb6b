//! The conductor: the only consumer of what guests report (heartbeats, with the progress of
//! a running snapshot or restore; job results later). It writes reports to the control DB
//! and acks each only once it is stored, and it keeps liveness in the control DB: a
//! periodic check marks instances whose heartbeats stopped, but only once heartbeats have
//! been able to reach it for a whole expiry: it has been consuming them, the broker takes
//! publishes (a resource alarm blocks the guests' too), and the queue is not behind (at
//! most `heartbeats.backlog_max` waiting). Otherwise a guest's newest heartbeat may be on
//! its way, and silence says nothing about the guest.
//!
//! Heartbeats are written in batches: each handled message waits while its batch fills
//! (up to `heartbeats.batch_max`, or `heartbeats.batch_window_ms` after the batch's first
//! one), the batch is written in one statement (`heartbeats.writers` batches at a time),
//! and only then do its messages return and get acked. A batch that cannot be written is
//! retried, backing off, and its messages stay unacknowledged meanwhile: when this
//! conductor stops, the broker delivers them again. Which heartbeat is newest is decided
//! in the statement itself (the store's `(boot_id, seq)` guard), so any number of
//! conductors can consume the same queue.
//!
//! It must not command agents or run orchestrations (that is the taskmanager's), and it
//! never trusts a report's claim about which instance it is from beyond what the control
//! DB knows (a heartbeat for an unknown or deleted instance is dropped).

pub mod config;

use ferrotrove_bus::{Bus, Handler, KeyLookup, RequestContext, Verifier};
use ferrotrove_proto::Secret;
use ferrotrove_proto::conductor::{ConductorMessage, Heartbeat};
use ferrotrove_proto::{ErrorKind, RemoteError, queues};
use ferrotrove_store::{Store, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

pub use config::{ConductorConfig, HeartbeatConfig};

/// The first pause before a failed batch is written again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Writes guest reports to the control DB. Clones share one batch writer.
#[derive(Clone)]
pub struct Conductor {
    batches: mpsc::UnboundedSender<Pending>,
}

/// A heartbeat waiting for its batch, and who to tell once it is stored.
struct Pending {
    heartbeat: Heartbeat,
    stored: oneshot::Sender<()>,
}

impl Conductor {
    /// A conductor writing to `store`, batching as `settings` say. Starts its batch writer
    /// on the current tokio runtime; the writer ends when the last clone is dropped.
    pub fn new(store: Store, settings: &HeartbeatConfig) -> Conductor {
        // Unbounded here, bounded by the bus: at most `prefetch` messages are handled at once.
        let (batches, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(
            store,
            queue,
            settings.batch_max.max(1),
            settings.batch_window(),
            settings.writers.max(1),
        ));
        Conductor { batches }
    }

    /// Resolves once `heartbeat` is stored (applied, or found older than the stored one).
    /// Never resolves when it cannot be: its message then stays unacknowledged.
    async fn store(&self, heartbeat: Heartbeat) {
        let (stored, done) = oneshot::channel();
        if self.batches.send(Pending { heartbeat, stored }).is_ok() && done.await.is_ok() {
            return;
        }
        // The writer is gone (it only ends when every handle is dropped, or by a panic):
        // leave the message unacknowledged, for the broker to deliver again elsewhere.
        tracing::error!("the heartbeat writer stopped; leaving the message unacknowledged");
        std::future::pending::<()>().await;
    }
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
                // The whole heartbeat, progress included: the store applies all of it or,
                // when an older one arrives late, none of it.
                self.store(heartbeat).await;
                Ok(())
            }
        }
    }
}

/// The batch writer: takes what is waiting (at least one heartbeat, then more until the
/// batch is full or its window has passed) and writes it, `writers` batches at a time.
/// While they are written the next batch fills.
///
/// Concurrent batches cannot deadlock each other: the store writes each batch's rows in
/// primary-key order.
async fn write_batches(
    store: Store,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    batch_max: usize,
    window: Duration,
    writers: usize,
) {
    let writers = Arc::new(tokio::sync::Semaphore::new(writers));
    loop {
        // A writer first, so the batch fills while the others are busy.
        let Ok(writer) = writers.clone().acquire_owned().await else {
            return;
        };
        let mut batch: Vec<Pending> = Vec::with_capacity(batch_max);
        if queue.recv_many(&mut batch, batch_max).await == 0 {
            return;
        }
        let deadline = Instant::now() + window;
        while batch.len() < batch_max {
            // `timeout_at` polls first, so what is already waiting is taken even when the
            // window is zero or over.
            let room = batch_max - batch.len();
            match tokio::time::timeout_at(deadline, queue.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            store_batch(&store, batch).await;
            drop(writer);
        });
    }
}

/// Writes one batch until it is stored, then tells its handlers. While it fails, its
/// messages stay unacknowledged; it is given up only when no handler waits for it any more
/// (their messages went back to the broker with the connection).
async fn store_batch(store: &Store, batch: Vec<Pending>) {
    let (heartbeats, waiting): (Vec<Heartbeat>, Vec<oneshot::Sender<()>>) =
        batch.into_iter().map(|p| (p.heartbeat, p.stored)).unzip();
    let started = std::time::Instant::now();
    let mut pause = RETRY_FIRST;
    loop {
        match store.record_heartbeats(&heartbeats).await {
            Ok(()) => {
                tracing::debug!(
                    heartbeats = heartbeats.len(),
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "batch stored"
                );
                for handler in waiting {
                    let _ = handler.send(());
                }
                return;
            }
            Err(error) => {
                if waiting.iter().all(oneshot::Sender::is_closed) {
                    tracing::warn!(%error, heartbeats = heartbeats.len(), "giving up a batch nobody waits for");
                    return;
                }
                tracing::warn!(
                    %error,
                    heartbeats = heartbeats.len(),
                    retry_in = ?pause,
                    "cannot store a batch of heartbeats; they stay unacknowledged"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One liveness check: marks stale, in the control DB, every instance whose last heartbeat
/// is older than `expiry`. Returns how many were marked. Any number of conductors may run
/// it at once; each instance is marked once.
pub async fn check_liveness(store: &Store, expiry: Duration) -> Result<usize, StoreError> {
    let marked = store.mark_stale(expiry).await?;
    const NAMED: usize = 20;
    for id in marked.iter().take(NAMED) {
        tracing::info!(instance_id = %id, expiry_secs = expiry.as_secs(), "no heartbeat within the expiry: marked stale");
    }
    if marked.len() > NAMED {
        tracing::info!(more = marked.len() - NAMED, "more instances marked stale");
    }
    Ok(marked.len())
}

/// Whether silence can be judged: only once heartbeats have been able to reach this
/// conductor for a whole `expiry` (since `clear_since`). While they cannot (the broker is
/// away or blocks publishers, the queue is behind), silence says nothing about the
/// guests, and marking them stale would show every instance SHUTDOWN for a fault of the
/// control plane's own.
pub fn may_judge_liveness(
    clear_since: Option<std::time::Instant>,
    now: std::time::Instant,
    expiry: Duration,
) -> bool {
    clear_since.is_some_and(|since| now.saturating_duration_since(since) >= expiry)
}

/// Why silence cannot be judged now; `None` when it can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoJudgement {
    /// Not consuming heartbeats: the broker is away, or this conductor is connecting again.
    NotConsuming,
    /// This many heartbeats wait in the queue, more than `heartbeats.backlog_max`: the
    /// conductors are behind, and a guest's newest heartbeat may be among them.
    Behind(u32),
    /// The queue's backlog cannot be read (the text says why).
    BacklogUnknown(String),
    /// The broker does not confirm publishes (a resource alarm blocks publishers): guests
    /// cannot send heartbeats either. The text says what the probe got.
    PublishingBlocked(String),
}

impl std::fmt::Display for NoJudgement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoJudgement::NotConsuming => f.write_str(
                "not consuming heartbeats: no instance is marked stale until they have been received again for a whole expiry",
            ),
            NoJudgement::Behind(waiting) => write!(
                f,
                "{waiting} heartbeats wait in the queue, more than heartbeats.backlog_max: the conductors are behind, so no instance is marked stale until they catch up"
            ),
            NoJudgement::BacklogUnknown(why) => write!(
                f,
                "cannot read how many heartbeats wait in the queue ({why}), so no instance is marked stale"
            ),
            NoJudgement::PublishingBlocked(why) => write!(
                f,
                "the broker takes no publishes ({why}), so guests cannot send heartbeats either: no instance is marked stale until it has taken them again for a whole expiry"
            ),
        }
    }
}

/// Whether the queue lets silence be judged, given how many heartbeats wait in it
/// (`backlog`): at most `backlog_max`.
pub fn backlog_judgement(backlog: Result<u32, String>, backlog_max: u32) -> Option<NoJudgement> {
    match backlog {
        Ok(waiting) if waiting > backlog_max => Some(NoJudgement::Behind(waiting)),
        Ok(_) => None,
        Err(why) => Some(NoJudgement::BacklogUnknown(why)),
    }
}

/// What stops silence from being judged now, if anything: not consuming, the broker not
/// taking publishes ([`Bus::probe_publishing`]), or the queue behind ([`backlog_judgement`]).
async fn obstacle(bus: &Bus, consuming: bool, settings: &HeartbeatConfig) -> Option<NoJudgement> {
    if !consuming {
        return Some(NoJudgement::NotConsuming);
    }
    if let Err(error) = bus.probe_publishing().await {
        return Some(NoJudgement::PublishingBlocked(error.to_string()));
    }
    let backlog = bus.queue_backlog(queues::CONDUCTOR).await;
    backlog_judgement(backlog.map_err(|e| e.to_string()), settings.backlog_max)
}

/// Runs [`check_liveness`] every `check_interval`, but only once nothing has stood in the
/// way of heartbeats ([`obstacle`]) for a whole expiry ([`may_judge_liveness`]): after an
/// outage, an alarm or a backlog, guests' heartbeats need that long to arrive again. Says
/// in the log whenever that changes.
async fn check_liveness_periodically(
    store: Store,
    bus: Bus,
    settings: HeartbeatConfig,
    serving: tokio::sync::watch::Receiver<Option<std::time::Instant>>,
) {
    let mut ticks = tokio::time::interval(settings.check_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once; the consumer starting at the same time is not an obstacle
    // worth a warning, so the first look is one interval after start.
    ticks.tick().await;
    let mut clear_since: Option<std::time::Instant> = None;
    let mut logged = None;
    loop {
        ticks.tick().await;
        let serving_since = *serving.borrow();
        let obstacle = obstacle(&bus, serving_since.is_some(), &settings).await;
        let now = std::time::Instant::now();
        // A reconnection between two checks restarts the count too.
        clear_since = match (&obstacle, serving_since) {
            (None, Some(serving)) => Some(clear_since.unwrap_or(now).max(serving)),
            _ => None,
        };
        let judge = may_judge_liveness(clear_since, now, settings.expiry());
        let kind = obstacle.as_ref().map(std::mem::discriminant);
        if logged != Some((kind, judge)) {
            match (&obstacle, judge) {
                (Some(reason), _) => tracing::warn!("{reason}"),
                (None, false) => tracing::info!(
                    "heartbeats can reach this conductor again: judging silence once they have for a whole expiry"
                ),
                (None, true) => tracing::info!("judging liveness"),
            }
            logged = Some((kind, judge));
        }
        if judge && let Err(error) = check_liveness(&store, settings.expiry()).await {
            tracing::warn!(%error, "liveness check failed; trying again at the next one");
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
    /// With every live instance's secret read at once (a restarted conductor would
    /// otherwise read them one by one, as the first heartbeat of each arrives, while the
    /// queue waits). When that read fails, they are read one by one.
    async fn preloaded(store: Store) -> InstanceKeys {
        let known = match store.instance_secrets(KNOWN_SECRETS).await {
            Ok(secrets) => {
                tracing::info!(instances = secrets.len(), "instance secrets loaded");
                secrets
            }
            Err(error) => {
                tracing::warn!(%error, "cannot load the instances' secrets; reading them as heartbeats arrive");
                HashMap::new()
            }
        };
        InstanceKeys {
            store,
            known: std::sync::Mutex::new(known),
        }
    }

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
    let settings = &config.heartbeats;
    tracing::info!(
        exchange = %config.bus.exchange,
        prefetch = config.bus.prefetch,
        batch_max = settings.batch_max,
        batch_window_ms = settings.batch_window_ms,
        writers = settings.writers,
        expiry_secs = settings.expiry_secs,
        check_interval_secs = settings.check_interval_secs,
        "conductor starting"
    );
    if usize::from(config.bus.prefetch) < settings.batch_max {
        tracing::warn!(
            "bus.prefetch is below heartbeats.batch_max: batches can never fill; give it at least twice batch_max"
        );
    }
    let verifier = Verifier::Lookup(Arc::new(InstanceKeys::preloaded(store.clone()).await));
    let (serving, serving_since) = tokio::sync::watch::channel(None);
    let checker = tokio::spawn(check_liveness_periodically(
        store.clone(),
        bus.clone(),
        settings.clone(),
        serving_since,
    ));
    ferrotrove_bus::daemon::serve_until_shutdown(
        &bus,
        queues::CONDUCTOR,
        Conductor::new(store, settings),
        Some(verifier),
        Some(&serving),
        shutdown,
    )
    .await;
    checker.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{NoJudgement, backlog_judgement, may_judge_liveness};
    use std::time::{Duration, Instant};

    #[test]
    fn silence_is_judged_only_after_a_whole_expiry_of_consuming() {
        let expiry = Duration::from_secs(10);
        let now = Instant::now();
        let ago = |secs| now.checked_sub(Duration::from_secs(secs));
        // Not consuming at all (the broker is away): never.
        assert!(!may_judge_liveness(None, now, expiry));
        // Consuming again for less than an expiry: heartbeats may still be on their way.
        assert!(!may_judge_liveness(ago(0), now, expiry));
        assert!(!may_judge_liveness(ago(9), now, expiry));
        // For a whole expiry: silence now means silence.
        assert!(may_judge_liveness(ago(10), now, expiry));
        assert!(may_judge_liveness(ago(3600), now, expiry));
    }

    #[test]
    fn silence_is_not_judged_while_the_queue_is_behind_or_unknown() {
        assert_eq!(backlog_judgement(Ok(0), 1000), None);
        assert_eq!(backlog_judgement(Ok(1000), 1000), None);
        assert_eq!(
            backlog_judgement(Ok(1001), 1000),
            Some(NoJudgement::Behind(1001))
        );
        let unknown = backlog_judgement(Err("channel closed".into()), 1000);
        assert_eq!(
            unknown,
            Some(NoJudgement::BacklogUnknown("channel closed".into()))
        );
        assert!(unknown.unwrap().to_string().contains("channel closed"));
    }
}
