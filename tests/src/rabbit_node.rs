//! A RabbitMQ node of a test's own: its own Erlang node name, ports and data directory, so
//! a test may stop and start it (a broker restart) or give it a TLS listener without
//! touching the machine's broker. Starting one takes about 6 s; it is stopped on drop.

use crate::{free_port, run, unique_suffix};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker's own start script and CLI, called directly so they run as root with this
/// node's environment (the `/usr/sbin` wrappers switch to the `rabbitmq` user).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A private RabbitMQ node on 127.0.0.1, user guest/guest, vhost `/`.
pub struct RabbitNode {
    dir: tempfile::TempDir,
    node: String,
    pub port: u16,
    dist_port: u16,
    /// The TLS listener's port, when started with [`RabbitNode::start_with_tls`].
    pub tls_port: Option<u16>,
    child: Option<Child>,
}

/// A certificate authority and a server certificate for `localhost` and 127.0.0.1 signed
/// by it, made with the `openssl` command in a directory of the test's.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    /// Makes a fresh CA and server certificate under `dir`.
    pub fn generate(dir: &Path) -> TestCa {
        let ca = TestCa {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };
        let p = |path: &Path| path.to_str().expect("utf-8 temp path").to_owned();
        let ca_key = p(&dir.join("ca.key"));
        let csr = p(&dir.join("server.csr"));
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extension file");
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args)).expect("openssl");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ferrotrove test CA",
            "-keyout",
            &ca_key,
            "-out",
            &p(&ca.ca_cert),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p(&ca.server_key),
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &p(&ca.ca_cert),
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&ca.server_cert),
        ]);
        ca
    }
}

impl RabbitNode {
    /// Starts a node with a plain AMQP listener and waits until it serves.
    pub fn start() -> RabbitNode {
        RabbitNode::start_inner(None)
    }

    /// Starts a node that also listens for AMQP over TLS with a certificate from `ca`.
    pub fn start_with_tls(ca: &TestCa) -> RabbitNode {
        RabbitNode::start_inner(Some(ca))
    }

    fn start_inner(tls: Option<&TestCa>) -> RabbitNode {
        let dir = tempfile::Builder::new()
            .prefix("ft-rabbit-")
            .tempdir()
            .expect("create a temp dir");
        let port = free_port();
        let dist_port = free_port();
        let tls_port = tls.map(|_| free_port());
        let mut conf = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\n\
             loopback_users = none\n\
             log.console = false\n"
        );
        if let (Some(ca), Some(tls_port)) = (tls, tls_port) {
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                ca.ca_cert.display(),
                ca.server_cert.display(),
                ca.server_key.display()
            ));
        }
        std::fs::write(dir.path().join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("write plugins");
        let mut node = RabbitNode {
            node: format!("ft-{}@localhost", unique_suffix()),
            dir,
            port,
            dist_port,
            tls_port,
            child: None,
        };
        node.boot();
        node
    }

    /// The AMQP URL of vhost `/` as guest.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQPS URL of vhost `/` as guest, naming the host as the certificate does.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("amqps://guest:guest@localhost:{port}/%2f"))
    }

    fn env(&self, cmd: &mut Command) {
        let d = self.dir.path();
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"));
    }

    /// Starts the node process (again, after [`RabbitNode::stop`]) and waits until the
    /// AMQP port answers. Queues and persistent messages from before are still there.
    pub fn boot(&mut self) {
        assert!(self.child.is_none(), "the node is already running");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.out"))
            .expect("open server.out");
        let err = out.try_clone().expect("clone server.out");
        let mut cmd = Command::new(SERVER);
        self.env(&mut cmd);
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        self.child = Some(cmd.spawn().expect("start rabbitmq-server"));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "RabbitMQ node {} did not listen within 60 s:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "RabbitMQ node {} exited with {status}:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ctl(&["await_startup", "--timeout", "60"])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
    }

    /// Stops the node the way an operator does (`rabbitmqctl stop`): connections close,
    /// durable queues and persistent messages stay on disk.
    pub fn stop(&mut self) {
        if let Err(e) = self.ctl(&["stop"]) {
            eprintln!("stopping {}: {e}", self.node);
        }
        self.reap();
    }

    /// Runs `rabbitmqctl -n <this node> <args>`.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(CTL);
        self.env(&mut cmd);
        run(cmd.arg("-q").arg("-n").arg(&self.node).args(args))
    }

    /// Waits for the node's process group to end, killing it after 10 s.
    fn reap(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if started.elapsed() > Duration::from_secs(10) => {
                    // SAFETY: signals our own child's process group.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // Helpers the VM started in the group (erl_child_setup, inet_gethost).
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["server.out", &format!("log/{}.log", self.node)] {
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(name)) {
                let mut all = String::new();
                let _ = f.read_to_string(&mut all);
                let tail: Vec<&str> = all.lines().rev().take(30).collect();
                text.push_str(&format!("--- {name}\n"));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // SAFETY: signals our own child's process group; the data goes with the dir.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        }
        self.reap();
    }
}
