//! A replica restores its source's snapshot while the source is still taking it: with the
//! source's backup tool holding its stream open (the snapshot unfinished, no record in the
//! store), the replica's agent already reports restore progress; once the tool lets go,
//! the replica finishes, replicates, and the snapshot is removed.

mod common;

use common::{Stack, eventually, hold, release, sql};
use serde_json::Value;
use std::time::Duration;

#[test]
fn a_replica_restores_the_snapshot_while_the_source_still_takes_it() {
    let tools = tempfile::tempdir().unwrap();
    hold(tools.path(), "backup");
    let stack = Stack::with_slow_backup_tool(tools.path(), &[]);
    let m1_port = stack.create_source_with_rows("m1", 20);
    stack.ftrove_ok(&["create", "s1", "7", "--size", "2", "--replica-of", "m1"]);
    let stored = || stack.stored_snapshots();
    let mut shown = Value::Null;
    let restoring = eventually(Duration::from_secs(90), || {
        shown = stack.ftrove_json(&["show", "s1"]);
        shown["progress"]["operation"] == "restore"
            && shown["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        restoring,
        "s1 never reported restore progress: {shown}\n{}",
        stack.logs()
    );
    // The source's tool still holds: the snapshot is being taken, it has no record.
    assert_eq!(shown["status"], "BUILD", "{shown}");
    assert!(
        !stored().iter().any(|n| n.ends_with(".json")),
        "the snapshot was finished already: {:?}",
        stored()
    );
    assert!(
        stored().iter().any(|n| n.ends_with(".data.partial")),
        "{:?}",
        stored()
    );
    release(tools.path(), "backup");

    let s1 = stack.wait_for_status("s1", &["ACTIVE", "ERROR"], Duration::from_secs(120));
    assert_eq!(s1["status"], "ACTIVE", "{s1}\n{}", stack.logs());
    let s1_port = u16::try_from(s1["port"].as_u64().unwrap()).unwrap();
    sql(m1_port, "app", "apppass", "INSERT INTO appdb.t VALUES (21)").unwrap();
    assert!(
        eventually(Duration::from_secs(20), || sql(
            s1_port,
            "app",
            "apppass",
            "SELECT COUNT(*) FROM appdb.t"
        )
        .as_deref()
            == Ok("21")),
        "s1 does not replicate m1's rows"
    );
    assert!(
        eventually(Duration::from_secs(20), || stored().is_empty()),
        "left in the store: {:?}",
        stored()
    );
    stack.ftrove_ok(&["delete", "s1", "--wait"]);
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}
