//! A broker on a resource alarm blocks every publisher. A request that sends a task
//! answers 503 within the bus's confirm timeout instead of hanging, and leaves nothing
//! half-made; the conductor marks no instance stale meanwhile (their heartbeats are
//! blocked too); once the alarm clears, the same daemons serve again. On a RabbitMQ node
//! of the test's own, whose memory alarm the test raises.

mod common;

use common::{Broker, Stack};
use ferrotrove_tests::rabbit_node::RabbitNode;
use std::time::Duration;

#[test]
fn requests_fail_fast_while_the_broker_blocks_publishers_and_work_again_after() {
    let mut stack = Stack::start_on(Broker::Node(RabbitNode::start()));
    stack.ftrove_ok(&["create", "a1", "7", "--size", "2", "--wait"]);

    // A memory high watermark of 0 raises the memory alarm at once.
    stack
        .broker_node()
        .ctl(&["set_vm_memory_high_watermark", "0"])
        .expect("raise the memory alarm");
    let alarm = std::time::Instant::now();
    let (ok, _, stderr) = stack.ftrove(&["create", "b1", "7", "--size", "2"]);
    assert!(
        !ok && stderr.contains("marked ERROR") && stderr.contains("(HTTP 503)"),
        "{stderr}"
    );
    let b1 = stack.ftrove_json(&["show", "b1"]);
    assert_eq!(b1["status"], "ERROR", "{b1}");
    let (ok, _, stderr) = stack.ftrove(&["delete", "a1"]);
    assert!(!ok && stderr.contains("(HTTP 503)"), "{stderr}");
    // The refused delete put a1 back as it was (shown, it may be SHUTDOWN by now: its
    // heartbeats are blocked too).
    let status = ferrotrove_tests::control_sql(
        Some(&stack.db.name),
        "SELECT status FROM instances WHERE name = 'a1'",
    )
    .unwrap();
    assert_eq!(status, "ACTIVE");

    // Once the alarm has lasted well past the conductor's expiry (10 s), with no heartbeat
    // getting through: the conductor, whose probe finds the broker taking no publishes,
    // has not marked a1 stale.
    std::thread::sleep(Duration::from_secs(16).saturating_sub(alarm.elapsed()));
    let stale = ferrotrove_tests::control_sql(
        Some(&stack.db.name),
        "SELECT g.stale FROM guest_status g JOIN instances i ON i.id = g.instance_id \
         WHERE i.name = 'a1'",
    )
    .unwrap();
    assert_eq!(stale, "0", "a1 was marked stale during the alarm");

    // The alarm clears: the same API and taskmanager work again.
    stack
        .broker_node()
        .ctl(&["set_vm_memory_high_watermark", "0.4"])
        .expect("clear the memory alarm");
    stack.ftrove_ok(&["delete", "b1", "--wait"]);
    stack.ftrove_ok(&["delete", "a1", "--wait"]);
    stack.ftrove_ok(&["create", "c1", "7", "--size", "2", "--wait"]);
    assert_eq!(stack.ftrove_json(&["show", "c1"])["status"], "ACTIVE");
}
