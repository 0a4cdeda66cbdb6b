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

    // Asked again, twice: the task is sent each time, under the recorded id.
    stack.ftrove_ok(&["delete", "d1"]);
    stack.ftrove_ok(&["delete", "d1"]);
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
