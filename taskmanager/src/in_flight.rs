//! Tasks running in this process, by message id.
//!
//! When the broker connection drops, the tasks in hand keep running (their commands wait
//! for the broker to come back), and the broker delivers their messages again because they
//! were never acked. A task whose first run is still going must not start a second run: the
//! redelivery waits for the first run to end and is then acked with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use uuid::Uuid;

/// The message ids of the tasks running now. Cheap to clone: clones share one map.
#[derive(Clone, Default)]
pub struct InFlight {
    running: Arc<Mutex<HashMap<Uuid, watch::Receiver<()>>>>,
}

/// What a delivery of a task message should do.
pub enum Claim {
    /// No run of this message is going on: run it, holding the guard until it ends.
    Run(RunGuard),
    /// A run of this message is going on: wait for it with [`Running::finished`].
    Running(Running),
}

/// Marks a message as running until dropped (also when the run panics or is cancelled).
pub struct RunGuard {
    id: Uuid,
    running: Arc<Mutex<HashMap<Uuid, watch::Receiver<()>>>>,
    /// Dropped with the guard, which wakes every waiter.
    _done: watch::Sender<()>,
}

/// A run of the same message in progress.
pub struct Running(watch::Receiver<()>);

impl Running {
    /// Returns when the run ends.
    pub async fn finished(mut self) {
        // Err means the sender is gone: the run has ended.
        while self.0.changed().await.is_ok() {}
    }
}

impl InFlight {
    pub fn claim(&self, id: Uuid) -> Claim {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = running.get(&id) {
            return Claim::Running(Running(rx.clone()));
        }
        let (tx, rx) = watch::channel(());
        running.insert(id, rx);
        Claim::Run(RunGuard {
            id,
            running: self.running.clone(),
            _done: tx,
        })
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_delivery_waits_for_the_first_run() {
        let in_flight = InFlight::default();
        let id = Uuid::now_v7();
        let Claim::Run(guard) = in_flight.claim(id) else {
            panic!("nothing runs yet");
        };
        let Claim::Running(running) = in_flight.claim(id) else {
            panic!("the first run is going on");
        };
        let waiter = tokio::spawn(running.finished());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the run has not ended");
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes when the run ends")
            .unwrap();
        assert!(
            matches!(in_flight.claim(id), Claim::Run(_)),
            "a later delivery runs again"
        );
        assert!(matches!(in_flight.claim(Uuid::now_v7()), Claim::Run(_)));
    }
}
