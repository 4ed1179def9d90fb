//! Enrolled agents: each host's credential, its last facts and its liveness.
//!
//! An agent enrolls with a shared enrollment token and receives its own secret,
//! `minos_agent_<64 hex digits>`, of which only the SHA-256 is stored (`agents` table,
//! see [`crate::store`]). Enrolling under a hostname the inventory already holds (a
//! reinstalled machine, or one added by hand before its agent) keeps that host's record
//! (tree nodes, tags) and replaces the secret: the old one stops working.
//!
//! The table is mirrored in memory so the channel authenticates an agent without a
//! database read; facts and status changes are written through. Heartbeat times live in
//! the channel and are written here only when the status changes.

use std::collections::HashMap;

use crate::store::{Store, StoreError};
use crate::tokens::{hash, now_ms, secret};
use crate::tree::HostId;

/// An agent's liveness as the server last decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// Enrolled, never connected since.
    Enrolled,
    /// Heartbeating.
    Online,
    /// Heartbeats stopped for longer than the server's limit.
    Lost,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Enrolled => "enrolled",
            AgentStatus::Online => "online",
            AgentStatus::Lost => "lost",
        }
    }

    fn parse(s: &str) -> AgentStatus {
        match s {
            "online" => AgentStatus::Online,
            "lost" => AgentStatus::Lost,
            _ => AgentStatus::Enrolled,
        }
    }
}

/// What the store knows of one host's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub host: HostId,
    pub machine_id: String,
    /// Unix ms of the last enrollment.
    pub enrolled_at: i64,
    /// The facts the agent last reported, as the JSON object it sent ("{}" if none).
    pub facts: String,
    /// Unix ms of the last change of `facts`.
    pub facts_at: i64,
    pub status: AgentStatus,
    /// Unix ms of the last change of `status`.
    pub status_at: i64,
    /// Unix ms of the last heartbeat, as of the last status change.
    pub last_seen: i64,
    /// The stored form of the agent's secret.
    secret_hash: String,
}

/// The in-memory mirror of the `agents` table.
#[derive(Default)]
pub(crate) struct Agents {
    by_host: HashMap<HostId, AgentRecord>,
    by_secret: HashMap<String, HostId>,
}

impl Agents {
    fn insert(&mut self, r: AgentRecord) {
        if let Some(old) = self.by_host.get(&r.host) {
            self.by_secret.remove(&old.secret_hash);
        }
        self.by_secret.insert(r.secret_hash.clone(), r.host);
        self.by_host.insert(r.host, r);
    }
}

type Row = (i64, String, String, i64, String, i64, String, i64, i64);

/// Reads the `agents` table.
pub(crate) async fn load(pool: &sqlx::SqlitePool) -> Result<Agents, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT host_id, secret_hash, machine_id, enrolled_at, facts, facts_at, status, \
         status_at, last_seen FROM agents",
    )
    .fetch_all(pool)
    .await?;
    let mut a = Agents::default();
    for r in rows {
        let host = u64::try_from(r.0)
            .map_err(|_| StoreError::Invalid(format!("agent host id {} is negative", r.0)))?;
        a.insert(AgentRecord {
            host: HostId(host),
            secret_hash: r.1,
            machine_id: r.2,
            enrolled_at: r.3,
            facts: r.4,
            facts_at: r.5,
            status: AgentStatus::parse(&r.6),
            status_at: r.7,
            last_seen: r.8,
        });
    }
    Ok(a)
}

/// What enrollment returns.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub host: HostId,
    /// The agent's secret, in plain text: the only time it exists outside the agent.
    pub secret: String,
    /// True when the hostname was already in the inventory (its record is kept).
    pub existing_host: bool,
}

impl Store {
    /// Enrolls the agent of `hostname`: adds the host if the inventory lacks it and gives
    /// the agent a new secret (replacing any earlier one). `facts` is the JSON object the
    /// agent reported, stored as given.
    pub async fn enroll_agent(
        &self,
        hostname: &str,
        machine_id: &str,
        facts: &str,
    ) -> Result<Enrolled, StoreError> {
        let _w = self.write_lock().await;
        let mut inv = (*self.snapshot()).clone();
        let (host, existing_host) = match inv.host_by_name(hostname) {
            Some(h) => (h.id, true),
            None => (inv.add_host(hostname)?, false),
        };
        let token = secret("agent")?;
        let now = now_ms();
        let rec = AgentRecord {
            host,
            machine_id: machine_id.to_string(),
            enrolled_at: now,
            facts: facts.to_string(),
            facts_at: now,
            status: AgentStatus::Enrolled,
            status_at: now,
            last_seen: 0,
            secret_hash: hash(&token),
        };
        let hid = i64::try_from(host.0).unwrap_or(i64::MAX);
        let mut tx = self.pool().begin().await?;
        if !existing_host {
            sqlx::query("INSERT INTO hosts (id, hostname) VALUES ($1, $2)")
                .bind(hid)
                .bind(hostname)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO agents (host_id, secret_hash, machine_id, enrolled_at, facts, \
             facts_at, status, status_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (host_id) DO UPDATE SET secret_hash = excluded.secret_hash, \
             machine_id = excluded.machine_id, enrolled_at = excluded.enrolled_at, \
             facts = excluded.facts, facts_at = excluded.facts_at, status = excluded.status, \
             status_at = excluded.status_at, last_seen = excluded.last_seen",
        )
        .bind(hid)
        .bind(&rec.secret_hash)
        .bind(&rec.machine_id)
        .bind(rec.enrolled_at)
        .bind(&rec.facts)
        .bind(rec.facts_at)
        .bind(rec.status.as_str())
        .bind(rec.status_at)
        .bind(rec.last_seen)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.agents_mut(|a| a.insert(rec));
        if !existing_host {
            self.publish(inv);
        }
        Ok(Enrolled {
            host,
            secret: token,
            existing_host,
        })
    }

    /// The host whose agent holds `secret`, if any.
    pub fn agent_by_secret(&self, secret: &str) -> Option<HostId> {
        let h = hash(secret);
        self.agents_ref(|a| a.by_secret.get(&h).copied())
    }

    /// The agent record of `host`.
    pub fn agent(&self, host: HostId) -> Option<AgentRecord> {
        self.agents_ref(|a| a.by_host.get(&host).cloned())
    }

    /// Every agent record, by host id.
    pub fn agents(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = self.agents_ref(|a| a.by_host.values().cloned().collect());
        v.sort_by_key(|r| r.host);
        v
    }

    /// Replaces the facts of `host`'s agent (a JSON object, stored as given).
    pub async fn set_agent_facts(&self, host: HostId, facts: &str) -> Result<(), StoreError> {
        let _w = self.write_lock().await;
        let now = now_ms();
        sqlx::query("UPDATE agents SET facts = $1, facts_at = $2 WHERE host_id = $3")
            .bind(facts)
            .bind(now)
            .bind(i64::try_from(host.0).unwrap_or(i64::MAX))
            .execute(self.pool())
            .await?;
        self.agents_mut(|a| {
            if let Some(r) = a.by_host.get_mut(&host) {
                r.facts = facts.to_string();
                r.facts_at = now;
            }
        });
        Ok(())
    }

    /// Records `host`'s agent as `status`, last heard from at `last_seen` (Unix ms).
    pub async fn set_agent_status(
        &self,
        host: HostId,
        status: AgentStatus,
        last_seen: i64,
    ) -> Result<(), StoreError> {
        self.set_agent_statuses(&[(host, status, last_seen)]).await
    }

    /// Records several status changes in one transaction (one disk sync for a fleet
    /// coming back after a server restart).
    pub async fn set_agent_statuses(
        &self,
        changes: &[(HostId, AgentStatus, i64)],
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let _w = self.write_lock().await;
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        for (host, status, last_seen) in changes {
            sqlx::query(
                "UPDATE agents SET status = $1, status_at = $2, last_seen = $3 WHERE host_id = $4",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(*last_seen)
            .bind(i64::try_from(host.0).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.agents_mut(|a| {
            for (host, status, last_seen) in changes {
                if let Some(r) = a.by_host.get_mut(host) {
                    r.status = *status;
                    r.status_at = now;
                    r.last_seen = *last_seen;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{rt, temp_db};

    #[test]
    fn enrollment_gives_a_secret_and_reenrollment_keeps_the_host() {
        rt().block_on(async {
            let (_dir, path) = temp_db();
            let store = Store::open_sqlite(&path).await.expect("open");
            let web = store.add_host("web-1").await.expect("host");
            let n = store.add_node(None, "sre", "team").await.expect("node");
            store.attach(web, n).await.expect("attach");

            let first = store
                .enroll_agent("web-1", "m1", "{}")
                .await
                .expect("enroll");
            assert!(first.existing_host);
            assert_eq!(first.host, web);
            assert!(first.secret.starts_with("minos_agent_"));
            assert_eq!(store.agent_by_secret(&first.secret), Some(web));

            let again = store
                .enroll_agent("web-1", "m2", r#"{"os":"x"}"#)
                .await
                .expect("re-enroll");
            assert_eq!(again.host, web);
            assert_eq!(
                store.agent_by_secret(&first.secret),
                None,
                "old secret dies"
            );
            assert_eq!(store.agent_by_secret(&again.secret), Some(web));
            assert!(store.snapshot().host(web).expect("kept").nodes.contains(&n));

            let new = store.enroll_agent("db-1", "m3", "{}").await.expect("new");
            assert!(!new.existing_host);
            assert!(store.snapshot().host_by_name("db-1").is_some());

            store
                .set_agent_status(new.host, AgentStatus::Lost, 1234)
                .await
                .expect("status");
            store
                .set_agent_facts(new.host, r#"{"kernel":"6"}"#)
                .await
                .expect("facts");
            store.close().await;

            let reopened = Store::open_sqlite(&path).await.expect("reopen");
            assert_eq!(reopened.agent_by_secret(&again.secret), Some(web));
            let rec = reopened.agent(new.host).expect("record");
            assert_eq!(rec.status, AgentStatus::Lost);
            assert_eq!(rec.last_seen, 1234);
            assert_eq!(rec.facts, r#"{"kernel":"6"}"#);
            assert_eq!(reopened.agents().len(), 2);
        });
    }
}
