//! The store against a real MariaDB (127.0.0.1:3306, root, no password): migrations,
//! instance queries, guarded transitions, heartbeat ordering and replication users.
//! Each test has a database of its own.

mod common;

use common::TestDb;
use ferrotrove_proto::agent::{Progress, ReplicationStatus, ServerStatus};
use ferrotrove_proto::conductor::{Heartbeat, HostStats};
use ferrotrove_proto::status::{InstanceStatus, Role};
use ferrotrove_store::{
    BusyWith, DeleteStart, DetachStart, NewInstance, ReplicaInsert, Store, StoreError, TaskClaim,
    UnsentCreate,
};
use std::collections::HashSet;
use std::time::Duration;
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
        create_task: None,
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
        ReplicaInsert::SourceRefused(s, None) if s.id == r1.id
    ));
    assert!(store.get_instance(rr.id).await.unwrap().is_none());
    assert!(
        store
            .insert_replicas(Uuid::new_v4(), &[InstanceStatus::Active], &[])
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Detaching: only from ACTIVE; the task id is recorded with DETACH and stays the same
    // when asked again, and a row made DETACH before ids were recorded gets one, once.
    assert!(matches!(
        store.start_detach(r2.id).await.unwrap(),
        DetachStart::Refused(i, Some(a)) if i.status == InstanceStatus::Build
            && a.busy_with == BusyWith::SeededFrom { source_id: src.id, source_name: "src".into() }
    ));
    let DetachStart::Started(detaching, detach_task) = store.start_detach(r1.id).await.unwrap()
    else {
        panic!("an ACTIVE replica did not start detaching")
    };
    assert_eq!(detaching.status, InstanceStatus::Detach);
    assert!(matches!(
        store.start_detach(r1.id).await.unwrap(),
        DetachStart::AlreadyDetaching(_, task) if task == detach_task
    ));
    raw_sql(
        &db,
        &format!(
            "UPDATE instances SET detach_task = NULL WHERE id = '{}'",
            r1.id
        ),
    )
    .await;
    let DetachStart::AlreadyDetaching(_, chosen) = store.start_detach(r1.id).await.unwrap() else {
        panic!("a DETACH row lost its status")
    };
    assert_ne!(chosen, detach_task);
    assert!(matches!(
        store.start_detach(r1.id).await.unwrap(),
        DetachStart::AlreadyDetaching(_, task) if task == chosen
    ));
    assert!(
        store
            .start_detach(Uuid::new_v4())
            .await
            .unwrap_err()
            .is_not_found()
    );
    store.set_replica_of(r1.id, None).await.unwrap();
    assert_eq!(store.replicas_of(src.id).await.unwrap(), [r2.id]);

    // The source of a replica in BUILD is busy seeding it, whether a taskmanager has taken
    // the task up yet or not.
    let DeleteStart::Busy(_, seeding) = store.start_delete(src.id).await.unwrap() else {
        panic!("a source seeding a replica started deleting")
    };
    assert_eq!(
        seeding.busy_with,
        BusyWith::SeedingReplicas {
            replicas: vec!["r-2".into()]
        }
    );
    assert_eq!((&seeding.task, seeding.in_progress()), (&None, false));

    // A taskmanager takes the seeding up: the replica is busy too, at the task's step.
    let task = Uuid::now_v7();
    let lease = Duration::from_secs(60);
    store
        .claim_task(task, "create_replicas", src.id, &[r2.id], "tm-1", lease)
        .await
        .unwrap();
    store
        .record_task_step(task, "tm-1", "attach")
        .await
        .unwrap();
    let DeleteStart::Busy(found, busy) = store.start_delete(r2.id).await.unwrap() else {
        panic!("a replica being seeded started deleting")
    };
    assert_eq!(found.status, InstanceStatus::Build);
    assert!(busy.in_progress());
    let running = busy.task.clone().unwrap();
    assert_eq!(
        (running.id, running.kind.as_str(), running.step.as_str()),
        (task, "create_replicas", "attach")
    );
    assert_eq!(store.activity(&found).await.unwrap(), Some(busy));
    let Some(seeding) = store.activity(&src_now(store, src.id).await).await.unwrap() else {
        panic!("the source is not seeding")
    };
    assert_eq!(seeding.task.map(|t| t.id), Some(task));

    // Once the replica is ACTIVE, the source has a live replica: Trove's refusal.
    store
        .set_status(r2.id, InstanceStatus::Active, None)
        .await
        .unwrap();
    assert!(matches!(
        store.start_delete(src.id).await.unwrap(),
        DeleteStart::HasReplicas(_, ids) if ids == [r2.id]
    ));
    assert_eq!(
        store.activity(&src_now(store, src.id).await).await.unwrap(),
        None
    );

    // The taskmanager dies while the replica is in BUILD: once its lease lapses nobody
    // works on the replica, and it may be deleted (once).
    store
        .set_status(r2.id, InstanceStatus::Build, None)
        .await
        .unwrap();
    assert!(
        store
            .renew_task_lease(task, "tm-1", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let DeleteStart::Started(deleting, delete_task) = store.start_delete(r2.id).await.unwrap()
    else {
        panic!("r2, left by a dead task, must be deletable");
    };
    assert_eq!(
        (deleting.status, deleting.fault),
        (InstanceStatus::Deleting, None)
    );
    // Asked again, as after a request whose task was lost: the same task id, every time.
    for _ in 0..2 {
        assert!(matches!(
            store.start_delete(r2.id).await.unwrap(),
            DeleteStart::AlreadyDeleting(_, task) if task == delete_task
        ));
    }
    // A row made DELETING before delete tasks had ids gets one, and keeps it.
    raw_sql(
        &db,
        &format!(
            "UPDATE instances SET delete_task = NULL WHERE id = '{}'",
            r2.id
        ),
    )
    .await;
    let DeleteStart::AlreadyDeleting(_, chosen) = store.start_delete(r2.id).await.unwrap() else {
        panic!("r2 is DELETING");
    };
    assert!(matches!(
        store.start_delete(r2.id).await.unwrap(),
        DeleteStart::AlreadyDeleting(_, task) if task == chosen
    ));
    store.mark_deleted(r2.id).await.unwrap();
    assert!(matches!(
        store.start_delete(src.id).await.unwrap(),
        DeleteStart::Started(..)
    ));
    let err = store.start_delete(r2.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));

    // An instance being created is busy while its task is held; ERROR is deletable.
    let built = store
        .insert_instance(&new_instance("t", "b"))
        .await
        .unwrap();
    let create = Uuid::now_v7();
    store
        .claim_task(create, "create", built.id, &[built.id], "tm-1", lease)
        .await
        .unwrap();
    assert!(matches!(
        store.start_delete(built.id).await.unwrap(),
        DeleteStart::Busy(_, a) if a.busy_with == BusyWith::Creating
            && a.task.as_ref().is_some_and(|t| t.id == create && t.step.is_empty())
    ));
    store
        .set_status(built.id, InstanceStatus::Error, Some("prepare failed"))
        .await
        .unwrap();
    store
        .finish_task(create, "tm-1", Some("prepare failed"))
        .await
        .unwrap();
    assert!(matches!(
        store.start_delete(built.id).await.unwrap(),
        DeleteStart::Started(..)
    ));
}

/// An ACTIVE source named `src` and a replica of it in BUILD for each of `names`, each
/// inserted as a request of its own.
async fn source_with_replicas(store: &Store, names: &[&str]) -> (Uuid, Vec<Uuid>) {
    let src = store
        .insert_instance(&new_instance("t", "src"))
        .await
        .unwrap();
    store
        .set_status(src.id, InstanceStatus::Active, None)
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for name in names {
        let mut replica = new_instance("t", name);
        replica.replica_of = Some(src.id);
        let ReplicaInsert::Inserted(rows) = store
            .insert_replicas(src.id, &[InstanceStatus::Active], &[replica])
            .await
            .unwrap()
        else {
            panic!("source refused")
        };
        replicas.push(rows[0].id);
    }
    (src.id, replicas)
}

/// Lets `owner`'s lease on `task` lapse, as when its taskmanager dies.
async fn lapse(store: &Store, task: Uuid, owner: &str) {
    assert!(
        store
            .renew_task_lease(task, owner, Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Two replica requests on one source, each with its own task: the replica whose task died
/// is stuck (deletable, and says which task left it), while the other task's replica is
/// busy with that task. Before task rows named their replicas, the live task was
/// attributed to both.
#[tokio::test]
async fn replicas_are_busy_with_the_task_that_names_them() {
    let db = TestDb::new().await;
    let store = &db.store;
    let lease = Duration::from_secs(60);
    let (src, replicas) = source_with_replicas(store, &["a", "b"]).await;
    let (a, b) = (replicas[0], replicas[1]);

    // Request A's task (older) reached attach, then its taskmanager died; request B's task
    // runs, held.
    let task_a = Uuid::now_v7();
    store
        .claim_task(task_a, "create_replicas", src, &[a], "tm-a", lease)
        .await
        .unwrap();
    store
        .record_task_step(task_a, "tm-a", "attach")
        .await
        .unwrap();
    let task_b = Uuid::now_v7();
    store
        .claim_task(task_b, "create_replicas", src, &[b], "tm-b", lease)
        .await
        .unwrap();
    lapse(store, task_a, "tm-a").await;

    let activity_a = store.activity(&src_now(store, a).await).await.unwrap();
    let task = activity_a.as_ref().and_then(|x| x.task.clone());
    assert_eq!(
        task.as_ref().map(|t| (t.id, t.held, t.step.as_str())),
        Some((task_a, false, "attach")),
        "{activity_a:?}"
    );
    assert!(!activity_a.is_some_and(|x| x.in_progress()));
    let activity_b = store.activity(&src_now(store, b).await).await.unwrap();
    assert_eq!(
        activity_b
            .as_ref()
            .and_then(|x| x.task.as_ref().map(|t| (t.id, t.held))),
        Some((task_b, true)),
        "{activity_b:?}"
    );

    // The source seeds both; the held task is the one named.
    let seeding = store.activity(&src_now(store, src).await).await.unwrap();
    let seeding = seeding.expect("the source is seeding");
    assert_eq!(
        seeding.busy_with,
        BusyWith::SeedingReplicas {
            replicas: vec!["a".into(), "b".into()]
        }
    );
    assert_eq!(seeding.task.map(|t| t.id), Some(task_b));

    // Once b is built, the source is busy only with a, whose task is the dead one, even
    // though task B still runs (cleaning up its snapshot).
    store
        .set_status(b, InstanceStatus::Active, None)
        .await
        .unwrap();
    let seeding = store.activity(&src_now(store, src).await).await.unwrap();
    let seeding = seeding.expect("the source is seeding");
    assert_eq!(
        seeding.busy_with,
        BusyWith::SeedingReplicas {
            replicas: vec!["a".into()]
        }
    );
    assert_eq!(seeding.task.map(|t| (t.id, t.held)), Some((task_a, false)));
    store
        .set_status(b, InstanceStatus::Build, None)
        .await
        .unwrap();

    // b cannot be deleted while task B seeds it; a can, once.
    match store.start_delete(b).await.unwrap() {
        DeleteStart::Busy(found, busy) => {
            assert_eq!(found.id, b);
            assert_eq!(busy.task.map(|t| (t.id, t.held)), Some((task_b, true)));
        }
        other => panic!("b, seeded by a live task, started deleting: {other:?}"),
    }
    assert!(
        matches!(store.start_delete(a).await.unwrap(), DeleteStart::Started(i, _) if i.id == a && i.status == InstanceStatus::Deleting),
        "a, left by a dead task, must be deletable"
    );
    assert!(matches!(
        store.start_delete(a).await.unwrap(),
        DeleteStart::AlreadyDeleting(..)
    ));
    assert_eq!(
        store.get_task(task_a).await.unwrap().unwrap().instances,
        Some(vec![a])
    );
}

/// A task recorded before rows named their instances (no `instances`) is taken to seed
/// every replica in BUILD of its source that no other task names, as before; claimed again,
/// it names them.
#[tokio::test]
async fn tasks_recorded_without_instances_fall_back_to_their_source() {
    let db = TestDb::new().await;
    let store = &db.store;
    let lease = Duration::from_secs(60);
    let (src, replicas) = source_with_replicas(store, &["old", "new"]).await;
    let (old, new) = (replicas[0], replicas[1]);

    // A running, held task as a taskmanager before migration 8 recorded it.
    let legacy = Uuid::now_v7();
    raw_sql(
        &db,
        &format!(
            "INSERT INTO tasks (id, kind, instance_id, state, step, owner, lease_until, attempts) \
             VALUES ('{legacy}', 'create_replicas', '{src}', 'running', 'attach', 'tm-old', \
             UTC_TIMESTAMP(3) + INTERVAL 60 SECOND, 1)"
        ),
    )
    .await;
    assert_eq!(
        store.get_task(legacy).await.unwrap().unwrap().instances,
        None
    );
    // A newer task names `new`, and its taskmanager died.
    let named = Uuid::now_v7();
    store
        .claim_task(named, "create_replicas", src, &[new], "tm-new", lease)
        .await
        .unwrap();
    lapse(store, named, "tm-new").await;

    // `old` is named by no task: the legacy one seeds it, so it is busy.
    match store.start_delete(old).await.unwrap() {
        DeleteStart::Busy(_, busy) => {
            assert_eq!(busy.task.map(|t| (t.id, t.held)), Some((legacy, true)));
        }
        other => panic!("a replica the legacy task may seed started deleting: {other:?}"),
    }
    // `new` is named by its own (dead) task, which wins over the legacy one.
    let activity = store.activity(&src_now(store, new).await).await.unwrap();
    assert_eq!(
        activity.and_then(|x| x.task).map(|t| (t.id, t.held)),
        Some((named, false))
    );
    let source = store.activity(&src_now(store, src).await).await.unwrap();
    assert_eq!(source.and_then(|x| x.task).map(|t| t.id), Some(legacy));

    // The legacy task's taskmanager dies; one that claims it again records its replicas.
    raw_sql(
        &db,
        &format!("UPDATE tasks SET lease_until = UTC_TIMESTAMP(3) - INTERVAL 1 SECOND WHERE id = '{legacy}'"),
    )
    .await;
    assert!(matches!(
        store
            .claim_task(legacy, "create_replicas", src, &[old], "tm-2", lease)
            .await
            .unwrap(),
        TaskClaim::Run { attempt: 2, .. }
    ));
    assert_eq!(
        store.get_task(legacy).await.unwrap().unwrap().instances,
        Some(vec![old])
    );
    let activity = store.activity(&src_now(store, new).await).await.unwrap();
    assert_eq!(activity.and_then(|x| x.task).map(|t| t.id), Some(named));
    assert!(matches!(
        store.start_delete(new).await.unwrap(),
        DeleteStart::Started(..)
    ));
}

/// The live row of `id`.
async fn src_now(store: &Store, id: Uuid) -> ferrotrove_store::Instance {
    store.get_instance(id).await.unwrap().unwrap()
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

    // The API's lean read gives the same answers as the whole row, and nothing for an
    // instance that never reported.
    let lean = store.guest_liveness(&[id, Uuid::now_v7()]).await.unwrap();
    assert_eq!(lean.len(), 1);
    let g = &lean[&id];
    assert_eq!(
        (
            g.instance_id,
            g.received_at,
            g.server_up,
            &g.progress,
            g.stale
        ),
        (
            s.instance_id,
            s.received_at,
            s.server_up,
            &s.progress,
            s.stale
        )
    );
    assert!(g.age_ms < 60_000, "age {} ms", g.age_ms);
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

/// Runs SQL on the test's database outside the store (to age heartbeats, to break tables).
async fn raw_sql(db: &TestDb, sql: &str) {
    use mysql_async::prelude::Queryable;
    let opts =
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&db.config.url).unwrap())
            .db_name(Some(db.config.database.clone()));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop(sql).await.unwrap();
    conn.disconnect().await.unwrap();
}

/// Moves an instance's last heartbeat `secs` into the past.
async fn age(db: &TestDb, id: Uuid, secs: u32) {
    raw_sql(
        db,
        &format!(
            "UPDATE guest_status SET received_at = received_at - INTERVAL {secs} SECOND \
             WHERE instance_id = '{id}'"
        ),
    )
    .await;
}

#[tokio::test]
async fn heartbeat_batches_keep_the_newest_within_and_across_batches() {
    let db = TestDb::new().await;
    let store = &db.store;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            store
                .insert_instance(&new_instance("t", &format!("b{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    let gone = store
        .insert_instance(&new_instance("t", "gone"))
        .await
        .unwrap()
        .id;
    store.mark_deleted(gone).await.unwrap();
    let (old_boot, new_boot) = (boot(1_000), boot(2_000));

    // Within one batch: out of order, repeated, a newer boot with a lower seq, an unknown
    // and a deleted instance.
    let batch = vec![
        heartbeat(ids[0], old_boot, 5, 5.0),
        heartbeat(ids[0], old_boot, 9, 9.0),
        heartbeat(ids[0], old_boot, 7, 7.0),
        heartbeat(ids[1], old_boot, 50, 50.0),
        heartbeat(ids[1], new_boot, 2, 2.0),
        heartbeat(ids[1], old_boot, 60, 60.0),
        heartbeat(ids[2], old_boot, 1, 1.0),
        heartbeat(Uuid::new_v4(), old_boot, 1, 1.0),
        heartbeat(gone, old_boot, 1, 1.0),
    ];
    store.record_heartbeats(&batch).await.unwrap();
    let got = store
        .guest_statuses(&[ids[0], ids[1], ids[2], ids[3], gone])
        .await
        .unwrap();
    let pair = |id: Uuid| {
        let s = &got[&id];
        (s.boot_id, s.seq, s.cpu_percent)
    };
    assert_eq!(pair(ids[0]), (old_boot, 9, 9.0));
    assert_eq!(pair(ids[1]), (new_boot, 2, 2.0));
    assert_eq!(pair(ids[2]), (old_boot, 1, 1.0));
    assert_eq!(
        got.len(),
        3,
        "nothing for the unknown, deleted and silent instances"
    );
    assert!(got.values().all(|s| !s.stale));

    // Across batches: an older heartbeat never overwrites a newer one, column by column.
    store
        .record_heartbeats(&[
            heartbeat(ids[0], old_boot, 8, 8.0),
            heartbeat(ids[1], old_boot, 99, 99.0),
            heartbeat(ids[2], old_boot, 2, 2.0),
            heartbeat(ids[3], new_boot, 1, 1.0),
        ])
        .await
        .unwrap();
    let got = store.guest_statuses(&ids).await.unwrap();
    let pair = |id: Uuid| {
        let s = &got[&id];
        (s.boot_id, s.seq, s.cpu_percent)
    };
    assert_eq!(pair(ids[0]), (old_boot, 9, 9.0));
    assert_eq!(pair(ids[1]), (new_boot, 2, 2.0));
    assert_eq!(pair(ids[2]), (old_boot, 2, 2.0));
    assert_eq!(pair(ids[3]), (new_boot, 1, 1.0));
    store.record_heartbeats(&[]).await.unwrap();

    // Two conductors (two pools) racing: interleaved batches, each holding every instance,
    // each seq sent once by one of them in shuffled order. The highest seq wins everywhere.
    let other = Store::connect(&db.config).await.unwrap();
    let race_boot = boot(3_000);
    let writers = [store.clone(), other.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, writer)| {
            let ids = ids.clone();
            tokio::spawn(async move {
                // Writer 0 sends odd seqs downwards, writer 1 even seqs upwards.
                let mut seqs: Vec<u64> = (1..=40u64)
                    .filter(|s| s % 2 == (n as u64 + 1) % 2)
                    .collect();
                if n == 0 {
                    seqs.reverse();
                }
                for chunk in seqs.chunks(3) {
                    let batch: Vec<Heartbeat> = chunk
                        .iter()
                        .flat_map(|&seq| {
                            ids.iter()
                                .map(move |&id| heartbeat(id, race_boot, seq, seq as f32))
                        })
                        .collect();
                    writer.record_heartbeats(&batch).await.unwrap();
                }
            })
        });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let got = store.guest_statuses(&ids).await.unwrap();
    for id in &ids {
        assert_eq!(
            (got[id].boot_id, got[id].seq, got[id].cpu_percent),
            (race_boot, 40, 40.0)
        );
    }
    other.close().await.unwrap();
}

#[tokio::test]
async fn any_text_a_guest_sends_is_stored_as_sent() {
    let db = TestDb::new().await;
    let store = &db.store;
    let id = store
        .insert_instance(&new_instance("t", "text"))
        .await
        .unwrap()
        .id;
    let nasty = "it's a \"quote\", a back\\slash, a\nnewline, a tab\t, a NUL \0, é😀 and '); DROP TABLE instances; --";
    let mut hb = heartbeat(id, boot(1), 1, f32::NAN);
    hb.server.error = Some(nasty.to_owned());
    hb.server.version = Some("10.11.6-MariaDB\\'".to_owned());
    if let Some(repl) = hb.server.replication.as_mut() {
        repl.last_error = Some(nasty.repeat(100));
    }
    hb.progress = Some(Progress {
        operation: "restore \"x\" \\".into(),
        ..restoring(1)
    });
    store.record_heartbeats(&[hb.clone()]).await.unwrap();
    let s = store.guest_status(id).await.unwrap().unwrap();
    assert_eq!(s.server_error.as_deref(), Some(nasty));
    assert_eq!(s.version, hb.server.version);
    assert_eq!(
        s.last_error.unwrap().chars().count(),
        4000,
        "cut, not refused"
    );
    assert_eq!(s.progress.unwrap().operation, "restore \"x\" \\");
    assert_eq!(s.cpu_percent, 0.0, "NaN is stored as 0");
    assert_eq!(
        store.list_instances("t", None, None).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn liveness_is_marked_when_heartbeats_stop_and_cleared_when_they_resume() {
    let db = TestDb::new().await;
    let store = &db.store;
    let make = |name: &'static str, status: InstanceStatus| {
        let store = store.clone();
        async move {
            let id = store
                .insert_instance(&new_instance("t", name))
                .await
                .unwrap()
                .id;
            store.set_status(id, status, None).await.unwrap();
            id
        }
    };
    let active = make("active", InstanceStatus::Active).await;
    let fresh = make("fresh", InstanceStatus::Active).await;
    let building = make("building", InstanceStatus::Build).await;
    let failed = make("failed", InstanceStatus::Error).await;
    let silent = make("silent", InstanceStatus::Active).await;
    let b = boot(1_000);
    let all = [active, fresh, building, failed];
    store
        .record_heartbeats(&all.map(|id| heartbeat(id, b, 1, 1.0)))
        .await
        .unwrap();
    let before = store.guest_status(active).await.unwrap().unwrap();
    assert!(!before.stale);
    let rows_before: Vec<_> = instance_rows(store, &[building, failed]).await;

    // Nothing is older than the expiry yet.
    assert!(
        store
            .mark_stale(Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    for id in [active, building, failed] {
        age(&db, id, 60).await;
    }
    let mut marked = store.mark_stale(Duration::from_secs(30)).await.unwrap();
    marked.sort();
    let mut expected = vec![active, building, failed];
    expected.sort();
    assert_eq!(marked, expected, "the silent ones, never the fresh one");
    let got = store
        .guest_statuses(&[active, fresh, building, failed, silent])
        .await
        .unwrap();
    assert!(got[&active].stale && !got[&fresh].stale);
    assert!(got[&active].stale_changed_at >= before.stale_changed_at);
    assert!(!got.contains_key(&silent), "no row: it never reported");
    // Marked once: a second check (another conductor's) finds nothing to do.
    assert!(
        store
            .mark_stale(Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    // BUILD and ERROR instances keep their rows as they were: status, fault, updated.
    assert_eq!(instance_rows(store, &[building, failed]).await, rows_before);

    // A late, older heartbeat does not clear the mark; the next newer one does.
    store
        .record_heartbeats(&[heartbeat(active, b, 1, 5.0)])
        .await
        .unwrap();
    assert!(store.guest_status(active).await.unwrap().unwrap().stale);
    let marked_at = store
        .guest_status(active)
        .await
        .unwrap()
        .unwrap()
        .stale_changed_at;
    store
        .record_heartbeats(&[heartbeat(active, b, 2, 2.0)])
        .await
        .unwrap();
    let resumed = store.guest_status(active).await.unwrap().unwrap();
    assert!(!resumed.stale);
    assert_eq!(resumed.seq, 2);
    assert!(resumed.stale_changed_at >= marked_at);
    // A heartbeat that finds the row fresh leaves its change time alone.
    store
        .record_heartbeats(&[heartbeat(active, b, 3, 3.0)])
        .await
        .unwrap();
    assert_eq!(
        store
            .guest_status(active)
            .await
            .unwrap()
            .unwrap()
            .stale_changed_at,
        resumed.stale_changed_at
    );

    // A deleted instance's row is not looked at.
    store.mark_deleted(fresh).await.unwrap();
    age(&db, fresh, 60).await;
    assert!(
        store
            .mark_stale(Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The instance rows of `ids`, as the API would read them.
async fn instance_rows(store: &Store, ids: &[Uuid]) -> Vec<ferrotrove_store::Instance> {
    let mut rows = Vec::new();
    for id in ids {
        rows.push(store.get_instance(*id).await.unwrap().unwrap());
    }
    rows
}

#[tokio::test]
async fn secrets_of_live_instances_load_at_once() {
    let db = TestDb::new().await;
    let store = &db.store;
    let live = store
        .insert_instance(&new_instance("t", "a"))
        .await
        .unwrap()
        .id;
    let gone = store
        .insert_instance(&new_instance("t", "b"))
        .await
        .unwrap()
        .id;
    store.mark_deleted(gone).await.unwrap();
    let secrets = store.instance_secrets(10).await.unwrap();
    assert_eq!(secrets.keys().copied().collect::<Vec<_>>(), [live]);
    assert_eq!(
        Some(&secrets[&live]),
        store.instance_secret(live).await.unwrap().as_ref()
    );
    assert!(store.instance_secrets(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn liveness_checks_race_safely() {
    let db = TestDb::new().await;
    let store = &db.store;
    let mut ids = Vec::new();
    for n in 0..30 {
        let id = store
            .insert_instance(&new_instance("t", &format!("r{n}")))
            .await
            .unwrap()
            .id;
        ids.push(id);
    }
    store
        .record_heartbeats(
            &ids.iter()
                .map(|&id| heartbeat(id, boot(1), 1, 1.0))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    raw_sql(
        &db,
        "UPDATE guest_status SET received_at = received_at - INTERVAL 1 MINUTE",
    )
    .await;
    let other = Store::connect(&db.config).await.unwrap();
    let checks = [store.clone(), other.clone(), store.clone()]
        .map(|s| tokio::spawn(async move { s.mark_stale(Duration::from_secs(30)).await.unwrap() }));
    let mut marked = Vec::new();
    for check in checks {
        marked.extend(check.await.unwrap());
    }
    marked.sort();
    ids.sort();
    assert_eq!(marked, ids, "each instance marked exactly once");
    other.close().await.unwrap();
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

/// A control DB that stops answering (a frozen server: connections are accepted, nothing
/// answers) fails each operation after `timeout_secs` as unavailable, instead of hanging;
/// once it answers again, so does the store.
#[tokio::test]
async fn operations_on_a_server_that_does_not_answer_time_out() {
    let mut server = ferrotrove_tests::mariadb_server::MariadbServer::start();
    let config = ferrotrove_store::StoreConfig {
        url: server.url(),
        database: "ftrove_timeout".to_owned(),
        pool_max: 2,
        timeout_secs: 1,
    };
    let store = Store::connect(&config).await.unwrap();
    assert!(!store.list_flavors().await.unwrap().is_empty());

    server.freeze();
    // More operations than the pool has connections: none waits for ever.
    for _ in 0..3 {
        let err = store.list_flavors().await.unwrap_err();
        assert!(matches!(err, StoreError::Timeout(_)), "{err}");
        assert_eq!(err.kind(), ferrotrove_proto::ErrorKind::Unavailable);
    }
    server.thaw();
    assert!(!store.list_flavors().await.unwrap().is_empty());

    // Stopped: refused at once, as unavailable too; started again: served.
    server.stop();
    let err = store.list_flavors().await.unwrap_err();
    assert_eq!(
        err.kind(),
        ferrotrove_proto::ErrorKind::Unavailable,
        "{err}"
    );
    server.boot();
    assert!(!store.list_flavors().await.unwrap().is_empty());
}

#[tokio::test]
async fn creates_whose_task_was_never_confirmed_are_found_after_their_grace() {
    let db = TestDb::new().await;
    let store = &db.store;
    let grace = Duration::from_secs(60);
    let mut src = new_instance("t", "src");
    src.status = InstanceStatus::Active;
    let src = store.insert_instance(&src).await.unwrap();
    // A standalone create and a request for two replicas, both recorded with their task.
    let (create, replicas) = (Uuid::now_v7(), Uuid::now_v7());
    let mut lone = new_instance("t", "lone");
    lone.create_task = Some(create);
    let lone = store.insert_instance(&lone).await.unwrap();
    let rows: Vec<NewInstance> = ["r-1", "r-2"]
        .iter()
        .map(|name| NewInstance {
            replica_of: Some(src.id),
            create_task: Some(replicas),
            ..new_instance("t", name)
        })
        .collect();
    let ReplicaInsert::Inserted(inserted) = store
        .insert_replicas(src.id, &[InstanceStatus::Active], &rows)
        .await
        .unwrap()
    else {
        panic!("the source is ACTIVE")
    };
    let replica_ids: Vec<Uuid> = inserted.iter().map(|r| r.id).collect();

    // Within their grace nothing is unsent, whatever happened to the send.
    assert_eq!(store.unsent_creates(grace).await.unwrap(), []);
    // Past it: both, oldest first, the replicas under their one task.
    for id in [lone.id, replica_ids[0], replica_ids[1]] {
        raw_sql(
            &db,
            &format!(
                "UPDATE instances SET created = created - INTERVAL 61 SECOND WHERE id = '{id}'"
            ),
        )
        .await;
    }
    assert_eq!(
        store.unsent_creates(grace).await.unwrap(),
        [
            UnsentCreate {
                task: create,
                source_id: None,
                instances: vec![lone.id],
            },
            UnsentCreate {
                task: replicas,
                source_id: Some(src.id),
                instances: replica_ids.clone(),
            },
        ]
    );

    // Confirmed sent: no longer unsent.
    store.mark_create_sent(replicas).await.unwrap();
    let unsent = store.unsent_creates(grace).await.unwrap();
    assert_eq!(unsent.iter().map(|c| c.task).collect::<Vec<_>>(), [create]);

    // Taken up by a taskmanager (its task row exists): no longer unsent, and not failed.
    store
        .claim_task(create, "create", lone.id, &[lone.id], "tm-1", grace)
        .await
        .unwrap();
    assert_eq!(store.unsent_creates(grace).await.unwrap(), []);
    assert!(
        !store
            .fail_unsent_create(lone.id, create, "lost")
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_instance(lone.id).await.unwrap().unwrap().status,
        InstanceStatus::Build
    );

    // An unsent one nobody took up is failed once, with its fault; a replica of a sent
    // request is not.
    let other = Uuid::now_v7();
    let mut lost = new_instance("t", "lost");
    lost.create_task = Some(other);
    let lost = store.insert_instance(&lost).await.unwrap();
    assert!(
        store
            .fail_unsent_create(lost.id, other, "lost")
            .await
            .unwrap()
    );
    assert!(
        !store
            .fail_unsent_create(lost.id, other, "lost")
            .await
            .unwrap()
    );
    let failed = store.get_instance(lost.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.fault.as_deref()),
        (InstanceStatus::Error, Some("lost"))
    );
    assert!(
        !store
            .fail_unsent_create(replica_ids[0], replicas, "lost")
            .await
            .unwrap()
    );
}
