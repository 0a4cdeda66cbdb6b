//! MariaDB (10.6+): GTID by domain (`gtid_slave_pos`, `MASTER_USE_GTID=slave_pos`),
//! `mariadb-dump --system=users` for accounts.

use super::{Flavor, ServerOption, ServerOptionsInput, SourceSpec, Sql};
use crate::names::{
    ADMIN_USER, Account, DatabaseName, GtidPosition, quote_identifier, quote_string,
};
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::ReplicationStatus;

/// The MariaDB flavor.
#[derive(Clone, Copy, Debug, Default)]
pub struct MariaDb;

/// Size of each redo log file: modest, since many instances may share one host.
const INNODB_LOG_FILE_SIZE: &str = "48M";
/// The dump line that carries the snapshot's GTID position (`--master-data=2 --gtid`).
const POSITION_LINE_PREFIX: &[u8] = b"-- SET GLOBAL gtid_slave_pos='";

fn on_off(value: bool) -> &'static str {
    if value { "ON" } else { "OFF" }
}

fn option(name: &'static str, value: impl ToString) -> ServerOption {
    ServerOption {
        name,
        value: Some(value.to_string()),
    }
}

fn flag(name: &'static str) -> ServerOption {
    ServerOption { name, value: None }
}

impl Flavor for MariaDb {
    fn name(&self) -> &'static str {
        "mariadb"
    }

    fn server_options(&self, input: &ServerOptionsInput<'_>) -> Vec<ServerOption> {
        let paths = input.paths;
        let settings = input.settings;
        let mut options = Vec::new();
        if let Some(user) = input.run_as {
            options.push(option("user", user));
        }
        options.extend([
            option("datadir", paths.data_dir.display()),
            option("port", input.port),
            option("bind_address", input.bind_address),
            option("socket", paths.socket.display()),
            option("pid_file", paths.pid_file.display()),
            option("log_error", paths.error_log.display()),
            option("tmpdir", paths.tmp_dir.display()),
            option("server_id", settings.server_id),
            option("log_bin", "mysql-bin"),
            option("relay_log", "relay-bin"),
            option("binlog_format", "ROW"),
            option("log_slave_updates", "ON"),
            option("gtid_strict_mode", "ON"),
            option("gtid_domain_id", 0),
            option("relay_log_recovery", "ON"),
            flag("skip_name_resolve"),
            option(
                "innodb_buffer_pool_size",
                format!("{}M", settings.buffer_pool_mb),
            ),
            option("innodb_log_file_size", INNODB_LOG_FILE_SIZE),
            option("max_allowed_packet", "64M"),
            option("read_only", on_off(settings.read_only)),
        ]);
        options
    }

    fn disable_session_binlog(&self) -> Sql {
        Sql::new(
            "disable binary logging for the session",
            "SET SESSION sql_log_bin=0",
        )
    }

    fn set_admin_password(&self, password: &Secret) -> Sql {
        self.set_password(&Account::admin(), password)
    }

    fn list_unwanted_accounts(&self) -> Sql {
        Sql::new(
            "list anonymous and extra admin accounts",
            format!(
                "SELECT User, Host FROM mysql.global_priv WHERE User = '' OR (User = {} AND Host <> 'localhost')",
                quote_string(ADMIN_USER)
            ),
        )
    }

    fn drop_user(&self, account: &Account) -> Sql {
        Sql::new(
            "drop user",
            format!("DROP USER IF EXISTS {}", account.to_sql()),
        )
    }

    fn create_database(&self, database: &DatabaseName) -> Sql {
        Sql::new(
            "create database",
            format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                quote_identifier(database.as_str())
            ),
        )
    }

    fn create_user(&self, account: &Account, password: &Secret) -> Sql {
        Sql::secret(
            "create user",
            format!(
                "CREATE USER IF NOT EXISTS {} IDENTIFIED BY {}",
                account.to_sql(),
                quote_string(password.expose())
            ),
        )
    }

    fn set_password(&self, account: &Account, password: &Secret) -> Sql {
        Sql::secret(
            "set password",
            format!(
                "ALTER USER {} IDENTIFIED BY {}",
                account.to_sql(),
                quote_string(password.expose())
            ),
        )
    }

    fn grant_all_on_database(&self, database: &DatabaseName, account: &Account) -> Sql {
        Sql::new(
            "grant privileges on database",
            format!(
                "GRANT ALL PRIVILEGES ON {}.* TO {}",
                quote_identifier(database.as_str()),
                account.to_sql()
            ),
        )
    }

    fn grant_replication(&self, account: &Account) -> Sql {
        Sql::new(
            "grant replication privileges",
            format!(
                "GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO {}",
                account.to_sql()
            ),
        )
    }

    fn flush_privileges(&self) -> Sql {
        Sql::new("flush privileges", "FLUSH PRIVILEGES")
    }

    fn set_read_only(&self, read_only: bool) -> Sql {
        Sql::new(
            "set read_only",
            format!("SET GLOBAL read_only={}", on_off(read_only)),
        )
    }

    fn list_databases(&self) -> Sql {
        Sql::new("list databases", "SHOW DATABASES")
    }

    fn reset_binlog(&self) -> Sql {
        Sql::new("reset binary log", "RESET MASTER")
    }

    fn set_replica_position(&self, position: &GtidPosition) -> Sql {
        Sql::new(
            "set replica GTID position",
            format!(
                "SET GLOBAL gtid_slave_pos={}",
                quote_string(position.as_str())
            ),
        )
    }

    fn change_source(&self, source: &SourceSpec<'_>) -> Sql {
        Sql::secret(
            "point at the source",
            format!(
                "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USER={}, MASTER_PASSWORD={}, \
                 MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                quote_string(source.host),
                source.port,
                quote_string(source.user),
                quote_string(source.password.expose()),
            ),
        )
    }

    fn start_replica(&self) -> Sql {
        Sql::new("start replication", "START SLAVE")
    }

    fn stop_replica(&self) -> Sql {
        Sql::new("stop replication", "STOP SLAVE")
    }

    fn reset_replica_all(&self) -> Sql {
        Sql::new("forget the source", "RESET SLAVE ALL")
    }

    fn server_variables(&self) -> Sql {
        Sql::new(
            "read server variables",
            "SELECT @@version, @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos, @@gtid_current_pos",
        )
    }

    fn replica_status(&self) -> Sql {
        Sql::new("read replica status", "SHOW SLAVE STATUS")
    }

    fn parse_replica_status(&self, column: &dyn Fn(&str) -> Option<String>) -> ReplicationStatus {
        let text = |name: &str| column(name).filter(|value| !value.is_empty());
        let last_error = [
            ("IO thread", "Last_IO_Error"),
            ("SQL thread", "Last_SQL_Error"),
        ]
        .into_iter()
        .filter_map(|(thread, name)| text(name).map(|message| format!("{thread}: {message}")))
        .collect::<Vec<_>>();
        ReplicationStatus {
            source_host: column("Master_Host").unwrap_or_default(),
            source_port: text("Master_Port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            io_running: column("Slave_IO_Running").as_deref() == Some("Yes"),
            sql_running: column("Slave_SQL_Running").as_deref() == Some("Yes"),
            lag_seconds: text("Seconds_Behind_Master").and_then(|s| s.parse().ok()),
            gtid_io_pos: column("Gtid_IO_Pos"),
            last_error: if last_error.is_empty() {
                None
            } else {
                Some(last_error.join("; "))
            },
        }
    }

    fn dump_data_args(&self, databases: &[DatabaseName]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--single-transaction",
            "--gtid",
            "--master-data=2",
            "--routines",
            "--events",
            "--triggers",
            "--insert-ignore",
            "--databases",
            // Ends the options: a database may be named like one ("-x").
            "--",
        ]
        .map(str::to_owned)
        .into();
        args.extend(databases.iter().map(|db| db.as_str().to_owned()));
        args
    }

    fn dump_users_args(&self, with_position: bool) -> Vec<String> {
        let mut args = Vec::new();
        if with_position {
            args.extend(["--single-transaction", "--gtid", "--master-data=2"].map(str::to_owned));
        }
        // --insert-ignore turns the dump's CREATE USER into CREATE USER IF NOT EXISTS.
        args.extend(["--system=users", "--insert-ignore"].map(str::to_owned));
        args
    }

    fn position_in_dump_line(&self, line: &[u8]) -> Option<String> {
        let rest = line.strip_prefix(POSITION_LINE_PREFIX)?;
        let rest = rest.trim_ascii_end();
        let position = rest.strip_suffix(b"';")?;
        String::from_utf8(position.to_vec()).ok()
    }

    fn keep_dumped_user_line(&self, line: &[u8]) -> bool {
        let backticked = format!("`{ADMIN_USER}`@`");
        let quoted = format!("'{ADMIN_USER}'@'");
        let contains = |needle: &str| line.windows(needle.len()).any(|w| w == needle.as_bytes());
        !contains(&backticked) && !contains(&quoted)
    }

    fn restore_args(&self) -> Vec<String> {
        vec!["--init-command=SET SESSION sql_log_bin=0".to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::ServerSettings;
    use crate::names::{HostPattern, UserName};
    use crate::paths::InstancePaths;
    use std::collections::HashMap;
    use std::path::Path;

    fn app() -> Account {
        Account::new(
            &UserName::parse("app").unwrap(),
            &HostPattern::parse("%").unwrap(),
        )
    }

    fn db(name: &str) -> DatabaseName {
        DatabaseName::parse(name).unwrap()
    }

    #[test]
    fn setup_statements() {
        let f = MariaDb;
        let pw = Secret::new("it's");
        assert_eq!(
            f.disable_session_binlog().text(),
            "SET SESSION sql_log_bin=0"
        );
        assert_eq!(
            f.set_admin_password(&pw).text(),
            "ALTER USER 'root'@'localhost' IDENTIFIED BY 'it''s'"
        );
        assert_eq!(
            f.list_unwanted_accounts().text(),
            "SELECT User, Host FROM mysql.global_priv WHERE User = '' OR (User = 'root' AND Host <> 'localhost')"
        );
        let anonymous = Account {
            user: String::new(),
            host: "vm".into(),
        };
        assert_eq!(
            f.drop_user(&anonymous).text(),
            "DROP USER IF EXISTS ''@'vm'"
        );
        assert_eq!(
            f.create_database(&db("shop")).text(),
            "CREATE DATABASE IF NOT EXISTS `shop`"
        );
        assert_eq!(
            f.create_user(&app(), &pw).text(),
            "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'it''s'"
        );
        assert_eq!(
            f.set_password(&app(), &pw).text(),
            "ALTER USER 'app'@'%' IDENTIFIED BY 'it''s'"
        );
        assert_eq!(
            f.grant_all_on_database(&db("shop"), &app()).text(),
            "GRANT ALL PRIVILEGES ON `shop`.* TO 'app'@'%'"
        );
        assert_eq!(
            f.grant_replication(&app()).text(),
            "GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO 'app'@'%'"
        );
        assert_eq!(f.flush_privileges().text(), "FLUSH PRIVILEGES");
        assert_eq!(f.set_read_only(true).text(), "SET GLOBAL read_only=ON");
        assert_eq!(f.set_read_only(false).text(), "SET GLOBAL read_only=OFF");
        assert_eq!(f.list_databases().text(), "SHOW DATABASES");
    }

    #[test]
    fn statements_with_passwords_are_marked_secret() {
        let f = MariaDb;
        let pw = Secret::new("hunter2");
        for sql in [
            f.set_admin_password(&pw),
            f.create_user(&app(), &pw),
            f.set_password(&app(), &pw),
        ] {
            assert!(sql.carries_secret());
            assert!(!format!("{sql:?}").contains("hunter2"));
        }
        assert!(!f.create_database(&db("shop")).carries_secret());
        assert!(format!("{:?}", f.create_database(&db("shop"))).contains("CREATE DATABASE"));
    }

    #[test]
    fn replication_statements() {
        let f = MariaDb;
        let pw = Secret::new("r'pw");
        let source = SourceSpec {
            host: "10.0.0.5",
            port: 3311,
            user: "repl_1",
            password: &pw,
        };
        let change = f.change_source(&source);
        assert_eq!(
            change.text(),
            "CHANGE MASTER TO MASTER_HOST='10.0.0.5', MASTER_PORT=3311, MASTER_USER='repl_1', \
             MASTER_PASSWORD='r''pw', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
        );
        assert!(change.carries_secret());
        let position = GtidPosition::parse("0-1-27").unwrap();
        assert_eq!(
            f.set_replica_position(&position).text(),
            "SET GLOBAL gtid_slave_pos='0-1-27'"
        );
        assert_eq!(f.reset_binlog().text(), "RESET MASTER");
        assert_eq!(f.start_replica().text(), "START SLAVE");
        assert_eq!(f.stop_replica().text(), "STOP SLAVE");
        assert_eq!(f.reset_replica_all().text(), "RESET SLAVE ALL");
        assert_eq!(f.replica_status().text(), "SHOW SLAVE STATUS");
        assert_eq!(
            f.server_variables().text(),
            "SELECT @@version, @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos, @@gtid_current_pos"
        );
    }

    #[test]
    fn replica_status_is_parsed() {
        let row: HashMap<&str, &str> = HashMap::from([
            ("Master_Host", "127.0.0.1"),
            ("Master_Port", "3311"),
            ("Slave_IO_Running", "Connecting"),
            ("Slave_SQL_Running", "Yes"),
            ("Gtid_IO_Pos", "0-1-5"),
            ("Last_IO_Error", "Access denied"),
            ("Last_SQL_Error", ""),
        ]);
        let status = MariaDb.parse_replica_status(&|name| row.get(name).map(|v| v.to_string()));
        assert_eq!(
            status,
            ReplicationStatus {
                source_host: "127.0.0.1".into(),
                source_port: 3311,
                io_running: false,
                sql_running: true,
                lag_seconds: None,
                gtid_io_pos: Some("0-1-5".into()),
                last_error: Some("IO thread: Access denied".into()),
            }
        );
        let healthy: HashMap<&str, &str> = HashMap::from([
            ("Slave_IO_Running", "Yes"),
            ("Slave_SQL_Running", "Yes"),
            ("Seconds_Behind_Master", "3"),
        ]);
        let status = MariaDb.parse_replica_status(&|name| healthy.get(name).map(|v| v.to_string()));
        assert!(status.io_running && status.sql_running);
        assert_eq!(status.lag_seconds, Some(3));
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn server_options_carry_identity_gtid_and_role() {
        let paths = InstancePaths::new(Path::new("/srv/i1"));
        let settings = ServerSettings {
            server_id: 7,
            buffer_pool_mb: 128,
            read_only: true,
        };
        let input = ServerOptionsInput {
            paths: &paths,
            port: 3311,
            bind_address: "127.0.0.1",
            run_as: Some("mysql"),
            settings: &settings,
        };
        let options = MariaDb.server_options(&input);
        let get = |name: &str| {
            options
                .iter()
                .find(|o| o.name == name)
                .map(|o| o.value.clone())
        };
        assert_eq!(options[0], option("user", "mysql"));
        assert_eq!(get("server_id"), Some(Some("7".into())));
        assert_eq!(get("datadir"), Some(Some("/srv/i1/data".into())));
        assert_eq!(get("socket"), Some(Some("/srv/i1/run/mysqld.sock".into())));
        assert_eq!(get("tmpdir"), Some(Some("/srv/i1/tmp".into())));
        assert_eq!(get("innodb_buffer_pool_size"), Some(Some("128M".into())));
        assert_eq!(get("read_only"), Some(Some("ON".into())));
        assert_eq!(get("gtid_strict_mode"), Some(Some("ON".into())));
        assert_eq!(get("log_slave_updates"), Some(Some("ON".into())));
        assert_eq!(get("skip_name_resolve"), Some(None));
        let unprivileged = ServerOptionsInput {
            run_as: None,
            ..input
        };
        assert!(
            MariaDb
                .server_options(&unprivileged)
                .iter()
                .all(|o| o.name != "user")
        );
    }

    #[test]
    fn dump_arguments() {
        let f = MariaDb;
        assert_eq!(
            f.dump_data_args(&[db("a"), db("b")]).join(" "),
            "--single-transaction --gtid --master-data=2 --routines --events --triggers --insert-ignore --databases -- a b"
        );
        assert_eq!(
            f.dump_users_args(false).join(" "),
            "--system=users --insert-ignore"
        );
        assert_eq!(
            f.dump_users_args(true).join(" "),
            "--single-transaction --gtid --master-data=2 --system=users --insert-ignore"
        );
        assert_eq!(
            f.restore_args(),
            vec!["--init-command=SET SESSION sql_log_bin=0".to_owned()]
        );
    }

    #[test]
    fn position_is_found_in_its_line_only() {
        let f = MariaDb;
        assert_eq!(
            f.position_in_dump_line(b"-- SET GLOBAL gtid_slave_pos='0-1-27';\n"),
            Some("0-1-27".into())
        );
        assert_eq!(
            f.position_in_dump_line(b"-- SET GLOBAL gtid_slave_pos='';"),
            Some(String::new())
        );
        assert_eq!(
            f.position_in_dump_line(b"SET GLOBAL gtid_slave_pos='0-1-27';"),
            None
        );
        assert_eq!(
            f.position_in_dump_line(b"-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;"),
            None
        );
    }

    #[test]
    fn admin_lines_are_dropped_from_the_users_dump() {
        let f = MariaDb;
        assert!(!f.keep_dumped_user_line(
            b"CREATE USER IF NOT EXISTS `root`@`localhost` IDENTIFIED BY PASSWORD '*79';"
        ));
        assert!(!f.keep_dumped_user_line(
            b"GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION;"
        ));
        assert!(
            !f.keep_dumped_user_line(
                b"/*M!100005 SET DEFAULT ROLE NONE FOR 'root'@'localhost' */;"
            )
        );
        assert!(f.keep_dumped_user_line(
            b"CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*D8';"
        ));
        assert!(f.keep_dumped_user_line(b"CREATE USER IF NOT EXISTS `xroot`@`%`;"));
        assert!(f.keep_dumped_user_line(b"GRANT ALL PRIVILEGES ON `app`.* TO `app`@`%`;"));
    }
}
