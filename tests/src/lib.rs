//! Test harness shared by every crate's tests: each test gets its own RabbitMQ vhost, its
//! own control database and its own ports, so tests run in parallel and leave nothing behind.
//!
//! It depends on nothing of ours (any crate may dev-depend on it) and on no async runtime:
//! clean-up runs in `Drop`, also when a test fails.

pub mod mariadb_server;
pub mod rabbit_node;

pub mod swift;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// A short random name part, unique enough for parallel tests.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work on a test machine")
}

/// Runs `rabbitmqctl -q <args>` (policies, users, vhosts); returns stdout or stderr.
pub fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    run(Command::new("rabbitmqctl").arg("-q").args(args))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A RabbitMQ vhost of its own, deleted (with everything in it) on drop.
pub struct RabbitVhost {
    pub name: String,
}

impl RabbitVhost {
    pub fn create() -> RabbitVhost {
        let name = format!("ft-test-{}", unique_suffix());
        run(Command::new("rabbitmqctl").args(["-q", "add_vhost", &name])).expect("add_vhost");
        run(Command::new("rabbitmqctl").args([
            "-q",
            "set_permissions",
            "-p",
            &name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]))
        .expect("set_permissions");
        RabbitVhost { name }
    }

    /// The AMQP URL of this vhost as user guest.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A control database of its own in the MariaDB at 127.0.0.1:3306, dropped on drop.
pub struct ControlDb {
    pub name: String,
}

impl ControlDb {
    /// Names a database (created by whoever connects first); it is dropped on drop.
    pub fn new() -> ControlDb {
        ControlDb {
            name: format!("ft_test_{}", unique_suffix()),
        }
    }

    /// The server URL (without database) for `StoreConfig::url`: the development user
    /// that `deploy/dev/services.sh` creates.
    pub fn server_url(&self) -> &'static str {
        "mysql://ferrotrove:ferrotrove@127.0.0.1:3306"
    }
}

impl Default for ControlDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ControlDb {
    fn drop(&mut self) {
        // Sessions still in the database first: one left inside a transaction (by a test
        // that failed while holding a lock) would make the drop wait for its metadata lock
        // for as long as the server's lock_wait_timeout (a day).
        let sessions = control_sql(
            None,
            &format!(
                "SELECT id FROM information_schema.PROCESSLIST WHERE db = '{}' AND id <> CONNECTION_ID()",
                self.name
            ),
        )
        .unwrap_or_default();
        for id in sessions
            .lines()
            .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
        {
            // It may have ended meanwhile.
            let _ = control_sql(None, &format!("KILL CONNECTION {id}"));
        }
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.name);
        if let Err(e) = control_sql(None, &sql) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Runs one SQL statement as the development user on the MariaDB at 127.0.0.1:3306, in
/// `database` when given; returns its output (tab-separated, no headers) or the error.
pub fn control_sql(database: Option<&str>, statement: &str) -> Result<String, String> {
    let mut cmd = Command::new("mariadb");
    cmd.args([
        "--no-defaults",
        "-h",
        "127.0.0.1",
        "-P",
        "3306",
        "-u",
        "ferrotrove",
        "-pferrotrove",
        "-N",
        "-B",
    ]);
    cmd.args(database).args(["-e", statement]);
    run(&mut cmd).map(|out| out.trim().to_owned())
}

/// The path of a workspace binary built next to the test executable (`target/<profile>/`).
/// The README's test command builds every binary before running the tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Whether `pid` names a live process (a zombie, exited but not reaped, counts as gone).
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    exists && !zombie
}

/// Kills every process named by a `*.pid` file under `dir` (any depth) and waits until
/// they are gone: what a test's instances started must not outlive the test.
pub fn kill_processes_under(dir: &std::path::Path) {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "pid")
                && let Some(pid) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
            {
                pids.push(pid);
            }
        }
    }
    for &pid in &pids {
        if process_alive(pid) {
            // SAFETY: plain signal delivery to a pid a test's process recorded.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|&p| process_alive(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
