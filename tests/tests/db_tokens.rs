//! Tokens kept in the control DB: `ftrove-api tokens add` prints a new token once, `ftrove`
//! acts with it for its tenant only (another tenant's instances are 404), `tokens list`
//! never shows a token, and a revoked token is refused (401) from the next request on.

mod common;

use common::Stack;

/// The stack's API URL for `tenant`.
fn url_of(stack: &Stack, tenant: &str) -> String {
    let (base, _) = stack
        .api_url
        .rsplit_once('/')
        .expect("the API URL ends with its tenant");
    format!("{base}/{tenant}")
}

#[test]
fn control_db_tokens_admit_their_tenant_until_revoked() {
    let stack = Stack::start_with_db_tokens();
    let own = url_of(&stack, "test-tenant");
    let other = url_of(&stack, "other-tenant");
    let (token, token_id) = stack.add_token("test-tenant");
    let (other_token, _) = stack.add_token("other-tenant");
    assert!(token.starts_with("ftk_") && token.len() == 68, "{token}");
    assert_ne!(token, other_token);

    // No token, or an unknown one: 401.
    let (ok, _, stderr) = stack.ftrove(&["list"]);
    assert!(!ok && stderr.contains("(HTTP 401)"), "{stderr}");
    let (ok, _, stderr) = stack.ftrove_with(&own, "ftk_not-a-token-0123456789", &["list"]);
    assert!(!ok && stderr.contains("(HTTP 401)"), "{stderr}");

    // The token acts for its tenant.
    let (ok, stdout, stderr) = stack.ftrove_with(
        &own,
        &token,
        &["create", "a1", "7", "--size", "2", "--wait"],
    );
    assert!(ok, "{stdout}\n{stderr}\n{}", stack.logs());
    let (ok, shown, _) = stack.ftrove_with(&own, &token, &["--json", "show", "a1"]);
    assert!(ok, "{shown}");
    let a1: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let a1_id = a1["instance"]["id"].as_str().unwrap().to_owned();

    // Another tenant's token neither sees nor touches it: 404, never 403.
    let (ok, listed, stderr) = stack.ftrove_with(&other, &other_token, &["list"]);
    assert!(ok && !listed.contains(&a1_id), "{listed}\n{stderr}");
    for args in [["show", a1_id.as_str()], ["delete", a1_id.as_str()]] {
        let (ok, _, stderr) = stack.ftrove_with(&own, &other_token, &args);
        assert!(!ok && stderr.contains("(HTTP 404)"), "{args:?}: {stderr}");
    }

    // The list names tokens by id, never by the token.
    let (ok, listed, stderr) = stack.tokens_command(&["list"]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains(&token_id) && listed.contains("other-tenant"),
        "{listed}"
    );
    assert!(
        !listed.contains(&token) && !listed.contains(&other_token),
        "{listed}"
    );

    // Revoked: refused at the next request.
    let (ok, stdout, stderr) = stack.tokens_command(&["revoke", &token_id]);
    assert!(ok && stdout.contains("is revoked"), "{stdout}\n{stderr}");
    let (ok, _, stderr) = stack.ftrove_with(&own, &token, &["list"]);
    assert!(!ok && stderr.contains("(HTTP 401)"), "{stderr}");
    let (ok, listed, _) = stack.tokens_command(&["list", "--tenant", "test-tenant"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&token_id))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(ok && !row.contains(" - "), "no revocation time: {row}");
    let (ok, _, stderr) = stack.tokens_command(&["revoke", &uuid::Uuid::new_v4().to_string()]);
    assert!(!ok && stderr.contains("could not be found"), "{stderr}");

    // A new token of the tenant cleans up.
    let (again, _) = stack.add_token("test-tenant");
    let (ok, stdout, stderr) = stack.ftrove_with(&own, &again, &["delete", "a1", "--wait"]);
    assert!(ok, "{stdout}\n{stderr}");

    // No token reached a log.
    let logs = stack.logs();
    for secret in [&token, &other_token, &again] {
        assert!(!logs.contains(secret.as_str()), "a token is in the logs");
    }
}
