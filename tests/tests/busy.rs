//! Actions on a busy instance are refused with 422 in Trove's fault shape, saying what it
//! is busy with, from what the control DB holds (its status, replicas in BUILD, the task
//! rows the taskmanager writes); once the work is done, the same actions go through.

mod common;

use common::{Broker, Stack, agent_log, eventually, hold, release, slow_backup_tool};
use std::time::Duration;

/// Runs `ftrove args`, which must fail with a 422 whose message starts with `starts`;
/// returns what it printed.
fn refused(stack: &Stack, args: &[&str], starts: &str) -> String {
    let (ok, stdout, stderr) = stack.ftrove(args);
    assert!(!ok, "ftrove {args:?} succeeded:\n{stdout}");
    assert!(
        stderr.contains(starts) && stderr.trim_end().ends_with("(HTTP 422)"),
        "ftrove {args:?}:\n{stderr}"
    );
    stderr
}

#[test]
fn a_source_seeding_a_replica_and_the_replica_are_busy_until_the_seeding_is_done() {
    let tools = tempfile::tempdir().unwrap();
    let tool = slow_backup_tool(tools.path());
    let stack = Stack::start_with(
        Broker::Vhost(ferrotrove_tests::RabbitVhost::create()),
        &[("FTROVE_AGENT__SERVER__BACKUP", &tool)],
    );
    let m1 = stack.create_source("m1");
    let m1_id = m1["id"].as_str().unwrap().to_owned();

    // The snapshot holds once taken: the replica stays in its seeding task.
    hold(tools.path(), "backup");
    stack.ftrove_ok(&["create", "s1", "7", "--size", "2", "--replica-of", "m1"]);
    let s1_id = stack.ftrove_json(&["show", "s1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        eventually(Duration::from_secs(90), || agent_log(&stack, &m1_id)
            .contains("taking a physical snapshot")),
        "the snapshot did not start:\n{}",
        stack.logs()
    );

    let message = refused(
        &stack,
        &["delete", "m1"],
        &format!(
            "Instance {m1_id} is busy: seeding replica s1 (step snapshot and provision, started "
        ),
    );
    assert!(
        message.contains(
            "try again when the seeding has finished, after detaching or deleting the replicas."
        ),
        "{message}"
    );
    let seeded = format!(
        "Instance {s1_id} is busy: being seeded from m1 (step snapshot and provision, started "
    );
    let message = refused(&stack, &["delete", "s1"], &seeded);
    assert!(
        message.contains("try again when it is ACTIVE or ERROR."),
        "{message}"
    );
    let message = refused(&stack, &["detach-replica", "s1"], &seeded);
    assert!(
        message.contains("try again when it is ACTIVE."),
        "{message}"
    );
    // Nothing changed.
    assert_eq!(stack.ftrove_json(&["show", "m1"])["status"], "ACTIVE");
    assert_eq!(stack.ftrove_json(&["show", "s1"])["status"], "BUILD");

    // The seeding completes; then the source has a replica (Trove's 403), and the
    // replica detaches and deletes.
    release(tools.path(), "backup");
    let s1 = stack.wait_for_status("s1", &["ACTIVE", "ERROR"], Duration::from_secs(120));
    assert_eq!(s1["status"], "ACTIVE", "{s1}\n{}", stack.logs());
    let (ok, _, stderr) = stack.ftrove(&["delete", "m1"]);
    assert!(
        !ok && stderr.contains("Detach replicas before deleting replica source. (HTTP 403)"),
        "{stderr}"
    );
    stack.ftrove_ok(&["detach-replica", "s1"]);
    let detached = eventually(Duration::from_secs(60), || {
        let s1 = stack.ftrove_json(&["show", "s1"]);
        s1["status"] == "ACTIVE" && s1.get("replica_of").is_none()
    });
    assert!(detached, "s1 was not detached:\n{}", stack.logs());
    stack.ftrove_ok(&["delete", "s1", "--wait"]);
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}
