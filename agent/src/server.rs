//! Process-mode service control: the agent runs the database server as its own child.
//!
//! The server gets its own process group, so that it survives the agent being killed; a
//! restarted agent finds it through the pid file and adopts it (the pid must belong to a
//! live `mariadbd` started with this instance's `my.cnf`, so a recycled pid is not
//! mistaken for it). Its options live in `my.cnf`, rendered from `server.json`, so that a
//! restart keeps the server id, the buffer pool and the role.

use crate::config::ServerSection;
use crate::db::AdminConnector;
use crate::error::{AgentError, Result};
use crate::flavor::{Flavor, ServerOption, ServerOptionsInput, ServerSettings, Sql};
use crate::fsutil::{self, SystemUser};
use crate::paths::InstancePaths;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How often start and stop look at the server while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lines of the error log quoted when the server fails to start.
const ERROR_LOG_TAIL_LINES: usize = 12;

/// Starts, adopts and stops one instance's server.
pub struct ServerControl {
    config: ServerSection,
    paths: InstancePaths,
    flavor: &'static dyn Flavor,
    admin: AdminConnector,
    /// The server process when this agent started it (so it can be reaped); `None` for an
    /// adopted server, which is watched through /proc instead.
    child: Mutex<Option<Child>>,
}

impl ServerControl {
    pub fn new(
        config: ServerSection,
        paths: InstancePaths,
        flavor: &'static dyn Flavor,
        admin: AdminConnector,
    ) -> Self {
        ServerControl {
            config,
            paths,
            flavor,
            admin,
            child: Mutex::new(None),
        }
    }

    /// The system user to hand the server's files to, when the agent runs as root.
    pub(crate) fn run_as(&self) -> Result<Option<SystemUser>> {
        if fsutil::running_as_root() {
            fsutil::lookup_user(&self.config.mysqld_user).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Creates the base, data, run and tmp directories with the ownership the server needs.
    fn prepare_directories(&self) -> Result<()> {
        let owner = self.run_as()?;
        fsutil::create_dir_with_mode(&self.paths.base_dir, 0o755)?;
        for dir in [
            &self.paths.data_dir,
            &self.paths.run_dir,
            &self.paths.tmp_dir,
        ] {
            fsutil::create_dir_with_mode(dir, 0o750)?;
            if let Some(user) = owner {
                fsutil::chown(dir, user)?;
            }
        }
        Ok(())
    }

    /// Initialises the data dir unless it already holds the system schema.
    pub async fn init_data_dir(&self) -> Result<()> {
        self.prepare_directories()?;
        if self.paths.data_dir.join("mysql").is_dir() {
            tracing::info!(data_dir = %self.paths.data_dir.display(), "data dir already initialised");
            return Ok(());
        }
        let mut command = Command::new(&self.config.install_db);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.paths.data_dir.display()))
            .arg(format!("--tmpdir={}", self.paths.tmp_dir.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db");
        if self.run_as()?.is_some() {
            command.arg(format!("--user={}", self.config.mysqld_user));
        }
        let output =
            command
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|err| AgentError::Command {
                    program: self.config.install_db.clone(),
                    message: format!("cannot run it: {err}"),
                })?;
        if !output.status.success() {
            let text =
                String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
            return Err(AgentError::Command {
                program: self.config.install_db.clone(),
                message: format!(
                    "{}; last output: {}",
                    output.status,
                    last_lines(&text, ERROR_LOG_TAIL_LINES)
                ),
            });
        }
        tracing::info!(data_dir = %self.paths.data_dir.display(), "data dir initialised");
        Ok(())
    }

    /// The persisted settings, if Prepare has written them.
    pub fn load_settings(&self) -> Result<Option<ServerSettings>> {
        let path = &self.paths.settings;
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
                AgentError::Internal(format!("{} is not valid: {err}", path.display()))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(AgentError::io("read", path, err)),
        }
    }

    /// Persists `settings` and renders `my.cnf` from them. Takes effect at the next start;
    /// runtime changes (read_only) are made with SQL as well.
    pub fn save_settings(&self, settings: &ServerSettings) -> Result<()> {
        fsutil::create_dir_with_mode(&self.paths.base_dir, 0o755)?;
        let json = serde_json::to_vec_pretty(settings)
            .map_err(|err| AgentError::Internal(err.to_string()))?;
        fsutil::write_atomic(&self.paths.settings, &json, 0o644)?;
        let run_as = self.run_as()?.map(|_| self.config.mysqld_user.as_str());
        let options = self.flavor.server_options(&ServerOptionsInput {
            paths: &self.paths,
            port: self.config.port,
            bind_address: &self.config.bind_address,
            run_as,
            settings,
        });
        fsutil::write_atomic(
            &self.paths.my_cnf,
            render_option_file(&options).as_bytes(),
            0o644,
        )
    }

    /// Changes the persisted read_only setting (the caller also sets it at runtime).
    pub fn persist_read_only(&self, read_only: bool) -> Result<()> {
        let Some(mut settings) = self.load_settings()? else {
            return Err(AgentError::Conflict(
                "the server has no settings yet; run Prepare first".to_owned(),
            ));
        };
        if settings.read_only != read_only {
            settings.read_only = read_only;
            self.save_settings(&settings)?;
        }
        Ok(())
    }

    /// The pid of this instance's live server, if there is one.
    pub fn running_pid(&self) -> Option<i32> {
        self.reap_child();
        let text = fs::read_to_string(&self.paths.pid_file).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        (pid > 0 && is_our_server(pid, &self.paths.my_cnf)).then_some(pid)
    }

    /// Collects the exit status of a server this agent started, once it has exited, so it
    /// does not linger as a zombie.
    fn reap_child(&self) {
        let Ok(mut guard) = self.child.lock() else {
            return;
        };
        if let Some(child) = guard.as_mut()
            && !matches!(child.try_wait(), Ok(None))
        {
            *guard = None;
        }
    }

    /// Starts the server, or adopts it if it is already running; returns once it answers.
    pub async fn start(&self) -> Result<()> {
        self.start_with(None).await
    }

    /// Starts the server running `init_sql` before it accepts connections (mariadbd's
    /// `--init-file`), e.g. to give a data dir copied from another server this instance's
    /// admin password. The file is 0600 and removed once the server answers.
    pub async fn start_with_init_sql(&self, init_sql: &Sql) -> Result<()> {
        let path = self.paths.run_dir.join("init.sql");
        self.prepare_directories()?;
        fsutil::write_atomic(&path, format!("{};\n", init_sql.text()).as_bytes(), 0o600)?;
        if let Some(user) = self.run_as()? {
            fsutil::chown(&path, user)?;
        }
        let started = self.start_with(Some(&path)).await;
        fsutil::remove_if_exists(&path)?;
        started
    }

    async fn start_with(&self, init_file: Option<&Path>) -> Result<()> {
        if let Some(pid) = self.running_pid() {
            tracing::info!(pid, "server already running; adopting it");
            return self.wait_ready(pid).await;
        }
        if !self.paths.my_cnf.exists() {
            return Err(AgentError::Conflict(
                "the server has no configuration yet; run Prepare first".to_owned(),
            ));
        }
        self.prepare_directories()?;
        let log = self.open_error_log()?;
        let log_for_stderr = log
            .try_clone()
            .map_err(|err| AgentError::io("open", &self.paths.error_log, err))?;
        // A stale pid file would make the wait below watch the wrong process.
        fsutil::remove_if_exists(&self.paths.pid_file)?;
        let mut command = Command::new(&self.config.mariadbd);
        command
            .arg(format!("--defaults-file={}", self.paths.my_cnf.display()))
            .args(init_file.map(|path| format!("--init-file={}", path.display())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .process_group(0)
            .kill_on_drop(false);
        let child = command.spawn().map_err(|err| AgentError::Command {
            program: self.config.mariadbd.clone(),
            message: format!("cannot run it: {err}"),
        })?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0);
        tracing::info!(pid, "server started");
        if let Ok(mut guard) = self.child.lock() {
            *guard = Some(child);
        }
        self.wait_ready(pid).await
    }

    /// The error log, opened for appending, owned by the server's user (which reopens it).
    fn open_error_log(&self) -> Result<fs::File> {
        let path = &self.paths.error_log;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| AgentError::io("open", path, err))?;
        if let Some(user) = self.run_as()? {
            fsutil::chown(path, user)?;
        }
        Ok(file)
    }

    /// Waits until the server answers a login, it dies, or the start timeout passes.
    async fn wait_ready(&self, pid: i32) -> Result<()> {
        let timeout = Duration::from_secs(self.config.start_timeout_secs);
        let started = Instant::now();
        loop {
            if self.answers().await {
                tracing::info!(pid, elapsed = ?started.elapsed(), "server answers");
                return Ok(());
            }
            self.reap_child();
            if !process_alive(pid) {
                return Err(AgentError::Server(format!(
                    "the server exited while starting; last lines of {}:\n{}",
                    self.paths.error_log.display(),
                    self.error_log_tail()
                )));
            }
            if started.elapsed() > timeout {
                return Err(AgentError::Server(format!(
                    "the server (pid {pid}) did not answer within {timeout:?}; last lines of {}:\n{}",
                    self.paths.error_log.display(),
                    self.error_log_tail()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether the server answers on its socket. An "access denied" is an answer too: it
    /// is up, whatever the state of the admin login.
    pub async fn answers(&self) -> bool {
        match self.admin.connect().await {
            Ok(_session) => true,
            Err(AgentError::Database { .. }) => true,
            Err(_) => false,
        }
    }

    /// Stops the server gracefully (SIGTERM: InnoDB shuts down cleanly) and waits for the
    /// process to exit. A server that is not running is fine.
    pub async fn stop(&self) -> Result<()> {
        let Some(pid) = self.running_pid() else {
            tracing::info!("server not running; nothing to stop");
            return Ok(());
        };
        tracing::info!(pid, "stopping server");
        send_signal(pid, libc::SIGTERM)?;
        let timeout = Duration::from_secs(self.config.stop_timeout_secs);
        let started = Instant::now();
        loop {
            self.reap_child();
            if !process_alive(pid) {
                tracing::info!(pid, elapsed = ?started.elapsed(), "server stopped");
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(AgentError::Server(format!(
                    "the server (pid {pid}) did not exit within {timeout:?}"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The last lines of the server's error log, for error messages.
    pub fn error_log_tail(&self) -> String {
        match read_tail(&self.paths.error_log, 8 * 1024) {
            Ok(text) => last_lines(&text, ERROR_LOG_TAIL_LINES),
            Err(err) => format!("(cannot read the error log: {err})"),
        }
    }
}

/// Renders `[mysqld]` options as an option file.
pub fn render_option_file(options: &[ServerOption]) -> String {
    let mut text = String::from(
        "# Written by ftrove-agent from server.json; edits are overwritten.\n[mysqld]\n",
    );
    for option in options {
        match &option.value {
            Some(value) => text.push_str(&format!("{} = {}\n", option.name, value)),
            None => text.push_str(&format!("{}\n", option.name)),
        }
    }
    text
}

/// Sends `signal` to `pid`.
fn send_signal(pid: i32, signal: libc::c_int) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions; pid was checked to be our server.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(AgentError::Server(format!(
            "cannot signal the server (pid {pid}): {}",
            std::io::Error::last_os_error()
        )))
    }
}

/// Whether `pid` is a live process (a zombie counts as dead: it has exited).
pub fn process_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Whether `pid` is a live server started with `my_cnf` (guards against recycled pids).
fn is_our_server(pid: i32, my_cnf: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let expected = format!("--defaults-file={}", my_cnf.display());
    process_alive(pid)
        && cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == expected.as_bytes())
}

/// Up to `max_bytes` from the end of a file.
fn read_tail(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `n` non-empty lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_files_render_values_and_flags() {
        let options = [
            ServerOption {
                name: "port",
                value: Some("3311".into()),
            },
            ServerOption {
                name: "skip_name_resolve",
                value: None,
            },
        ];
        assert_eq!(
            render_option_file(&options),
            "# Written by ftrove-agent from server.json; edits are overwritten.\n[mysqld]\nport = 3311\nskip_name_resolve\n"
        );
    }

    #[test]
    fn liveness_reads_proc() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(i32::MAX));
    }

    #[test]
    fn last_lines_skips_blank_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("", 3), "");
    }
}
