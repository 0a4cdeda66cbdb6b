//! What users see when a step fails: the new instance ends in ERROR with a fault that says
//! what went wrong, the source keeps serving, and everything can still be deleted.

mod common;

use common::{Stack, agent_log, eventually, hold, release, sql};
use std::time::Duration;

#[test]
fn a_replica_whose_source_cannot_be_snapshotted_ends_in_error_and_the_source_keeps_serving() {
    let stack = Stack::start();
    let m1 = stack.create_source("m1");
    let (m1_id, m1_port) = (
        m1["id"].as_str().unwrap().to_owned(),
        m1["port"].as_u64().unwrap(),
    );
    let m1_port = u16::try_from(m1_port).expect("a port");
    sql(
        m1_port,
        "app",
        "apppass",
        "USE appdb; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_10",
    )
    .expect("write to m1");

    // The source's agent dies (its database server keeps running).
    stack.kill_agent(&m1_id);

    // Its heartbeat is still fresh, so the API accepts the replica; the snapshot step fails.
    let (ok, _, err) = stack.ftrove(&[
        "create",
        "s1",
        "7",
        "--size",
        "2",
        "--replica-of",
        "m1",
        "--wait",
    ]);
    assert!(!ok, "creating the replica must fail");
    assert!(
        err.contains("ERROR")
            && err.contains("snapshot of source")
            && err.contains("stopped answering"),
        "{err}"
    );
    let s1 = stack.ftrove_json(&["show", "s1"]);
    assert_eq!(s1["status"], "ERROR", "{s1}");
    assert!(
        s1["fault"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("snapshot of source")),
        "{s1}"
    );

    // The source's server and data are untouched; the failed replica can be deleted.
    assert_eq!(
        sql(m1_port, "app", "apppass", "SELECT COUNT(*) FROM appdb.t").as_deref(),
        Ok("10")
    );
    stack.ftrove_ok(&["delete", "s1", "--wait"]);
    // The source, whose agent is gone, can be deleted too: its server is stopped all the same.
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
    assert!(!stack.instance_dir(&m1_id).exists());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", m1_port)).is_err(),
        "m1's server still listens"
    );
}

#[test]
fn the_source_agent_killed_during_a_physical_snapshot_leaves_no_snapshot_behind() {
    let tools = tempfile::tempdir().unwrap();
    hold(tools.path(), "backup");
    let stack = Stack::with_slow_backup_tool(tools.path(), &[]);
    let m1 = stack.create_source("m1");
    let m1_id = m1["id"].as_str().unwrap().to_owned();
    let m1_port = u16::try_from(m1["port"].as_u64().unwrap()).unwrap();
    stack.ftrove_ok(&["create", "s1", "7", "--size", "2", "--replica-of", "m1"]);
    assert!(
        eventually(Duration::from_secs(60), || agent_log(&stack, &m1_id)
            .contains("taking a physical snapshot")),
        "the snapshot did not start:\n{}",
        agent_log(&stack, &m1_id)
    );
    std::thread::sleep(Duration::from_secs(1));
    stack.kill_agent(&m1_id);
    release(tools.path(), "backup");

    let s1 = stack.wait_for_status("s1", &["ERROR", "ACTIVE"], Duration::from_secs(60));
    assert_eq!(s1["status"], "ERROR", "{s1}");
    let fault = s1["fault"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        fault.contains("snapshot of source") && fault.contains("stopped answering"),
        "{fault}"
    );
    // The source keeps serving.
    assert_eq!(
        sql(m1_port, "app", "apppass", "SELECT 1").as_deref(),
        Ok("1")
    );
    // The unfinished snapshot has no record, so nothing can restore it; when the source's
    // agent comes back, it removes what it was writing, and the taskmanager deletes the
    // snapshot (which a late delivery of the command may have finished meanwhile).
    let stored = || stack.stored_snapshots();
    assert!(
        !stored().iter().any(|n| n.ends_with(".json")),
        "{:?}",
        stored()
    );
    stack.restart_agent(&m1_id);
    assert!(
        eventually(Duration::from_secs(60), || stored()
            .iter()
            .all(|n| !n.contains(".data") && !n.ends_with(".json"))),
        "left in the store: {:?}",
        stored()
    );
    stack.ftrove_ok(&["delete", "s1", "--wait"]);
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}

#[test]
fn a_replica_agent_killed_during_restore_fails_alone_and_its_sibling_finishes() {
    let tools = tempfile::tempdir().unwrap();
    hold(tools.path(), "prepare");
    let stack = Stack::with_slow_backup_tool(tools.path(), &[]);
    stack.create_source_with_rows("m1", 50);
    stack.ftrove_ok(&[
        "create",
        "r",
        "7",
        "--size",
        "2",
        "--replica-of",
        "m1",
        "--replica-count",
        "2",
    ]);
    let r1 = stack.ftrove_json(&["show", "r-1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        eventually(Duration::from_secs(60), || agent_log(&stack, &r1)
            .contains("restoring a physical snapshot")),
        "r-1 did not start restoring:\n{}",
        stack.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    stack.kill_agent(&r1);
    release(tools.path(), "prepare");

    let r2 = stack.wait_for_status("r-2", &["ERROR", "ACTIVE"], Duration::from_secs(90));
    assert_eq!(r2["status"], "ACTIVE", "{r2}\n{}", stack.logs());
    let r2_port = u16::try_from(r2["port"].as_u64().unwrap()).unwrap();
    assert_eq!(
        sql(r2_port, "app", "apppass", "SELECT COUNT(*) FROM appdb.t").as_deref(),
        Ok("50")
    );
    let failed = stack.wait_for_status("r-1", &["ERROR", "ACTIVE"], Duration::from_secs(60));
    assert_eq!(failed["status"], "ERROR", "{failed}");
    assert!(
        failed["fault"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stopped answering")),
        "{failed}"
    );
    // The failed replica deletes cleanly; the snapshot is gone once both are settled.
    stack.ftrove_ok(&["delete", "r-1", "--wait"]);
    assert!(!stack.instance_dir(&r1).exists());
    assert!(
        eventually(Duration::from_secs(20), || stack
            .stored_snapshots()
            .is_empty()),
        "left in the store: {:?}",
        stack.stored_snapshots()
    );
    stack.ftrove_ok(&["delete", "r-2", "--wait"]);
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}
