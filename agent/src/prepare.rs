//! Prepare: initialise, configure, start and secure the server; create databases and users.
//!
//! Idempotent in two ways. After success a marker file makes a repeated Prepare answer with
//! the current status and do nothing. Before success, every step can run again after a
//! crash: the data dir is initialised only once, the server is adopted if it runs, the
//! admin password is written to `client.cnf` before the server is told about it (so it is
//! never lost), and databases and users are created only if missing.
//! Every statement runs with `sql_log_bin=0`: local set-up must not be binlogged, or the
//! GTID positions of a source and its seeded replicas would conflict.

use crate::credentials::{AdminCredentials, read_client_cnf, write_client_cnf};
use crate::db::{ER_ACCESS_DENIED, text_at};
use crate::error::{AgentError, Result};
use crate::flavor::ServerSettings;
use crate::fsutil;
use crate::instance::Instance;
use crate::names::{Account, DatabaseName, HostPattern, UserName, validate_password};
use crate::status;
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::{PrepareRequest, ServerStatus, UserSpec};

/// A Prepare request whose names and passwords have been checked.
#[derive(Debug)]
pub struct PreparePlan {
    pub settings: ServerSettings,
    pub databases: Vec<DatabaseName>,
    pub users: Vec<UserPlan>,
}

/// One user to create, with the databases it gets all privileges on.
#[derive(Debug)]
pub struct UserPlan {
    pub account: Account,
    pub password: Secret,
    pub databases: Vec<DatabaseName>,
}

/// Checks a request before anything is touched, so that bad input leaves no half-made
/// instance behind.
pub fn plan(request: &PrepareRequest, max_buffer_pool_mb: u64) -> Result<PreparePlan> {
    if request.server_id == 0 {
        return Err(AgentError::BadRequest(
            "server_id must not be 0 (a server with id 0 cannot replicate)".to_owned(),
        ));
    }
    let databases = request
        .databases
        .iter()
        .map(|name| DatabaseName::parse(name))
        .collect::<Result<Vec<_>>>()?;
    let users = request
        .users
        .iter()
        .map(plan_user)
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparePlan {
        settings: ServerSettings {
            server_id: request.server_id,
            buffer_pool_mb: ServerSettings::buffer_pool_mb(request.memory_mb, max_buffer_pool_mb),
            read_only: request.read_only,
        },
        databases,
        users,
    })
}

fn plan_user(user: &UserSpec) -> Result<UserPlan> {
    let name = UserName::parse(&user.name)?;
    let host = HostPattern::parse(&user.host)?;
    validate_password(&format!("password of user {:?}", user.name), &user.password)?;
    let databases = user
        .databases
        .iter()
        .map(|name| DatabaseName::parse(name))
        .collect::<Result<Vec<_>>>()?;
    Ok(UserPlan {
        account: Account::new(&name, &host),
        password: user.password.clone(),
        databases,
    })
}

/// Runs Prepare; answers with the server's status.
pub async fn prepare(instance: &Instance, request: &PrepareRequest) -> Result<ServerStatus> {
    if instance.paths.is_prepared() {
        tracing::info!("already prepared; answering with the current status");
        return Ok(status::read(instance).await);
    }
    let plan = plan(request, instance.config.server.max_buffer_pool_mb)?;
    tracing::info!(
        server_id = plan.settings.server_id,
        buffer_pool_mb = plan.settings.buffer_pool_mb,
        read_only = plan.settings.read_only,
        databases = plan.databases.len(),
        users = plan.users.len(),
        "preparing"
    );
    instance.server.init_data_dir().await?;
    instance.server.save_settings(&plan.settings)?;
    instance.server.start().await?;
    secure(instance).await?;
    create_databases_and_users(instance, &plan).await?;
    let mut session = instance.unlogged_session().await?;
    session
        .exec(&instance.flavor.set_read_only(plan.settings.read_only))
        .await?;
    fsutil::write_atomic(&instance.paths.prepared_marker, b"prepared\n", 0o644)?;
    tracing::info!("prepared");
    status::read_checked(instance).await
}

/// Gives the admin account a generated password (kept in `client.cnf`) and removes
/// anonymous users and every other admin account.
async fn secure(instance: &Instance) -> Result<()> {
    let paths = &instance.paths;
    let credentials = match read_client_cnf(&paths.client_cnf)? {
        Some(credentials) => credentials,
        None => {
            let credentials = AdminCredentials::generate();
            write_client_cnf(&paths.client_cnf, &credentials, &paths.socket)?;
            credentials
        }
    };
    let flavor = instance.flavor;
    let mut session = match instance.admin.connect_as(&credentials).await {
        Ok(session) => session,
        Err(AgentError::Database {
            code: Some(ER_ACCESS_DENIED),
            ..
        }) => {
            // The server still has the fresh-install login: set the password from client.cnf.
            let mut session = instance
                .admin
                .connect_as(&AdminCredentials::fresh_install())
                .await?;
            session.exec(&flavor.disable_session_binlog()).await?;
            session
                .exec(&flavor.set_admin_password(&credentials.password))
                .await?;
            tracing::info!("admin password set");
            session
        }
        Err(err) => return Err(err),
    };
    session.exec(&flavor.disable_session_binlog()).await?;
    for row in session.rows(&flavor.list_unwanted_accounts()).await? {
        let account = Account {
            user: text_at(&row, 0).unwrap_or_default(),
            host: text_at(&row, 1).unwrap_or_default(),
        };
        session.exec(&flavor.drop_user(&account)).await?;
        tracing::info!(%account, "dropped account");
    }
    Ok(())
}

async fn create_databases_and_users(instance: &Instance, plan: &PreparePlan) -> Result<()> {
    let flavor = instance.flavor;
    let mut session = instance.unlogged_session().await?;
    for database in &plan.databases {
        session.exec(&flavor.create_database(database)).await?;
    }
    for user in &plan.users {
        session
            .exec(&flavor.create_user(&user.account, &user.password))
            .await?;
        for database in &user.databases {
            session
                .exec(&flavor.grant_all_on_database(database, &user.account))
                .await?;
        }
        tracing::info!(account = %user.account, databases = user.databases.len(), "user ready");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PrepareRequest {
        PrepareRequest {
            server_id: 3,
            memory_mb: 1024,
            databases: vec!["shop".into()],
            users: vec![UserSpec {
                name: "app".into(),
                password: Secret::new("pw"),
                host: "%".into(),
                databases: vec!["shop".into()],
            }],
            read_only: false,
        }
    }

    #[test]
    fn a_good_request_is_planned() {
        let plan = plan(&request(), 256).unwrap();
        assert_eq!(
            plan.settings,
            ServerSettings {
                server_id: 3,
                buffer_pool_mb: 256,
                read_only: false
            }
        );
        assert_eq!(plan.databases[0].as_str(), "shop");
        assert_eq!(plan.users[0].account.to_sql(), "'app'@'%'");
    }

    #[test]
    fn buffer_pool_is_half_the_memory_within_bounds() {
        assert_eq!(ServerSettings::buffer_pool_mb(1024, 256), 256);
        assert_eq!(ServerSettings::buffer_pool_mb(256, 256), 128);
        assert_eq!(ServerSettings::buffer_pool_mb(0, 256), 32);
        assert_eq!(ServerSettings::buffer_pool_mb(4096, 8), 32);
    }

    #[test]
    fn bad_requests_are_refused_before_anything_happens() {
        let mut bad = request();
        bad.server_id = 0;
        assert!(matches!(plan(&bad, 256), Err(AgentError::BadRequest(_))));
        let mut bad = request();
        bad.databases.push("x`; DROP".into());
        assert!(matches!(plan(&bad, 256), Err(AgentError::BadRequest(_))));
        let mut bad = request();
        bad.users[0].password = Secret::default();
        let err = plan(&bad, 256).unwrap_err();
        assert!(
            err.to_string().contains("password of user \"app\""),
            "{err}"
        );
        let mut bad = request();
        bad.users[0].host = "a'b".into();
        assert!(matches!(plan(&bad, 256), Err(AgentError::BadRequest(_))));
        let mut bad = request();
        bad.users[0].databases = vec!["mysql".into()];
        assert!(matches!(plan(&bad, 256), Err(AgentError::BadRequest(_))));
    }
}
