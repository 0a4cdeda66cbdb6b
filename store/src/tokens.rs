//! API tokens kept in the control DB, each mapped to the tenant it acts for. Only the
//! SHA-256 digest of a token is stored (the caller hashes it), so the table reveals no
//! token; revoking keeps the row and the time it was revoked.

use crate::rows::{take, take_opt_time, take_time, take_uuid};
use crate::{Store, StoreError, is_duplicate_key};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use time::OffsetDateTime;
use uuid::Uuid;

/// One token's row, without its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// What names the token in lists and revocations (not the token).
    pub id: Uuid,
    pub tenant_id: String,
    pub description: String,
    pub created: OffsetDateTime,
    /// When it was revoked; revoked tokens are refused.
    pub revoked_at: Option<OffsetDateTime>,
}

impl TokenRow {
    fn from_row(mut row: Row) -> Result<TokenRow, StoreError> {
        Ok(TokenRow {
            id: take_uuid(&mut row, "id")?,
            tenant_id: take(&mut row, "tenant_id")?,
            description: take(&mut row, "description")?,
            created: take_time(&mut row, "created")?,
            revoked_at: take_opt_time(&mut row, "revoked_at")?,
        })
    }
}

const COLUMNS: &str = "id, tenant_id, description, created, revoked_at";

/// Token `id`'s row; unknown: [`StoreError::NotFound`].
async fn token_row(conn: &mut Conn, id: Uuid) -> Result<TokenRow, StoreError> {
    let row: Option<Row> = conn
        .exec_first(
            format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?"),
            (id.to_string(),),
        )
        .await?;
    row.map(TokenRow::from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("Token {id} could not be found.")))
}

impl Store {
    /// Records a token by its SHA-256 `digest`, for `tenant`. A digest stored already is
    /// [`StoreError::Conflict`] (a token cannot be added twice, even once revoked).
    pub async fn add_token(
        &self,
        digest: &[u8; 32],
        tenant: &str,
        description: &str,
    ) -> Result<TokenRow, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let id = Uuid::new_v4();
            let inserted = conn
                .exec_drop(
                    "INSERT INTO api_tokens (id, digest, tenant_id, description, created) \
                     VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3))",
                    (id.to_string(), hex::encode(digest), tenant, description),
                )
                .await;
            match inserted {
                Err(e) if is_duplicate_key(&e) => {
                    return Err(StoreError::Conflict(
                        "This token is stored already.".to_owned(),
                    ));
                }
                other => other?,
            }
            token_row(&mut conn, id).await
        })
        .await
    }

    /// The tenant of the unrevoked token whose SHA-256 digest is `digest`.
    pub async fn token_tenant(&self, digest: &[u8; 32]) -> Result<Option<String>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            Ok(conn
                .exec_first(
                    "SELECT tenant_id FROM api_tokens WHERE digest = ? AND revoked_at IS NULL",
                    (hex::encode(digest),),
                )
                .await?)
        })
        .await
    }

    /// Every stored token (of `tenant`, when given), revoked ones too, oldest first.
    pub async fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            let rows: Vec<Row> = conn
                .exec(
                    format!(
                        "SELECT {COLUMNS} FROM api_tokens WHERE ? IS NULL OR tenant_id = ? \
                         ORDER BY created, id"
                    ),
                    (tenant, tenant),
                )
                .await?;
            rows.into_iter().map(TokenRow::from_row).collect()
        })
        .await
    }

    /// Revokes token `id` (from now on it is refused); revoking it again changes nothing.
    /// Returns the row after. Unknown: [`StoreError::NotFound`].
    pub async fn revoke_token(&self, id: Uuid) -> Result<TokenRow, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE api_tokens SET revoked_at = UTC_TIMESTAMP(3) WHERE id = ? AND revoked_at IS NULL",
                (id.to_string(),),
            )
            .await?;
            token_row(&mut conn, id).await
        })
        .await
    }
}
