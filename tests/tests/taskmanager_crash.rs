//! The taskmanager killed with SIGKILL in the middle of creating a replica, and started
//! again: the task resumes from its row and completes, and nothing is left half-made.

mod common;

use common::{Stack, agent_log, eventually, hold, release, sql};
use serde_json::Value;
use std::time::Duration;

/// One statement against the stack's control DB.
fn control_sql(stack: &Stack, statement: &str) -> String {
    ferrotrove_tests::control_sql(Some(&stack.db.name), statement)
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

fn running_replica_task_step(stack: &Stack) -> String {
    control_sql(
        stack,
        "SELECT step FROM tasks WHERE kind = 'create_replicas' AND state = 'running'",
    )
}

/// Creates replica `name` of m1, crashes the taskmanager once the task is at `step` and
/// `phase` of the backup tool holds, restarts it, and checks the replica comes out right.
fn crash_during(stack: &mut Stack, tools: &std::path::Path, name: &str, step: &str, phase: &str) {
    hold(tools, phase);
    stack.ftrove_ok(&["create", name, "7", "--size", "2", "--replica-of", "m1"]);
    let replica_id = stack.ftrove_json(&["show", name])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let m1_id = stack.ftrove_json(&["show", "m1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let holding = if phase == "backup" {
        (m1_id.clone(), "taking a physical snapshot")
    } else {
        (replica_id.clone(), "restoring a physical snapshot")
    };
    assert!(
        eventually(Duration::from_secs(90), || {
            running_replica_task_step(stack) == step
                && agent_log(stack, &holding.0).contains(holding.1)
        }),
        "{name}: never reached {step}/{phase}: step {:?}\n{}",
        running_replica_task_step(stack),
        stack.logs()
    );
    stack.crash_and_restart_taskmanager();
    release(tools, phase);

    let replica = stack.wait_for_status(name, &["ACTIVE", "ERROR"], Duration::from_secs(120));
    assert_eq!(
        replica["status"],
        "ACTIVE",
        "{replica}\n{}\n--- {name}'s agent\n{}",
        stack.logs(),
        agent_log(stack, &replica_id)
    );
    // The replica is ACTIVE before the task's last step (deleting the snapshot) ends.
    let latest_task = || {
        control_sql(
            stack,
            "SELECT CONCAT(state, ' ', attempts) FROM tasks WHERE kind = 'create_replicas' \
             ORDER BY created DESC LIMIT 1",
        )
    };
    assert!(
        eventually(Duration::from_secs(30), || latest_task()
            .starts_with("done ")),
        "the task did not finish: {}",
        latest_task()
    );
    let task = latest_task();
    let (_, attempts) = task.split_once(' ').unwrap();
    assert!(
        attempts.parse::<u32>().unwrap() >= 2,
        "the task was not resumed: {task}"
    );
    // Exactly one replication user for this replica, and it replicates.
    assert_eq!(
        control_sql(
            stack,
            &format!("SELECT COUNT(*) FROM replication_users WHERE replica_id = '{replica_id}'")
        ),
        "1"
    );
    check_replicates(&replica, name);
}

fn check_replicates(replica: &Value, name: &str) {
    let port = u16::try_from(replica["port"].as_u64().unwrap()).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || sql(
            port,
            "app",
            "apppass",
            "SELECT COUNT(*) FROM appdb.t"
        )
        .as_deref()
            == Ok("3")),
        "{name} does not have m1's rows"
    );
}

#[test]
fn a_replica_task_resumes_after_the_taskmanager_is_killed_at_each_step() {
    let tools = tempfile::tempdir().unwrap();
    let mut stack = Stack::with_slow_backup_tool(
        tools.path(),
        &[("FTROVE_TASKMANAGER__TIMEOUTS__TASK_LEASE_SECS", "4")],
    );
    stack.create_source_with_rows("m1", 3);

    crash_during(
        &mut stack,
        tools.path(),
        "s1",
        "snapshot and provision",
        "backup",
    );
    crash_during(&mut stack, tools.path(), "s2", "attach", "prepare");

    // Nothing half-made: m1, s1 and s2, no snapshot left.
    let dirs = std::fs::read_dir(stack.state.join("instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, 3, "instance directories");
    assert!(
        eventually(Duration::from_secs(30), || stack
            .stored_snapshots()
            .is_empty()),
        "a snapshot was left behind: {:?}",
        stack.stored_snapshots()
    );
    for name in ["s1", "s2", "m1"] {
        stack.ftrove_ok(&["delete", name, "--wait"]);
    }
}

#[test]
fn two_taskmanagers_share_the_work_and_never_run_one_task_twice() {
    let mut stack = Stack::start();
    stack.start_second_taskmanager();
    let names = ["a1", "a2", "a3", "a4"];
    for name in names {
        stack.ftrove_ok(&["create", name, "7", "--size", "2"]);
    }
    for name in names {
        let shown = stack.wait_for_status(name, &["ACTIVE", "ERROR"], Duration::from_secs(120));
        assert_eq!(shown["status"], "ACTIVE", "{shown}");
    }
    let owners = control_sql(
        &stack,
        "SELECT COUNT(DISTINCT owner), MAX(attempts), COUNT(*) FROM tasks WHERE kind = 'create' AND state = 'done'",
    );
    assert_eq!(owners, "2\t1\t4", "(owners, most attempts, tasks)");
    for name in names {
        stack.ftrove_ok(&["delete", name, "--wait"]);
    }
}
