//! A daemon stopped with SIGTERM, as systemd stops it, exits 0 and logs no warning or
//! error on the way out, and the conductor starts without one: in an operator's journal,
//! a start and a stop read as such.

mod common;

use common::Stack;

#[test]
fn daemons_stop_on_sigterm_with_status_0_and_a_quiet_log() {
    let mut stack = Stack::start();
    // An instance, so the taskmanager has made calls (its reply consumer is live) and the
    // conductor has stored heartbeats.
    stack.create_source("quiet");
    // Nor does a normal start warn: the conductor's consumer starting is not an outage.
    let started = stack.log("conductor");
    assert!(
        !started.contains(" WARN ") && !started.contains(" ERROR "),
        "ftrove-conductor warned at start:\n{started}"
    );
    let daemons = ["conductor", "taskmanager", "api"];
    let before: Vec<usize> = daemons.iter().map(|d| stack.log(d).len()).collect();

    let exits = stack.stop_daemons();

    for (name, status) in &exits {
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "ftrove-{name} on SIGTERM exited {status:?}:\n{}",
            stack.log(name)
        );
    }
    for (name, from) in daemons.iter().zip(before) {
        let log = stack.log(name);
        let noisy: Vec<&str> = log[from..]
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .collect();
        assert!(
            noisy.is_empty(),
            "ftrove-{name} logged while stopping:\n{}",
            noisy.join("\n")
        );
    }
}
