//! API and enrollment tokens.
//!
//! A token is `minos_<kind>_<64 hex digits>`: 256 random bits from the operating system.
//! Only its SHA-256 is stored (`tokens` table, see [`crate::store`]); the plain token is
//! shown once, when it is created. Kinds: `admin` (everything), `api` (the ops API),
//! `enroll` (agents enrolling).

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Admin,
    Api,
    Enroll,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Api => "api",
            TokenKind::Enroll => "enroll",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "admin" => Some(TokenKind::Admin),
            "api" => Some(TokenKind::Api),
            "enroll" => Some(TokenKind::Enroll),
            _ => None,
        }
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub kind: TokenKind,
    pub name: String,
    /// Unix ms.
    pub created: i64,
    pub revoked: Option<i64>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A new secret `minos_<kind>_<64 hex digits>`.
pub(crate) fn secret(kind: &str) -> Result<String, StoreError> {
    let mut bits = [0u8; 32];
    getrandom::fill(&mut bits)
        .map_err(|e| StoreError::Invalid(format!("no randomness for a secret: {e}")))?;
    Ok(format!("minos_{kind}_{}", hex(&bits)))
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

type Row = (i64, String, String, i64, Option<i64>);

fn info(r: Row) -> Option<TokenInfo> {
    Some(TokenInfo {
        id: r.0,
        kind: TokenKind::parse(&r.1)?,
        name: r.2,
        created: r.3,
        revoked: r.4,
    })
}

impl Store {
    /// Creates a token and returns it in plain text: the only time it is shown.
    pub async fn create_token(&self, kind: TokenKind, name: &str) -> Result<String, StoreError> {
        let token = secret(kind.as_str())?;
        let next: (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM tokens")
            .fetch_one(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO tokens (id, kind, name, hash, created, revoked) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(next.0.unwrap_or(0) + 1)
        .bind(kind.as_str())
        .bind(name)
        .bind(hash(&token))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(token)
    }

    /// The token `token` stands for, if it exists and is not revoked.
    pub async fn check_token(&self, token: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, kind, name, created, revoked FROM tokens \
             WHERE hash = $1 AND revoked IS NULL",
        )
        .bind(hash(token))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(info))
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows: Vec<Row> =
            sqlx::query_as("SELECT id, kind, name, created, revoked FROM tokens ORDER BY id")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().filter_map(info).collect())
    }

    /// Revokes token `id`; false when there is no such valid token. The last valid admin
    /// token is refused ([`StoreError::Refused`]), so the API never locks everyone out.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let _w = self.write_lock().await;
        let valid: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, kind FROM tokens WHERE revoked IS NULL")
                .fetch_all(self.pool())
                .await?;
        let Some((_, kind)) = valid.iter().find(|(i, _)| *i == id) else {
            return Ok(false);
        };
        let admins = valid.iter().filter(|(_, k)| k == "admin").count();
        if kind == "admin" && admins == 1 {
            return Err(StoreError::Refused(
                "the last admin token cannot be revoked: create another first".into(),
            ));
        }
        let r = sqlx::query("UPDATE tokens SET revoked = $1 WHERE id = $2 AND revoked IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_revocable() {
        let (_dir, db) = crate::store::tests::temp_db();
        crate::store::tests::rt().block_on(async {
            let s = Store::open_sqlite(&db).await.unwrap();
            let admin = s
                .create_token(TokenKind::Admin, "first admin")
                .await
                .unwrap();
            let enroll = s.create_token(TokenKind::Enroll, "agents").await.unwrap();
            assert!(admin.starts_with("minos_admin_") && admin.len() == 12 + 64);
            assert_ne!(admin, enroll);
            let got = s.check_token(&admin).await.unwrap().unwrap();
            assert_eq!(
                (got.kind, got.name.as_str()),
                (TokenKind::Admin, "first admin")
            );
            assert!(s.check_token("minos_admin_00").await.unwrap().is_none());
            // Only the hash is stored.
            let stored: Vec<(String,)> = sqlx::query_as("SELECT hash FROM tokens")
                .fetch_all(s.pool())
                .await
                .unwrap();
            assert!(
                stored
                    .iter()
                    .all(|(h,)| h.len() == 64 && !admin.contains(h.as_str()))
            );
            assert!(matches!(
                s.revoke_token(got.id).await,
                Err(StoreError::Refused(_))
            ));
            let second = s.create_token(TokenKind::Admin, "second").await.unwrap();
            assert!(s.revoke_token(got.id).await.unwrap());
            assert!(!s.revoke_token(got.id).await.unwrap());
            assert!(s.check_token(&admin).await.unwrap().is_none());
            assert!(s.check_token(&second).await.unwrap().is_some());
            let all = s.list_tokens().await.unwrap();
            assert_eq!(all.len(), 3);
            assert!(all[0].revoked.is_some() && all[1].revoked.is_none());
            s.close().await;
        });
    }
}
