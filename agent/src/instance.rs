//! The instance this agent owns: its configuration, files, flavor and server, in one place
//! that every command module receives.

use crate::config::AgentConfig;
use crate::db::{AdminConnector, Session};
use crate::error::{AgentError, Result};
use crate::flavor::{self, Flavor};
use crate::paths::InstancePaths;
use crate::progress::ProgressTracker;
use crate::server::ServerControl;
use crate::store::{DirectoryStore, S3Store, SnapshotStore};
use std::sync::Arc;

/// Everything a command needs to act on the instance.
pub struct Instance {
    pub config: AgentConfig,
    pub paths: InstancePaths,
    pub flavor: &'static dyn Flavor,
    pub admin: AdminConnector,
    pub server: ServerControl,
    /// The snapshot or restore running now, for heartbeats.
    pub progress: ProgressTracker,
    /// Where snapshots are kept.
    pub store: Arc<dyn SnapshotStore>,
}

impl Instance {
    /// Needs a tokio runtime (the S3 store keeps a handle to it).
    pub fn new(config: AgentConfig) -> Result<Instance> {
        let paths = InstancePaths::new(&config.server.base_dir);
        let flavor = flavor::mariadb();
        let admin = AdminConnector::new(paths.socket.clone(), paths.client_cnf.clone());
        let server =
            ServerControl::new(config.server.clone(), paths.clone(), flavor, admin.clone());
        let store: Arc<dyn SnapshotStore> = match &config.snapshots.s3 {
            Some(s3) => Arc::new(S3Store::new(s3)?),
            None => Arc::new(DirectoryStore::new(&config.snapshots.dir)),
        };
        Ok(Instance {
            config,
            paths,
            flavor,
            admin,
            server,
            progress: ProgressTracker::default(),
            store,
        })
    }

    /// On agent start: if the instance was prepared, make sure its server runs (adopting a
    /// server that survived the previous agent). An unprepared instance is left alone.
    pub async fn start_if_prepared(&self) -> Result<()> {
        if self.paths.is_prepared() {
            self.server.start().await
        } else {
            tracing::info!("instance not prepared yet; waiting for Prepare");
            Ok(())
        }
    }

    /// Refuses commands that need a prepared instance.
    pub fn require_prepared(&self) -> Result<()> {
        if self.paths.is_prepared() {
            Ok(())
        } else {
            Err(AgentError::Conflict(
                "the instance is not prepared yet; send Prepare first".to_owned(),
            ))
        }
    }

    /// An admin session whose statements stay out of the binary log.
    pub async fn unlogged_session(&self) -> Result<Session> {
        let mut session = self.admin.connect().await?;
        session.exec(&self.flavor.disable_session_binlog()).await?;
        Ok(session)
    }
}
