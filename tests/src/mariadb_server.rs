//! A MariaDB server of a test's own: its own data directory (made by `mariadb-install-db`),
//! port and socket, so a test may stop it, start it again, or freeze it, without touching
//! the machine's server. Installing and starting one takes a few seconds; it is killed on
//! drop, and its directory removed.

use crate::{free_port, run};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private MariaDB server on 127.0.0.1; `root` logs in over TCP without a password.
pub struct MariadbServer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl MariadbServer {
    /// Makes a fresh data directory and starts the server on a free port.
    pub fn start() -> MariadbServer {
        let dir = tempfile::Builder::new()
            .prefix("ft-mariadb-")
            .tempdir()
            .expect("create a temp dir");
        let mut server = MariadbServer {
            dir,
            port: free_port(),
            child: None,
        };
        run(Command::new("mariadb-install-db").args([
            "--no-defaults",
            &format!("--datadir={}", server.data_dir().display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]))
        .expect("mariadb-install-db");
        server.boot();
        server
    }

    /// The URL for `StoreConfig::url`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after [`MariadbServer::stop`]) on the same port and data,
    /// and waits until it answers a query.
    pub fn boot(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.out"))
            .expect("open server.out");
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults".to_owned(),
                format!("--datadir={}", self.data_dir().display()),
                format!("--port={}", self.port),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--socket={}", d.join("mysqld.sock").display()),
                format!("--pid-file={}", d.join("mysqld.pid").display()),
                format!("--log-error={}", d.join("error.log").display()),
                "--user=root".to_owned(),
                "--skip-log-bin".to_owned(),
                "--innodb-buffer-pool-size=32M".to_owned(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone server.out"))
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.sql("SELECT 1").is_ok()
            {
                return;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("MariaDB did not serve within 60 s:\n{}", self.log_tail());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("mariadbd exited with {status}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server as an operator does (SIGTERM: a clean shutdown; its clients'
    /// connections are closed) and waits until it has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.wait();
    }

    /// Freezes the server (SIGSTOP): its port still accepts connections (the kernel
    /// does), but nothing answers on them, as with a hung server or a lost host.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server is running");
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }

    /// Runs one statement as root over TCP; returns its output (tab-separated, no
    /// headers) or the client's error.
    pub fn sql(&self, statement: &str) -> Result<String, String> {
        run(Command::new("mariadb").args([
            "--no-defaults",
            "--connect-timeout=5",
            "-h",
            "127.0.0.1",
            "-P",
            &self.port.to_string(),
            "-u",
            "root",
            "-N",
            "-B",
            "-e",
            statement,
        ]))
        .map(|out| out.trim().to_owned())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for MariadbServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen server would not die of SIGTERM; SIGKILL takes it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
