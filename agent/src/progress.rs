//! The long operation running now (a snapshot or a restore) and how far it got, for the
//! heartbeats to report. Cheap to clone: clones share one state.

use ferrotrove_proto::agent::Progress;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Default)]
pub struct ProgressTracker {
    current: Arc<Mutex<Option<Running>>>,
}

struct Running {
    progress: Progress,
    bytes: Arc<AtomicU64>,
}

/// One operation's handle: moves it through its stages, and clears it when dropped.
pub struct Operation {
    tracker: ProgressTracker,
    bytes: Arc<AtomicU64>,
}

impl ProgressTracker {
    /// Starts reporting `operation` (replacing whatever was reported before).
    pub fn start(&self, operation: &str, stage: &str, bytes_total: Option<u64>) -> Operation {
        let bytes = Arc::new(AtomicU64::new(0));
        *self.lock() = Some(Running {
            progress: Progress {
                operation: operation.to_owned(),
                stage: stage.to_owned(),
                bytes_done: 0,
                bytes_total,
                started_at_ms: now_ms(),
            },
            bytes: bytes.clone(),
        });
        Operation {
            tracker: self.clone(),
            bytes,
        }
    }

    /// What to report now.
    pub fn snapshot(&self) -> Option<Progress> {
        self.lock().as_ref().map(|running| Progress {
            bytes_done: running.bytes.load(Ordering::Relaxed),
            ..running.progress.clone()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Operation {
    /// The counter the copying code adds the bytes it moved to.
    pub fn bytes(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    pub fn stage(&self, stage: &str) {
        if let Some(running) = self.tracker.lock().as_mut()
            && Arc::ptr_eq(&running.bytes, &self.bytes)
        {
            running.progress.stage = stage.to_owned();
        }
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        let mut current = self.tracker.lock();
        if current
            .as_ref()
            .is_some_and(|running| Arc::ptr_eq(&running.bytes, &self.bytes))
        {
            *current = None;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_reported_until_it_ends() {
        let tracker = ProgressTracker::default();
        assert_eq!(tracker.snapshot(), None);
        let op = tracker.start("restore", "copying", Some(100));
        op.bytes().fetch_add(40, Ordering::Relaxed);
        op.stage("preparing");
        let seen = tracker.snapshot().unwrap();
        assert_eq!(
            (
                seen.operation.as_str(),
                seen.stage.as_str(),
                seen.bytes_done,
                seen.bytes_total
            ),
            ("restore", "preparing", 40, Some(100))
        );
        drop(op);
        assert_eq!(tracker.snapshot(), None);
    }
}
