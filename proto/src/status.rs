//! Status words shared by the agent, the control DB and the API.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An instance's status as users see it, in Trove's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Being created (provisioned, prepared, seeded, attached).
    Build,
    /// Serving.
    Active,
    /// A step failed; the instance's fault says why.
    Error,
    /// The agent stopped reporting, or reports its server down.
    Shutdown,
    /// Being detached from its replication source.
    Detach,
    /// Being promoted to replication source.
    Promote,
    /// Its source is being ejected.
    Eject,
    /// A snapshot or backup of it is being taken.
    Backup,
    /// Being deleted.
    Deleting,
    /// Gone; kept only as a record.
    Deleted,
}

impl InstanceStatus {
    pub const ALL: [InstanceStatus; 10] = [
        Self::Build,
        Self::Active,
        Self::Error,
        Self::Shutdown,
        Self::Detach,
        Self::Promote,
        Self::Eject,
        Self::Backup,
        Self::Deleting,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "BUILD",
            Self::Active => "ACTIVE",
            Self::Error => "ERROR",
            Self::Shutdown => "SHUTDOWN",
            Self::Detach => "DETACH",
            Self::Promote => "PROMOTE",
            Self::Eject => "EJECT",
            Self::Backup => "BACKUP",
            Self::Deleting => "DELETING",
            Self::Deleted => "DELETED",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status word that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown instance status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for InstanceStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The replication role of a database server, as its agent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not replicating from anyone (it may have replicas).
    Standalone,
    /// Configured to replicate from a source.
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Replica => "replica",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_round_trip() {
        for st in InstanceStatus::ALL {
            assert_eq!(st.as_str().parse::<InstanceStatus>().unwrap(), st);
        }
        assert!("active".parse::<InstanceStatus>().is_err());
    }
}
