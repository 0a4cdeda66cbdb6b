//! `--wait`: poll instances until the work is done, printing each status change on stderr
//! (`m1: BUILD -> ACTIVE`). Success and failure are decided by [`judge`], a pure function
//! of the goal, the previous status and the instance now.
//!
//! A brief network failure while polling (an API restart) is reported and retried until the
//! timeout; an API fault other than the expected 404 ends the wait.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::args::WaitArgs;
use crate::client::{self, Client};
use crate::resolve;
use crate::view;

/// What the wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// ACTIVE (create).
    Active,
    /// ACTIVE and no longer a replica (detach-replica).
    Detached,
    /// Gone: GET gives 404 (delete).
    Gone,
}

impl Goal {
    fn describe(self) -> &'static str {
        match self {
            Goal::Active => "to become ACTIVE",
            Goal::Detached => "to be detached and ACTIVE",
            Goal::Gone => "to be deleted",
        }
    }
}

/// The verdict on one poll.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Done,
    Pending,
    /// Failed, with the reason.
    Failed(String),
}

/// Judges an instance seen while waiting. `before` is the status seen at the previous poll
/// (or before the request, for delete): deleting an instance that was already in ERROR is
/// expected to show ERROR until it is gone, so only a change into ERROR fails a delete.
pub fn judge(goal: Goal, before: Option<&str>, instance: Option<&Value>) -> Verdict {
    let Some(instance) = instance else {
        return match goal {
            Goal::Gone => Verdict::Done,
            _ => Verdict::Failed("it disappeared (HTTP 404)".into()),
        };
    };
    let status = view::status(instance);
    if status == "ERROR" {
        let already = goal == Goal::Gone && before == Some("ERROR");
        if !already {
            let reason = view::fault_message(instance)
                .unwrap_or_else(|| "no fault message given; see `ftrove show`".into());
            return Verdict::Failed(format!("it went to ERROR: {reason}"));
        }
    }
    match goal {
        Goal::Active if status == "ACTIVE" => Verdict::Done,
        Goal::Detached if status == "ACTIVE" && view::replica_of(instance).is_none() => {
            Verdict::Done
        }
        _ => Verdict::Pending,
    }
}

/// One instance being followed.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    /// How progress lines name it (its name).
    pub label: String,
    /// Its status before the wait began, if known.
    pub status: Option<String>,
}

impl Target {
    pub fn of(instance: &Value) -> Target {
        Target {
            id: view::id_of(instance),
            label: view::label(instance),
            status: Some(view::status(instance)).filter(|s| !s.is_empty()),
        }
    }
}

/// Polls every target until each reaches `goal`; returns the last detail view of each
/// (None for deleted ones), in `targets` order. Fails on the first failed target.
pub fn wait(
    client: &Client,
    targets: &[Target],
    goal: Goal,
    opts: &WaitArgs,
) -> anyhow::Result<Vec<Option<Value>>> {
    let started = Instant::now();
    let timeout = Duration::from_secs(opts.wait_timeout);
    let interval = Duration::from_millis(opts.poll_interval_ms.max(1));
    let mut seen: HashMap<String, Option<String>> = targets
        .iter()
        .map(|t| (t.id.clone(), t.status.clone()))
        .collect();
    let mut finished: HashMap<String, Option<Value>> = HashMap::new();
    let mut unreachable_reported = false;

    loop {
        for target in targets {
            if finished.contains_key(&target.id) {
                continue;
            }
            let current = match client.get(&["instances", &target.id]) {
                Ok(body) => Some(resolve::unwrap_instance(body, &target.label)?),
                Err(err) if err.is_status(404) => None,
                Err(
                    err @ (client::Error::Unreachable { .. }
                    | client::Error::Timeout { .. }
                    | client::Error::Transport { .. }),
                ) => {
                    if !unreachable_reported {
                        eprintln!("ftrove: {err}; retrying");
                        unreachable_reported = true;
                    }
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            unreachable_reported = false;

            let before = seen.get(&target.id).cloned().flatten();
            let now = match &current {
                Some(instance) => view::status(instance),
                None => "gone".to_owned(),
            };
            if before.as_deref() != Some(now.as_str()) {
                match &before {
                    Some(before) => eprintln!("{}: {before} -> {now}", target.label),
                    None => eprintln!("{}: {now}", target.label),
                }
            }
            match judge(goal, before.as_deref(), current.as_ref()) {
                Verdict::Done => {
                    finished.insert(target.id.clone(), current);
                }
                Verdict::Pending => {}
                Verdict::Failed(reason) => {
                    bail!("{} ({}): {reason}", target.label, target.id)
                }
            }
            seen.insert(target.id.clone(), Some(now));
        }

        if finished.len() == targets.len() {
            return Ok(targets
                .iter()
                .map(|t| finished.remove(&t.id).flatten())
                .collect());
        }
        if started.elapsed() >= timeout {
            let pending: Vec<&Target> = targets
                .iter()
                .filter(|t| !finished.contains_key(&t.id))
                .collect();
            let names: Vec<&str> = pending.iter().map(|t| t.label.as_str()).collect();
            let statuses: Vec<String> = pending
                .iter()
                .map(|t| {
                    let status = seen.get(&t.id).cloned().flatten();
                    format!("{} is {}", t.label, status.as_deref().unwrap_or("unknown"))
                })
                .collect();
            bail!(
                "timed out after {} s waiting for {} {} ({}); it may still finish: see `ftrove list`",
                opts.wait_timeout,
                names.join(", "),
                goal.describe(),
                statuses.join(", ")
            );
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_waits_for_active_and_fails_on_error() {
        assert_eq!(
            judge(Goal::Active, None, Some(&json!({"status": "BUILD"}))),
            Verdict::Pending
        );
        assert_eq!(
            judge(
                Goal::Active,
                Some("BUILD"),
                Some(&json!({"status": "ACTIVE"}))
            ),
            Verdict::Done
        );
        assert_eq!(
            judge(
                Goal::Active,
                Some("BUILD"),
                Some(&json!({"status": "ERROR", "fault": {"message": "no space"}}))
            ),
            Verdict::Failed("it went to ERROR: no space".into())
        );
        assert!(matches!(
            judge(Goal::Active, None, None),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn detach_waits_until_not_a_replica() {
        let still = json!({"status": "ACTIVE", "replica_of": {"id": "m"}});
        assert_eq!(judge(Goal::Detached, None, Some(&still)), Verdict::Pending);
        assert_eq!(
            judge(Goal::Detached, None, Some(&json!({"status": "DETACH"}))),
            Verdict::Pending
        );
        assert_eq!(
            judge(Goal::Detached, None, Some(&json!({"status": "ACTIVE"}))),
            Verdict::Done
        );
    }

    #[test]
    fn delete_waits_for_404_and_tolerates_an_old_error() {
        assert_eq!(judge(Goal::Gone, Some("ACTIVE"), None), Verdict::Done);
        let err = json!({"status": "ERROR"});
        assert_eq!(
            judge(Goal::Gone, Some("ERROR"), Some(&err)),
            Verdict::Pending
        );
        assert!(matches!(
            judge(Goal::Gone, Some("DELETING"), Some(&err)),
            Verdict::Failed(_)
        ));
    }
}
