//! The replication walkthrough, end to end, through `ftrove` against the real daemons,
//! checking the data on the real database servers, not just statuses.

mod common;

use common::{Stack, eventually, sql};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn app_sql(port: u16, statement: &str) -> Result<String, String> {
    sql(port, "app", "apppass", &format!("USE appdb; {statement}"))
}

fn count(port: u16) -> i64 {
    app_sql(port, "SELECT COUNT(*) FROM t")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

/// Runs SQL as the instance's admin, with the login its agent keeps in the 0600
/// `client.cnf` of the instance's directory (root is reachable only over the socket).
fn replication_users(stack: &Stack, id: &str) -> String {
    let client_cnf = stack.instance_dir(id).join("client.cnf");
    let out = Command::new("mariadb")
        .arg(format!("--defaults-file={}", client_cnf.display()))
        .args([
            "-N",
            "-B",
            "-e",
            "SELECT user FROM mysql.user WHERE user LIKE 'ftrepl%'",
        ])
        .output()
        .expect("run mariadb");
    assert!(
        out.status.success(),
        "admin query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A boot id later than any real one, so a stored forgery would win the ordering guard.
const FORGED_BOOT: &str = "ffffffff-ffff-7fff-bfff-ffffffffffff";

/// Casts two heartbeats claiming that `victim`'s server is down: one signed with another
/// instance's key (`signer`), one not signed at all.
fn forge_heartbeats(stack: &Stack, signer: &str, victim: &str) {
    use ferrotrove_bus::{Bus, BusConfig};
    use ferrotrove_proto::agent::ServerStatus;
    use ferrotrove_proto::conductor::{ConductorMessage, Heartbeat, HostStats};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = BusConfig {
            url: stack.bus_url(),
            exchange: "ferrotrove".into(),
            ..BusConfig::default()
        };
        let bus = Bus::connect(&config, "intruder").await.unwrap();
        let forged = ConductorMessage::Heartbeat(Heartbeat {
            instance_id: victim.parse().unwrap(),
            boot_id: FORGED_BOOT.parse().unwrap(),
            seq: u64::MAX,
            server: ServerStatus {
                up: false,
                ..ServerStatus::default()
            },
            host: HostStats::default(),
            progress: None,
        });
        let key = stack.signing_key(signer);
        bus.signed_by(key)
            .cast(ferrotrove_proto::queues::CONDUCTOR, &forged)
            .await
            .unwrap();
        bus.cast(ferrotrove_proto::queues::CONDUCTOR, &forged)
            .await
            .unwrap();
        bus.close().await;
    });
}

/// The agent's broker user is its own, and may neither read nor write the taskmanager's
/// queue.
fn guest_is_confined(stack: &Stack, id: &str) {
    use ferrotrove_bus::{Bus, BusConfig};
    let url = stack.agent_bus_url(id);
    let user = format!("ftga-{}", id.replace('-', ""));
    assert!(
        url.starts_with(&format!("amqp://{user}:")),
        "the agent does not use its own broker user"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = BusConfig {
            url,
            exchange: "ferrotrove".into(),
            confined: true,
            ..BusConfig::default()
        };
        let bus = Bus::connect(&config, "guest")
            .await
            .expect("the guest's user can connect");
        struct Nothing;
        impl ferrotrove_bus::Handler for Nothing {
            type Request = ferrotrove_proto::taskmanager::TaskRequest;
            type Response = ();
            async fn handle(
                &self,
                _: Self::Request,
                _: ferrotrove_bus::RequestContext,
            ) -> Result<(), ferrotrove_proto::RemoteError> {
                Ok(())
            }
        }
        assert!(
            bus.serve(ferrotrove_proto::queues::TASKMANAGER, Nothing)
                .await
                .is_err(),
            "a guest consumed the taskmanager queue"
        );
        let forged = ferrotrove_proto::taskmanager::TaskRequest::DeleteInstance {
            instance_id: id.parse().unwrap(),
        };
        assert!(
            bus.cast(ferrotrove_proto::queues::TASKMANAGER, &forged)
                .await
                .is_err(),
            "a guest published to the taskmanager"
        );
        bus.close().await;
        // The default exchange, which the guest needs for its replies, does reach the
        // taskmanager's queue; the taskmanager dead-letters what its own users did not publish.
        let dead_letters = || async {
            let admin = lapin::Connection::connect(&stack.bus_url(), Default::default())
                .await
                .unwrap();
            let channel = admin.create_channel().await.unwrap();
            let options = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let queue = channel
                .queue_declare("ferrotrove.dead".into(), options, Default::default())
                .await
                .unwrap();
            admin.close(200, "bye".into()).await.unwrap();
            queue.message_count()
        };
        let before = dead_letters().await;
        let connection = lapin::Connection::connect(&stack.agent_bus_url(id), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let body = ferrotrove_proto::Envelope::new(
            "guest",
            "DeleteInstance",
            ferrotrove_proto::envelope::encode(&forged).unwrap(),
            0,
        )
        .to_bytes()
        .unwrap();
        channel
            .basic_publish(
                "".into(),
                ferrotrove_proto::queues::TASKMANAGER.into(),
                Default::default(),
                &body,
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        connection.close(200, "bye".into()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while dead_letters().await == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            dead_letters().await,
            before + 1,
            "the taskmanager took a task from a guest"
        );
    });
    assert_eq!(
        stack.ftrove_json(&["show", id])["status"],
        "ACTIVE",
        "a guest's forged task ran"
    );
}

fn port_of(instance: &Value) -> u16 {
    instance["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no port in {instance}"))
}

fn id_of(instance: &Value) -> String {
    instance["id"].as_str().expect("id").to_owned()
}

#[test]
fn replication_walkthrough() {
    let stack = Stack::start();

    let flavors = stack.ftrove_json(&["flavor-list"]);
    assert!(
        flavors.to_string().contains("\"7\"") || flavors.to_string().contains(":7"),
        "flavor 7 missing: {flavors}"
    );

    // The source, with a database and an application user.
    let m1 = stack.create_source("m1");
    assert_eq!(m1["status"], "ACTIVE", "{m1}");
    let (m1_id, m1_port) = (id_of(&m1), port_of(&m1));
    let listed = stack.ftrove_ok(&["list"]);
    assert!(listed.contains("m1") && listed.contains(&m1_id), "{listed}");

    // Rows written before the replica exists.
    app_sql(
        m1_port,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32))",
    )
    .unwrap();
    app_sql(
        m1_port,
        "INSERT INTO t SELECT seq, CONCAT('before-', seq) FROM seq_1_to_100",
    )
    .unwrap();

    // The replica, seeded from a snapshot of m1 (named by id, as Trove's walkthrough does).
    stack.ftrove_ok(&[
        "create",
        "s1",
        "7",
        "--size",
        "2",
        "--replica-of",
        &m1_id,
        "--wait",
    ]);
    let s1 = stack.ftrove_json(&["show", "s1"]);
    let (s1_id, s1_port) = (id_of(&s1), port_of(&s1));
    assert_eq!(s1["status"], "ACTIVE", "{s1}");
    assert_eq!(s1["replica_of"]["id"], m1_id.as_str(), "{s1}");
    let m1 = stack.ftrove_json(&["show", m1_id.as_str()]);
    assert_eq!(m1["replicas"][0]["id"], s1_id.as_str(), "{m1}");
    let shown = stack.ftrove_ok(&["show", "s1"]);
    assert!(
        shown.contains("replica_of") && shown.contains(&m1_id),
        "{shown}"
    );

    assert_eq!(
        count(s1_port),
        100,
        "rows written before the snapshot are on the replica"
    );
    app_sql(
        m1_port,
        "INSERT INTO t SELECT seq, CONCAT('after-', seq) FROM seq_101_to_110",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || count(s1_port) == 110),
        "rows written after seeding did not arrive: {}",
        count(s1_port)
    );
    let refused = app_sql(s1_port, "INSERT INTO t VALUES (9999, 'on-replica')").unwrap_err();
    assert!(
        refused.contains("read-only") || refused.contains("1290"),
        "{refused}"
    );
    assert_eq!(
        replication_users(&stack, &m1_id).lines().count(),
        1,
        "one replication user for s1 on m1"
    );

    // The conductor stores heartbeats: the replica reports itself up, read-only, a replica
    // (within a few heartbeats: one sent during the restore may still say otherwise).
    let query = format!(
        "SELECT seq > 0, server_up, read_only, role FROM `{}`.guest_status WHERE instance_id = '{s1_id}'",
        stack.db.name
    );
    let mut guest = String::new();
    let reported = eventually(Duration::from_secs(10), || {
        guest = sql(3306, "ferrotrove", "ferrotrove", &query).unwrap_or_default();
        guest == "1\t1\t1\treplica"
    });
    assert!(reported, "guest_status of s1: {guest}");

    // Forged reports change nothing: one signed with m1's key but about s1, one unsigned.
    forge_heartbeats(&stack, &m1_id, &s1_id);
    std::thread::sleep(Duration::from_secs(2));
    let guest = sql(
        3306,
        "ferrotrove",
        "ferrotrove",
        &format!("SELECT server_up, boot_id <> '{FORGED_BOOT}' FROM `{}`.guest_status WHERE instance_id = '{s1_id}'", stack.db.name),
    )
    .unwrap();
    assert_eq!(guest, "1\t1", "a forged heartbeat was stored for s1");
    assert_eq!(stack.ftrove_json(&["show", "s1"])["status"], "ACTIVE");

    // s1's agent has a broker user of its own, confined to its queue and to reporting.
    guest_is_confined(&stack, &s1_id);

    // What the API refuses while s1 is a replica.
    let (ok, _, err) = stack.ftrove(&["create", "s2", "7", "--size", "2", "--replica-of", "s1"]);
    assert!(
        !ok && err.contains("replica"),
        "a replica of a replica must be refused: {err}"
    );
    let (ok, _, err) = stack.ftrove(&["delete", "m1"]);
    assert!(
        !ok && err.contains("Detach replicas"),
        "deleting a source with replicas must be refused: {err}"
    );
    let (ok, _, err) = stack.ftrove(&["detach-replica", "m1"]);
    assert!(
        !ok && err.contains("not a replica"),
        "detaching a non-replica must be refused: {err}"
    );

    // Detach: s1 becomes independent and writable.
    stack.ftrove_ok(&["detach-replica", "s1", "--wait"]);
    let s1 = stack.ftrove_json(&["show", "s1"]);
    assert_eq!(s1["status"], "ACTIVE", "{s1}");
    assert!(s1.get("replica_of").is_none(), "{s1}");
    let m1 = stack.ftrove_json(&["show", "m1"]);
    assert!(
        m1.get("replicas")
            .is_none_or(|r| r.as_array().is_some_and(|a| a.is_empty())),
        "{m1}"
    );
    app_sql(
        m1_port,
        "INSERT INTO t SELECT seq, 'after-detach' FROM seq_111_to_120",
    )
    .unwrap();
    app_sql(s1_port, "INSERT INTO t VALUES (5000, 'written-on-s1')")
        .expect("s1 accepts writes after detach");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(s1_port),
        111,
        "rows written to m1 after detach must not arrive on s1"
    );
    assert_eq!(count(m1_port), 120);
    assert_eq!(
        replication_users(&stack, &m1_id),
        "",
        "the replication user is gone from m1"
    );

    // Delete stops the servers and removes the data.
    let (s1_dir, m1_dir) = (stack.instance_dir(&s1_id), stack.instance_dir(&m1_id));
    assert!(s1_dir.exists() && m1_dir.exists());
    stack.ftrove_ok(&["delete", "s1", "--wait"]);
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
    for (dir, port) in [(s1_dir, s1_port), (m1_dir, m1_port)] {
        assert!(!dir.exists(), "{} was not removed", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a server still listens on {port}"
        );
    }
    let listed = stack.ftrove_json(&["list"]);
    let remaining = listed.get("instances").unwrap_or(&listed);
    assert!(
        remaining.as_array().is_some_and(|a| a.is_empty()),
        "{listed}"
    );
}

#[test]
fn two_replicas_from_one_snapshot() {
    let stack = Stack::start();
    let snapshots = stack.state.join("snapshots");
    two_replicas_seeded_from_one_snapshot(
        &stack,
        || std::fs::read_dir(&snapshots).unwrap().count(),
        |_| {},
    );
}

/// The same through an S3 store (Swift with s3api): the agents stream the snapshot into
/// the bucket and back out; the shared directory is not used.
#[test]
fn two_replicas_seeded_through_an_s3_store() {
    let swift = ferrotrove_tests::swift::SwiftStore::start();
    let endpoint = swift.endpoint();
    let env = [
        (
            "FTROVE_TASKMANAGER__LOCAL__SNAPSHOT_S3__ENDPOINT",
            endpoint.as_str(),
        ),
        (
            "FTROVE_TASKMANAGER__LOCAL__SNAPSHOT_S3__BUCKET",
            swift.bucket(),
        ),
        (
            "FTROVE_TASKMANAGER__LOCAL__SNAPSHOT_S3__REGION",
            swift.region(),
        ),
        (
            "FTROVE_TASKMANAGER__LOCAL__SNAPSHOT_S3__ACCESS_KEY_ID",
            swift.access_key(),
        ),
        (
            "FTROVE_TASKMANAGER__LOCAL__SNAPSHOT_S3__SECRET_ACCESS_KEY",
            swift.secret_key(),
        ),
        (
            "FTROVE_TASKMANAGER__LOCAL__SNAPSHOT_S3__PREFIX",
            "snapshots/",
        ),
        ("FTROVE_TASKMANAGER__LOCAL__SNAPSHOT_S3__ALLOW_HTTP", "true"),
    ];
    let stack = Stack::start_with(
        common::Broker::Vhost(ferrotrove_tests::RabbitVhost::create()),
        &env,
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(swift.endpoint())
        .with_allow_http(true)
        .with_region(swift.region())
        .with_bucket_name(swift.bucket())
        .with_access_key_id(swift.access_key())
        .with_secret_access_key(swift.secret_key())
        .build()
        .unwrap();
    let in_bucket = || {
        runtime.block_on(async {
            use object_store::ObjectStore;
            bucket
                .list_with_delimiter(Some(&object_store::path::Path::from("snapshots")))
                .await
                .map(|listed| listed.objects.len())
                .unwrap()
        })
    };
    two_replicas_seeded_from_one_snapshot(&stack, in_bucket, |m1_id| {
        let log = std::fs::read_to_string(stack.instance_dir(m1_id).join("agent.log")).unwrap();
        assert!(
            log.contains("s3 bucket ferrotrove-snapshots at http"),
            "the snapshot did not go to S3:\n{log}"
        );
        assert_eq!(
            std::fs::read_dir(stack.state.join("snapshots"))
                .map(|d| d.count())
                .unwrap_or(0),
            0,
            "the shared directory was used"
        );
    });
}

/// Seeds r-1 and r-2 from m1 with one snapshot, checks that both replicate and that
/// `stored()` (the snapshot store's object count) is back to 0, runs `check(m1's id)`, and
/// deletes everything.
fn two_replicas_seeded_from_one_snapshot(
    stack: &Stack,
    stored: impl Fn() -> usize,
    check: impl Fn(&str),
) {
    let m1 = stack.create_source("m1");
    let (m1_id, m1_port) = (id_of(&m1), port_of(&m1));
    app_sql(
        m1_port,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32))",
    )
    .unwrap();
    app_sql(
        m1_port,
        "INSERT INTO t SELECT seq, 'before' FROM seq_1_to_50",
    )
    .unwrap();

    stack.ftrove_ok(&[
        "create",
        "r",
        "7",
        "--replica-of",
        "m1",
        "--replica-count",
        "2",
        "--wait",
    ]);
    let replicas: Vec<Value> = ["r-1", "r-2"]
        .iter()
        .map(|name| stack.ftrove_json(&["show", name]))
        .collect();
    app_sql(
        m1_port,
        "INSERT INTO t SELECT seq, 'after' FROM seq_51_to_60",
    )
    .unwrap();
    for replica in &replicas {
        assert_eq!(replica["status"], "ACTIVE", "{replica}");
        assert_eq!(replica["replica_of"]["id"], m1_id.as_str(), "{replica}");
        let port = port_of(replica);
        assert!(
            eventually(Duration::from_secs(15), || count(port) == 60),
            "{} has {} rows",
            replica["name"],
            count(port)
        );
    }
    assert_eq!(
        replication_users(stack, &m1_id).lines().count(),
        2,
        "one replication user per replica"
    );
    assert_eq!(
        stored(),
        0,
        "the snapshot is deleted once both replicas are attached"
    );
    check(&m1_id);

    for replica in &replicas {
        stack.ftrove_ok(&["delete", replica["id"].as_str().unwrap(), "--wait"]);
    }
    assert_eq!(
        replication_users(stack, &m1_id),
        "",
        "deleting replicas drops their replication users"
    );
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}
