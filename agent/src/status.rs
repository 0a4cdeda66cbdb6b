//! The server's state as the agent reports it (Status, heartbeats, command replies).

use crate::db::{CONNECT_TIMEOUT, Session, text_at, text_column};
use crate::error::{AgentError, Result};
use crate::instance::Instance;
use ferrotrove_proto::agent::{ReplicationStatus, ServerStatus};
use ferrotrove_proto::status::Role;

/// Reads the server's state. Never fails: a server that cannot be read is reported as
/// such, with the reason in `error`.
pub async fn read(instance: &Instance) -> ServerStatus {
    // Bounded, so that a hung server cannot stall heartbeats.
    let result = tokio::time::timeout(2 * CONNECT_TIMEOUT, read_checked(instance)).await;
    match result {
        Ok(Ok(status)) => status,
        Ok(Err(_)) if !instance.paths.is_prepared() && instance.server.running_pid().is_none() => {
            down("the instance is not prepared yet".to_owned())
        }
        Ok(Err(err @ AgentError::Unavailable(_))) => down(err.to_string()),
        Ok(Err(err)) => ServerStatus {
            up: true,
            error: Some(err.to_string()),
            ..ServerStatus::default()
        },
        Err(_) => down(format!(
            "the server did not answer within {:?}",
            2 * CONNECT_TIMEOUT
        )),
    }
}

fn down(error: String) -> ServerStatus {
    ServerStatus {
        up: false,
        error: Some(error),
        ..ServerStatus::default()
    }
}

/// Reads the server's state, failing on the first error.
pub async fn read_checked(instance: &Instance) -> Result<ServerStatus> {
    let mut session = instance.admin.connect().await?;
    let flavor = instance.flavor;
    let variables = session.rows(&flavor.server_variables()).await?;
    let row = variables
        .first()
        .ok_or_else(|| AgentError::Internal("server variables returned no row".to_owned()))?;
    let replication = replica_status(instance, &mut session).await?;
    let error = replication.as_ref().and_then(|r| r.last_error.clone());
    Ok(ServerStatus {
        up: true,
        version: text_at(row, 0),
        read_only: text_at(row, 1).map(|v| v == "1"),
        role: Some(if replication.is_some() {
            Role::Replica
        } else {
            Role::Standalone
        }),
        gtid_binlog_pos: text_at(row, 2),
        gtid_slave_pos: text_at(row, 3),
        gtid_current_pos: text_at(row, 4),
        replication,
        error,
    })
}

/// The replica side of replication, or `None` when the server replicates from no one.
pub async fn replica_status(
    instance: &Instance,
    session: &mut Session,
) -> Result<Option<ReplicationStatus>> {
    let rows = session.rows(&instance.flavor.replica_status()).await?;
    Ok(rows.first().map(|row| {
        instance
            .flavor
            .parse_replica_status(&|name| text_column(row, name))
    }))
}
