//! Snapshot, attach and detach between two real MariaDB servers, driven by the agent's
//! modules as the taskmanager would drive them over the bus.

mod support;

use ferrotrove_agent::{AgentError, replication, snapshot, status};
use ferrotrove_proto::agent::{
    AttachRequest, ReplicationUser, ReplicationUserName, SnapshotFormat, SnapshotInfo,
    SnapshotMethod, SnapshotRequest,
};
use ferrotrove_proto::status::Role;
use ferrotrove_proto::{ErrorKind, Secret};
use mysql_async::prelude::Queryable;
use std::time::Duration;
use support::{TestServer, eventually, item_ids, shared_tempdir};
use uuid::Uuid;

const REPL_USER: &str = "repl_r1";
const REPL_PASSWORD: &str = "repl-pw-1";

fn attach_request(source: &TestServer, snapshot: &SnapshotInfo) -> AttachRequest {
    AttachRequest {
        snapshot: snapshot.clone(),
        source_host: "127.0.0.1".into(),
        source_port: source.port,
        user: REPL_USER.into(),
        password: Secret::new(REPL_PASSWORD),
    }
}

async fn count_accounts(server: &TestServer, user: &str) -> usize {
    server
        .admin_query(&format!(
            "SELECT 1 FROM mysql.global_priv WHERE User = '{user}'"
        ))
        .await
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn logical_snapshot_attach_and_detach() {
    snapshot_attach_and_detach(SnapshotMethod::Logical, 21).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn physical_snapshot_attach_and_detach() {
    snapshot_attach_and_detach(SnapshotMethod::Physical, 23).await;
}

/// The same through a zstd-compressed physical snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_physical_snapshot_attach_and_detach() {
    snapshot_attach_and_detach_with(SnapshotMethod::Physical, 25, "compression = \"zstd\"").await;
}

async fn snapshot_attach_and_detach(method: SnapshotMethod, server_id: u32) {
    snapshot_attach_and_detach_with(method, server_id, "").await;
}

/// `source_snapshots`: more `[snapshots]` settings of the source.
async fn snapshot_attach_and_detach_with(
    method: SnapshotMethod,
    server_id: u32,
    source_snapshots: &str,
) {
    let snapshots = shared_tempdir();
    let (source, replica) = tokio::join!(
        TestServer::prepared_source_with(snapshots.path(), server_id, source_snapshots),
        TestServer::prepared_replica(snapshots.path(), server_id + 1),
    );

    // Rows before the snapshot.
    let mut app = source.app().await;
    app.query_drop("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    app.query_drop("INSERT INTO shop.items VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();

    // The replica's replication user, on the source; creating it twice is fine.
    let repl_user = ReplicationUser {
        name: REPL_USER.into(),
        host: "127.0.0.1".into(),
        password: Secret::new(REPL_PASSWORD),
    };
    replication::create_user(&source.instance, &repl_user)
        .await
        .unwrap();
    replication::create_user(&source.instance, &repl_user)
        .await
        .unwrap();
    assert_eq!(count_accounts(&source, REPL_USER).await, 1);

    // The snapshot is taken while the source keeps taking writes.
    let writer = {
        let mut writer_app = source.app().await;
        tokio::spawn(async move {
            for id in 1000..1100u32 {
                writer_app
                    .query_drop(format!("INSERT INTO shop.items VALUES ({id}, 'w')"))
                    .await
                    .unwrap();
            }
        })
    };
    let snapshot_id = Uuid::now_v7();
    let request = SnapshotRequest {
        snapshot_id,
        method,
    };
    let info = snapshot::create(&source.instance, &request).await.unwrap();
    writer.await.unwrap();
    assert!(
        info.gtid_pos.starts_with(&format!("0-{server_id}-")),
        "{info:?}"
    );
    let data = snapshots.path().join(format!("{snapshot_id}.data"));
    let record = snapshots.path().join(format!("{snapshot_id}.json"));
    assert_eq!(std::fs::metadata(&data).unwrap().len(), info.size_bytes);
    let stored: SnapshotInfo = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(stored, info);
    let manifest = snapshots.path().join(format!("{snapshot_id}.started"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(
        manifest["snapshot_id"],
        snapshot_id.to_string(),
        "{manifest}"
    );
    assert_eq!(
        std::fs::read_dir(snapshots.path()).unwrap().count(),
        3,
        "only the manifest, the data and its record are stored"
    );
    if method == SnapshotMethod::Logical {
        assert_eq!(info.format, SnapshotFormat::LogicalSqlZstd);
        check_logical_dump(&data);
    } else if source_snapshots.contains("zstd") {
        assert_eq!(info.format, SnapshotFormat::PhysicalXbstreamZstd);
    } else {
        assert_eq!(info.format, SnapshotFormat::PhysicalXbstream);
    }
    // Taking the same snapshot again answers with the stored one.
    assert_eq!(
        snapshot::create(&source.instance, &request).await.unwrap(),
        info
    );
    run_attach_and_detach(&source, &replica, &mut app, &info).await;
    // Deleting the snapshot removes its files; deleting it again is fine.
    snapshot::delete(&source.instance, snapshot_id)
        .await
        .unwrap();
    snapshot::delete(&source.instance, snapshot_id)
        .await
        .unwrap();
    assert_eq!(std::fs::read_dir(snapshots.path()).unwrap().count(), 0);
}

/// The dump carries the data, the app and replication accounts, and nothing of the admin
/// account or the server's own schemas.
fn check_logical_dump(data: &std::path::Path) {
    let sql =
        String::from_utf8(zstd::decode_all(std::fs::File::open(data).unwrap()).unwrap()).unwrap();
    assert!(sql.contains("INSERT IGNORE INTO `items`"));
    assert!(
        sql.contains("CREATE USER IF NOT EXISTS `app`@`%`"),
        "app user missing"
    );
    assert!(
        sql.contains("CREATE USER IF NOT EXISTS `repl_r1`@`127.0.0.1`"),
        "replication user missing"
    );
    assert!(
        !sql.contains("`root`@") && !sql.contains("'root'@"),
        "admin account leaked into the dump"
    );
    assert!(
        !sql.contains("Current Database: `mysql`"),
        "system schema dumped"
    );
}

async fn run_attach_and_detach(
    source: &TestServer,
    replica: &TestServer,
    app: &mut mysql_async::Conn,
    info: &SnapshotInfo,
) {
    let (source, replica, info) = (source, replica, info.clone());

    // A snapshot that does not match its record is refused, and leaves the replica as it was.
    let tampered = SnapshotInfo {
        blake3: "0".repeat(64),
        ..info.clone()
    };
    let err = replication::attach(&replica.instance, &attach_request(source, &tampered))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::SnapshotMismatch(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(
        status::read_checked(&replica.instance).await.unwrap().role,
        Some(Role::Standalone)
    );
    // Detaching a server that is not a replica is a conflict.
    let err = replication::detach(&replica.instance).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);

    // Rows after the snapshot, before the attach.
    app.query_drop("INSERT INTO shop.items VALUES (3, 'c')")
        .await
        .unwrap();

    let replica_password = replica.admin_password();
    let attached = replication::attach(&replica.instance, &attach_request(source, &info))
        .await
        .unwrap();
    assert_eq!(attached.role, Some(Role::Replica));
    assert_eq!(attached.read_only, Some(true));
    let replication_status = attached.replication.clone().unwrap();
    assert!(
        replication_status.io_running && replication_status.sql_running,
        "{attached:?}"
    );
    assert_eq!(replication_status.source_port, source.port);

    // The replica's own admin login survived the restore (the source's root was not copied).
    assert_eq!(replica.admin_password(), replica_password);
    assert_ne!(replica_password, source.admin_password());
    assert_eq!(replica.admin_query("SELECT 1").await.len(), 1);

    // Rows from before the snapshot are there; rows written later arrive.
    let mut replica_app = replica.app().await;
    app.query_drop("INSERT INTO shop.items VALUES (4, 'd')")
        .await
        .unwrap();
    let expected = item_ids(app).await;
    assert_eq!(expected.len(), 104);
    let caught_up = eventually(Duration::from_secs(10), || {
        let (replica, expected) = (&replica, &expected);
        async move { &item_ids(&mut replica.app().await).await == expected }
    })
    .await;
    assert!(
        caught_up,
        "replica has {} rows",
        item_ids(&mut replica_app).await.len()
    );

    // The app user exists on the replica but cannot write: read_only.
    let err = replica_app
        .query_drop("INSERT INTO shop.items VALUES (100, 'x')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("read-only") || err.to_string().contains("1290"),
        "{err}"
    );

    // Attaching again is a conflict.
    let err = replication::attach(&replica.instance, &attach_request(source, &info))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);

    // Detach: writable, and no longer following the source.
    let detached = replication::detach(&replica.instance).await.unwrap();
    assert_eq!(detached.role, Some(Role::Standalone));
    assert_eq!(detached.read_only, Some(false));
    assert!(detached.replication.is_none());
    replica_app
        .query_drop("INSERT INTO shop.items VALUES (100, 'x')")
        .await
        .unwrap();
    app.query_drop("INSERT INTO shop.items VALUES (5, 'e')")
        .await
        .unwrap();
    let source_pos: Vec<String> = source
        .admin_query("SELECT @@gtid_binlog_pos")
        .await
        .into_iter()
        .map(mysql_async::from_row)
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut after_detach = expected.clone();
    after_detach.push(100);
    after_detach.sort();
    assert_eq!(
        item_ids(&mut replica_app).await,
        after_detach,
        "source at {source_pos:?}"
    );
    // The role is persisted: a restart keeps it writable.
    let settings = replica.instance.server.load_settings().unwrap().unwrap();
    assert!(!settings.read_only);

    // Dropping the replication user removes it from the source; dropping it again is fine.
    let name = ReplicationUserName {
        name: REPL_USER.into(),
        host: "127.0.0.1".into(),
    };
    replication::drop_user(&source.instance, &name)
        .await
        .unwrap();
    replication::drop_user(&source.instance, &name)
        .await
        .unwrap();
    assert_eq!(count_accounts(source, REPL_USER).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_during_a_physical_restore_is_named_and_leaves_the_replica_as_it_was() {
    let snapshots = shared_tempdir();
    let (source, replica) = tokio::join!(
        TestServer::prepared_source(snapshots.path(), 31),
        TestServer::prepared_replica_on_tmpfs(snapshots.path(), 32),
    );
    // About 40 MiB of rows on the source.
    let mut app = source.app().await;
    app.query_drop("CREATE TABLE shop.blobs (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    for _ in 0..40 {
        app.query_drop("INSERT INTO shop.blobs (b) VALUES (CONCAT(RANDOM_BYTES(1024), REPEAT(RANDOM_BYTES(1024), 1023)))")
            .await
            .unwrap();
    }
    let info = snapshot::create(
        &source.instance,
        &SnapshotRequest {
            snapshot_id: Uuid::now_v7(),
            method: SnapshotMethod::Physical,
        },
    )
    .await
    .unwrap();
    replica.limit_disk(8);

    let err = replication::attach(&replica.instance, &attach_request(&source, &info))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::DiskFull(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "the disk holding {}",
            replica.instance.paths.data_dir.display()
        )),
        "{text}"
    );
    // The replica is back on its own data, serving, and no half-restored copy is left.
    assert_eq!(
        status::read_checked(&replica.instance).await.unwrap().role,
        Some(Role::Standalone)
    );
    assert_eq!(replica.admin_query("SELECT 1").await.len(), 1);
    assert!(!replica.base_dir().join("data.before-restore").exists());
}
