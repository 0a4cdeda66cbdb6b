//! The conductor against a real MariaDB (and, for the last test, a RabbitMQ vhost of its
//! own): batching keeps the (boot_id, seq) guard within and across batches and between
//! conductors, a batch that cannot be written is never acknowledged, and liveness is
//! stored by the periodic check (never while heartbeats wait in the queue) and cleared by
//! the next heartbeat.

use ferrotrove_bus::{Bus, BusConfig, Handler, RequestContext, SigningKey};
use ferrotrove_conductor::{Conductor, ConductorConfig, HeartbeatConfig, check_liveness};
use ferrotrove_proto::agent::{Progress, ServerStatus};
use ferrotrove_proto::conductor::{ConductorMessage, Heartbeat, HostStats};
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_proto::{ErrorKind, queues};
use ferrotrove_store::{NewInstance, Store, StoreConfig};
use ferrotrove_tests::{ControlDb, RabbitVhost, rabbitmqctl};
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A control database of its own, dropped at the end even when the test fails.
struct Db {
    store: Store,
    config: StoreConfig,
    _db: ControlDb,
}

async fn db() -> Db {
    let db = ControlDb::new();
    let config = StoreConfig {
        url: db.server_url().to_owned(),
        database: db.name.clone(),
        pool_max: 4,
        ..StoreConfig::default()
    };
    let store = Store::connect(&config)
        .await
        .expect("connect to the development MariaDB (deploy/dev/services.sh)");
    Db {
        store,
        config,
        _db: db,
    }
}

impl Db {
    /// Runs SQL outside the store: ageing heartbeats, breaking and mending the table.
    async fn sql(&self, statement: &str) {
        let opts = mysql_async::OptsBuilder::from_opts(
            mysql_async::Opts::from_url(&self.config.url).unwrap(),
        )
        .db_name(Some(self.config.database.clone()));
        let mut conn = mysql_async::Conn::new(opts).await.unwrap();
        conn.query_drop(statement).await.unwrap();
        conn.disconnect().await.unwrap();
    }

    async fn instance(&self, status: InstanceStatus) -> Uuid {
        let id = Uuid::new_v4();
        self.store
            .insert_instance(&NewInstance {
                id,
                tenant_id: "t".to_owned(),
                name: format!("i-{id}"),
                flavor_id: "7".to_owned(),
                volume_size: 1,
                datastore: "mariadb".to_owned(),
                datastore_version: "10.11".to_owned(),
                status,
                replica_of: None,
                create_task: None,
            })
            .await
            .unwrap();
        id
    }

    async fn seq(&self, id: Uuid) -> Option<(Uuid, u64)> {
        self.store
            .guest_status(id)
            .await
            .unwrap()
            .map(|s| (s.boot_id, s.seq))
    }
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

fn heartbeat(instance_id: Uuid, boot_id: Uuid, seq: u64) -> Heartbeat {
    Heartbeat {
        instance_id,
        boot_id,
        seq,
        server: ServerStatus {
            up: true,
            ..Default::default()
        },
        host: HostStats {
            cpu_percent: seq as f32,
            ..Default::default()
        },
        progress: None,
    }
}

fn batching(batch_max: usize, batch_window_ms: u64) -> HeartbeatConfig {
    HeartbeatConfig {
        batch_max,
        batch_window_ms,
        ..HeartbeatConfig::default()
    }
}

async fn send(conductor: &Conductor, hb: Heartbeat) -> Result<(), ferrotrove_proto::RemoteError> {
    let id = hb.instance_id;
    conductor
        .handle(ConductorMessage::Heartbeat(hb), context(id))
        .await
}

#[tokio::test]
async fn heartbeats_store_their_progress() {
    let db = db().await;
    let id = db.instance(InstanceStatus::Build).await;
    let conductor = Conductor::new(db.store.clone(), &HeartbeatConfig::default());
    let restoring = Progress {
        operation: "restore".to_owned(),
        stage: "copying".to_owned(),
        bytes_done: 1 << 20,
        bytes_total: Some(1 << 30),
        started_at_ms: 1_767_225_600_000,
    };
    let boot = Uuid::now_v7();
    let mut first = heartbeat(id, boot, 1);
    first.progress = Some(restoring.clone());
    send(&conductor, first).await.unwrap();
    let stored = db.store.guest_status(id).await.unwrap().unwrap();
    assert_eq!(stored.progress, Some(restoring));
    send(&conductor, heartbeat(id, boot, 2)).await.unwrap();
    let stored = db.store.guest_status(id).await.unwrap().unwrap();
    assert_eq!((stored.seq, stored.progress), (2, None));
}

#[tokio::test]
async fn a_heartbeat_about_another_instance_is_refused() {
    let db = db().await;
    let (id, other) = (
        db.instance(InstanceStatus::Active).await,
        db.instance(InstanceStatus::Active).await,
    );
    let conductor = Conductor::new(db.store.clone(), &HeartbeatConfig::default());
    let error = conductor
        .handle(
            ConductorMessage::Heartbeat(heartbeat(other, Uuid::now_v7(), 1)),
            context(id),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadRequest);
    assert_eq!(db.seq(other).await, None);
}

#[tokio::test]
async fn the_guard_holds_within_a_batch_and_across_batches() {
    let db = db().await;
    let (a, b) = (
        db.instance(InstanceStatus::Active).await,
        db.instance(InstanceStatus::Active).await,
    );
    let boot = Uuid::now_v7();
    // A long window: everything sent at once lands in one batch.
    let conductor = Conductor::new(db.store.clone(), &batching(100, 300));
    let started = Instant::now();
    let sends: Vec<_> = [(a, 5), (a, 9), (b, 3), (a, 2), (a, 7), (b, 1)]
        .into_iter()
        .map(|(id, seq)| {
            let conductor = conductor.clone();
            tokio::spawn(async move { send(&conductor, heartbeat(id, boot, seq)).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "acked only once the batch was written"
    );
    assert_eq!(db.seq(a).await, Some((boot, 9)));
    assert_eq!(db.seq(b).await, Some((boot, 3)));
    let cpu = db.store.guest_status(a).await.unwrap().unwrap().cpu_percent;
    assert_eq!(cpu, 9.0, "every column from the newest");

    // Across batches: a later, older one changes nothing; a newer boot wins with seq 1.
    let conductor = Conductor::new(db.store.clone(), &batching(100, 0));
    send(&conductor, heartbeat(a, boot, 8)).await.unwrap();
    assert_eq!(db.seq(a).await, Some((boot, 9)));
    let reboot = Uuid::now_v7();
    send(&conductor, heartbeat(a, reboot, 1)).await.unwrap();
    send(&conductor, heartbeat(a, boot, 99)).await.unwrap();
    assert_eq!(db.seq(a).await, Some((reboot, 1)));
}

#[tokio::test]
async fn two_conductors_racing_keep_the_newest() {
    let db = db().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(db.instance(InstanceStatus::Active).await);
    }
    let other_store = Store::connect(&db.config).await.unwrap();
    let conductors = [
        Conductor::new(db.store.clone(), &batching(16, 2)),
        Conductor::new(other_store.clone(), &batching(16, 2)),
    ];
    let boot = Uuid::now_v7();
    // Every seq of every instance once, to one conductor or the other, in a scrambled
    // order, all in flight at once.
    let mut order: Vec<(Uuid, u64)> = ids
        .iter()
        .flat_map(|&id| (1..=60u64).map(move |seq| (id, seq)))
        .collect();
    order.sort_by_key(|(id, seq)| (seq * 7919 + id.as_u128() as u64 % 13) % 61);
    let sends: Vec<_> = order
        .into_iter()
        .map(|(id, seq)| {
            let conductor = conductors[(seq % 2) as usize].clone();
            tokio::spawn(async move { send(&conductor, heartbeat(id, boot, seq)).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    for id in &ids {
        let s = db.store.guest_status(*id).await.unwrap().unwrap();
        assert_eq!((s.boot_id, s.seq, s.cpu_percent), (boot, 60, 60.0));
    }
    other_store.close().await.unwrap();
}

#[tokio::test]
async fn a_batch_that_cannot_be_written_is_not_acknowledged() {
    let db = db().await;
    let id = db.instance(InstanceStatus::Active).await;
    let conductor = Conductor::new(db.store.clone(), &batching(100, 1));
    db.sql("RENAME TABLE guest_status TO guest_status_away")
        .await;
    let boot = Uuid::now_v7();
    let pending = {
        let conductor = conductor.clone();
        tokio::spawn(async move { send(&conductor, heartbeat(id, boot, 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        !pending.is_finished(),
        "the handler must not return (and so the message not be acked) before its batch is written"
    );
    db.sql("RENAME TABLE guest_status_away TO guest_status")
        .await;
    tokio::time::timeout(Duration::from_secs(15), pending)
        .await
        .expect("stored once the table is back")
        .unwrap()
        .unwrap();
    assert_eq!(db.seq(id).await, Some((boot, 1)));
}

#[tokio::test]
async fn liveness_is_marked_by_the_check_and_cleared_by_heartbeats() {
    let db = db().await;
    let active = db.instance(InstanceStatus::Active).await;
    let building = db.instance(InstanceStatus::Build).await;
    let failed = db.instance(InstanceStatus::Error).await;
    let conductor = Conductor::new(db.store.clone(), &HeartbeatConfig::default());
    let boot = Uuid::now_v7();
    for id in [active, building, failed] {
        send(&conductor, heartbeat(id, boot, 1)).await.unwrap();
    }
    let expiry = Duration::from_secs(30);
    assert_eq!(check_liveness(&db.store, expiry).await.unwrap(), 0);
    db.sql("UPDATE guest_status SET received_at = received_at - INTERVAL 1 MINUTE")
        .await;
    let rows = || async {
        let mut rows = Vec::new();
        for id in [building, failed] {
            rows.push(db.store.get_instance(id).await.unwrap().unwrap());
        }
        rows
    };
    let rows_before = rows().await;
    assert_eq!(check_liveness(&db.store, expiry).await.unwrap(), 3);
    assert!(db.store.guest_status(active).await.unwrap().unwrap().stale);
    assert_eq!(
        check_liveness(&db.store, expiry).await.unwrap(),
        0,
        "marked once"
    );
    // The instances' own rows are untouched: BUILD stays BUILD, ERROR stays ERROR.
    assert_eq!(rows().await, rows_before);
    assert_eq!(rows_before[0].status, InstanceStatus::Build);
    assert_eq!(rows_before[1].status, InstanceStatus::Error);
    // Heartbeats resume: cleared at once, by the write itself.
    send(&conductor, heartbeat(active, boot, 2)).await.unwrap();
    let resumed = db.store.guest_status(active).await.unwrap().unwrap();
    assert!(!resumed.stale);
    assert_eq!(resumed.seq, 2);
}

/// `(ready, unacknowledged)` messages in the conductor's queue of `vhost`.
fn queue_depth(vhost: &RabbitVhost) -> (u64, u64) {
    let out = rabbitmqctl(&[
        "list_queues",
        "-p",
        &vhost.name,
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ])
    .unwrap();
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&queues::CONDUCTOR))
        .map(|f| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        .unwrap_or((0, 0))
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Starts `ftrove-conductor`'s `run` in this process; send on the returned channel to stop
/// it, then await the handle.
fn start_conductor(
    config: ConductorConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        ferrotrove_conductor::run(config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, task)
}

/// A conductor's config on `vhost` and `db`'s database, with `prefetch` and `heartbeats`.
fn over_the_bus(
    vhost: &RabbitVhost,
    db: &Db,
    prefetch: u16,
    heartbeats: HeartbeatConfig,
) -> ConductorConfig {
    ConductorConfig {
        bus: BusConfig {
            url: vhost.url(),
            prefetch,
            ..BusConfig::default()
        },
        store: db.config.clone(),
        startup_timeout_secs: 10,
        heartbeats,
    }
}

/// Instance `id`'s agent on `config`'s bus, signing with its secret.
async fn agent_bus(db: &Db, config: &ConductorConfig, id: Uuid) -> Bus {
    let secret = db.store.instance_secret(id).await.unwrap().unwrap();
    Bus::connect(&config.bus, format!("guestagent.{id}"))
        .await
        .unwrap()
        .signed_by(SigningKey { key_id: id, secret })
}

/// Sends `agent`'s heartbeat `seq` of boot `boot` for instance `id`.
async fn beat(agent: &Bus, id: Uuid, boot: Uuid, seq: u64) {
    agent
        .cast_transient(
            queues::CONDUCTOR,
            &ConductorMessage::Heartbeat(heartbeat(id, boot, seq)),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn over_the_bus_unwritten_heartbeats_go_back_to_the_broker_and_liveness_is_kept() {
    let db = db().await;
    let vhost = RabbitVhost::create();
    let id = db.instance(InstanceStatus::Active).await;
    let config = over_the_bus(
        &vhost,
        &db,
        64,
        HeartbeatConfig {
            batch_max: 16,
            batch_window_ms: 5,
            writers: 2,
            expiry_secs: 1,
            check_interval_secs: 1,
            ..HeartbeatConfig::default()
        },
    );
    let (stop, conductor) = start_conductor(config.clone());
    let agent = agent_bus(&db, &config, id).await;
    let boot = Uuid::now_v7();

    beat(&agent, id, boot, 1).await;
    eventually("the first heartbeat is stored", || async {
        db.seq(id).await == Some((boot, 1))
    })
    .await;
    // Silence for longer than the expiry: the running conductor's check marks it.
    eventually("the silent instance is marked stale", || async {
        db.store.guest_status(id).await.unwrap().unwrap().stale
    })
    .await;
    beat(&agent, id, boot, 2).await;
    eventually("the next heartbeat clears the mark", || async {
        let s = db.store.guest_status(id).await.unwrap().unwrap();
        s.seq == 2 && !s.stale
    })
    .await;

    // The database refuses the write: the heartbeat stays unacknowledged...
    db.sql("RENAME TABLE guest_status TO guest_status_away")
        .await;
    beat(&agent, id, boot, 3).await;
    eventually("the heartbeat is held unacknowledged", || async {
        queue_depth(&vhost) == (0, 1)
    })
    .await;
    // ...and goes back to the broker when the conductor stops.
    stop.send(()).unwrap();
    conductor.await.unwrap();
    eventually("the broker holds it again", || async {
        queue_depth(&vhost) == (1, 0)
    })
    .await;
    db.sql("RENAME TABLE guest_status_away TO guest_status")
        .await;
    let (stop, conductor) = start_conductor(config);
    eventually("the next conductor stores and acks it", || async {
        db.seq(id).await == Some((boot, 3)) && queue_depth(&vhost) == (0, 0)
    })
    .await;
    stop.send(()).unwrap();
    conductor.await.unwrap();
    agent.close().await;
}

#[tokio::test]
async fn silence_is_not_judged_while_heartbeats_wait_in_the_queue() {
    let db = db().await;
    let vhost = RabbitVhost::create();
    let (quiet, busy) = (
        db.instance(InstanceStatus::Active).await,
        db.instance(InstanceStatus::Active).await,
    );
    let config = over_the_bus(
        &vhost,
        &db,
        16,
        HeartbeatConfig {
            batch_max: 4,
            expiry_secs: 1,
            check_interval_secs: 1,
            backlog_max: 10,
            ..HeartbeatConfig::default()
        },
    );
    let (stop, conductor) = start_conductor(config.clone());
    let quiet_agent = agent_bus(&db, &config, quiet).await;
    let busy_agent = agent_bus(&db, &config, busy).await;
    let boot = Uuid::now_v7();
    beat(&quiet_agent, quiet, boot, 1).await;
    eventually("the quiet instance's heartbeat is stored", || async {
        db.seq(quiet).await == Some((boot, 1))
    })
    .await;

    // The conductor falls behind: another transaction locks the place of the busy
    // instance's first row (a gap lock: it has none yet, so the liveness check has nothing
    // of it to lock), its heartbeats cannot be written, and those past the prefetch wait
    // in the queue.
    let opts =
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&db.config.url).unwrap())
            .db_name(Some(db.config.database.clone()));
    let mut holder = mysql_async::Conn::new(opts).await.unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop(format!(
            "SELECT * FROM guest_status WHERE instance_id = '{busy}' FOR UPDATE"
        ))
        .await
        .unwrap();
    for seq in 1..100 {
        beat(&busy_agent, busy, boot, seq).await;
    }
    eventually("heartbeats wait in the queue", || async {
        queue_depth(&vhost).0 > 10
    })
    .await;

    // The quiet instance says nothing for several expiries, but its heartbeat might be in
    // the queue: it is not marked stale while the conductor is behind.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(queue_depth(&vhost).0 > 10, "{:?}", queue_depth(&vhost));
    assert!(
        !db.store.guest_status(quiet).await.unwrap().unwrap().stale,
        "marked stale while heartbeats waited in the queue"
    );

    // The row is let go: the conductor catches up, and then silence is judged.
    holder.query_drop("ROLLBACK").await.unwrap();
    holder.disconnect().await.unwrap();
    eventually("the backlog is stored", || async {
        db.seq(busy).await == Some((boot, 99)) && queue_depth(&vhost) == (0, 0)
    })
    .await;
    eventually("the quiet instance is marked stale", || async {
        db.store.guest_status(quiet).await.unwrap().unwrap().stale
    })
    .await;
    stop.send(()).unwrap();
    conductor.await.unwrap();
    quiet_agent.close().await;
    busy_agent.close().await;
}
