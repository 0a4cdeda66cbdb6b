//! Admin sessions with the local server over its Unix socket.
//!
//! One connection per operation, closed afterwards: no pool, so session settings such as
//! `sql_log_bin=0` never leak from one command into another. Errors are mapped here, once:
//! a server that does not answer is `Unavailable`; a refused statement is `Database`, and a
//! statement that carries a secret reports only the server's error code, because MariaDB
//! echoes the text near a syntax error, which may hold the password.

use crate::credentials::{AdminCredentials, read_client_cnf};
use crate::error::{AgentError, Result};
use crate::flavor::Sql;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The server's "access denied" error code.
pub const ER_ACCESS_DENIED: u16 = 1045;

/// How long a connection attempt or a status query may take before the server is called
/// unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens admin sessions: over `socket`, with the login in `client_cnf` (or the fresh-install
/// login while that file does not exist yet).
#[derive(Clone, Debug)]
pub struct AdminConnector {
    socket: PathBuf,
    client_cnf: PathBuf,
}

impl AdminConnector {
    pub fn new(socket: PathBuf, client_cnf: PathBuf) -> AdminConnector {
        AdminConnector { socket, client_cnf }
    }

    /// The login the agent uses now.
    pub fn credentials(&self) -> Result<AdminCredentials> {
        Ok(read_client_cnf(&self.client_cnf)?.unwrap_or_else(AdminCredentials::fresh_install))
    }

    /// Connects as the admin.
    pub async fn connect(&self) -> Result<Session> {
        self.connect_as(&self.credentials()?).await
    }

    /// Connects with explicit credentials (Prepare uses this to try the fresh-install login).
    pub async fn connect_as(&self, credentials: &AdminCredentials) -> Result<Session> {
        let opts = OptsBuilder::default()
            .socket(Some(self.socket.to_string_lossy().into_owned()))
            .user(Some(credentials.user.clone()))
            .pass(Some(credentials.password.expose().to_owned()))
            .prefer_socket(true);
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Err(_) => Err(AgentError::Unavailable(format!(
                "no answer on {} within {CONNECT_TIMEOUT:?}",
                self.socket.display()
            ))),
            Ok(Err(err)) => Err(connect_error(err, &self.socket)),
            Ok(Ok(conn)) => Ok(Session { conn }),
        }
    }
}

/// An open admin connection. Dropping it closes it (mysql_async disconnects in the
/// background), so early returns need no clean-up.
pub struct Session {
    conn: Conn,
}

impl Session {
    /// Runs a statement that returns no rows.
    pub async fn exec(&mut self, sql: &Sql) -> Result<()> {
        tracing::debug!(?sql, "exec");
        self.conn
            .query_drop(sql.text())
            .await
            .map_err(|err| statement_error(sql, err))
    }

    /// Runs several statements in order, stopping at the first failure.
    pub async fn exec_all(&mut self, statements: &[Sql]) -> Result<()> {
        for sql in statements {
            self.exec(sql).await?;
        }
        Ok(())
    }

    /// Runs a query and returns its rows.
    pub async fn rows(&mut self, sql: &Sql) -> Result<Vec<Row>> {
        tracing::debug!(?sql, "query");
        self.conn
            .query(sql.text())
            .await
            .map_err(|err| statement_error(sql, err))
    }
}

/// A column of a text-protocol row as a string; `None` for NULL or a missing column.
pub fn text_column(row: &Row, name: &str) -> Option<String> {
    let index = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str() == name)?;
    text_at(row, index)
}

/// Column `index` of a text-protocol row as a string; `None` for NULL or out of range.
pub fn text_at(row: &Row, index: usize) -> Option<String> {
    match row.as_ref(index)? {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn connect_error(err: mysql_async::Error, socket: &Path) -> AgentError {
    match err {
        mysql_async::Error::Server(server) => AgentError::Database {
            what: "log in as admin",
            code: Some(server.code),
            message: server.message,
        },
        other => {
            AgentError::Unavailable(format!("cannot connect to {}: {other}", socket.display()))
        }
    }
}

fn statement_error(sql: &Sql, err: mysql_async::Error) -> AgentError {
    match err {
        mysql_async::Error::Server(server) => {
            let message = if sql.carries_secret() {
                format!(
                    "error {} ({}); details withheld: the statement carries a secret",
                    server.code, server.state
                )
            } else {
                format!(
                    "error {} ({}): {}",
                    server.code, server.state, server.message
                )
            };
            AgentError::Database {
                what: sql.what(),
                code: Some(server.code),
                message,
            }
        }
        mysql_async::Error::Io(io) => AgentError::Unavailable(format!("{}: {io}", sql.what())),
        _ if sql.carries_secret() => AgentError::Database {
            what: sql.what(),
            code: None,
            message: "client error; details withheld: the statement carries a secret".to_owned(),
        },
        other => AgentError::Database {
            what: sql.what(),
            code: None,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::ServerError;

    fn server_error(message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(ServerError {
            code: 1064,
            message: message.to_owned(),
            state: "42000".to_owned(),
        })
    }

    #[test]
    fn errors_of_secret_statements_withhold_the_server_text() {
        let sql = Sql::secret("create user", "CREATE USER 'a'@'%' IDENTIFIED BY 'hunter2'");
        let err = statement_error(&sql, server_error("syntax error near 'hunter2'"));
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("create user") && text.contains("1064"),
            "{text}"
        );
    }

    #[test]
    fn errors_of_plain_statements_keep_the_server_text() {
        let sql = Sql::new("create database", "CREATE DATABASE x");
        let text = statement_error(&sql, server_error("boom")).to_string();
        assert_eq!(text, "create database failed: error 1064 (42000): boom");
    }
}
