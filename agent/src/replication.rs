//! Replication: users on the source, attach and detach on the replica.
//!
//! Every statement that only sets up this server (replication users, the restore, the
//! position) runs with `sql_log_bin=0`, so nothing local enters the binary log and the
//! replica's GTID history stays the source's.

use crate::error::{AgentError, Result};
use crate::flavor::SourceSpec;
use crate::instance::Instance;
use crate::names::{Account, GtidPosition, HostPattern, UserName, validate_password};
use crate::snapshot;
use crate::status;
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::{
    AttachFollowingRequest, AttachRequest, ReplicationStatus, ReplicationUser, ReplicationUserName,
    ServerStatus,
};
use std::time::{Duration, Instant};

/// How long Attach waits for both replication threads to run.
pub const ATTACH_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Replication usually runs within a few tens of ms of START SLAVE; this is on the
/// critical path of every attach.
const ATTACH_POLL_INTERVAL: Duration = Duration::from_millis(20);

fn replication_account(name: &str, host: &str) -> Result<Account> {
    Ok(Account::new(
        &UserName::parse(name)?,
        &HostPattern::parse(host)?,
    ))
}

/// On a source: creates (or re-passwords) the user one replica replicates with.
pub async fn create_user(instance: &Instance, user: &ReplicationUser) -> Result<()> {
    instance.require_prepared()?;
    let account = replication_account(&user.name, &user.host)?;
    validate_password("replication password", &user.password)?;
    let flavor = instance.flavor;
    let mut session = instance.unlogged_session().await?;
    session
        .exec_all(&[
            flavor.create_user(&account, &user.password),
            // An existing user gets the password asked for now: the caller owns it.
            flavor.set_password(&account, &user.password),
            flavor.grant_replication(&account),
        ])
        .await?;
    tracing::info!(%account, "replication user ready");
    Ok(())
}

/// On a source: drops a replica's replication user; absent is fine.
pub async fn drop_user(instance: &Instance, user: &ReplicationUserName) -> Result<()> {
    instance.require_prepared()?;
    let account = replication_account(&user.name, &user.host)?;
    let mut session = instance.unlogged_session().await?;
    session.exec(&instance.flavor.drop_user(&account)).await?;
    tracing::info!(%account, "replication user dropped");
    Ok(())
}

/// Where an attach request points, checked.
fn checked_source<'a>(
    host: &'a str,
    port: u16,
    user: &'a str,
    password: &'a Secret,
) -> Result<SourceSpec<'a>> {
    let source = SourceSpec {
        host,
        port,
        user,
        password,
    };
    HostPattern::parse(source.host)?;
    if source.host.contains('%') || source.host.contains('/') {
        return Err(AgentError::BadRequest(format!(
            "source host {:?} must be a host name or address",
            source.host
        )));
    }
    if source.port == 0 {
        return Err(AgentError::BadRequest(
            "source port must not be 0".to_owned(),
        ));
    }
    UserName::parse(source.user)?;
    validate_password("replication password", source.password)?;
    Ok(source)
}

/// On a new replica: restores the finished snapshot, points at the source, starts
/// replicating and checks that it runs. The replica stays read_only.
pub async fn attach(instance: &Instance, request: &AttachRequest) -> Result<ServerStatus> {
    let source = checked_source(
        &request.source_host,
        request.source_port,
        &request.user,
        &request.password,
    )?;
    // Checked before anything is stopped; the restored record is checked again.
    GtidPosition::parse(&request.snapshot.gtid_pos)?;
    attach_to(
        instance,
        &source,
        snapshot::RestoreFrom::Finished(request.snapshot.clone()),
    )
    .await
}

/// On a new replica: restores a snapshot while its source may still be taking it
/// (following it in the store), then attaches as [`attach`] does.
pub async fn attach_following(
    instance: &Instance,
    request: &AttachFollowingRequest,
) -> Result<ServerStatus> {
    let source = checked_source(
        &request.source_host,
        request.source_port,
        &request.user,
        &request.password,
    )?;
    attach_to(
        instance,
        &source,
        snapshot::RestoreFrom::Following(request.snapshot_id),
    )
    .await
}

async fn attach_to(
    instance: &Instance,
    source: &SourceSpec<'_>,
    from: snapshot::RestoreFrom,
) -> Result<ServerStatus> {
    instance.require_prepared()?;
    let flavor = instance.flavor;
    {
        let mut session = instance.admin.connect().await?;
        if let Some(current) = status::replica_status(instance, &mut session).await? {
            return Err(AgentError::Conflict(format!(
                "already a replica of {}:{}; detach it first",
                current.source_host, current.source_port
            )));
        }
    }
    // Keep writes out while restoring, and for good: a replica is read-only.
    instance.server.persist_read_only(true)?;
    instance
        .unlogged_session()
        .await?
        .exec(&flavor.set_read_only(true))
        .await?;
    let info = snapshot::restore(instance, from).await?;
    let position = GtidPosition::parse(&info.gtid_pos)?;
    let mut session = instance.unlogged_session().await?;
    session
        .exec_all(&[
            // Restored accounts must take effect now.
            flavor.flush_privileges(),
            // Right before setting the position: the server's own binary log (set-up,
            // anything logged by mistake) must not be ahead of the source's position.
            flavor.reset_binlog(),
            flavor.set_replica_position(&position),
            flavor.change_source(source),
            flavor.start_replica(),
        ])
        .await?;
    tracing::info!(source_host = %source.host, source_port = source.port,
        gtid_pos = %position.as_str(), "replication started; waiting for it to run");
    if let Err(err) = wait_until_running(instance).await {
        forget_source(instance).await;
        return Err(err);
    }
    status::read_checked(instance).await
}

/// Polls the replica status until both threads run, the SQL thread fails for good, or
/// [`ATTACH_VERIFY_TIMEOUT`] passes.
async fn wait_until_running(instance: &Instance) -> Result<()> {
    let started = Instant::now();
    let mut last: Option<ReplicationStatus> = None;
    while started.elapsed() < ATTACH_VERIFY_TIMEOUT {
        let mut session = instance.admin.connect().await?;
        let current = status::replica_status(instance, &mut session).await?;
        drop(session);
        match &current {
            Some(r) if r.io_running && r.sql_running => {
                tracing::info!(elapsed = ?started.elapsed(), "replication runs");
                return Ok(());
            }
            // A stopped SQL thread does not retry by itself; waiting longer cannot help.
            Some(r) if !r.sql_running && r.last_error.is_some() => {
                return Err(not_running(current.as_ref(), started.elapsed()));
            }
            _ => {}
        }
        last = current;
        tokio::time::sleep(ATTACH_POLL_INTERVAL).await;
    }
    Err(not_running(last.as_ref(), started.elapsed()))
}

fn not_running(status: Option<&ReplicationStatus>, waited: Duration) -> AgentError {
    let detail = match status {
        None => "the server shows no replication".to_owned(),
        Some(r) => format!(
            "IO thread running: {}, SQL thread running: {}, last error: {}",
            r.io_running,
            r.sql_running,
            r.last_error.as_deref().unwrap_or("none")
        ),
    };
    AgentError::Database {
        what: "start replication",
        code: None,
        message: format!("not running after {waited:.1?}: {detail}"),
    }
}

/// Undoes a failed attach's replication set-up, so that Attach can be tried again. The
/// restored data stay; the next Attach restores over them.
async fn forget_source(instance: &Instance) {
    let flavor = instance.flavor;
    let result = async {
        let mut session = instance.unlogged_session().await?;
        session
            .exec_all(&[flavor.stop_replica(), flavor.reset_replica_all()])
            .await
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "cannot undo the replication set-up of a failed attach");
    }
}

/// On a replica: stops and forgets replication, and makes the server writable.
pub async fn detach(instance: &Instance) -> Result<ServerStatus> {
    instance.require_prepared()?;
    let flavor = instance.flavor;
    let mut session = instance.unlogged_session().await?;
    let Some(current) = status::replica_status(instance, &mut session).await? else {
        return Err(AgentError::Conflict(
            "not a replica: there is nothing to detach".to_owned(),
        ));
    };
    session
        .exec_all(&[
            flavor.stop_replica(),
            flavor.reset_replica_all(),
            flavor.set_read_only(false),
        ])
        .await?;
    drop(session);
    instance.server.persist_read_only(false)?;
    tracing::info!(source_host = %current.source_host, source_port = current.source_port, "detached");
    status::read_checked(instance).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotrove_proto::agent::{SnapshotFormat, SnapshotInfo};
    use uuid::Uuid;

    fn request() -> AttachRequest {
        AttachRequest {
            snapshot: SnapshotInfo {
                snapshot_id: Uuid::nil(),
                format: SnapshotFormat::LogicalSqlZstd,
                gtid_pos: "0-1-5".into(),
                size_bytes: 1,
                blake3: "00".into(),
            },
            source_host: "127.0.0.1".into(),
            source_port: 3311,
            user: "repl_r1".into(),
            password: Secret::new("pw"),
        }
    }

    fn check(r: &AttachRequest) -> Result<()> {
        checked_source(&r.source_host, r.source_port, &r.user, &r.password)?;
        GtidPosition::parse(&r.snapshot.gtid_pos).map(|_| ())
    }

    #[test]
    fn attach_requests_are_checked() {
        let good = request();
        check(&good).unwrap();
        for change in [
            |r: &mut AttachRequest| r.source_host = "h'; DROP".into(),
            |r: &mut AttachRequest| r.source_host = "%".into(),
            |r: &mut AttachRequest| r.source_port = 0,
            |r: &mut AttachRequest| r.user = "a'b".into(),
            |r: &mut AttachRequest| r.password = Secret::default(),
            |r: &mut AttachRequest| r.snapshot.gtid_pos = "0-1-5'".into(),
        ] {
            let mut bad = request();
            change(&mut bad);
            assert!(
                matches!(check(&bad), Err(AgentError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_replica_that_does_not_run_says_why() {
        let status = ReplicationStatus {
            last_error: Some("IO thread: Access denied".into()),
            ..Default::default()
        };
        let err = not_running(Some(&status), Duration::from_secs(30)).to_string();
        assert!(err.contains("Access denied"), "{err}");
    }
}
