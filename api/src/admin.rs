//! `ftrove-api tokens add|list|revoke`: the operator's management of the API tokens kept in
//! the control DB (see `auth`). A new token comes from the operating system's CSPRNG and
//! is handed back once; the control DB keeps only its SHA-256 digest.

use crate::auth::{TOKEN_LEN, digest, valid_tenant};
use crate::views::trove_time;
use ferrotrove_store::{Store, StoreError, TokenRow};
use rand::TryRngCore;
use uuid::Uuid;

/// What a new token starts with, so that it is recognisable (by secret scanners, too).
pub const TOKEN_PREFIX: &str = "ftk_";

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// A new token: `ftk_` and 32 bytes from the OS's CSPRNG in hex (68 characters).
pub fn new_token() -> Result<String, AdminError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| AdminError::Random(e.to_string()))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    debug_assert!(TOKEN_LEN.contains(&token.len()));
    Ok(token)
}

/// Makes a token for `tenant`, stores its digest, and returns the token (to show once)
/// with its row.
pub async fn add_token(
    store: &Store,
    tenant: &str,
    description: &str,
) -> Result<(String, TokenRow), AdminError> {
    if !valid_tenant(tenant) {
        return Err(AdminError::Invalid(format!(
            "tenant {tenant:?} is not 1 to 64 characters without control characters"
        )));
    }
    if description.chars().count() > 255 || description.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "the description must be at most 255 characters, without control characters".to_owned(),
        ));
    }
    let token = new_token()?;
    let row = store
        .add_token(&digest(token.as_bytes()), tenant, description)
        .await?;
    tracing::info!(token_id = %row.id, tenant, "API token added");
    Ok((token, row))
}

/// Revokes token `id`; the API refuses it from its next request on.
pub async fn revoke_token(store: &Store, id: Uuid) -> Result<TokenRow, AdminError> {
    let row = store.revoke_token(id).await?;
    tracing::info!(token_id = %id, tenant = %row.tenant_id, "API token revoked");
    Ok(row)
}

/// `tokens list` as a table: id, tenant, created, revoked, description (never a token).
pub fn token_table(rows: &[TokenRow]) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<19}  {:<19}  DESCRIPTION\n",
        "ID", "TENANT", "CREATED", "REVOKED"
    );
    for row in rows {
        let revoked = row.revoked_at.map_or_else(|| "-".to_owned(), trove_time);
        out += &format!(
            "{:<36}  {:<20}  {:<19}  {:<19}  {}\n",
            row.id,
            row.tenant_id,
            trove_time(row.created),
            revoked,
            row.description
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tokens_are_long_random_and_accepted_by_the_api() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 68);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert!(TOKEN_LEN.contains(&a.len()) && a.bytes().all(|c| c.is_ascii_graphic()));
    }
}
