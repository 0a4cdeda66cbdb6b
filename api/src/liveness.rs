//! What users see of an instance's state: the stored task-level status, corrected by what
//! the agent's heartbeats say.
//!
//! The stored status says what the control plane is doing; only the heartbeat says whether
//! the server is alive. An ACTIVE instance whose agent has stopped reporting, or which
//! reports its server down, is shown as SHUTDOWN (Trove's word), and actions that need a
//! live server (replicating from it, detaching it) are refused for it.
//!
//! Whether an agent has stopped reporting is read from the control DB, not computed here:
//! the conductor's periodic check marks an instance's heartbeat row `stale` once its last
//! heartbeat is older than the conductor's `heartbeats.expiry_secs`, and the next heartbeat
//! clears the mark. An instance without a heartbeat row has never reported.
//!
//! A heartbeat received before the stored status last changed describes the server as it
//! was during the previous step (a replica restoring its snapshot is briefly down): it shows
//! the agent alive, but not the state after the change. Until the first heartbeat after the
//! change arrives, the stored status stands.
//!
//! While an instance is being deleted, its status is shown as SHUTDOWN, as Trove shows it:
//! tools written for Trove (Terraform's provider among them) wait through ACTIVE and
//! SHUTDOWN for a deleted instance to disappear and fail on any other word.

use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_store::GuestLiveness;
use std::time::Duration;
use time::OffsetDateTime;

/// An instance's state as the API reports and acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// The status actions are judged by: the stored one, except ACTIVE without a live
    /// server becomes SHUTDOWN.
    pub status: InstanceStatus,
    /// Trove's `operating_status`: the database service's health.
    pub operating_status: &'static str,
    /// When the conductor has marked the last heartbeat stale (or there was none).
    pub stale: bool,
}

impl Liveness {
    /// `changed_at` is when the stored status last changed (the instance's `updated`).
    /// `_expiry` is not read any more: the heartbeat's freshness is the stored `stale` mark.
    /// It stays until the callers drop it.
    pub fn of(
        stored: InstanceStatus,
        changed_at: OffsetDateTime,
        guest: Option<&GuestLiveness>,
    ) -> Liveness {
        let fresh = guest.filter(|g| !g.stale);
        let server_up = fresh.is_some_and(|g| g.server_up || g.received_at < changed_at);
        let status = match stored {
            InstanceStatus::Active if !server_up => InstanceStatus::Shutdown,
            other => other,
        };
        let operating_status = match (fresh, stored) {
            (Some(_), _) if server_up => "HEALTHY",
            (Some(_), _) => "SHUTDOWN",
            (None, InstanceStatus::Build) => "BUILD",
            (None, InstanceStatus::Error) => "ERROR",
            (None, _) => "SHUTDOWN",
        };
        Liveness {
            status,
            operating_status,
            stale: fresh.is_none(),
        }
    }

    /// The `status` word shown to users.
    pub fn shown_status(&self) -> &'static str {
        match self.status {
            InstanceStatus::Deleting => InstanceStatus::Shutdown.as_str(),
            other => other.as_str(),
        }
    }

    /// Why an instance that should be ACTIVE is not, for error messages.
    pub fn explain(&self, expiry: Duration) -> String {
        match self.status {
            InstanceStatus::Shutdown if self.stale => {
                format!(
                    "SHUTDOWN (its agent has not reported for over {} s)",
                    expiry.as_secs()
                )
            }
            InstanceStatus::Shutdown => {
                "SHUTDOWN (its agent reports the database server down)".to_owned()
            }
            other => other.as_str().to_owned(),
        }
    }
}

/// A heartbeat row received `age_ms` ago, for tests; the conductor's check has marked it
/// stale when that is over 30 s.
#[cfg(test)]
pub(crate) fn test_guest(age_ms: u64, server_up: bool) -> GuestLiveness {
    GuestLiveness {
        instance_id: uuid::Uuid::nil(),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
        age_ms,
        server_up,
        progress: None,
        stale: age_ms > 30_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn guest(age_ms: u64, server_up: bool) -> GuestLiveness {
        test_guest(age_ms, server_up)
    }

    const EXPIRY: Duration = Duration::from_secs(30);

    #[test]
    fn active_needs_a_fresh_heartbeat_from_a_running_server() {
        let live = Liveness::of(
            InstanceStatus::Active,
            OffsetDateTime::UNIX_EPOCH,
            Some(&guest(1_000, true)),
        );
        assert_eq!(
            (live.shown_status(), live.operating_status),
            ("ACTIVE", "HEALTHY")
        );
        let stale = Liveness::of(
            InstanceStatus::Active,
            OffsetDateTime::UNIX_EPOCH,
            Some(&guest(31_000, true)),
        );
        assert_eq!(
            (stale.shown_status(), stale.operating_status),
            ("SHUTDOWN", "SHUTDOWN")
        );
        assert!(stale.explain(EXPIRY).contains("30 s"));
        let down = Liveness::of(
            InstanceStatus::Active,
            OffsetDateTime::UNIX_EPOCH,
            Some(&guest(1_000, false)),
        );
        assert_eq!(
            (down.shown_status(), down.operating_status),
            ("SHUTDOWN", "SHUTDOWN")
        );
        assert!(down.explain(EXPIRY).contains("down"));
        let never = Liveness::of(InstanceStatus::Active, OffsetDateTime::UNIX_EPOCH, None);
        assert_eq!(never.status, InstanceStatus::Shutdown);
    }

    #[test]
    fn a_heartbeat_from_before_the_last_change_does_not_count_against_it() {
        let changed_at = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(10);
        // Reported down while restoring, then the task made it ACTIVE: still ACTIVE.
        let before = Liveness::of(
            InstanceStatus::Active,
            changed_at,
            Some(&guest(1_000, false)),
        );
        assert_eq!(
            (before.shown_status(), before.operating_status),
            ("ACTIVE", "HEALTHY")
        );
        // A down report after the change counts.
        let mut after = guest(1_000, false);
        after.received_at = changed_at + time::Duration::seconds(1);
        let after = Liveness::of(InstanceStatus::Active, changed_at, Some(&after));
        assert_eq!(after.shown_status(), "SHUTDOWN");
        // Silence is never excused.
        let stale = Liveness::of(
            InstanceStatus::Active,
            changed_at,
            Some(&guest(31_000, false)),
        );
        assert_eq!(stale.shown_status(), "SHUTDOWN");
    }

    #[test]
    fn task_statuses_show_as_stored() {
        let build = Liveness::of(InstanceStatus::Build, OffsetDateTime::UNIX_EPOCH, None);
        assert_eq!(
            (build.shown_status(), build.operating_status),
            ("BUILD", "BUILD")
        );
        let error = Liveness::of(InstanceStatus::Error, OffsetDateTime::UNIX_EPOCH, None);
        assert_eq!(
            (error.shown_status(), error.operating_status),
            ("ERROR", "ERROR")
        );
        let detach = Liveness::of(
            InstanceStatus::Detach,
            OffsetDateTime::UNIX_EPOCH,
            Some(&guest(0, true)),
        );
        assert_eq!(
            (detach.shown_status(), detach.operating_status),
            ("DETACH", "HEALTHY")
        );
        let deleting = Liveness::of(
            InstanceStatus::Deleting,
            OffsetDateTime::UNIX_EPOCH,
            Some(&guest(0, true)),
        );
        assert_eq!(deleting.shown_status(), "SHUTDOWN");
    }

    #[test]
    fn freshness_is_the_stored_mark_not_the_age() {
        // Old but not marked (the check has not run yet): still ACTIVE and HEALTHY.
        let mut unmarked = guest(10 * 60_000, true);
        unmarked.stale = false;
        let live = Liveness::of(
            InstanceStatus::Active,
            OffsetDateTime::UNIX_EPOCH,
            Some(&unmarked),
        );
        assert_eq!(
            (live.shown_status(), live.operating_status, live.stale),
            ("ACTIVE", "HEALTHY", false)
        );
        // Marked stale, however recent: SHUTDOWN.
        let mut marked = guest(0, true);
        marked.stale = true;
        let stale = Liveness::of(
            InstanceStatus::Active,
            OffsetDateTime::UNIX_EPOCH,
            Some(&marked),
        );
        assert_eq!(
            (stale.shown_status(), stale.operating_status, stale.stale),
            ("SHUTDOWN", "SHUTDOWN", true)
        );
        // Heartbeats resumed: the conductor cleared the mark.
        marked.stale = false;
        let resumed = Liveness::of(
            InstanceStatus::Active,
            OffsetDateTime::UNIX_EPOCH,
            Some(&marked),
        );
        assert_eq!(
            (resumed.shown_status(), resumed.operating_status),
            ("ACTIVE", "HEALTHY")
        );
    }

    #[test]
    fn marked_build_and_error_instances_keep_their_status() {
        let mut marked = guest(0, true);
        marked.stale = true;
        for (stored, word) in [
            (InstanceStatus::Build, "BUILD"),
            (InstanceStatus::Error, "ERROR"),
        ] {
            let live = Liveness::of(stored, OffsetDateTime::UNIX_EPOCH, Some(&marked));
            assert_eq!((live.shown_status(), live.operating_status), (word, word));
            // While reporting, their database's health shows, their status stays.
            let mut fresh = marked.clone();
            fresh.stale = false;
            let live = Liveness::of(stored, OffsetDateTime::UNIX_EPOCH, Some(&fresh));
            assert_eq!(
                (live.shown_status(), live.operating_status),
                (word, "HEALTHY")
            );
        }
    }
}
