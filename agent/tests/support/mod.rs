//! Test support: real MariaDB servers in temporary directories, on free ports, driven by the
//! agent's own modules, and stopped by a drop guard even when a test fails.

#![allow(dead_code)]

use ferrotrove_agent::{AgentConfig, Instance};
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::{PrepareRequest, UserSpec};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use uuid::Uuid;

/// The app user every test source gets.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-pw-1";
pub const APP_DB: &str = "shop";

/// A temporary directory the server's user can traverse (tempfile makes them 0700).
pub fn shared_tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ftrove-agent-test")
        .tempdir()
        .expect("create a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temp dir");
    dir
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// One agent-managed server. Dropping it stops the server.
pub struct TestServer {
    pub instance: Arc<Instance>,
    pub port: u16,
    /// A file system of its own mounted at the instance's directory (see
    /// [`TestServer::prepared_replica_on_tmpfs`]), unmounted on drop.
    mount: Option<PathBuf>,
    // Dropped last: the directory goes after the server has stopped.
    _dir: TempDir,
}

impl TestServer {
    /// An instance that is configured but not prepared.
    pub fn new(snapshot_dir: &Path) -> TestServer {
        TestServer::new_in(shared_tempdir(), snapshot_dir, None, "")
    }

    /// `snapshots` holds more `[snapshots]` settings, one `key = value` a line.
    fn new_in(
        dir: TempDir,
        snapshot_dir: &Path,
        mount: Option<PathBuf>,
        snapshots: &str,
    ) -> TestServer {
        let port = free_port();
        let toml = format!(
            r#"
            instance_id = "{id}"
            [bus]
            url = "amqp://guest:guest@127.0.0.1:5672/%2f"
            [server]
            base_dir = "{base}"
            port = {port}
            start_timeout_secs = 30
            stop_timeout_secs = 30
            [snapshots]
            dir = "{snapshot_dir}"
            {snapshots}
            "#,
            id = Uuid::now_v7(),
            base = dir.path().join("instance").display(),
            snapshot_dir = snapshot_dir.display(),
        );
        let config = AgentConfig::from_toml(&toml).expect("a valid test config");
        TestServer {
            instance: Arc::new(Instance::new(config).expect("instance")),
            port,
            mount,
            _dir: dir,
        }
    }

    /// A prepared source: database `shop`, user `app` with all privileges on it.
    pub async fn prepared_source(snapshot_dir: &Path, server_id: u32) -> TestServer {
        TestServer::prepared_source_with(snapshot_dir, server_id, "").await
    }

    /// [`TestServer::prepared_source`] with more `[snapshots]` settings (`key = value`
    /// lines).
    pub async fn prepared_source_with(
        snapshot_dir: &Path,
        server_id: u32,
        snapshots: &str,
    ) -> TestServer {
        let server = TestServer::new_in(shared_tempdir(), snapshot_dir, None, snapshots);
        let request = PrepareRequest {
            server_id,
            memory_mb: 128,
            databases: vec![APP_DB.into()],
            users: vec![UserSpec {
                name: APP_USER.into(),
                password: Secret::new(APP_PASSWORD),
                host: "%".into(),
                databases: vec![APP_DB.into()],
            }],
            read_only: false,
        };
        ferrotrove_agent::prepare::prepare(&server.instance, &request)
            .await
            .expect("prepare the source");
        server
    }

    /// A prepared, read-only, empty server: a replica to be.
    pub async fn prepared_replica(snapshot_dir: &Path, server_id: u32) -> TestServer {
        TestServer::new(snapshot_dir)
            .prepare_as_replica(server_id)
            .await
    }

    /// [`TestServer::prepared_replica`] with more `[snapshots]` settings (`key = value`
    /// lines).
    pub async fn prepared_replica_with(
        snapshot_dir: &Path,
        server_id: u32,
        snapshots: &str,
    ) -> TestServer {
        TestServer::new_in(shared_tempdir(), snapshot_dir, None, snapshots)
            .prepare_as_replica(server_id)
            .await
    }

    async fn prepare_as_replica(self, server_id: u32) -> TestServer {
        let request = PrepareRequest {
            server_id,
            memory_mb: 128,
            databases: vec![],
            users: vec![],
            read_only: true,
        };
        ferrotrove_agent::prepare::prepare(&self.instance, &request)
            .await
            .expect("prepare the replica");
        self
    }

    /// [`TestServer::prepared_replica`] on a tmpfs of its own, whose size
    /// [`TestServer::limit_disk`] can then shrink to what the instance uses.
    pub async fn prepared_replica_on_tmpfs(snapshot_dir: &Path, server_id: u32) -> TestServer {
        let dir = shared_tempdir();
        let mount = dir.path().join("instance");
        std::fs::create_dir_all(&mount).expect("mount point");
        run_command(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=1g,mode=0755",
                "tmpfs",
                &mount.display().to_string(),
            ],
        );
        TestServer::new_in(dir, snapshot_dir, Some(mount), "")
            .prepare_as_replica(server_id)
            .await
    }

    /// Shrinks the instance's tmpfs to what it uses now plus `spare_mb`.
    pub fn limit_disk(&self, spare_mb: u64) {
        let mount = self.mount.as_ref().expect("a server on its own tmpfs");
        let (free, total) = ferrotrove_agent::fsutil::space(mount).expect("statvfs");
        let size_mb = (total - free) / (1 << 20) + spare_mb;
        run_command(
            "mount",
            &[
                "-o",
                &format!("remount,size={size_mb}m"),
                &mount.display().to_string(),
            ],
        );
    }

    /// A TCP login (never the socket), as a client on another host would make.
    pub async fn tcp_login(&self, user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false);
        Conn::new(opts).await
    }

    pub async fn app(&self) -> Conn {
        self.tcp_login(APP_USER, APP_PASSWORD)
            .await
            .expect("log in as the app user")
    }

    /// An admin session through the agent's own login (client.cnf).
    pub async fn admin_query(&self, sql: &str) -> Vec<mysql_async::Row> {
        let opts = OptsBuilder::default()
            .socket(Some(self.instance.paths.socket.display().to_string()))
            .user(Some("root"))
            .pass(Some(self.admin_password().expose().to_owned()));
        let mut conn = Conn::new(opts)
            .await
            .expect("admin login with the password in client.cnf");
        conn.query(sql).await.expect("admin query")
    }

    pub fn admin_password(&self) -> Secret {
        ferrotrove_agent::credentials::read_client_cnf(&self.instance.paths.client_cnf)
            .expect("read client.cnf")
            .expect("client.cnf exists")
            .password
    }

    pub fn base_dir(&self) -> PathBuf {
        self.instance.paths.base_dir.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        stop_blocking(&self.instance.paths.pid_file);
        if let Some(mount) = &self.mount {
            run_command("umount", &["-l", &mount.display().to_string()]);
        }
    }
}

fn run_command(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

/// Stops the server named in `pid_file` and waits for it, without a runtime (Drop).
pub fn stop_blocking(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: plain kill(2); the pid is the test server's own.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while ferrotrove_agent::server::process_alive(pid)
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    if ferrotrove_agent::server::process_alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Rows of `shop.items` as seen by `conn`.
pub async fn item_ids(conn: &mut Conn) -> Vec<u32> {
    conn.query("SELECT id FROM shop.items ORDER BY id")
        .await
        .expect("read shop.items")
}
