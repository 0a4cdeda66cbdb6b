//! Task rows: one run at a time across taskmanagers, resumption after a lapsed lease, and
//! nothing run again once finished.

mod common;

use common::TestDb;
use ferrotrove_store::TaskClaim;
use std::time::Duration;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn one_holder_at_a_time_and_a_lapsed_lease_is_taken_over() {
    let db = TestDb::new().await;
    let store = &db.store;
    let (task, instance) = (Uuid::now_v7(), Uuid::now_v7());

    let first = store
        .claim_task(task, "create", instance, &[instance], "tm-a", LONG)
        .await
        .unwrap();
    assert_eq!(
        first,
        TaskClaim::Run {
            attempt: 1,
            step: String::new()
        }
    );
    store
        .record_task_step(task, "tm-a", "snapshot")
        .await
        .unwrap();

    // Another taskmanager gets the same message: it must wait.
    let second = store
        .claim_task(task, "create", instance, &[instance], "tm-b", LONG)
        .await
        .unwrap();
    assert_eq!(
        second,
        TaskClaim::HeldBy {
            owner: "tm-a".into()
        }
    );
    // Its holder may claim again (a redelivery to the same process) and renew.
    assert!(matches!(
        store
            .claim_task(task, "create", instance, &[instance], "tm-a", LONG)
            .await
            .unwrap(),
        TaskClaim::Run { attempt: 2, .. }
    ));
    // Renewals that land within one millisecond write the same time, and still hold it.
    for _ in 0..20 {
        assert!(store.renew_task_lease(task, "tm-a", LONG).await.unwrap());
    }
    assert!(!store.renew_task_lease(task, "tm-b", LONG).await.unwrap());

    // tm-a dies: once its lease lapses, tm-b resumes at the recorded step.
    assert!(
        store
            .renew_task_lease(task, "tm-a", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resumed = store
        .claim_task(task, "create", instance, &[instance], "tm-b", LONG)
        .await
        .unwrap();
    assert_eq!(
        resumed,
        TaskClaim::Run {
            attempt: 3,
            step: "snapshot".into()
        }
    );
    // The old holder can no longer write the row.
    assert!(!store.renew_task_lease(task, "tm-a", LONG).await.unwrap());
    store.record_task_step(task, "tm-a", "stale").await.unwrap();
    assert_eq!(
        store.get_task(task).await.unwrap().unwrap().step,
        "snapshot"
    );

    store.finish_task(task, "tm-b", None).await.unwrap();
    let row = store.get_task(task).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.owner.as_deref(), row.attempts),
        ("done", Some("tm-b"), 3)
    );
    assert_eq!((row.kind.as_str(), row.instance_id), ("create", instance));
    assert_eq!(row.instances, Some(vec![instance]));
    // A late delivery of a finished task does nothing.
    assert_eq!(
        store
            .claim_task(task, "create", instance, &[instance], "tm-c", LONG)
            .await
            .unwrap(),
        TaskClaim::Finished
    );
}

#[tokio::test]
async fn concurrent_claims_admit_exactly_one() {
    let db = TestDb::new().await;
    let (task, instance, replica) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut running = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = db.store.clone();
        running.spawn(async move {
            store
                .claim_task(
                    task,
                    "create_replicas",
                    instance,
                    &[replica],
                    &format!("tm-{i}"),
                    LONG,
                )
                .await
                .unwrap()
        });
    }
    let claims = running.join_all().await;
    let runs = claims
        .iter()
        .filter(|c| matches!(c, TaskClaim::Run { .. }))
        .count();
    assert_eq!(runs, 1, "{claims:?}");
}
