//! RabbitMQ stopped and started again under a running stack, in the middle of a stream of
//! commands to an agent and of a replica being created: afterwards every command has its
//! result, each ran exactly once, the replica task completes, and heartbeats flow again.

mod common;

use common::{Broker, Stack, eventually, sql};
use ferrotrove_bus::{Bus, BusConfig, BusError};
use ferrotrove_proto::agent::{AgentRequest, AgentResponse, SnapshotMethod, SnapshotRequest};
use ferrotrove_proto::queues;
use ferrotrove_tests::rabbit_node::RabbitNode;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Commands the stream sends once the broker is back, before it ends.
const AFTER_RESTART: usize = 5;

#[test]
fn a_broker_restart_loses_no_command_and_runs_none_twice() {
    let mut stack = Stack::start_on(Broker::Node(RabbitNode::start()));
    let m1 = stack.create_source("m1");
    let id = m1["id"].as_str().unwrap().to_owned();
    let port = m1["port"].as_u64().unwrap() as u16;
    let instance_id: Uuid = id.parse().unwrap();
    let snapshots = stack.state.join("snapshots");
    let config = BusConfig {
        url: stack.bus_url(),
        exchange: "ferrotrove".into(),
        ..BusConfig::default()
    };
    let key = stack.signing_key(&id);
    let answered = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(AtomicBool::new(false));

    // The stream: one snapshot command after another, each with its own operation id, sent
    // again with the same id whenever the broker connection is lost (as the taskmanager
    // does). Each snapshot's files are removed once it is answered, so a command that ran a
    // second time would leave files behind.
    let stream = {
        let answered = answered.clone();
        let enough = enough.clone();
        let snapshots = snapshots.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let bus = Bus::connect(&config, "taskmanager")
                    .await
                    .unwrap()
                    .signed_by(key);
                let mut operations = Vec::new();
                let mut resent = 0;
                while !enough.load(Ordering::SeqCst) {
                    let operation = Uuid::now_v7();
                    let snapshot_id = Uuid::now_v7();
                    let request = AgentRequest::CreateSnapshot(SnapshotRequest {
                        snapshot_id,
                        method: SnapshotMethod::Logical,
                    });
                    loop {
                        match bus
                            .call_in_operation::<_, AgentResponse>(
                                &queues::guest(instance_id),
                                &request,
                                Duration::from_secs(60),
                                operation,
                            )
                            .await
                        {
                            Ok(AgentResponse::Snapshot(info)) => {
                                assert_eq!(info.snapshot_id, snapshot_id);
                                break;
                            }
                            Ok(other) => panic!("CreateSnapshot answered with {other:?}"),
                            Err(error) if error.is_connection_lost() => {
                                resent += 1;
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            Err(BusError::NotListening { .. }) => {
                                // The agent's queue is back before its consumer is.
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            Err(error) => panic!("command {operation} failed: {error}"),
                        }
                    }
                    remove_snapshot_files(&snapshots, snapshot_id);
                    operations.push(operation);
                    answered.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                bus.close().await;
                (operations, resent)
            })
        })
    };

    // A replica is being made while the broker goes away.
    stack.ftrove_ok(&["create", "s1", "7", "--size", "2", "--replica-of", "m1"]);
    assert!(
        eventually(Duration::from_secs(60), || answered.load(Ordering::SeqCst)
            >= 4),
        "the stream did not start:\n{}",
        stack.logs()
    );
    stack.broker_node().stop();
    // Away for longer than the conductor's 10 s expiry: no heartbeat can arrive, but that
    // is the control plane's fault, not the guests', so m1 must not turn SHUTDOWN.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        stack.ftrove_json(&["show", "m1"])["status"],
        "ACTIVE",
        "the broker's absence marked m1 stale:\n{}",
        stack.logs()
    );
    stack.broker_node().boot();
    let back = answered.load(Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(60), || answered.load(Ordering::SeqCst)
            >= back + AFTER_RESTART),
        "the stream did not resume after the restart:\n{}",
        stack.logs()
    );
    enough.store(true, Ordering::SeqCst);

    let (operations, resent) = stream.join().expect("the stream finished");
    assert!(resent > 0, "the restart did not interrupt the stream");

    // Each command ran exactly once: one "done" in the agent's log per operation, and no
    // snapshot files left by a second run.
    let log = std::fs::read_to_string(stack.instance_dir(&id).join("agent.log")).unwrap();
    for operation in &operations {
        let runs = log
            .lines()
            .filter(|l| l.contains(&operation.to_string()) && l.ends_with(" done"))
            .count();
        assert_eq!(runs, 1, "operation {operation} ran {runs} times:\n{log}");
    }

    // The replica task lived through the restart.
    assert!(
        eventually(Duration::from_secs(180), || {
            stack.ftrove_json(&["show", "s1"])["status"] == "ACTIVE"
        }),
        "s1 did not become ACTIVE after the restart: {}\n{}",
        stack.ftrove_json(&["show", "s1"]),
        stack.logs()
    );
    let s1 = stack.ftrove_json(&["show", "s1"]);
    let s1_port = s1["port"].as_u64().unwrap() as u16;
    let app = |port: u16, statement: &str| {
        sql(port, "app", "apppass", &format!("USE appdb; {statement}"))
    };
    app(
        port,
        "CREATE TABLE after_restart (id INT PRIMARY KEY); INSERT INTO after_restart VALUES (1)",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            app(s1_port, "SELECT COUNT(*) FROM after_restart").as_deref() == Ok("1")
        }),
        "s1 does not replicate after the restart"
    );
    // No snapshot is left: the stream removed its own, the task its seed.
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_dir(&snapshots)
            .map(|d| d.count() == 0)
            .unwrap_or(true)),
        "snapshots left behind: {:?}",
        std::fs::read_dir(&snapshots)
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );

    // Heartbeats are stored again: m1 is ACTIVE (it would turn SHUTDOWN once its last
    // heartbeat is older than the conductor's 10 s expiry).
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(stack.ftrove_json(&["show", "m1"])["status"], "ACTIVE");

    stack.ftrove_ok(&["delete", "s1", "--wait"]);
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}

fn remove_snapshot_files(dir: &Path, snapshot_id: Uuid) {
    let prefix = snapshot_id.to_string();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
