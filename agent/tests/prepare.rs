//! Prepare against a real MariaDB: databases and users exist, the server is secured, a
//! repeated Prepare changes nothing, and a restarted agent adopts the running server.

mod support;

use ferrotrove_agent::{Instance, prepare, status};
use ferrotrove_proto::agent::PrepareRequest;
use ferrotrove_proto::status::Role;
use mysql_async::prelude::Queryable;
use std::os::unix::fs::PermissionsExt;
use support::{TestServer, item_ids, shared_tempdir};

#[tokio::test(flavor = "multi_thread")]
async fn prepare_creates_databases_and_users_and_secures_the_server() {
    let snapshots = shared_tempdir();
    let server = TestServer::prepared_source(snapshots.path(), 11).await;

    // The app user logs in over TCP with its password and can write its database.
    let mut app = server.app().await;
    app.query_drop("CREATE TABLE shop.items (id INT PRIMARY KEY)")
        .await
        .unwrap();
    app.query_drop("INSERT INTO shop.items VALUES (1), (2)")
        .await
        .unwrap();
    assert_eq!(item_ids(&mut app).await, vec![1, 2]);
    // ... and nothing else.
    assert!(app.query_drop("CREATE DATABASE other").await.is_err());
    assert!(server.tcp_login("app", "wrong").await.is_err());

    // Root has a password: no TCP login without it, and only root@localhost is left.
    assert!(server.tcp_login("root", "").await.is_err());
    assert!(
        server
            .tcp_login("root", server.admin_password().expose())
            .await
            .is_err(),
        "root is socket-only"
    );
    let accounts: Vec<(String, String)> = server
        .admin_query("SELECT User, Host FROM mysql.global_priv ORDER BY User, Host")
        .await
        .into_iter()
        .map(mysql_async::from_row)
        .collect();
    assert!(
        accounts.iter().all(|(user, _)| !user.is_empty()),
        "no anonymous users: {accounts:?}"
    );
    let roots: Vec<&str> = accounts
        .iter()
        .filter(|(u, _)| u == "root")
        .map(|(_, h)| h.as_str())
        .collect();
    assert_eq!(roots, ["localhost"]);

    // The admin password lives in client.cnf, readable by root only.
    let mode = std::fs::metadata(&server.instance.paths.client_cnf)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(server.admin_password().expose().len() >= 24);

    // Local set-up was not binlogged.
    let binlog: Vec<String> = server
        .admin_query("SELECT @@gtid_binlog_pos")
        .await
        .into_iter()
        .map(mysql_async::from_row)
        .collect();
    let status = status::read_checked(&server.instance).await.unwrap();
    assert!(status.up);
    assert_eq!(status.read_only, Some(false));
    assert_eq!(status.role, Some(Role::Standalone));
    assert!(
        status.version.as_deref().unwrap_or("").contains("MariaDB"),
        "{status:?}"
    );
    assert_eq!(status.gtid_binlog_pos.as_deref(), Some(binlog[0].as_str()));
    // Two app transactions, nothing from Prepare.
    assert_eq!(binlog[0], "0-11-2");

    // A repeated Prepare answers with the status and changes nothing (not even the password).
    let password = server.admin_password();
    let again = PrepareRequest {
        server_id: 99,
        memory_mb: 64,
        databases: vec!["other".into()],
        users: vec![],
        read_only: true,
    };
    let repeated = prepare::prepare(&server.instance, &again).await.unwrap();
    assert!(repeated.up);
    assert_eq!(repeated.read_only, Some(false));
    assert_eq!(server.admin_password(), password);
    assert!(
        server
            .admin_query("SHOW DATABASES LIKE 'other'")
            .await
            .is_empty()
    );

    // A restarted agent adopts the running server instead of starting another.
    let pid_before = std::fs::read_to_string(&server.instance.paths.pid_file).unwrap();
    let restarted = Instance::new(server.instance.config.clone()).unwrap();
    restarted.start_if_prepared().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&server.instance.paths.pid_file).unwrap(),
        pid_before
    );
    assert_eq!(item_ids(&mut server.app().await).await, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_prepared_server_starts_again_with_its_role() {
    let snapshots = shared_tempdir();
    let server = TestServer::prepared_replica(snapshots.path(), 12).await;
    server.instance.server.stop().await.unwrap();
    let down = status::read(&server.instance).await;
    assert!(!down.up);
    assert!(down.error.is_some());

    let restarted = Instance::new(server.instance.config.clone()).unwrap();
    restarted.start_if_prepared().await.unwrap();
    let status = status::read_checked(&restarted).await.unwrap();
    assert_eq!(status.read_only, Some(true), "the role survives a restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_leave_nothing_behind() {
    let snapshots = shared_tempdir();
    let server = TestServer::new(snapshots.path());
    let bad = PrepareRequest {
        server_id: 1,
        memory_mb: 64,
        databases: vec!["no`pe".into()],
        users: vec![],
        read_only: false,
    };
    let err = prepare::prepare(&server.instance, &bad).await.unwrap_err();
    assert_eq!(err.kind(), ferrotrove_proto::ErrorKind::BadRequest);
    assert!(
        !server.instance.paths.data_dir.exists(),
        "no data dir for a refused request"
    );
    assert!(!server.base_dir().join("prepared").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_cannot_start_reports_its_error_log() {
    let snapshots = shared_tempdir();
    let server = TestServer::new(snapshots.path());
    // Someone else holds the port.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", server.port)).unwrap();
    let request = PrepareRequest {
        server_id: 13,
        memory_mb: 64,
        databases: vec![],
        users: vec![],
        read_only: false,
    };
    let err = prepare::prepare(&server.instance, &request)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ferrotrove_proto::ErrorKind::Io);
    let message = err.to_string();
    assert!(message.contains("exited while starting"), "{message}");
    assert!(
        message.contains("Address already in use") || message.contains("Can't start server"),
        "{message}"
    );
    assert!(!server.base_dir().join("prepared").exists());
    let status = status::read(&server.instance).await;
    assert_eq!(
        status.error.as_deref(),
        Some("the instance is not prepared yet")
    );
}
