//! A whole Ferrotrove stack for one test: conductor, taskmanager and API as the real
//! binaries, on a RabbitMQ vhost, a control database and a state dir of the test's own.
//! Dropping it stops the daemons and every agent and database server they started.

#![allow(dead_code)]

use ferrotrove_tests::rabbit_node::RabbitNode;
use ferrotrove_tests::{ControlDb, RabbitVhost, binary, free_port, kill_processes_under};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Stack {
    pub api_url: String,
    pub state: PathBuf,
    daemons: Vec<(String, Child)>,
    /// Whether [`Stack::stop_daemons`] has run (the children are reaped then).
    daemons_stopped: bool,
    taskmanager_env: Vec<(String, String)>,
    // Dropped after the processes are stopped (fields drop in declaration order).
    pub db: ControlDb,
    broker: Broker,
    _tmp: tempfile::TempDir,
}

/// Where a stack's messages go.
pub enum Broker {
    /// A vhost of its own on the machine's RabbitMQ.
    Vhost(RabbitVhost),
    /// A RabbitMQ node of its own, which the test may stop and start. Guests then use the
    /// control plane's broker user (the provisioner's `rabbitmqctl` reaches only the
    /// machine's node).
    Node(RabbitNode),
}

impl Broker {
    fn url(&self) -> String {
        match self {
            Broker::Vhost(vhost) => vhost.url(),
            Broker::Node(node) => node.url(),
        }
    }
}

impl Stack {
    pub fn start() -> Stack {
        Stack::start_on(Broker::Vhost(RabbitVhost::create()))
    }

    pub fn start_on(broker: Broker) -> Stack {
        Stack::start_with(broker, &[])
    }

    /// A stack whose taskmanager (and so every agent it starts) runs with `taskmanager_env`
    /// added to its environment, e.g. `FTROVE_AGENT__SERVER__BACKUP` to give agents another
    /// backup tool.
    pub fn start_with(broker: Broker, taskmanager_env: &[(&str, &str)]) -> Stack {
        // No tokens: tests act for any tenant (the API warns in its log).
        Stack::start_full(broker, taskmanager_env, "[auth]\nmode = \"none\"\n")
    }

    /// A stack whose API takes tokens from the control DB alone (`auth.mode = "tokens"`
    /// without a tokens file): add them with [`Stack::add_token`].
    pub fn start_with_db_tokens() -> Stack {
        Stack::start_full(
            Broker::Vhost(RabbitVhost::create()),
            &[],
            "[auth]\nmode = \"tokens\"\n",
        )
    }

    fn start_full(broker: Broker, taskmanager_env: &[(&str, &str)], api_auth: &str) -> Stack {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        // The database servers run as the mysql user and must reach their data dirs.
        set_mode(&root, 0o755);
        let state = root.join("local");
        std::fs::create_dir_all(&state).expect("state dir");
        set_mode(&state, 0o755);
        let db = ControlDb::new();
        let port = free_port();
        let common = format!(
            "[bus]\nurl = \"{}\"\nexchange = \"ferrotrove\"\n\n[store]\nurl = \"{}\"\ndatabase = \"{}\"\n",
            broker.url(),
            db.server_url(),
            db.name
        );
        let configs = [
            (
                "conductor",
                // Instances without heartbeats for 10 s are marked stale (SHUTDOWN).
                format!("{common}\n[heartbeats]\nexpiry_secs = 10\ncheck_interval_secs = 1\n"),
            ),
            (
                "taskmanager",
                format!(
                    "{common}\n[local]\nstate_dir = \"{}\"\nheartbeat_interval_secs = 1\nbroker_users = {}\n",
                    state.display(),
                    matches!(broker, Broker::Vhost(_)),
                ),
            ),
            (
                "api",
                format!(
                    "listen = \"127.0.0.1:{port}\"\nheartbeat_expiry_secs = 10\n\n{api_auth}\n{common}"
                ),
            ),
        ];
        let taskmanager_env: Vec<(String, String)> = taskmanager_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut daemons = Vec::new();
        for (name, text) in configs {
            std::fs::write(root.join(format!("{name}.toml")), text).expect("write config");
            let env: &[(String, String)] = if name == "taskmanager" {
                &taskmanager_env
            } else {
                &[]
            };
            daemons.push((name.to_owned(), spawn_daemon(&root, name, env)));
        }
        let stack = Stack {
            taskmanager_env,
            api_url: format!("http://127.0.0.1:{port}/v1.0/test-tenant"),
            state,
            daemons,
            daemons_stopped: false,
            db,
            broker,
            _tmp: tmp,
        };
        stack.wait_for_api();
        stack
    }

    fn root(&self) -> &Path {
        self._tmp.path()
    }

    /// What daemon `name` (`conductor`, `taskmanager`, `taskmanager-2`, `api`) has logged
    /// so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Stops every daemon with SIGTERM, as systemd does, and returns how each one exited
    /// (`None`: it was still running after 10 s, and was killed). Agents keep running.
    pub fn stop_daemons(&mut self) -> Vec<(String, Option<std::process::ExitStatus>)> {
        if std::mem::replace(&mut self.daemons_stopped, true) {
            return Vec::new();
        }
        for (_, child) in &mut self.daemons {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let mut exits = Vec::new();
        for (name, child) in &mut self.daemons {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let status = child.try_wait().ok().flatten();
            if status.is_none() {
                eprintln!("ftrove-{name} ignored SIGTERM");
                let _ = child.kill();
                let _ = child.wait();
            }
            exits.push((name.clone(), status));
        }
        exits
    }

    fn wait_for_api(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            // Serving: answers, or asks for a token.
            if client
                .get(format!("{}/flavors", self.api_url))
                .send()
                .is_ok_and(|r| {
                    r.status().is_success() || r.status() == reqwest::StatusCode::UNAUTHORIZED
                })
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the API did not come up:\n{}", self.logs());
    }

    /// The last lines of every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.daemons {
            let text = self.log(name);
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "--- {name}.log\n{}\n",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        out
    }

    /// Runs `ftrove` with this stack's URL; returns (success, stdout, stderr).
    pub fn ftrove(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary("ftrove"))
            .args(args)
            .env("FTROVE_URL", &self.api_url)
            .env_remove("FTROVE_TOKEN")
            .output()
            .expect("run ftrove");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `ftrove` against `url` (a tenant's API URL) with `token` as `FTROVE_TOKEN`;
    /// returns (success, stdout, stderr).
    pub fn ftrove_with(&self, url: &str, token: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary("ftrove"))
            .args(args)
            .env("FTROVE_URL", url)
            .env("FTROVE_TOKEN", token)
            .output()
            .expect("run ftrove");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `ftrove-api tokens <args>` with the stack's API config; returns (success,
    /// stdout, stderr).
    pub fn tokens_command(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary("ftrove-api"))
            .arg("--config")
            .arg(self.root().join("api.toml"))
            .arg("tokens")
            .args(args)
            .output()
            .expect("run ftrove-api tokens");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ftrove-api tokens add --tenant <tenant>`: the new token and its id.
    pub fn add_token(&self, tenant: &str) -> (String, String) {
        let (ok, stdout, stderr) = self.tokens_command(&["add", "--tenant", tenant]);
        assert!(ok, "tokens add failed:\n{stdout}\n{stderr}");
        let token = stdout.trim().to_owned();
        // "token <id> for tenant <tenant>: keep it now, ..."
        let id = stderr
            .lines()
            .find_map(|l| l.strip_prefix("token "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no token id in: {stderr}"))
            .to_owned();
        (token, id)
    }

    /// Runs `ftrove` and insists that it succeeds.
    pub fn ftrove_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.ftrove(args);
        assert!(
            ok,
            "ftrove {args:?} failed:\n{stdout}\n{stderr}\n{}",
            self.logs()
        );
        stdout
    }

    /// Runs `ftrove --json ...` and returns the object (an `{"instance": {...}}` wrapper is
    /// taken off).
    pub fn ftrove_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ftrove_ok(&all);
        let value: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("ftrove {args:?} printed no JSON ({e}):\n{stdout}"));
        match value.get("instance") {
            Some(inner) => inner.clone(),
            None => value,
        }
    }

    /// Waits until `ftrove show <name>` reports one of `statuses`; returns what it showed.
    pub fn wait_for_status(&self, name: &str, statuses: &[&str], within: Duration) -> Value {
        let mut last = Value::Null;
        let reached = eventually(within, || {
            last = self.ftrove_json(&["show", name]);
            statuses.iter().any(|s| last["status"] == *s)
        });
        assert!(
            reached,
            "{name} never reached {statuses:?}: {last}\n{}",
            self.logs()
        );
        last
    }

    /// The AMQP URL of this stack's vhost.
    pub fn bus_url(&self) -> String {
        self.broker.url()
    }

    /// The stack's own RabbitMQ node, when it was started on one.
    pub fn broker_node(&mut self) -> &mut RabbitNode {
        match &mut self.broker {
            Broker::Node(node) => node,
            Broker::Vhost(_) => panic!("this stack runs on a vhost of the machine's broker"),
        }
    }

    /// The signing key an instance's agent was given (its 0600 agent.toml): what the
    /// control plane signs that instance's messages with.
    pub fn signing_key(&self, id: &str) -> ferrotrove_bus::SigningKey {
        let text =
            std::fs::read_to_string(self.instance_dir(id).join("agent.toml")).expect("agent.toml");
        let secret = text
            .lines()
            .find_map(|l| l.strip_prefix("secret = "))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .expect("secret in agent.toml");
        ferrotrove_bus::SigningKey {
            key_id: id.parse().expect("an instance id"),
            secret: ferrotrove_proto::Secret::new(secret),
        }
    }

    /// Kills an instance's agent with SIGKILL (its database server keeps running) and
    /// waits until it is gone.
    pub fn kill_agent(&self, id: &str) {
        let pid: i32 = std::fs::read_to_string(self.instance_dir(id).join("agent.pid"))
            .expect("agent.pid")
            .trim()
            .parse()
            .expect("a pid");
        // SAFETY: killing a process this test's stack started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(
            eventually(Duration::from_secs(5), || !ferrotrove_tests::process_alive(
                pid
            )),
            "the agent did not die"
        );
    }

    /// Starts a second taskmanager on the same broker, control DB and state dir.
    pub fn start_second_taskmanager(&mut self) {
        let root = self._tmp.path().to_owned();
        let child =
            spawn_daemon_logging_to(&root, "taskmanager", "taskmanager-2", &self.taskmanager_env);
        self.daemons.push(("taskmanager-2".to_owned(), child));
    }

    /// Freezes (`true`: SIGSTOP) or thaws (`false`: SIGCONT) the taskmanager, so that tasks
    /// sent meanwhile wait in its queue.
    pub fn freeze_taskmanager(&self, frozen: bool) {
        let (_, child) = self
            .daemons
            .iter()
            .find(|(name, _)| name == "taskmanager")
            .expect("a taskmanager");
        let pid = i32::try_from(child.id()).expect("a pid");
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling a process this test's stack started.
        unsafe { libc::kill(pid, signal) };
    }

    /// Kills the taskmanager with SIGKILL (mid-task, as a crash would) and starts it again
    /// with the same config and environment.
    pub fn crash_and_restart_taskmanager(&mut self) {
        let (_, child) = self
            .daemons
            .iter_mut()
            .find(|(name, _)| name == "taskmanager")
            .expect("a taskmanager");
        let _ = child.kill();
        let _ = child.wait();
        let root = self._tmp.path().to_owned();
        *child = spawn_daemon(&root, "taskmanager", &self.taskmanager_env);
    }

    /// Starts an instance's agent again after [`Stack::kill_agent`], as its service
    /// manager would, logging to the same file.
    pub fn restart_agent(&self, id: &str) {
        let dir = self.instance_dir(id);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("agent.log"))
            .expect("agent.log");
        let mut agent = Command::new(binary("ftrove-agent"))
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the agent");
        std::fs::write(dir.join("agent.pid"), agent.id().to_string()).expect("agent.pid");
        // Stopped by its pid file, as the provisioner's agents are; reaped here when it ends.
        std::thread::spawn(move || {
            let _ = agent.wait();
        });
    }

    /// The broker URL an instance's agent was given (its 0600 agent.toml).
    pub fn agent_bus_url(&self, id: &str) -> String {
        let text =
            std::fs::read_to_string(self.instance_dir(id).join("agent.toml")).expect("agent.toml");
        text.lines()
            .find_map(|l| l.strip_prefix("url = "))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .expect("bus url in agent.toml")
    }

    /// Creates a source `name` with database `appdb` and user `app` (password `apppass`),
    /// waits until it is ACTIVE, and returns what `ftrove show` says of it.
    pub fn create_source(&self, name: &str) -> Value {
        self.ftrove_ok(&[
            "create",
            name,
            "7",
            "--size",
            "2",
            "--databases",
            "appdb",
            "--users",
            "app:apppass",
            "--wait",
        ]);
        self.ftrove_json(&["show", name])
    }

    /// [`Stack::create_source`] with rows 1 to `rows` in `appdb.t` (one INT column, `id`);
    /// returns the port the source listens on.
    pub fn create_source_with_rows(&self, name: &str, rows: u32) -> u16 {
        let source = self.create_source(name);
        let port = u16::try_from(source["port"].as_u64().expect("a port")).expect("a port");
        sql(
            port,
            "app",
            "apppass",
            &format!(
                "USE appdb; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_{rows}"
            ),
        )
        .expect("write the source's rows");
        port
    }

    /// A stack on a vhost of its own whose agents run [`slow_backup_tool`] (written into
    /// `tools`), with `env` added to the taskmanager's environment.
    pub fn with_slow_backup_tool(tools: &Path, env: &[(&str, &str)]) -> Stack {
        let tool = slow_backup_tool(tools);
        let mut all = vec![("FTROVE_AGENT__SERVER__BACKUP", tool.as_str())];
        all.extend_from_slice(env);
        Stack::start_with(Broker::Vhost(RabbitVhost::create()), &all)
    }

    /// The names of the files in the stack's snapshot store.
    pub fn stored_snapshots(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The directory of one instance under the local provisioner.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.state.join("instances").join(id)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop_daemons();
        kill_processes_under(&self.state);
        // Broker users outlive vhosts: remove those of instances a failed test left behind.
        for entry in std::fs::read_dir(self.state.join("instances"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(id) = entry.file_name().to_string_lossy().parse::<uuid::Uuid>() {
                let _ = ferrotrove_tests::rabbitmqctl(&[
                    "delete_user",
                    &format!("ftga-{}", id.simple()),
                ]);
            }
        }
    }
}

/// Starts `ftrove-<name>` with `<root>/<name>.toml`, appending to `<root>/<name>.log`.
fn spawn_daemon(root: &Path, name: &str, env: &[(String, String)]) -> Child {
    spawn_daemon_logging_to(root, name, name, env)
}

fn spawn_daemon_logging_to(root: &Path, name: &str, log: &str, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(format!("{log}.log")))
        .expect("log file");
    Command::new(binary(&format!("ftrove-{name}")))
        .arg("--config")
        .arg(root.join(format!("{name}.toml")))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start daemon")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Polls `check` every 200 ms until it returns true or `within` passes.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs SQL on an instance over TCP as `user`; returns stdout or the client's error.
pub fn sql(port: u16, user: &str, password: &str, statement: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            user,
        ])
        .arg(format!("-p{password}"))
        .args(["-N", "-B", "-e", statement])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A backup tool that does its work and then holds on while the file `hold-<phase>` beside
/// it exists (see [`hold`]): after `--backup` its stream stays open (the snapshot is still
/// being taken), after `--prepare` the restore is still running. Time to kill something in
/// the middle. Give it to agents through `FTROVE_AGENT__SERVER__BACKUP`.
pub fn slow_backup_tool(dir: &Path) -> String {
    let path = dir.join("slow-mariabackup");
    let script = format!(
        "#!/bin/sh\nmariabackup \"$@\"\nrc=$?\nfor phase in backup prepare; do\n  case \" $* \" in *\" --$phase \"*) while [ -e {dir}/hold-$phase ]; do sleep 0.2; done;; esac\ndone\nexit $rc\n",
        dir = dir.display()
    );
    std::fs::write(&path, script).expect("write the backup tool");
    set_mode(&path, 0o755);
    path.display().to_string()
}

/// Makes [`slow_backup_tool`] hold after `phase` (`backup` or `prepare`).
pub fn hold(dir: &Path, phase: &str) {
    std::fs::write(dir.join(format!("hold-{phase}")), "").expect("hold");
}

/// Lets [`slow_backup_tool`] go on after `phase`.
pub fn release(dir: &Path, phase: &str) {
    std::fs::remove_file(dir.join(format!("hold-{phase}"))).expect("release");
}

/// The agent log of an instance (empty until it exists).
pub fn agent_log(stack: &Stack, id: &str) -> String {
    std::fs::read_to_string(stack.instance_dir(id).join("agent.log")).unwrap_or_default()
}
