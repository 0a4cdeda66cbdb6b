//! Finished operations and their results, kept on disk.
//!
//! Every command carries an operation id, the same for every delivery of one command. When
//! a command succeeded, its result is written to `operations/<id>` before the reply goes
//! out; a redelivered command (the broker restarted, or the agent died before acking)
//! is answered with that first result instead of acting twice, also after a restart of
//! the agent. The newest [`REMEMBERED`] are kept.

use ferrotrove_proto::agent::AgentResponse;
use ferrotrove_proto::envelope::{decode, encode};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use uuid::Uuid;

/// How many finished operations are remembered.
pub const REMEMBERED: usize = 256;

/// The results of recent operations, oldest evicted first.
pub struct FinishedOperations {
    dir: PathBuf,
    results: HashMap<Uuid, AgentResponse>,
    order: VecDeque<Uuid>,
}

impl FinishedOperations {
    /// Loads what `dir` holds (creating it), newest last. Unreadable entries are dropped:
    /// losing one only means a redelivered command runs again, as it would without this.
    pub fn load(dir: &Path) -> FinishedOperations {
        let mut finished = FinishedOperations {
            dir: dir.to_owned(),
            results: HashMap::new(),
            order: VecDeque::new(),
        };
        if let Err(error) = crate::fsutil::create_dir_with_mode(dir, 0o700) {
            tracing::warn!(%error, "cannot keep finished operations on disk");
            return finished;
        }
        let mut entries: Vec<(SystemTime, Uuid, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let id = path.file_name()?.to_str()?.parse::<Uuid>().ok()?;
                let modified = entry.metadata().ok()?.modified().ok()?;
                Some((modified, id, path))
            })
            .collect();
        entries.sort();
        for (_, id, path) in entries {
            match std::fs::read(&path)
                .ok()
                .and_then(|bytes| decode::<AgentResponse>(&bytes).ok())
            {
                Some(response) => {
                    finished.results.insert(id, response);
                    finished.order.push_back(id);
                }
                None => {
                    tracing::warn!(path = %path.display(), "dropping an unreadable finished operation");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        finished.evict();
        finished
    }

    pub fn get(&self, id: Uuid) -> Option<AgentResponse> {
        self.results.get(&id).cloned()
    }

    /// Records a finished operation, on disk first.
    pub fn remember(&mut self, id: Uuid, response: AgentResponse) {
        match encode(&response) {
            Ok(bytes) => {
                if let Err(error) =
                    crate::fsutil::write_atomic(&self.dir.join(id.to_string()), &bytes, 0o600)
                {
                    tracing::warn!(%error, %id, "cannot record the finished operation on disk");
                }
            }
            Err(error) => tracing::warn!(%error, %id, "cannot encode the finished operation"),
        }
        if self.results.insert(id, response).is_none() {
            self.order.push_back(id);
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.results.remove(&oldest);
                let _ = std::fs::remove_file(self.dir.join(oldest.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_operations_survive_a_restart_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ops = dir.path().join("operations");
        let first = Uuid::now_v7();
        {
            let mut finished = FinishedOperations::load(&ops);
            finished.remember(first, AgentResponse::SnapshotDeleted);
        }
        let mut finished = FinishedOperations::load(&ops);
        assert_eq!(
            finished.get(first),
            Some(AgentResponse::SnapshotDeleted),
            "remembered across a restart"
        );
        for _ in 0..REMEMBERED {
            finished.remember(Uuid::now_v7(), AgentResponse::ReplicationUserCreated);
        }
        assert_eq!(finished.get(first), None);
        assert_eq!(std::fs::read_dir(&ops).unwrap().count(), REMEMBERED);
        assert!(!ops.join(first.to_string()).exists());
        std::fs::write(ops.join(Uuid::now_v7().to_string()), b"\xc1garbage").unwrap();
        let reloaded = FinishedOperations::load(&ops);
        assert_eq!(
            reloaded.results.len(),
            REMEMBERED,
            "the unreadable entry is dropped"
        );
    }
}
