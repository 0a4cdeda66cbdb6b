//! A command delivered again after its agent was killed and restarted (as the broker does
//! when the ack was lost) is answered with its first result, not run twice.

mod common;

use common::{Stack, eventually};
use ferrotrove_bus::{Bus, BusConfig};
use ferrotrove_proto::agent::{AgentRequest, AgentResponse, SnapshotRequest};
use ferrotrove_proto::queues;
use std::time::Duration;
use uuid::Uuid;

#[test]
fn a_finished_command_delivered_again_after_a_restart_is_not_run_twice() {
    let stack = Stack::start();
    stack.ftrove_ok(&["create", "m1", "7", "--size", "2", "--wait"]);
    let id = stack.ftrove_json(&["show", "m1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let instance_id: Uuid = id.parse().unwrap();
    let key = stack.signing_key(&id);
    let snapshots = stack.state.join("snapshots");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = BusConfig {
        url: stack.bus_url(),
        exchange: "ferrotrove".into(),
        ..BusConfig::default()
    };
    let snapshot = AgentRequest::CreateSnapshot(SnapshotRequest {
        snapshot_id: Uuid::now_v7(),
        method: Default::default(),
    });
    let operation = Uuid::now_v7();
    let send = |bus: &Bus| {
        runtime.block_on(bus.call_in_operation::<_, AgentResponse>(
            &queues::guest(instance_id),
            &snapshot,
            Duration::from_secs(60),
            operation,
        ))
    };
    let bus = runtime
        .block_on(Bus::connect(&config, "taskmanager"))
        .unwrap()
        .signed_by(key);

    let first = send(&bus).expect("the snapshot is taken");
    let taken: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!taken.is_empty(), "the snapshot left no file");
    for path in &taken {
        std::fs::remove_file(path).unwrap();
    }

    // The agent dies and comes back (its database server keeps running).
    stack.kill_agent(&id);
    stack.restart_agent(&id);
    assert!(eventually(Duration::from_secs(20), || {
        runtime
            .block_on(bus.call::<_, AgentResponse>(
                &queues::guest(instance_id),
                &AgentRequest::Ping,
                Duration::from_secs(1),
            ))
            .is_ok()
    }));

    // The same operation again: the first answer, and no new snapshot on disk.
    let again = send(&bus).expect("the repeated command is answered");
    assert_eq!(again, first);
    assert_eq!(
        std::fs::read_dir(&snapshots).unwrap().count(),
        0,
        "the command ran a second time"
    );
    runtime.block_on(bus.close());
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}
