//! A request the API recorded but whose task never reached a taskmanager (the API stopped
//! between committing the new status and sending the task): asking again sends the task,
//! under the id recorded with the status, so it runs, and runs once.

mod common;

use common::{Broker, Stack, eventually};
use ferrotrove_tests::RabbitVhost;
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

#[test]
fn creates_whose_task_was_lost_are_found_a_replica_request_sent_again_and_a_create_failed() {
    let stack = Stack::start_with(
        Broker::Vhost(RabbitVhost::create()),
        &[("FTROVE_TASKMANAGER__TIMEOUTS__UNSENT_CREATE_SECS", "2")],
    );
    stack.create_source_with_rows("m1", 10);
    let m1 = stack.ftrove_json(&["show", "m1"])["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    // What the API commits before it sends a create's task, and then no task: a
    // standalone create (lost1) and a replica request (lost2), as from m1's tenant.
    let (create_task, replica_task) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (lost1, lost2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (id, name, replica_of, task) in [
        (lost1, "lost1", "NULL".to_owned(), create_task),
        (lost2, "lost2", format!("'{m1}'"), replica_task),
    ] {
        control_sql(
            &stack,
            &format!(
                "INSERT INTO instances (id, tenant_id, name, flavor_id, volume_size, datastore, \
                 datastore_version, status, replica_of, secret, create_task, created, updated) \
                 SELECT '{id}', tenant_id, '{name}', flavor_id, volume_size, datastore, \
                 datastore_version, 'BUILD', {replica_of}, SHA2(UUID(), 256), '{task}', \
                 UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) FROM instances WHERE id = '{m1}'"
            ),
        );
    }
    assert_eq!(stack.ftrove_json(&["show", "lost1"])["status"], "BUILD");

    // The replica request is sent again under its id, and seeds lost2 from m1.
    let lost2_now = stack.wait_for_status("lost2", &["ACTIVE", "ERROR"], Duration::from_secs(120));
    assert_eq!(
        lost2_now["status"],
        "ACTIVE",
        "{lost2_now}\n{}",
        stack.logs()
    );
    assert_eq!(lost2_now["replica_of"]["id"], m1.as_str(), "{lost2_now}");
    let port = u16::try_from(lost2_now["port"].as_u64().expect("a port")).expect("a port");
    assert_eq!(
        common::sql(port, "app", "apppass", "SELECT COUNT(*) FROM appdb.t").unwrap(),
        "10"
    );
    assert_eq!(
        control_sql(
            &stack,
            &format!("SELECT state, attempts FROM tasks WHERE id = '{replica_task}'")
        ),
        "done\t1"
    );

    // The standalone create cannot be sent again (its users' passwords were never
    // stored): it is failed, saying so, with nothing built, and it deletes cleanly.
    let lost1_now = stack.wait_for_status("lost1", &["ERROR"], Duration::from_secs(30));
    let fault = lost1_now["fault"]["message"].as_str().unwrap_or_default();
    assert!(
        fault.contains("Delete it and create it again"),
        "{lost1_now}"
    );
    assert_eq!(
        control_sql(
            &stack,
            &format!(
                "SELECT COUNT(*) FROM tasks WHERE id = '{create_task}' OR instance_id = '{lost1}'"
            )
        ),
        "0"
    );
    assert!(!stack.instance_dir(&lost1.to_string()).exists());
    stack.ftrove_ok(&["delete", "lost1", "--wait"]);
    assert!(!stack.ftrove(&["show", "lost1"]).0);
}
