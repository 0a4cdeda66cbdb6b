//! What guests report to the conductor (`conductor` queue); all casts.

use crate::agent::{Progress, ServerStatus};
use crate::envelope::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ConductorMessage {
    Heartbeat(Heartbeat),
}

impl Method for ConductorMessage {
    fn name(&self) -> &'static str {
        match self {
            Self::Heartbeat(_) => "Heartbeat",
        }
    }
}

/// One periodic report of an agent.
///
/// `(boot_id, seq)` orders heartbeats: `boot_id` is a UUID v7 drawn when the agent starts
/// (so a later boot sorts higher), `seq` counts up from 1 within a boot. A heartbeat that
/// is not newer than the stored one is ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub instance_id: Uuid,
    pub boot_id: Uuid,
    pub seq: u64,
    pub server: ServerStatus,
    pub host: HostStats,
    /// The snapshot or restore running now, if any.
    #[serde(default)]
    pub progress: Option<Progress>,
}

/// The database host's resources, from sysinfo.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStats {
    /// CPU use over the last interval, 0-100 per core summed / cores.
    pub cpu_percent: f32,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    /// The file system holding the data directory.
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}
