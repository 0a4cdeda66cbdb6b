//! A request the API recorded but whose task never reached a taskmanager (the API stopped
//! between committing the new status and sending the task): asking again sends the task,
//! under the id recorded with the status, so it runs, and runs once.

mod common;

use common::{Stack, eventually};
use std::time::Duration;

/// One statement against the stack's control DB.
fn control_sql(stack: &Stack, statement: &str) -> String {
    ferrotrove_tests::control_sql(Some(&stack.db.name), statement)
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

#[test]
fn a_delete_whose_task_was_lost_is_sent_again_when_asked_again_and_runs_once() {
    let stack = Stack::start();
    let id = stack.create_source("d1")["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    // What `DELETE` commits before it sends the task, and then no task: as if the API had
    // stopped in between. Nothing would ever delete it.
    let task = uuid::Uuid::now_v7();
    control_sql(
        &stack,
        &format!(
            "UPDATE instances SET status = 'DELETING', delete_task = '{task}' WHERE id = '{id}'"
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        control_sql(
            &stack,
            &format!("SELECT COUNT(*) FROM tasks WHERE instance_id = '{id}' AND kind = 'delete'")
        ),
        "0"
    );

    // Asked again, twice, while the taskmanager is frozen (so the first copy cannot finish
    // before the second is sent): the task is sent each time, under the recorded id.
    stack.freeze_taskmanager(true);
    stack.ftrove_ok(&["delete", "d1"]);
    stack.ftrove_ok(&["delete", "d1"]);
    stack.freeze_taskmanager(false);
    assert!(
        eventually(Duration::from_secs(60), || !stack.ftrove(&["show", "d1"]).0),
        "d1 was not deleted: {}",
        stack.logs()
    );
    let (_, _, stderr) = stack.ftrove(&["show", "d1"]);
    assert!(stderr.contains("no instance named d1"), "{stderr}");

    // One task did it, the one recorded with the status; the second copy found it done
    // (or running) and did nothing.
    assert!(
        eventually(Duration::from_secs(10), || {
            control_sql(
                &stack,
                &format!(
                    "SELECT id, state, attempts FROM tasks WHERE instance_id = '{id}' AND kind = 'delete'"
                ),
            ) == format!("{task}\tdone\t1")
        }),
        "{}",
        control_sql(
            &stack,
            &format!("SELECT id, state, attempts FROM tasks WHERE instance_id = '{id}'")
        )
    );
    assert!(
        !stack.instance_dir(&id).exists(),
        "the instance's server and files are gone"
    );
}

#[test]
fn a_detach_whose_task_was_lost_is_sent_again_when_asked_again_and_runs_once() {
    let stack = Stack::start();
    let m1_port = stack.create_source_with_rows("m1", 10);
    stack.ftrove_ok(&[
        "create",
        "s1",
        "7",
        "--size",
        "2",
        "--replica-of",
        "m1",
        "--wait",
    ]);
    let s1 = stack.ftrove_json(&["show", "s1"]);
    let id = s1["id"].as_str().expect("an id").to_owned();
    let s1_port = u16::try_from(s1["port"].as_u64().expect("a port")).expect("a port");

    // What a detach commits before it sends the task, and then no task.
    let task = uuid::Uuid::now_v7();
    control_sql(
        &stack,
        &format!(
            "UPDATE instances SET status = 'DETACH', detach_task = '{task}' WHERE id = '{id}'"
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        control_sql(
            &stack,
            &format!("SELECT COUNT(*) FROM tasks WHERE instance_id = '{id}' AND kind = 'detach'")
        ),
        "0"
    );
    assert_eq!(stack.ftrove_json(&["show", "s1"])["status"], "DETACH");

    // Asked again, twice, while the taskmanager is frozen: accepted both times, and the
    // task is sent each time under the recorded id; both copies wait in the queue.
    stack.freeze_taskmanager(true);
    stack.ftrove_ok(&["detach-replica", "s1"]);
    stack.ftrove_ok(&["detach-replica", "s1"]);
    assert_eq!(stack.ftrove_json(&["show", "s1"])["status"], "DETACH");
    stack.freeze_taskmanager(false);
    stack.wait_for_status("s1", &["ACTIVE", "ERROR"], Duration::from_secs(60));
    let s1 = stack.ftrove_json(&["show", "s1"]);
    assert_eq!(s1["status"], "ACTIVE", "{s1}");
    assert!(s1.get("replica_of").is_none(), "{s1}");
    assert!(
        eventually(Duration::from_secs(10), || {
            control_sql(
                &stack,
                &format!(
                    "SELECT id, state, attempts FROM tasks WHERE instance_id = '{id}' AND kind = 'detach'"
                ),
            ) == format!("{task}\tdone\t1")
        }),
        "{}",
        control_sql(
            &stack,
            &format!("SELECT id, state, attempts FROM tasks WHERE instance_id = '{id}'")
        )
    );

    // It is independent: it takes writes, and the source's new rows no longer arrive.
    common::sql(
        s1_port,
        "app",
        "apppass",
        "INSERT INTO appdb.t VALUES (5000)",
    )
    .expect("s1 accepts writes after detach");
    common::sql(m1_port, "app", "apppass", "INSERT INTO appdb.t VALUES (11)")
        .expect("m1 takes writes");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        common::sql(s1_port, "app", "apppass", "SELECT COUNT(*) FROM appdb.t").unwrap(),
        "11"
    );

    // Once detached, asking again is refused: it is no longer a replica.
    let (ok, _, stderr) = stack.ftrove(&["detach-replica", "s1"]);
    assert!(!ok && stderr.contains("not a replica"), "{stderr}");
}
