//! Refusals of actions on instances that are busy: 422 in Trove's fault shape, saying what
//! the instance is busy with, which step its task reached and since when, all from the
//! [`Activity`] the store read (the instance's status, replicas in BUILD, task rows).
//!
//! What each action allows (the store decides, under locks):
//! - delete: refused while replicas are being seeded from the instance, or while a
//!   taskmanager works on it (creating it, seeding it, detaching it); allowed otherwise,
//!   also in BUILD or DETACH when no taskmanager holds its task (stuck), and in ERROR;
//! - detach: only an ACTIVE replica with a live server; asked again while it is in DETACH,
//!   it is accepted and resends the detach task under the id recorded with DETACH;
//! - create a replica: only from an ACTIVE source with a live server (also while other
//!   replicas are being seeded from it, as Trove allows).

use crate::fault::Fault;
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_store::{Activity, BusyWith, Instance};

/// What the client asked for, for the refusal's advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Delete,
    Detach,
    Replicate,
}

/// The 422 for `action` on `instance` while it is busy with `activity`.
pub fn busy(instance: &Instance, activity: &Activity, action: Action) -> Fault {
    Fault::unprocessable(format!(
        "Instance {} is busy: {} ({}); {}.",
        instance.id,
        what(&activity.busy_with),
        progress(activity),
        advice(&activity.busy_with, action)
    ))
}

/// The 422 for `action` (detach, replicate) on `instance`, which is busy with `activity`
/// or else not in a status that allows it (`status` as users see it, with its reason:
/// ERROR, SHUTDOWN, ...).
pub fn refusal(
    instance: &Instance,
    activity: Option<&Activity>,
    status: &str,
    action: Action,
) -> Fault {
    // Replicas being seeded from it do not stop an instance from being detached or
    // replicated from; only its own status does.
    if let Some(activity) =
        activity.filter(|a| !matches!(a.busy_with, BusyWith::SeedingReplicas { .. }))
    {
        return busy(instance, activity, action);
    }
    let verb = match action {
        Action::Delete => "deleted",
        Action::Detach => "detached",
        Action::Replicate => "replicated from",
    };
    let advice = if instance.status == InstanceStatus::Error {
        "It will not become ACTIVE by itself: delete it and create it again"
    } else {
        "Wait until it is ACTIVE"
    };
    Fault::unprocessable(format!(
        "Instance {} cannot be {verb} now: its status is {status}. {advice}.",
        instance.id
    ))
}

fn what(busy_with: &BusyWith) -> String {
    match busy_with {
        BusyWith::Creating => "being created".to_owned(),
        BusyWith::SeededFrom { source_name, .. } => format!("being seeded from {source_name}"),
        BusyWith::SeedingReplicas { replicas } => {
            const SHOWN: usize = 3;
            let mut names = replicas
                .iter()
                .take(SHOWN)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if replicas.len() > SHOWN {
                names += &format!(" and {} more", replicas.len() - SHOWN);
            }
            let plural = if replicas.len() == 1 { "" } else { "s" };
            format!("seeding replica{plural} {names}")
        }
        BusyWith::Detaching => "being detached from its source".to_owned(),
        BusyWith::Deleting => "being deleted".to_owned(),
        BusyWith::Status(status) => format!("in {status}"),
    }
}

fn progress(activity: &Activity) -> String {
    match &activity.task {
        Some(task) => {
            let step = if task.step.is_empty() {
                "starting".to_owned()
            } else {
                format!("step {}", task.step)
            };
            let held = if task.held {
                ""
            } else {
                "; its taskmanager stopped, and no other has taken it over yet"
            };
            format!("{step}, started {} ago{held}", ago(task.age_secs))
        }
        None => format!("waiting for a taskmanager for {}", ago(activity.since_secs)),
    }
}

fn advice(busy_with: &BusyWith, action: Action) -> &'static str {
    match (busy_with, action) {
        (BusyWith::SeedingReplicas { .. }, Action::Delete) => {
            "try again when the seeding has finished, after detaching or deleting the replicas"
        }
        (BusyWith::Deleting, _) => "it is going away",
        (BusyWith::Detaching, _) => "try again when the detach has finished",
        (_, Action::Delete) => "try again when it is ACTIVE or ERROR",
        (_, Action::Detach | Action::Replicate) => "try again when it is ACTIVE",
    }
}

/// `40 s`, `3 min 20 s`, `2 h 5 min`.
fn ago(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotrove_store::RunningTask;
    use uuid::Uuid;

    fn instance() -> Instance {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        Instance {
            id: Uuid::nil(),
            tenant_id: "t".into(),
            name: "m1".into(),
            flavor_id: "7".into(),
            volume_size: 2,
            datastore: "mariadb".into(),
            datastore_version: "10.11".into(),
            status: InstanceStatus::Active,
            fault: None,
            fault_at: None,
            replica_of: None,
            server_id: 1,
            host: None,
            port: None,
            created: now,
            updated: now,
            deleted_at: None,
        }
    }

    fn task(step: &str, age_secs: u64, held: bool) -> Option<RunningTask> {
        Some(RunningTask {
            id: Uuid::nil(),
            kind: "create_replicas".into(),
            step: step.into(),
            age_secs,
            held,
        })
    }

    #[test]
    fn messages_name_the_activity_its_step_and_its_age() {
        let seeding = Activity {
            busy_with: BusyWith::SeedingReplicas {
                replicas: vec!["s2".into()],
            },
            task: task("attach", 40, true),
            since_secs: 41,
        };
        let fault = busy(&instance(), &seeding, Action::Delete);
        assert_eq!(fault.status.as_u16(), 422);
        assert_eq!(
            fault.message,
            format!(
                "Instance {} is busy: seeding replica s2 (step attach, started 40 s ago); \
                 try again when the seeding has finished, after detaching or deleting the replicas.",
                Uuid::nil()
            )
        );
        let many = Activity {
            busy_with: BusyWith::SeedingReplicas {
                replicas: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            },
            task: None,
            since_secs: 200,
        };
        let message = busy(&instance(), &many, Action::Delete).message;
        assert!(
            message.contains(
                "seeding replicas a, b, c and 2 more (waiting for a taskmanager for 3 min 20 s)"
            ),
            "{message}"
        );
        let seeded = Activity {
            busy_with: BusyWith::SeededFrom {
                source_id: Uuid::nil(),
                source_name: "m1".into(),
            },
            task: task("", 7300, false),
            since_secs: 7300,
        };
        let message = busy(&instance(), &seeded, Action::Detach).message;
        assert!(
            message.contains(
                "being seeded from m1 (starting, started 2 h 1 min ago; its taskmanager stopped"
            ) && message.ends_with("try again when it is ACTIVE."),
            "{message}"
        );
        let mut failed = instance();
        failed.status = InstanceStatus::Error;
        let message = refusal(&failed, None, "ERROR", Action::Replicate).message;
        assert!(
            message.contains("cannot be replicated from now: its status is ERROR. It will not"),
            "{message}"
        );
    }
}
