//! Every daemon refuses a bad configuration at start and says what is wrong, without
//! printing the secrets in it; the agent, whose config a newer provisioner may write,
//! loads unknown keys but names each in its log.

use ferrotrove_tests::binary;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What no refusal may print: the password in the URLs below.
const PASSWORD: &str = "s3cret-pw";

/// How long a refusal may take; a daemon still running then has accepted the config.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(20);

/// Writes `text` as a 0600 config file named `name` in `dir`.
fn config_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A daemon run with only `--config path`, none of the environment's config variables.
fn daemon(name: &str, config: &Path) -> Command {
    let mut cmd = Command::new(binary(name));
    cmd.arg("--config").arg(config).env_remove("RUST_BACKTRACE");
    for (key, _) in std::env::vars() {
        if key.starts_with("FTROVE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs `name` on `config` and returns its stderr, asserting that it exited with a failure
/// well before `REFUSAL_DEADLINE` (it is killed, and the test fails, if it is still running).
fn refusal(name: &str, config: &Path) -> String {
    let mut child = daemon(name, config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > REFUSAL_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} accepted {} and kept running", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(
        !status.success(),
        "{name} exited successfully on {}: {stderr}",
        config.display()
    );
    assert!(
        !stderr.contains(PASSWORD),
        "{name} printed a password: {stderr}"
    );
    let says = format!("{name}: bad configuration in {}: ", config.display());
    assert!(
        stderr.contains(&says),
        "{name} did not say {says:?}: {stderr}"
    );
    assert_eq!(
        status.code(),
        Some(ferrotrove_bus::daemon::EXIT_BAD_CONFIG),
        "{name}'s exit status on a refused config: {stderr}"
    );
    stderr
}

#[test]
fn control_plane_daemons_refuse_a_bad_config_and_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("typo", "[bus]\nprefech = 10\n", "unknown field `prefech`"),
        ("type", "[bus]\nprefetch = \"lots\"\n", "bus.prefetch"),
        (
            "bus-url",
            "[bus]\nurl = \"http://admin:s3cret-pw@127.0.0.1:5672/%2f\"\n",
            "bus.url must start with amqp:// or amqps://",
        ),
        (
            "store-url",
            "[store]\nurl = \"postgres://admin:s3cret-pw@127.0.0.1/x\"\n",
            "store url must start with mysql://",
        ),
        ("syntax", "[bus\nurl = 1\n", "TOML parse error"),
    ];
    for (case, text, says) in cases {
        let path = config_file(dir.path(), &format!("{case}.toml"), text);
        for name in ["ftrove-conductor", "ftrove-taskmanager", "ftrove-api"] {
            let stderr = refusal(name, &path);
            assert!(stderr.contains(says), "{name}, {case}: {stderr}");
        }
    }
    let missing = dir.path().join("missing.toml");
    for name in ["ftrove-conductor", "ftrove-taskmanager", "ftrove-api"] {
        let stderr = refusal(name, &missing);
        assert!(
            stderr.contains("not found"),
            "{name}, missing file: {stderr}"
        );
    }
}

/// A complete agent config for an instance not prepared yet, with `extra` lines appended
/// to `[server]`; its broker is a closed port, so it connects nowhere.
fn agent_config(dir: &Path, url: &str, server_extra: &str) -> String {
    format!(
        "instance_id = \"0192f0c4-7a1e-7cc0-8000-000000000001\"\n\
         [bus]\nurl = \"{url}\"\n\
         [server]\nbase_dir = \"{base}\"\nport = 3399\n{server_extra}\n\
         [snapshots]\ndir = \"{snapshots}\"\n",
        base = dir.join("instance").display(),
        snapshots = dir.join("snapshots").display(),
    )
}

#[test]
fn the_agent_refuses_a_bad_config_and_names_unknown_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = "amqp://guest:s3cret-pw@127.0.0.1:1/%2f";

    let no_port = agent_config(dir.path(), closed, "").replace("port = 3399\n", "");
    let stderr = refusal("ftrove-agent", &config_file(dir.path(), "a.toml", &no_port));
    assert!(stderr.contains("port"), "{stderr}");

    let http = agent_config(dir.path(), "http://admin:s3cret-pw@127.0.0.1:1/%2f", "");
    let stderr = refusal("ftrove-agent", &config_file(dir.path(), "b.toml", &http));
    assert!(stderr.contains("bus.url"), "{stderr}");

    // Unknown keys: the agent starts (waiting for Prepare, the broker unreachable) and
    // names each one in its log, then stops on SIGTERM. The signal is sent once it has
    // tried the broker, by when it has long been listening for signals.
    let text =
        agent_config(dir.path(), closed, "frobnicate = 1") + "[heartbeat]\ninterval_sec = 3\n";
    let path = config_file(dir.path(), "c.toml", &text);
    let mut child = daemon("ftrove-agent", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + REFUSAL_DEADLINE;
    let named = |log: &[String], key: &str| {
        log.iter()
            .any(|l| l.contains("does not know") && l.contains(&format!("key=\"{key}\"")))
    };
    let tried_broker = |log: &[String]| log.iter().any(|l| l.contains("broker not reachable"));
    while !(named(&log, "server.frobnicate")
        && named(&log, "heartbeat.interval_sec")
        && tried_broker(&log))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => break,
        }
    }
    // SAFETY: signals only the agent this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait for the agent");
    let _ = reader.join();
    log.extend(lines.try_iter());
    let text = log.join("\n");
    assert!(tried_broker(&log), "{text}");
    assert!(named(&log, "server.frobnicate"), "{text}");
    assert!(named(&log, "heartbeat.interval_sec"), "{text}");
    assert!(
        status.success(),
        "the agent did not stop cleanly ({status}): {text}"
    );
    assert!(
        !text.contains(PASSWORD),
        "the agent logged a password: {text}"
    );
}
