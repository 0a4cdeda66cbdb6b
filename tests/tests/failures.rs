//! What users see when a step fails: the new instance ends in ERROR with a fault that says
//! what went wrong, the source keeps serving, and everything can still be deleted.

mod common;

use common::{Stack, sql};

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
