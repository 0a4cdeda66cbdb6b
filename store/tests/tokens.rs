//! API tokens in the control DB: stored by digest, looked up until revoked, listed without
//! the token.

mod common;

use common::TestDb;
use ferrotrove_store::StoreError;
use uuid::Uuid;

#[tokio::test]
async fn tokens_map_to_tenants_until_revoked() {
    let db = TestDb::new().await;
    let store = &db.store;
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let row_a = store.add_token(&a, "demo", "ci").await.unwrap();
    assert_eq!(
        (
            row_a.tenant_id.as_str(),
            row_a.description.as_str(),
            row_a.revoked_at
        ),
        ("demo", "ci", None)
    );
    store.add_token(&b, "acme", "").await.unwrap();
    assert_eq!(
        store.token_tenant(&a).await.unwrap().as_deref(),
        Some("demo")
    );
    assert_eq!(
        store.token_tenant(&b).await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(store.token_tenant(&[3u8; 32]).await.unwrap(), None);
    assert!(matches!(
        store.add_token(&a, "other", "").await,
        Err(StoreError::Conflict(_))
    ));

    let all = store.list_tokens(None).await.unwrap();
    assert_eq!(all.len(), 2);
    let demo = store.list_tokens(Some("demo")).await.unwrap();
    assert_eq!(demo, std::slice::from_ref(&row_a));

    let revoked = store.revoke_token(row_a.id).await.unwrap();
    let when = revoked.revoked_at.expect("a revocation time");
    assert_eq!(store.token_tenant(&a).await.unwrap(), None);
    assert_eq!(
        store.token_tenant(&b).await.unwrap().as_deref(),
        Some("acme")
    );
    // Revoking again changes nothing.
    let again = store.revoke_token(row_a.id).await.unwrap();
    assert_eq!(again.revoked_at, Some(when));
    assert!(
        store
            .revoke_token(Uuid::new_v4())
            .await
            .unwrap_err()
            .is_not_found()
    );
}
