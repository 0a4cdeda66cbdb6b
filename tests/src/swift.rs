//! A real S3-compatible object store for tests: OpenStack Swift with its s3api middleware
//! (Debian's packages), one instance per test on free ports, run by `deploy/dev/swift.sh`.
//!
//! Swift 2.30 has no conditional PUT: clients must use `S3ConditionalPut::Disabled`. The
//! bucket exists when `start` returns (object_store cannot create buckets).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{free_port, kill_processes_under, run, unique_suffix};

/// The bucket every instance has.
const BUCKET: &str = "ferrotrove-snapshots";

/// One `apt-get` at a time within this process (the script also takes a file lock).
static INSTALL: Mutex<()> = Mutex::new(());

/// A Swift instance of its own under a fresh directory in /tmp; on drop, every process it
/// started is stopped and the directory removed.
pub struct SwiftStore {
    base: PathBuf,
    proxy_port: u16,
}

impl SwiftStore {
    /// Installs Swift if missing, starts an instance and creates its bucket. Panics (with
    /// the script's message, which names the log) when it cannot.
    pub fn start() -> SwiftStore {
        ensure_installed();
        let mut last_error = String::new();
        // A port that was free a moment ago may be taken by the time a server binds it
        // (another test's instance): the script notices, and we try again with new ports.
        for _ in 0..3 {
            let base = PathBuf::from(format!("/tmp/ft-swift-{}", unique_suffix()));
            std::fs::create_dir_all(&base).expect("create the Swift instance directory");
            let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
            let store = SwiftStore {
                base,
                proxy_port: ports[0],
            };
            let mut cmd = Command::new(script());
            cmd.arg("up").arg(&store.base);
            cmd.args(ports.iter().map(u16::to_string));
            cmd.env("SWIFT_BUCKETS", BUCKET);
            match run(&mut cmd) {
                Ok(_) => return store,
                Err(e) => last_error = e, // the drop stops what started and removes the dir
            }
        }
        panic!("cannot start Swift: {last_error}");
    }

    /// The S3 endpoint (path-style).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// The bucket that exists from the start.
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// The S3 access key (fixed: these stores are for tests and development only).
    pub fn access_key(&self) -> &'static str {
        "test:tester"
    }

    /// The S3 secret key.
    pub fn secret_key(&self) -> &'static str {
        "testing"
    }

    /// The S3 region.
    pub fn region(&self) -> &'static str {
        "us-east-1"
    }

    /// The instance's directory (logs in `log/`).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The pids of the instance's processes (memcached and the four servers).
    pub fn pids(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(self.base.join("run")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

impl Drop for SwiftStore {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new(script()).arg("down").arg(&self.base)) {
            eprintln!("cleanup: {e}");
        }
        // Whatever `down` left (it removes the pid files of what it stopped).
        kill_processes_under(&self.base);
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            eprintln!("cleanup: cannot remove {}: {e}", self.base.display());
        }
    }
}

/// `deploy/dev/swift.sh` of this workspace.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev/swift.sh")
}

fn ensure_installed() {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| d.join("swift-proxy-server").is_file())
    });
    if !on_path {
        run(Command::new(script()).arg("install")).expect("install Swift");
    }
}
