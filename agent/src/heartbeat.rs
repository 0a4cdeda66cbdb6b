//! Heartbeats: every few seconds, the server's state and the host's resources, cast to the
//! conductor.
//!
//! `(boot_id, seq)` orders them: `boot_id` is drawn once when the agent starts (UUID v7, so
//! a later boot sorts higher) and `seq` counts from 1. The [`Reporter`] outlives bus
//! reconnections, so the sequence never restarts within a boot.

use crate::instance::Instance;
use crate::status;
use ferrotrove_bus::Bus;
use ferrotrove_proto::agent::{Progress, ServerStatus};
use ferrotrove_proto::conductor::{ConductorMessage, Heartbeat, HostStats};
use ferrotrove_proto::queues;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Builds this boot's heartbeats.
pub struct Reporter {
    instance_id: Uuid,
    boot_id: Uuid,
    last_seq: AtomicU64,
    sampler: Mutex<HostSampler>,
}

impl Reporter {
    /// A reporter for a new boot of the agent.
    pub fn new(instance_id: Uuid, data_dir: PathBuf) -> Reporter {
        Reporter {
            instance_id,
            boot_id: Uuid::now_v7(),
            last_seq: AtomicU64::new(0),
            sampler: Mutex::new(HostSampler::new(data_dir)),
        }
    }

    pub fn boot_id(&self) -> Uuid {
        self.boot_id
    }

    /// The next heartbeat, carrying `server`, the work in progress and a fresh host sample.
    pub fn next(&self, server: ServerStatus, progress: Option<Progress>) -> Heartbeat {
        let host = match self.sampler.lock() {
            Ok(mut sampler) => sampler.sample(),
            Err(_) => HostStats::default(),
        };
        Heartbeat {
            instance_id: self.instance_id,
            boot_id: self.boot_id,
            seq: self.last_seq.fetch_add(1, Ordering::SeqCst) + 1,
            server,
            host,
            progress,
        }
    }
}

/// Casts a heartbeat every `interval` until the task is dropped. A failed cast is logged and
/// the loop goes on: the next heartbeat supersedes it.
pub async fn run(reporter: &Reporter, instance: &Instance, bus: &Bus, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let heartbeat = reporter.next(status::read(instance).await, instance.progress.snapshot());
        let seq = heartbeat.seq;
        match bus
            .cast_transient(queues::CONDUCTOR, &ConductorMessage::Heartbeat(heartbeat))
            .await
        {
            Ok(()) => tracing::debug!(seq, "heartbeat sent"),
            Err(err) => tracing::warn!(seq, error = %err, "cannot send a heartbeat"),
        }
    }
}

/// Samples CPU, memory and the data dir's file system.
pub struct HostSampler {
    data_dir: PathBuf,
    system: Option<sysinfo::System>,
    disks: Option<sysinfo::Disks>,
}

impl HostSampler {
    pub fn new(data_dir: PathBuf) -> HostSampler {
        let system = sysinfo::System::new()
            .inspect_err(
                |err| tracing::warn!(error = %err, "cannot read CPU and memory; reporting zeros"),
            )
            .ok();
        let disks = sysinfo::Disks::new()
            .inspect_err(|err| tracing::warn!(error = %err, "cannot read disks; reporting zeros"))
            .ok();
        HostSampler {
            data_dir,
            system,
            disks,
        }
    }

    /// A fresh sample. CPU use is measured since the previous sample (0 the first time).
    pub fn sample(&mut self) -> HostStats {
        let mut stats = HostStats::default();
        if let Some(system) = &mut self.system {
            system.refresh_cpu_usage();
            system.refresh_memory();
            stats.cpu_percent = system.global_cpu_usage();
            stats.mem_used_bytes = system.used_memory();
            stats.mem_total_bytes = system.total_memory();
        }
        if let Some(disks) = &mut self.disks {
            disks.refresh(true);
            // Before Prepare the data dir may not exist; its path still names the disk.
            let data_dir = self
                .data_dir
                .canonicalize()
                .unwrap_or_else(|_| self.data_dir.clone());
            let mounts = disks
                .into_iter()
                .map(|d| (d.mount_point(), d.total_space(), d.available_space()));
            if let Some((_, total, available)) = disk_holding(mounts, &data_dir) {
                stats.disk_total_bytes = total;
                stats.disk_used_bytes = total.saturating_sub(available);
            }
        }
        stats
    }
}

/// Of `(mount point, total, available)` entries, the one whose mount point is the longest
/// prefix of `path`: the file system that holds it.
fn disk_holding<'a>(
    disks: impl Iterator<Item = (&'a Path, u64, u64)>,
    path: &Path,
) -> Option<(&'a Path, u64, u64)> {
    disks
        .filter(|(mount, _, _)| path.starts_with(mount))
        .max_by_key(|(mount, _, _)| mount.components().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_mount_prefix_holds_the_path() {
        let disks = [
            (Path::new("/"), 100, 50),
            (Path::new("/var"), 200, 20),
            (Path::new("/var/lib/ferrotrove"), 300, 30),
            (Path::new("/var/lib/ferro"), 400, 40),
        ];
        let found = disk_holding(disks.into_iter(), Path::new("/var/lib/ferrotrove/i1/data"));
        assert_eq!(found, Some((Path::new("/var/lib/ferrotrove"), 300, 30)));
        let found = disk_holding(disks.into_iter(), Path::new("/srv/x"));
        assert_eq!(found, Some((Path::new("/"), 100, 50)));
        assert_eq!(
            disk_holding(disks[1..].iter().copied(), Path::new("/srv")),
            None
        );
    }

    #[test]
    fn heartbeats_count_up_within_one_boot() {
        let reporter = Reporter::new(Uuid::nil(), std::env::temp_dir());
        let first = reporter.next(ServerStatus::default(), None);
        let second = reporter.next(ServerStatus::default(), None);
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(first.boot_id, second.boot_id);
        assert_eq!(first.boot_id, reporter.boot_id());
        assert!(second.host.mem_total_bytes > 0);
        assert!(second.host.disk_total_bytes > 0, "{:?}", second.host);
        assert!(Reporter::new(Uuid::nil(), std::env::temp_dir()).boot_id() > first.boot_id);
    }
}
