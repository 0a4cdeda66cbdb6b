//! The store against a real MariaDB (127.0.0.1:3306, root, no password): migrations,
//! instance queries, guarded transitions, heartbeat ordering and replication users.
//! Each test has a database of its own.

mod common;

use common::TestDb;
use ferrotrove_proto::agent::{Progress, ReplicationStatus, ServerStatus};
use ferrotrove_proto::conductor::{Heartbeat, HostStats};
use ferrotrove_proto::status::{InstanceStatus, Role};
use ferrotrove_store::{DeleteStart, NewInstance, ReplicaInsert, Store, StoreError, Transition};
use std::collections::HashSet;
use uuid::{NoContext, Timestamp, Uuid};

fn new_instance(tenant: &str, name: &str) -> NewInstance {
    NewInstance {
        id: Uuid::new_v4(),
        tenant_id: tenant.to_owned(),
        name: name.to_owned(),
        flavor_id: "7".to_owned(),
        volume_size: 2,
        datastore: "mariadb".to_owned(),
        datastore_version: "10.11".to_owned(),
        status: InstanceStatus::Build,
        replica_of: None,
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_race() {
    let db = TestDb::new().await;
    // Connect again, and three times at once: each finds nothing left to apply.
    Store::connect(&db.config).await.unwrap();
    let racers = (0..3).map(|_| {
        let cfg = db.config.clone();
        tokio::spawn(async move { Store::connect(&cfg).await })
    });
    for racer in racers {
        racer.await.unwrap().unwrap();
    }
    let flavors = db.store.list_flavors().await.unwrap();
    assert_eq!(flavors.len(), 8);
    assert_eq!(
        flavors.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5", "6", "7", "8"]
    );
    let ds1g = db.store.get_flavor("7").await.unwrap().unwrap();
    assert_eq!(
        (ds1g.name.as_str(), ds1g.ram_mb, ds1g.vcpus, ds1g.disk_gb),
        ("ds1G", 1024, 1, 5)
    );
    assert!(db.store.get_flavor("ds1G").await.unwrap().is_none());
}

#[tokio::test]
async fn datastores_resolve_by_name_id_and_alias() {
    let db = TestDb::new().await;
    let store = &db.store;
    let all = store.list_datastores().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "mariadb");
    assert_eq!(
        all[0].id.to_string(),
        ferrotrove_store::MARIADB_DATASTORE_ID
    );

    let (ds, v) = store.resolve_datastore_version(None, None).await.unwrap();
    assert_eq!((ds.name.as_str(), v.name.as_str()), ("mariadb", "10.11"));
    let (ds, v) = store
        .resolve_datastore_version(Some("mysql"), Some("5.7"))
        .await
        .unwrap();
    assert_eq!((ds.name.as_str(), v.name.as_str()), ("mariadb", "10.11"));
    let (_, v) = store
        .resolve_datastore_version(
            Some(ferrotrove_store::MARIADB_DATASTORE_ID),
            Some(ferrotrove_store::MARIADB_10_11_VERSION_ID),
        )
        .await
        .unwrap();
    assert_eq!(v.version, "10.11");
    assert!(store.find_datastore("MySQL").await.unwrap().is_some());

    let err = store
        .resolve_datastore_version(Some("postgresql"), None)
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("postgresql"),
        "{err}"
    );
    let err = store
        .resolve_datastore_version(Some("mariadb"), Some("10.6"))
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("10.11"),
        "{err}"
    );
}

#[tokio::test]
async fn insert_get_list_and_name_lookup() {
    let db = TestDb::new().await;
    let store = &db.store;
    let a = store
        .insert_instance(&new_instance("t1", "alpha"))
        .await
        .unwrap();
    assert_eq!(a.status, InstanceStatus::Build);
    assert_eq!(
        (a.name.as_str(), a.flavor_id.as_str(), a.volume_size),
        ("alpha", "7", 2)
    );
    assert_eq!(a.fault, None);
    assert!(a.deleted_at.is_none());
    let b = store
        .insert_instance(&new_instance("t1", "beta"))
        .await
        .unwrap();
    let c = store
        .insert_instance(&new_instance("t1", "gamma"))
        .await
        .unwrap();
    let other = store
        .insert_instance(&new_instance("t2", "alpha"))
        .await
        .unwrap();

    assert_eq!(store.get_instance(a.id).await.unwrap().unwrap(), a);
    assert!(store.get_instance(Uuid::new_v4()).await.unwrap().is_none());

    // By id, by name; never another tenant's.
    assert_eq!(
        store
            .get_tenant_instance("t1", &a.id.to_string())
            .await
            .unwrap()
            .id,
        a.id
    );
    assert_eq!(
        store.get_tenant_instance("t1", "alpha").await.unwrap().id,
        a.id
    );
    assert_eq!(
        store.get_tenant_instance("t2", "alpha").await.unwrap().id,
        other.id
    );
    assert!(
        store
            .get_tenant_instance("t2", &a.id.to_string())
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .get_tenant_instance("t1", "nosuch")
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Listing: ordered by creation, paged by limit and marker, per tenant.
    let ids = |v: Vec<ferrotrove_store::Instance>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_instances("t1", None, None).await.unwrap()),
        [a.id, b.id, c.id]
    );
    assert_eq!(
        ids(store.list_instances("t1", Some(2), None).await.unwrap()),
        [a.id, b.id]
    );
    assert_eq!(
        ids(store
            .list_instances("t1", Some(2), Some(b.id))
            .await
            .unwrap()),
        [c.id]
    );
    assert!(
        store
            .list_instances("t1", None, Some(other.id))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        ids(store.list_instances("t3", None, None).await.unwrap()),
        Vec::<Uuid>::new()
    );

    // A name two live instances share is ambiguous; an id still works.
    let dup = store
        .insert_instance(&new_instance("t1", "alpha"))
        .await
        .unwrap();
    let err = store.get_tenant_instance("t1", "alpha").await.unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("use its id"),
        "{err}"
    );
    assert_eq!(
        store
            .get_tenant_instance("t1", &dup.id.to_string())
            .await
            .unwrap()
            .id,
        dup.id
    );

    // Deleted: gone from gets and lists, still a valid marker, and its name is free again.
    store.mark_deleted(dup.id).await.unwrap();
    store.mark_deleted(dup.id).await.unwrap();
    assert!(store.get_instance(dup.id).await.unwrap().is_none());
    assert_eq!(
        store.get_tenant_instance("t1", "alpha").await.unwrap().id,
        a.id
    );
    assert_eq!(
        ids(store
            .list_instances("t1", None, Some(dup.id))
            .await
            .unwrap()),
        Vec::<Uuid>::new()
    );
    assert!(
        store
            .mark_deleted(Uuid::new_v4())
            .await
            .unwrap_err()
            .is_not_found()
    );

    // A second insert with the same id is a conflict.
    let mut again = new_instance("t1", "x");
    again.id = a.id;
    assert!(
        store
            .insert_instance(&again)
            .await
            .unwrap_err()
            .is_conflict()
    );
}

#[tokio::test]
async fn server_ids_are_unique_and_never_reused() {
    let db = TestDb::new().await;
    let rows: Vec<NewInstance> = (0..5)
        .map(|i| new_instance("t", &format!("i{i}")))
        .collect();
    let inserted = db.store.insert_instances(&rows).await.unwrap();
    let mut ids: Vec<u32> = inserted.iter().map(|i| i.server_id).collect();
    db.store.mark_deleted(inserted[4].id).await.unwrap();
    ids.push(
        db.store
            .insert_instance(&new_instance("t", "later"))
            .await
            .unwrap()
            .server_id,
    );
    let unique: HashSet<u32> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert!(
        ids.iter().all(|id| *id > 0),
        "server_id 0 cannot replicate: {ids:?}"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn statuses_endpoints_and_replicas() {
    let db = TestDb::new().await;
    let store = &db.store;
    let src = store
        .insert_instance(&new_instance("t", "src"))
        .await
        .unwrap();
    store
        .set_status(
            src.id,
            InstanceStatus::Error,
            Some("prepare failed: disk full"),
        )
        .await
        .unwrap();
    let got = store.get_instance(src.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.fault.as_deref()),
        (InstanceStatus::Error, Some("prepare failed: disk full"))
    );
    assert!(got.fault_at.is_some());
    store
        .set_status(src.id, InstanceStatus::Active, None)
        .await
        .unwrap();
    store
        .set_endpoint(src.id, "127.0.0.1", 33061)
        .await
        .unwrap();
    let got = store.get_instance(src.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.fault, got.fault_at),
        (InstanceStatus::Active, None, None)
    );
    assert_eq!(
        (got.host.as_deref(), got.port),
        (Some("127.0.0.1"), Some(33061))
    );
    assert!(got.updated >= got.created);
    assert!(
        store
            .set_status(Uuid::new_v4(), InstanceStatus::Active, None)
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Replicas are inserted under a lock on an ACTIVE, non-replica source.
    let mut r1 = new_instance("t", "r-1");
    r1.replica_of = Some(src.id);
    let mut r2 = new_instance("t", "r-2");
    r2.replica_of = Some(src.id);
    let ReplicaInsert::Inserted(replicas) = store
        .insert_replicas(src.id, &[InstanceStatus::Active], &[r1.clone(), r2.clone()])
        .await
        .unwrap()
    else {
        panic!("source refused")
    };
    assert_eq!(
        replicas.iter().map(|r| r.replica_of).collect::<Vec<_>>(),
        [Some(src.id), Some(src.id)]
    );
    assert_eq!(store.replicas_of(src.id).await.unwrap(), [r1.id, r2.id]);
    let many = store.replicas_of_many(&[src.id, r1.id]).await.unwrap();
    assert_eq!(many.len(), 1);

    // A replica of a replica, or of a source that is not ACTIVE, is refused: nothing inserted.
    let mut rr = new_instance("t", "rr");
    rr.replica_of = Some(r1.id);
    store
        .set_status(r1.id, InstanceStatus::Active, None)
        .await
        .unwrap();
    assert!(matches!(
        store.insert_replicas(r1.id, &[InstanceStatus::Active], std::slice::from_ref(&rr)).await.unwrap(),
        ReplicaInsert::SourceRefused(s) if s.id == r1.id
    ));
    assert!(store.get_instance(rr.id).await.unwrap().is_none());
    assert!(
        store
            .insert_replicas(Uuid::new_v4(), &[InstanceStatus::Active], &[])
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Guarded status changes.
    assert!(matches!(
        store.change_status(r2.id, &[InstanceStatus::Active], InstanceStatus::Detach).await.unwrap(),
        Transition::Refused(i) if i.status == InstanceStatus::Build
    ));
    assert!(matches!(
        store.change_status(r1.id, &[InstanceStatus::Active], InstanceStatus::Detach).await.unwrap(),
        Transition::Done(i) if i.status == InstanceStatus::Detach
    ));
    store.set_replica_of(r1.id, None).await.unwrap();
    assert_eq!(store.replicas_of(src.id).await.unwrap(), [r2.id]);

    // A source with live replicas cannot start deleting; a replica can, once.
    let deletable = [InstanceStatus::Active, InstanceStatus::Error];
    assert!(matches!(
        store.start_delete(src.id, &deletable).await.unwrap(),
        DeleteStart::HasReplicas(_, ids) if ids == [r2.id]
    ));
    assert!(matches!(
        store.start_delete(r2.id, &deletable).await.unwrap(),
        DeleteStart::Refused(_)
    ));
    store
        .set_status(r2.id, InstanceStatus::Error, Some("seed failed"))
        .await
        .unwrap();
    assert!(matches!(
        store.start_delete(r2.id, &deletable).await.unwrap(),
        DeleteStart::Started(i) if i.status == InstanceStatus::Deleting && i.fault.is_none()
    ));
    assert!(matches!(
        store.start_delete(r2.id, &deletable).await.unwrap(),
        DeleteStart::AlreadyDeleting(_)
    ));
    store.mark_deleted(r2.id).await.unwrap();
    assert!(matches!(
        store.start_delete(src.id, &deletable).await.unwrap(),
        DeleteStart::Started(_)
    ));
    let err = store.start_delete(r2.id, &deletable).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
}

/// A boot id from `unix_secs`; each call draws new random bits.
fn boot(unix_secs: u64) -> Uuid {
    Uuid::new_v7(Timestamp::from_unix(NoContext, unix_secs, 0))
}

fn heartbeat(instance_id: Uuid, boot_id: Uuid, seq: u64, cpu: f32) -> Heartbeat {
    Heartbeat {
        instance_id,
        boot_id,
        seq,
        server: ServerStatus {
            up: true,
            version: Some("10.11.6-MariaDB".into()),
            read_only: Some(true),
            role: Some(Role::Replica),
            gtid_binlog_pos: Some("0-1-5".into()),
            gtid_slave_pos: Some("0-1-5".into()),
            gtid_current_pos: Some("0-1-5".into()),
            replication: Some(ReplicationStatus {
                source_host: "10.0.0.1".into(),
                source_port: 3306,
                io_running: true,
                sql_running: true,
                lag_seconds: Some(seq),
                gtid_io_pos: None,
                last_error: None,
            }),
            error: None,
        },
        host: HostStats {
            cpu_percent: cpu,
            mem_used_bytes: 1,
            mem_total_bytes: 2,
            disk_used_bytes: 3,
            disk_total_bytes: 4,
        },
        progress: None,
    }
}

/// A restore `done` bytes into 2 GiB.
fn restoring(done: u64) -> Progress {
    Progress {
        operation: "restore".into(),
        stage: "copying".into(),
        bytes_done: done,
        bytes_total: Some(2 << 30),
        started_at_ms: 1_767_225_600_000,
    }
}

#[tokio::test]
async fn heartbeats_carry_progress_in_order() {
    let db = TestDb::new().await;
    let store = &db.store;
    let id = store
        .insert_instance(&new_instance("t", "seeding"))
        .await
        .unwrap()
        .id;
    let run = boot(1_000);
    let with = |seq: u64, progress: Option<Progress>| Heartbeat {
        progress,
        ..heartbeat(id, run, seq, 1.0)
    };

    // Recorded with the rest of the heartbeat, and read back whole.
    assert!(
        store
            .record_heartbeat(&with(1, Some(restoring(100))))
            .await
            .unwrap()
    );
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!(s.progress, Some(restoring(100)));
    assert!(
        store
            .record_heartbeat(&with(3, Some(restoring(300))))
            .await
            .unwrap()
    );

    // An older heartbeat changes nothing, its progress included.
    assert!(
        !store
            .record_heartbeat(&with(2, Some(restoring(200))))
            .await
            .unwrap()
    );
    assert!(!store.record_heartbeat(&with(2, None)).await.unwrap());
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!((s.seq, s.progress), (3, Some(restoring(300))));

    // A newer one without progress clears it; a late one with progress does not bring it back.
    assert!(store.record_heartbeat(&with(4, None)).await.unwrap());
    assert!(
        !store
            .record_heartbeat(&with(3, Some(restoring(999))))
            .await
            .unwrap()
    );
    let many = store.guest_statuses(&[id]).await.unwrap();
    assert_eq!((many[&id].seq, &many[&id].progress), (4, &None));

    // A snapshot whose total is not known yet.
    let unknown_total = Progress {
        operation: "snapshot".into(),
        stage: "dumping".into(),
        bytes_total: None,
        ..restoring(7)
    };
    assert!(
        store
            .record_heartbeat(&with(5, Some(unknown_total.clone())))
            .await
            .unwrap()
    );
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!(s.progress, Some(unknown_total));
}

#[tokio::test]
async fn heartbeats_apply_only_when_newer() {
    let db = TestDb::new().await;
    let store = &db.store;
    let id = store
        .insert_instance(&new_instance("t", "hb"))
        .await
        .unwrap()
        .id;
    let (old_boot, new_boot) = (boot(1_000), boot(2_000));
    assert!(
        old_boot.to_string() < new_boot.to_string(),
        "v7 text order is time order"
    );

    assert!(
        store
            .record_heartbeat(&heartbeat(id, old_boot, 5, 5.0))
            .await
            .unwrap(),
        "first one inserts"
    );
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!(
        (s.boot_id, s.seq, s.cpu_percent, s.lag_seconds),
        (old_boot, 5, 5.0, Some(5))
    );
    assert_eq!(
        (s.role, s.source_port, s.io_running),
        (Some(Role::Replica), Some(3306), Some(true))
    );
    assert!(s.age_ms < 60_000);

    assert!(
        store
            .record_heartbeat(&heartbeat(id, old_boot, 6, 6.0))
            .await
            .unwrap(),
        "newer seq applies"
    );
    assert!(
        !store
            .record_heartbeat(&heartbeat(id, old_boot, 4, 4.0))
            .await
            .unwrap(),
        "older seq is ignored"
    );
    assert!(
        !store
            .record_heartbeat(&heartbeat(id, old_boot, 6, 9.0))
            .await
            .unwrap(),
        "a repeat is ignored"
    );
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!((s.seq, s.cpu_percent), (6, 6.0));

    assert!(
        store
            .record_heartbeat(&heartbeat(id, new_boot, 1, 1.0))
            .await
            .unwrap(),
        "a new boot applies with a lower seq"
    );
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!(
        (s.boot_id, s.seq, s.cpu_percent, s.lag_seconds),
        (new_boot, 1, 1.0, Some(1))
    );
    assert!(
        !store
            .record_heartbeat(&heartbeat(id, old_boot, 99, 99.0))
            .await
            .unwrap(),
        "the old boot's late one is ignored"
    );
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!((s.boot_id, s.seq, s.cpu_percent), (new_boot, 1, 1.0));

    // Unknown and deleted instances record nothing.
    assert!(
        !store
            .record_heartbeat(&heartbeat(Uuid::new_v4(), new_boot, 1, 1.0))
            .await
            .unwrap()
    );
    let gone = store
        .insert_instance(&new_instance("t", "gone"))
        .await
        .unwrap()
        .id;
    store.mark_deleted(gone).await.unwrap();
    assert!(
        !store
            .record_heartbeat(&heartbeat(gone, new_boot, 1, 1.0))
            .await
            .unwrap()
    );
    assert!(store.guest_status(gone).await.unwrap().is_none());

    let many = store
        .guest_statuses(&[id, gone, Uuid::new_v4()])
        .await
        .unwrap();
    assert_eq!(many.keys().copied().collect::<Vec<_>>(), [id]);

    // Concurrent writers: whatever the arrival order, the highest seq wins.
    let third_boot = boot(3_000);
    let writers = (1..=20u64).rev().map(|seq| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .record_heartbeat(&heartbeat(id, third_boot, seq, seq as f32))
                .await
        })
    });
    for w in writers {
        w.await.unwrap().unwrap();
    }
    assert_eq!(store.guest_status(id).await.unwrap().unwrap().seq, 20);
}

#[tokio::test]
async fn replication_user_rows() {
    let db = TestDb::new().await;
    let store = &db.store;
    let (replica, source) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store.replication_user_of(replica).await.unwrap().is_none());
    store
        .record_replication_user(replica, source, "repl_1", "10.0.0.%")
        .await
        .unwrap();
    store
        .record_replication_user(replica, source, "repl_1", "10.0.0.%")
        .await
        .unwrap();
    let row = store.replication_user_of(replica).await.unwrap().unwrap();
    assert_eq!(
        (
            row.source_id,
            row.user_name.as_str(),
            row.user_host.as_str()
        ),
        (source, "repl_1", "10.0.0.%")
    );
    assert_eq!(store.replication_users_on(source).await.unwrap().len(), 1);
    store.forget_replication_user(replica).await.unwrap();
    store.forget_replication_user(replica).await.unwrap();
    assert!(store.replication_user_of(replica).await.unwrap().is_none());
}
