//! The dispatcher against a real server, without the bus: commands map to their
//! responses, errors keep their kinds, operations are not done twice, Shutdown stops all.

mod support;

use ferrotrove_agent::AgentService;
use ferrotrove_proto::ErrorKind;
use ferrotrove_proto::agent::{AgentRequest, AgentResponse, PrepareRequest, SnapshotRequest};
use support::{TestServer, shared_tempdir};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn commands_map_to_responses() {
    let snapshots = shared_tempdir();
    let server = TestServer::new(snapshots.path());
    let service = AgentService::new(server.instance.clone());

    let AgentResponse::Pong(info) = service.dispatch(AgentRequest::Ping, None).await.unwrap()
    else {
        panic!("not a Pong")
    };
    assert!(!info.server_up);
    let AgentResponse::Status(status) = service.dispatch(AgentRequest::Status, None).await.unwrap()
    else {
        panic!("not a Status")
    };
    assert!(!status.up && status.error.is_some());

    // Commands that need a prepared instance say so.
    let snapshot = SnapshotRequest {
        snapshot_id: Uuid::now_v7(),
        method: Default::default(),
    };
    let err = service
        .dispatch(AgentRequest::CreateSnapshot(snapshot.clone()), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(
        service
            .dispatch(AgentRequest::Detach, None)
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Conflict
    );

    let prepare = AgentRequest::Prepare(PrepareRequest {
        server_id: 31,
        memory_mb: 64,
        databases: vec![],
        users: vec![],
        read_only: false,
    });
    let operation = Some(Uuid::now_v7());
    let AgentResponse::Prepared(prepared) =
        service.dispatch(prepare.clone(), operation).await.unwrap()
    else {
        panic!("not Prepared")
    };
    assert!(prepared.up);

    // The same operation again gets the first answer.
    let again = service.dispatch(prepare, operation).await.unwrap();
    assert_eq!(again, AgentResponse::Prepared(prepared));

    // A snapshot of a server without user databases still records its position.
    let AgentResponse::Snapshot(info) = service
        .dispatch(AgentRequest::CreateSnapshot(snapshot.clone()), None)
        .await
        .unwrap()
    else {
        panic!("not a Snapshot")
    };
    assert_eq!(info.snapshot_id, snapshot.snapshot_id);
    assert_eq!(info.gtid_pos, "", "nothing was ever binlogged");
    assert_eq!(
        service
            .dispatch(AgentRequest::DeleteSnapshot(snapshot), None)
            .await
            .unwrap(),
        AgentResponse::SnapshotDeleted
    );

    let AgentResponse::Pong(info) = service.dispatch(AgentRequest::Ping, None).await.unwrap()
    else {
        panic!("not a Pong")
    };
    assert!(info.server_up);

    let mut shutdown = service.shutdown_requested();
    assert_eq!(
        service
            .dispatch(AgentRequest::Shutdown, None)
            .await
            .unwrap(),
        AgentResponse::ShuttingDown
    );
    assert!(*shutdown.borrow_and_update());
    assert!(server.instance.server.running_pid().is_none());
    let AgentResponse::Status(status) = service.dispatch(AgentRequest::Status, None).await.unwrap()
    else {
        panic!("not a Status")
    };
    assert!(!status.up);
}
