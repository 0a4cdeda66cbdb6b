//! `--wait`: poll instances until the work is done, printing each status change on stderr
//! (`m1: BUILD -> ACTIVE`). Success and failure are decided by [`judge`], a pure function
//! of the goal, the previous status and the instance now.
//!
//! A brief network failure while polling (an API restart) is reported and retried until the
//! timeout; an API fault other than the expected 404 ends the wait.
//!
//! While an instance reports `progress` (its seeding snapshot or restore), a progress bar on
//! stderr shows it, when someone watches: stdout and stderr both terminals. Otherwise (a
//! pipe, `--json` into a file, tests) the output is the status lines alone.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
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
    let mut bars = Bars::new(std::io::stdout().is_terminal() && std::io::stderr().is_terminal());

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
                        bars.say(&format!("ftrove: {err}; retrying"));
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
            let verdict = judge(goal, before.as_deref(), current.as_ref());
            let progress = match verdict {
                Verdict::Pending => current.as_ref().and_then(view::progress),
                Verdict::Done | Verdict::Failed(_) => None,
            };
            bars.show(target, progress.as_ref());
            if before.as_deref() != Some(now.as_str()) {
                match &before {
                    Some(before) => bars.say(&format!("{}: {before} -> {now}", target.label)),
                    None => bars.say(&format!("{}: {now}", target.label)),
                }
            }
            match verdict {
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

/// The progress bars of the targets reporting progress, drawn on stderr; none at all when
/// disabled. Dropping them clears them.
struct Bars {
    /// Present when enabled.
    multi: Option<MultiProgress>,
    shown: HashMap<String, Bar>,
}

/// One target's bar and the API's figures its rate and eta are drawn from (the API knows
/// when the operation started; the bar only sees it from the first poll).
struct Bar {
    bar: ProgressBar,
    figures: Arc<Mutex<view::Progress>>,
    /// Whether it is drawn with a total (a bar) or without (a spinner).
    with_total: bool,
}

impl Bars {
    fn new(enabled: bool) -> Bars {
        Bars {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            shown: HashMap::new(),
        }
    }

    /// Prints a status line on stderr, above the bars.
    fn say(&self, line: &str) {
        match &self.multi {
            Some(multi) => multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Shows `progress` as the target's bar, or removes its bar when there is none.
    fn show(&mut self, target: &Target, progress: Option<&view::Progress>) {
        let Some(multi) = &self.multi else {
            return;
        };
        let Some(progress) = progress else {
            if let Some(gone) = self.shown.remove(&target.id) {
                gone.bar.finish_and_clear();
                multi.remove(&gone.bar);
            }
            return;
        };
        let with_total = progress.bytes_total.is_some();
        let shown = self.shown.entry(target.id.clone()).or_insert_with(|| {
            let figures = Arc::new(Mutex::new(progress.clone()));
            // Drawn nowhere until added, so it first shows complete.
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
                .with_style(bar_style(with_total, &figures));
            update(&bar, &target.label, progress);
            let bar = multi.add(bar);
            // Redraws a moment after each poll's changes, however quickly they came.
            bar.enable_steady_tick(TICK);
            Bar {
                bar,
                figures,
                with_total,
            }
        });
        *shown.figures.lock().unwrap_or_else(PoisonError::into_inner) = progress.clone();
        if shown.with_total != with_total {
            shown.with_total = with_total;
            shown.bar.set_style(bar_style(with_total, &shown.figures));
        }
        update(&shown.bar, &target.label, progress);
    }
}

/// How often bars are redrawn.
const TICK: Duration = Duration::from_millis(120);

/// Sets a bar to `progress`.
fn update(bar: &ProgressBar, label: &str, progress: &view::Progress) {
    match progress.bytes_total {
        Some(total) => bar.set_length(total),
        None => bar.unset_length(),
    }
    bar.set_prefix(format!("{label} {}", progress.operation));
    bar.set_message(progress.stage.clone());
    bar.set_position(progress.bytes_done);
}

impl Drop for Bars {
    fn drop(&mut self) {
        for (_, shown) in self.shown.drain() {
            shown.bar.finish_and_clear();
        }
    }
}

/// `s1 restore copying [=====>    ] 1.2 GiB/2.0 GiB 310 MiB/s, 3 s left`, or without a
/// total `s1 snapshot dumping ⠁ 1.2 GiB 20 MiB/s`.
fn bar_style(with_total: bool, figures: &Arc<Mutex<view::Progress>>) -> ProgressStyle {
    let template = if with_total {
        "{prefix} {msg} [{wide_bar:.cyan/blue}] {bytes_pair} {rate_eta}"
    } else {
        "{prefix} {msg} {spinner} {bytes_pair} {rate_eta}"
    };
    let (pair, rate_eta) = (Arc::clone(figures), Arc::clone(figures));
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
        .with_key(
            "bytes_pair",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let p = pair.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = write!(w, "{}", view::bytes(p.bytes_done));
                if let Some(total) = p.bytes_total {
                    let _ = write!(w, "/{}", view::bytes(total));
                }
            },
        )
        .with_key(
            "rate_eta",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let p = rate_eta.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = write!(w, "{}", rate_and_eta(&p));
            },
        )
}

/// `310 MiB/s, 3 s left`, with what the API knows of the two.
fn rate_and_eta(progress: &view::Progress) -> String {
    let rate = progress
        .rate_bytes_per_sec
        .map(|r| format!("{}/s", view::bytes(r)));
    let eta = progress
        .eta_seconds
        .map(|s| format!("{} left", view::duration(s)));
    [rate, eta]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
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

    #[test]
    fn bar_figures_come_from_the_api() {
        let mut progress = view::Progress {
            operation: "restore".into(),
            stage: "copying".into(),
            bytes_done: 1,
            bytes_total: None,
            percent: None,
            rate_bytes_per_sec: Some(310 << 20),
            eta_seconds: Some(3),
        };
        assert_eq!(rate_and_eta(&progress), "310 MiB/s, 3 s left");
        progress.eta_seconds = None;
        assert_eq!(rate_and_eta(&progress), "310 MiB/s");
        progress.rate_bytes_per_sec = None;
        assert_eq!(rate_and_eta(&progress), "");
    }

    #[test]
    fn disabled_bars_draw_nothing() {
        let mut bars = Bars::new(false);
        let target = Target {
            id: "r-1".into(),
            label: "r1".into(),
            status: None,
        };
        let instance =
            json!({"progress": {"operation": "restore", "stage": "copying", "bytes_done": 1}});
        bars.show(&target, view::progress(&instance).as_ref());
        assert!(bars.shown.is_empty());
    }

    #[test]
    fn bars_follow_the_reports() {
        let mut bars = Bars {
            multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::hidden())),
            shown: HashMap::new(),
        };
        let target = Target {
            id: "r-1".into(),
            label: "r1".into(),
            status: None,
        };
        let snapshot =
            json!({"progress": {"operation": "snapshot", "stage": "dumping", "bytes_done": 7}});
        bars.show(&target, view::progress(&snapshot).as_ref());
        let shown = &bars.shown["r-1"];
        assert_eq!((shown.with_total, shown.bar.position()), (false, 7));
        assert_eq!(shown.bar.prefix(), "r1 snapshot");
        let restore = json!({"progress": {"operation": "restore", "stage": "copying",
                                          "bytes_done": 3, "bytes_total": 10}});
        bars.show(&target, view::progress(&restore).as_ref());
        let shown = &bars.shown["r-1"];
        assert_eq!(
            (shown.with_total, shown.bar.position(), shown.bar.length()),
            (true, 3, Some(10))
        );
        assert_eq!(shown.bar.message(), "copying");
        bars.show(&target, None);
        assert!(bars.shown.is_empty());
    }
}
