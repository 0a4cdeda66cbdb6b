//! The `local` provisioner: each instance is a directory under the state dir with its own
//! agent process, which runs its own MariaDB server on a port of its own.
//!
//! Layout: `<state_dir>/instances/<id>/{agent.toml, agent.log, agent.pid, <server files>}`
//! and `<state_dir>/snapshots/` shared by all agents as the snapshot store, unless
//! `[local.snapshot_s3]` gives them a bucket instead. Agents run in their own process
//! group, so stopping the taskmanager leaves instances serving.

use super::{Endpoint, ProvisionError, Provisioner, broker_users};
use crate::config::{LocalConfig, SnapshotS3Config, Timeouts};
use crate::guest::Guest;
use ferrotrove_bus::{Bus, BusConfig, TlsConfig};
use ferrotrove_proto::{Secret, queues};
use ferrotrove_store::Instance;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct LocalProvisioner {
    config: LocalConfig,
    /// Handed to agents in their config (they use the same broker and exchange).
    agent_bus: BusConfig,
    agent_binary: PathBuf,
    bus: Bus,
    timeouts: Timeouts,
}

/// The agent's config file as this provisioner writes it (see the agent's `config.rs`).
#[derive(Serialize, Deserialize)]
struct AgentToml {
    instance_id: Uuid,
    /// The instance's message-signing secret.
    secret: Secret,
    bus: AgentBus,
    server: AgentServer,
    snapshots: AgentSnapshots,
    heartbeat: AgentHeartbeat,
}

#[derive(Serialize, Deserialize)]
struct AgentBus {
    url: String,
    exchange: String,
    confined: bool,
    /// The control plane's CA and client certificate settings, for an `amqps://` broker
    /// (on one host the agents read the same files).
    #[serde(default, skip_serializing_if = "is_unset")]
    tls: TlsConfig,
}

fn is_unset(tls: &TlsConfig) -> bool {
    !tls.is_set()
}

#[derive(Serialize, Deserialize)]
struct AgentServer {
    base_dir: PathBuf,
    port: u16,
    bind_address: String,
    mysqld_user: String,
    max_buffer_pool_mb: u64,
}

#[derive(Serialize, Deserialize)]
struct AgentSnapshots {
    dir: PathBuf,
    /// `[snapshots.s3]`: the bucket that replaces `dir` as the store (its secret key is
    /// why the file is 0600 too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s3: Option<SnapshotS3Config>,
}

#[derive(Serialize, Deserialize)]
struct AgentHeartbeat {
    interval_secs: u64,
}

impl LocalProvisioner {
    pub fn new(
        config: LocalConfig,
        agent_bus: BusConfig,
        bus: Bus,
        timeouts: Timeouts,
    ) -> Result<Self, ProvisionError> {
        let agent_binary = match &config.agent_binary {
            Some(path) => path.clone(),
            None => default_agent_binary(),
        };
        for dir in [config.state_dir.clone(), config.state_dir.join("instances")] {
            create_dir(&dir, 0o755)?;
        }
        create_dir(&config.state_dir.join("snapshots"), 0o700)?;
        Ok(LocalProvisioner {
            config,
            agent_bus,
            agent_binary,
            bus,
            timeouts,
        })
    }

    fn instance_dir(&self, id: Uuid) -> PathBuf {
        self.config.state_dir.join("instances").join(id.to_string())
    }

    /// Writes the agent's config once; later calls read the port back from it.
    async fn agent_config(
        &self,
        id: Uuid,
        secret: &Secret,
        dir: &Path,
    ) -> Result<(PathBuf, u16), ProvisionError> {
        let path = dir.join("agent.toml");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let existing: AgentToml = toml::from_str(&text).map_err(|e| {
                ProvisionError::Other(format!("{} is damaged: {e}", path.display()))
            })?;
            return Ok((path, existing.server.port));
        }
        let port = free_port(&self.config.host)?;
        let bus = self.agent_bus(id).await?;
        let agent = AgentToml {
            instance_id: id,
            secret: secret.clone(),
            bus,
            server: AgentServer {
                base_dir: dir.to_owned(),
                port,
                bind_address: self.config.host.clone(),
                mysqld_user: self.config.mysqld_user.clone(),
                max_buffer_pool_mb: self.config.max_buffer_pool_mb,
            },
            snapshots: AgentSnapshots {
                dir: self.config.state_dir.join("snapshots"),
                s3: self.config.snapshot_s3.clone(),
            },
            heartbeat: AgentHeartbeat {
                interval_secs: self.config.heartbeat_interval_secs,
            },
        };
        let text = toml::to_string(&agent)
            .map_err(|e| ProvisionError::Other(format!("cannot write the agent config: {e}")))?;
        // Created 0600 from the first byte: it holds the broker credentials (and the S3
        // secret key).
        let tmp = dir.join("agent.toml.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok((path, port))
    }

    /// How the agent reaches the broker: with a user of its own that may only consume its
    /// queue (made here, beforehand) and report, or, with `broker_users` off, with the
    /// control plane's own credentials (a development set-up).
    async fn agent_bus(&self, id: Uuid) -> Result<AgentBus, ProvisionError> {
        let exchange = self.agent_bus.exchange.clone();
        if !self.config.broker_users {
            return Ok(AgentBus {
                url: self.agent_bus.url.clone(),
                exchange,
                confined: false,
                tls: self.agent_bus.tls.clone(),
            });
        }
        self.bus
            .declare_queue(&queues::guest(id))
            .await
            .map_err(|e| ProvisionError::Other(format!("cannot make the guest queue: {e}")))?;
        let vhost = broker_users::vhost_of(&self.agent_bus.url);
        let password = broker_users::create(&vhost, &exchange, id).await?;
        let url =
            broker_users::with_user(&self.agent_bus.url, &broker_users::user_name(id), &password);
        Ok(AgentBus {
            url,
            exchange,
            confined: true,
            tls: self.agent_bus.tls.clone(),
        })
    }

    fn spawn_agent(&self, dir: &Path, config: &Path) -> Result<u32, ProvisionError> {
        let log_path = dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let log2 = log.try_clone().map_err(io(&log_path))?;
        let child = tokio::process::Command::new(&self.agent_binary)
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|source| ProvisionError::Io {
                what: format!("cannot start {}", self.agent_binary.display()),
                source,
            })?;
        let pid = child
            .id()
            .ok_or_else(|| ProvisionError::Other("the agent exited at once".into()))?;
        std::fs::write(dir.join("agent.pid"), pid.to_string())
            .map_err(io(&dir.join("agent.pid")))?;
        // Dropping the handle neither kills nor leaks it: tokio reaps it when it exits.
        drop(child);
        Ok(pid)
    }

    async fn wait_for_agent(
        &self,
        id: Uuid,
        secret: &Secret,
        dir: &Path,
        pid: u32,
    ) -> Result<(), ProvisionError> {
        let guest = Guest::new(&self.bus, &self.timeouts, id, Some(secret.clone()));
        let deadline = Instant::now() + self.timeouts.agent_start();
        loop {
            match guest.ping(Duration::from_secs(2)).await {
                Ok(_) => return Ok(()),
                Err(error) => {
                    if !process_alive(pid) {
                        return Err(ProvisionError::AgentDidNotStart {
                            instance_id: id,
                            detail: format!(
                                "it exited; last lines of its log:\n{}",
                                tail(&dir.join("agent.log"), 10)
                            ),
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(ProvisionError::AgentDidNotStart {
                            instance_id: id,
                            detail: format!(
                                "no answer within {:?}: {error}",
                                self.timeouts.agent_start()
                            ),
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Provisioner for LocalProvisioner {
    async fn provision(
        &self,
        instance: &Instance,
        secret: &Secret,
    ) -> Result<Endpoint, ProvisionError> {
        let dir = self.instance_dir(instance.id);
        create_dir(&dir, 0o755)?;
        let (config, port) = self.agent_config(instance.id, secret, &dir).await?;
        let pid = match read_pid(&dir.join("agent.pid")).filter(|pid| process_alive(*pid)) {
            Some(pid) => pid,
            None => self.spawn_agent(&dir, &config)?,
        };
        self.wait_for_agent(instance.id, secret, &dir, pid).await?;
        tracing::info!(instance_id = %instance.id, port, pid, "agent running");
        Ok(Endpoint {
            host: self.config.host.clone(),
            port,
        })
    }

    async fn destroy(
        &self,
        instance_id: Uuid,
        secret: Option<Secret>,
    ) -> Result<(), ProvisionError> {
        let dir = self.instance_dir(instance_id);
        // Ask the agent to stop its server cleanly; whatever is left is killed below.
        if let Err(error) = Guest::new(&self.bus, &self.timeouts, instance_id, secret)
            .shutdown()
            .await
        {
            tracing::info!(%instance_id, %error, "agent did not take the shutdown command");
        }
        if dir.exists() {
            for pid_file in pid_files(&dir) {
                if let Some(pid) = read_pid(&pid_file) {
                    stop_process(pid, Duration::from_secs(20)).await;
                }
            }
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        if let Err(error) = self.bus.delete_queue(&queues::guest(instance_id)).await {
            tracing::warn!(%instance_id, %error, "could not delete the guest queue");
        }
        if self.config.broker_users {
            broker_users::delete(instance_id).await;
        }
        Ok(())
    }
}

/// `ftrove-agent` next to the running binary (how `cargo build` and packages lay them
/// out), else whatever `PATH` finds.
fn default_agent_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("ftrove-agent")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("ftrove-agent"))
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), ProvisionError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io(dir))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        what: path.display().to_string(),
        source,
    }
}

fn free_port(host: &str) -> Result<u16, ProvisionError> {
    std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ProvisionError::Io {
            what: format!("cannot find a free port on {host}"),
            source,
        })
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Every `*.pid` file in the instance directory and one level below (the agent's, the
/// database server's), so nothing the instance started outlives it.
fn pid_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        if let Ok(entries) = std::fs::read_dir(&d) {
            found.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pid")),
            );
        }
    }
    found
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence; a zombie (exited, not yet reaped) counts as gone.
    // SAFETY: kill with signal 0 sends nothing.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
async fn stop_process(pid: u32, grace: Duration) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if !process_alive(pid) {
        return;
    }
    // SAFETY: plain signal delivery to a pid we recorded.
    unsafe { libc::kill(raw, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while process_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if process_alive(pid) {
        tracing::warn!(pid, "process ignored SIGTERM; killing it");
        // SAFETY: as above.
        unsafe { libc::kill(raw, libc::SIGKILL) };
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_get_the_s3_snapshot_store_as_their_snapshots_s3() {
        let s3: SnapshotS3Config = toml::from_str(
            "endpoint = \"http://127.0.0.1:8080\"\nbucket = \"snaps\"\n\
             access_key_id = \"test:tester\"\nsecret_access_key = \"s3cr3t\"\n\
             allow_http = true\n",
        )
        .unwrap();
        let agent = |s3| AgentToml {
            instance_id: Uuid::nil(),
            secret: Secret::new("x"),
            bus: AgentBus {
                url: "amqp://127.0.0.1".into(),
                exchange: "ferrotrove".into(),
                confined: true,
                tls: TlsConfig::default(),
            },
            server: AgentServer {
                base_dir: "/i".into(),
                port: 3306,
                bind_address: "127.0.0.1".into(),
                mysqld_user: "mysql".into(),
                max_buffer_pool_mb: 256,
            },
            snapshots: AgentSnapshots {
                dir: "/s".into(),
                s3,
            },
            heartbeat: AgentHeartbeat { interval_secs: 5 },
        };
        let text = toml::to_string(&agent(Some(s3))).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let written = table["snapshots"]["s3"].as_table().expect("[snapshots.s3]");
        let mut keys: Vec<_> = written.keys().map(String::as_str).collect();
        keys.sort();
        // Exactly the keys of the agent's S3Settings, which refuses any other.
        assert_eq!(
            keys,
            [
                "access_key_id",
                "allow_http",
                "bucket",
                "endpoint",
                "part_size_mb",
                "prefix",
                "region",
                "secret_access_key"
            ]
        );
        assert_eq!(written["secret_access_key"].as_str(), Some("s3cr3t"));
        assert_eq!(written["part_size_mb"].as_integer(), Some(16));
        let back: AgentToml = toml::from_str(&text).unwrap();
        assert_eq!(back.snapshots.s3.unwrap().bucket, "snaps");

        // Without it, the agent's config has no [snapshots.s3] at all.
        let text = toml::to_string(&agent(None)).unwrap();
        assert!(!text.contains("s3"), "{text}");
    }
}
