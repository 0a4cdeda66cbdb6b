//! A replica restoring a snapshot while its source is still taking it (`AttachFollowing`),
//! between real MariaDB servers driven by the agent's modules: both methods end with a
//! replicating replica, and a snapshot that will never be finished fails the replica with
//! a typed error and leaves it on its previous data, serving.

mod support;

use ferrotrove_agent::store::{ObjectWriter, SnapshotManifest, SnapshotStore};
use ferrotrove_agent::{AgentError, replication, snapshot, status};
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::{
    AttachFollowingRequest, ReplicationUser, SnapshotFormat, SnapshotMethod, SnapshotRequest,
};
use ferrotrove_proto::status::Role;
use mysql_async::prelude::Queryable;
use std::io::{Read, Write};
use std::time::Duration;
use support::{TestServer, eventually, item_ids, shared_tempdir};
use uuid::Uuid;

const REPL_USER: &str = "repl_f1";
const REPL_PASSWORD: &str = "repl-pw-f1";

fn following(source: &TestServer, snapshot_id: Uuid) -> AttachFollowingRequest {
    AttachFollowingRequest {
        snapshot_id,
        source_host: "127.0.0.1".into(),
        source_port: source.port,
        user: REPL_USER.into(),
        password: Secret::new(REPL_PASSWORD),
    }
}

/// A source with rows in `shop.items` and the replication user.
async fn source_with_rows(snapshots: &std::path::Path, server_id: u32) -> TestServer {
    let source = TestServer::prepared_source(snapshots, server_id).await;
    let mut app = source.app().await;
    app.query_drop("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    app.query_drop("INSERT INTO shop.items SELECT seq, 'x' FROM shop.seq_1_to_500")
        .await
        .unwrap();
    replication::create_user(
        &source.instance,
        &ReplicationUser {
            name: REPL_USER.into(),
            host: "127.0.0.1".into(),
            password: Secret::new(REPL_PASSWORD),
        },
    )
    .await
    .unwrap();
    source
}

#[tokio::test(flavor = "multi_thread")]
async fn physical_attach_following_a_snapshot_being_taken() {
    attach_following_a_snapshot_being_taken(SnapshotMethod::Physical, 41).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logical_attach_following_a_snapshot_being_taken() {
    attach_following_a_snapshot_being_taken(SnapshotMethod::Logical, 43).await;
}

async fn attach_following_a_snapshot_being_taken(method: SnapshotMethod, server_id: u32) {
    let snapshots = shared_tempdir();
    let (source, replica) = tokio::join!(
        source_with_rows(snapshots.path(), server_id),
        TestServer::prepared_replica(snapshots.path(), server_id + 1),
    );
    let snapshot_id = Uuid::now_v7();
    // The replica is told first, before the snapshot exists, as the taskmanager may.
    let request = following(&source, snapshot_id);
    let attach = replication::attach_following(&replica.instance, &request);
    let take = async {
        let request = SnapshotRequest {
            snapshot_id,
            method,
        };
        snapshot::create(&source.instance, &request).await
    };
    let (attached, taken) = tokio::join!(attach, take);
    let info = taken.unwrap();
    let attached = attached.unwrap();
    assert_eq!(attached.role, Some(Role::Replica), "{attached:?}");
    assert_eq!(attached.read_only, Some(true));
    assert_eq!(
        info.format,
        match method {
            SnapshotMethod::Logical => SnapshotFormat::LogicalSqlZstd,
            _ => SnapshotFormat::PhysicalXbstream,
        }
    );
    // The replica's own admin login survived, and rows written later arrive.
    assert_eq!(replica.admin_query("SELECT 1").await.len(), 1);
    let mut app = source.app().await;
    app.query_drop("INSERT INTO shop.items VALUES (1000, 'later')")
        .await
        .unwrap();
    let expected = item_ids(&mut app).await;
    let caught_up = eventually(Duration::from_secs(10), || {
        let (replica, expected) = (&replica, &expected);
        async move { &item_ids(&mut replica.app().await).await == expected }
    })
    .await;
    assert!(caught_up, "the replica did not catch up");
    snapshot::delete(&source.instance, snapshot_id)
        .await
        .unwrap();
    assert_eq!(std::fs::read_dir(snapshots.path()).unwrap().count(), 0);
}

/// Writes the manifest of a physical snapshot `id`, and the first half of `data` as its
/// unfinished data object; answers with the writer, which must be kept to keep the object.
fn half_written(store: &dyn SnapshotStore, id: Uuid, data: &[u8]) -> Box<dyn ObjectWriter> {
    let manifest = SnapshotManifest {
        snapshot_id: id,
        format: SnapshotFormat::PhysicalXbstream,
        beat: 0,
    };
    store
        .write_small(
            &format!("{id}.started"),
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    let mut writer = store.create(&format!("{id}.data")).unwrap();
    writer.write_all(&data[..data.len() / 2]).unwrap();
    writer.flush().unwrap();
    writer
}

async fn assert_back_on_its_own_data(replica: &TestServer) {
    assert_eq!(
        status::read_checked(&replica.instance).await.unwrap().role,
        Some(Role::Standalone)
    );
    assert_eq!(replica.admin_query("SELECT 1").await.len(), 1);
    assert!(!replica.base_dir().join("data.before-restore").exists());
    assert_eq!(replica.instance.progress.snapshot(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_growing_snapshot_fails_the_follower_cleanly() {
    let snapshots = shared_tempdir();
    let (source, replica) = tokio::join!(
        source_with_rows(snapshots.path(), 45),
        // Gives up on a snapshot after 3 s without a sign of life.
        TestServer::prepared_replica_with(snapshots.path(), 46, "follow_stall_secs = 3"),
    );
    // A real backup stream, half of which stands for a snapshot whose writer stopped.
    let real = snapshot::create(
        &source.instance,
        &SnapshotRequest {
            snapshot_id: Uuid::now_v7(),
            method: SnapshotMethod::Physical,
        },
    )
    .await
    .unwrap();
    let mut data = Vec::new();
    source
        .instance
        .store
        .open(&format!("{}.data", real.snapshot_id))
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    let store = source.instance.store.clone();

    // 1. Its writer's agent died: the manifest stops beating, the data stops growing.
    let stalled = Uuid::now_v7();
    let writer = half_written(store.as_ref(), stalled, &data);
    let err = replication::attach_following(&replica.instance, &following(&source, stalled))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::SnapshotAbandoned(m) if m.contains("no sign of life")),
        "{err}"
    );
    assert_back_on_its_own_data(&replica).await;
    drop(writer);

    // 2. It is deleted while the replica reads it (what the source's agent does when its
    // snapshot fails, and when it restarts after dying mid-snapshot).
    let deleted = Uuid::now_v7();
    let writer = half_written(store.as_ref(), deleted, &data);
    let request = following(&source, deleted);
    let attach = replication::attach_following(&replica.instance, &request);
    let delete = async {
        // Once the replica has read what there is.
        let reading = eventually(Duration::from_secs(30), || async {
            replica
                .instance
                .progress
                .snapshot()
                .is_some_and(|p| p.bytes_done as usize == data.len() / 2)
        })
        .await;
        assert!(reading, "the replica did not read the unfinished snapshot");
        snapshot::delete(&source.instance, deleted).await.unwrap();
    };
    let (attached, ()) = tokio::join!(attach, delete);
    let err = attached.unwrap_err();
    assert!(
        matches!(&err, AgentError::SnapshotAbandoned(m) if m.contains("abandoned before it was finished")),
        "{err}"
    );
    assert_back_on_its_own_data(&replica).await;
    drop(writer);

    snapshot::delete(&source.instance, real.snapshot_id)
        .await
        .unwrap();
}
