//! Where an instance's files live, all under one base directory.
//!
//! ```text
//! base_dir/               root, 0755: the server's user must traverse it, not write it
//!   my.cnf                server options, rendered from server.json
//!   server.json           the server's settings (server_id, buffer pool, read_only)
//!   client.cnf            root, 0600: the admin password; how the agent and tools log in
//!   prepared              marker: Prepare finished; the agent starts the server on boot
//!   data/                 owned by the server's user: the data dir
//!   run/                  owned by the server's user: socket, pid file, error log
//!   tmp/                  owned by the server's user: the server's tmpdir
//! ```
//! The socket, pid file and error log live in `run/` because the server writes them after
//! dropping root, and the base dir must stay unwritable for it (it holds client.cnf).
//! Each instance has its own tmpdir because a starting server deletes every `#sql*` file in
//! its tmpdir: in a shared /tmp it would delete the temporary tables of its neighbours (seen
//! here as concurrent `mariadb-install-db` runs failing with "Unknown table").

use std::path::{Path, PathBuf};

/// The files and directories of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstancePaths {
    pub base_dir: PathBuf,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    pub error_log: PathBuf,
    pub my_cnf: PathBuf,
    pub client_cnf: PathBuf,
    pub settings: PathBuf,
    pub prepared_marker: PathBuf,
    /// Results of finished commands, one file each, so a redelivered command is answered
    /// with its first result even after the agent restarts.
    pub operations_dir: PathBuf,
}

impl InstancePaths {
    pub fn new(base_dir: &Path) -> InstancePaths {
        let run_dir = base_dir.join("run");
        InstancePaths {
            base_dir: base_dir.to_owned(),
            data_dir: base_dir.join("data"),
            socket: run_dir.join("mysqld.sock"),
            pid_file: run_dir.join("mysqld.pid"),
            error_log: run_dir.join("error.log"),
            run_dir,
            tmp_dir: base_dir.join("tmp"),
            my_cnf: base_dir.join("my.cnf"),
            client_cnf: base_dir.join("client.cnf"),
            settings: base_dir.join("server.json"),
            prepared_marker: base_dir.join("prepared"),
            operations_dir: base_dir.join("operations"),
        }
    }

    /// Whether Prepare has finished on this instance.
    pub fn is_prepared(&self) -> bool {
        self.prepared_marker.exists()
    }
}
