//! API and enrollment tokens.
//!
//! A token is `minos_<kind>_<64 hex digits>`: 256 random bits from the operating system.
//! Only its SHA-256 is stored (`tokens` table, see [`crate::store`]); the plain token is
//! shown once, when it is created. Kinds: `admin` (everything), `api` (the ops API),
//! `enroll` (agents enrolling).
//!
//! An `api` token may be *scoped*: given grants on nodes of the service tree, each with
//! a role (`read`: see the hosts and their tasks; `run`: also run tasks on them), that
//! hold for the node and everything below it (`token_grants` table). A scoped token
//! reaches only hosts placed under a node it holds a grant on ([`TokenInfo::may`]). It
//! stays scoped (`scoped_tokens` table) when its grants go (their nodes removed, or
//! roles this version does not know): it then reaches nothing. An api token created
//! without grants reaches every host, as an admin token does.

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};
use crate::tree::{Host, Inventory, NodeId};

/// What a grant allows on the hosts below its node. `Run` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// See the hosts, the tasks on them and their output.
    Read,
    /// Also run, pause, resume, cancel and retry tasks on them.
    Run,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Run => "run",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "run" => Some(Role::Run),
            _ => None,
        }
    }
}

/// A role on a node of the service tree and everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub node: NodeId,
    pub role: Role,
}

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
    /// Whether the token was created scoped (an api token with grants).
    pub scoped: bool,
    /// A scoped token's grants.
    pub grants: Vec<Grant>,
}

impl TokenInfo {
    /// Whether the token is limited to parts of the service tree.
    pub fn scoped(&self) -> bool {
        self.kind == TokenKind::Api && self.scoped
    }

    /// Whether the token may act as `role` on `host`: not scoped, or holding a grant of
    /// at least `role` on a node that is one of the host's nodes or above one. A host
    /// attached nowhere is reached by unscoped tokens only.
    pub fn may(&self, inv: &Inventory, host: &Host, role: Role) -> bool {
        if !self.scoped() {
            return true;
        }
        self.grants
            .iter()
            .any(|g| g.role >= role && host.nodes.iter().any(|&n| inv.is_within(n, g.node)))
    }
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
        scoped: false,
        grants: Vec::new(),
    })
}

impl Store {
    /// Fills in whether `t` is scoped and its grants.
    async fn load_scope(&self, t: &mut TokenInfo) -> Result<(), StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT token_id FROM scoped_tokens WHERE token_id = $1")
                .bind(t.id)
                .fetch_optional(self.pool())
                .await?;
        t.scoped = row.is_some();
        t.grants = self.grants(t.id).await?;
        Ok(())
    }

    /// The grants of token `id`, in node order. A row with an unknown role grants
    /// nothing (it is skipped; the token stays scoped, so nothing is widened).
    async fn grants(&self, id: i64) -> Result<Vec<Grant>, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT node_id, role FROM token_grants WHERE token_id = $1 ORDER BY node_id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(n, r)| {
                Some(Grant {
                    node: NodeId(u64::try_from(n).ok()?),
                    role: Role::parse(&r)?,
                })
            })
            .collect())
    }

    /// Creates an api token scoped to `grants` (at least one, on existing nodes, one
    /// per node) and returns it in plain text: the only time it is shown.
    pub async fn create_scoped_token(
        &self,
        name: &str,
        grants: &[Grant],
    ) -> Result<String, StoreError> {
        if grants.is_empty() {
            return Err(StoreError::Refused(
                "a scoped token needs at least one grant".into(),
            ));
        }
        // Under the writer's lock: no node is removed between the check and the insert.
        let _w = self.write_lock().await;
        let inv = self.snapshot();
        for (i, g) in grants.iter().enumerate() {
            if inv.node(g.node).is_none() {
                return Err(StoreError::Refused(format!(
                    "grant on node {}: no such node",
                    g.node.0
                )));
            }
            if grants[..i].iter().any(|o| o.node == g.node) {
                return Err(StoreError::Refused(format!(
                    "two grants on {}: give one role per node",
                    inv.path(g.node)
                )));
            }
        }
        let token = secret(TokenKind::Api.as_str())?;
        let mut tx = self.pool().begin().await?;
        let next: (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM tokens")
            .fetch_one(&mut *tx)
            .await?;
        let id = next.0.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO tokens (id, kind, name, hash, created, revoked) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(id)
        .bind(TokenKind::Api.as_str())
        .bind(name)
        .bind(hash(&token))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO scoped_tokens (token_id) VALUES ($1)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for g in grants {
            sqlx::query("INSERT INTO token_grants (token_id, node_id, role) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(i64::try_from(g.node.0).unwrap_or(i64::MAX))
                .bind(g.role.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(token)
    }
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
        let Some(mut t) = row.and_then(info) else {
            return Ok(None);
        };
        self.load_scope(&mut t).await?;
        Ok(Some(t))
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows: Vec<Row> =
            sqlx::query_as("SELECT id, kind, name, created, revoked FROM tokens ORDER BY id")
                .fetch_all(self.pool())
                .await?;
        let mut out: Vec<TokenInfo> = rows.into_iter().filter_map(info).collect();
        for t in &mut out {
            self.load_scope(t).await?;
        }
        Ok(out)
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

    #[test]
    fn scoped_tokens_reach_the_hosts_below_their_grants() {
        let (_dir, db) = crate::store::tests::temp_db();
        crate::store::tests::rt().block_on(async {
            let s = Store::open_sqlite(&db).await.unwrap();
            let sre = s.add_node(None, "sre", "team").await.unwrap();
            let minos = s.add_node(Some(sre), "minos", "service").await.unwrap();
            let web = s.add_node(Some(minos), "web", "module").await.unwrap();
            let shop = s.add_node(None, "shop", "team").await.unwrap();
            let h_web = s.add_host("web-1").await.unwrap();
            s.attach(h_web, web).await.unwrap();
            let h_shop = s.add_host("shop-1").await.unwrap();
            s.attach(h_shop, shop).await.unwrap();
            let h_loose = s.add_host("loose-1").await.unwrap();
            let token = s
                .create_scoped_token(
                    "deployer",
                    &[
                        Grant {
                            node: minos,
                            role: Role::Run,
                        },
                        Grant {
                            node: shop,
                            role: Role::Read,
                        },
                    ],
                )
                .await
                .unwrap();
            let t = s.check_token(&token).await.unwrap().unwrap();
            assert!(t.scoped() && t.kind == TokenKind::Api);
            let inv = s.snapshot();
            let host = |h| inv.host(h).unwrap();
            // Inherited downwards: run on /sre/minos covers /sre/minos/web.
            assert!(t.may(&inv, host(h_web), Role::Run));
            assert!(t.may(&inv, host(h_shop), Role::Read));
            assert!(!t.may(&inv, host(h_shop), Role::Run));
            assert!(!t.may(&inv, host(h_loose), Role::Read));
            // Not upwards: a grant on /sre/minos says nothing of /sre.
            let h_sre = s.add_host("sre-1").await.unwrap();
            s.attach(h_sre, sre).await.unwrap();
            let inv = s.snapshot();
            assert!(!t.may(&inv, inv.host(h_sre).unwrap(), Role::Read));
            // Bad grants change nothing.
            assert!(s.create_scoped_token("x", &[]).await.is_err());
            let twice = [
                Grant {
                    node: web,
                    role: Role::Read,
                },
                Grant {
                    node: web,
                    role: Role::Run,
                },
            ];
            assert!(s.create_scoped_token("x", &twice).await.is_err());
            let gone = [Grant {
                node: NodeId(999),
                role: Role::Read,
            }];
            assert!(s.create_scoped_token("x", &gone).await.is_err());
            assert_eq!(s.list_tokens().await.unwrap().len(), 1);
            // A removed node takes its grants with it.
            s.detach(h_shop, shop).await.unwrap();
            s.remove_node(shop).await.unwrap();
            let t = s.check_token(&token).await.unwrap().unwrap();
            assert_eq!(
                t.grants,
                [Grant {
                    node: minos,
                    role: Role::Run
                }]
            );
            // A token whose last grant goes reaches nothing: it is not widened.
            let lone = s.add_node(None, "lone", "team").await.unwrap();
            let t2 = s
                .create_scoped_token(
                    "lonely",
                    &[Grant {
                        node: lone,
                        role: Role::Run,
                    }],
                )
                .await
                .unwrap();
            s.remove_node(lone).await.unwrap();
            let t2 = s.check_token(&t2).await.unwrap().unwrap();
            assert!(t2.scoped() && t2.grants.is_empty());
            let inv = s.snapshot();
            assert!(!t2.may(&inv, inv.host(h_web).unwrap(), Role::Read));
            s.close().await;
        });
    }
}
