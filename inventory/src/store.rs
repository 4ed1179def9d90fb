//! The metadata store: the inventory persisted in SQLite (embedded, the default).
//!
//! The whole inventory lives in memory as an [`Inventory`] that readers share as a
//! snapshot (`Arc`); every change is decided by the model's rules on a copy, written to
//! the database, and only then published, one writer at a time. A refused change touches
//! neither the database nor the snapshot; a failed write leaves the snapshot as it was.
//!
//! The SQL is plain (numbered `$n` parameters, `ON CONFLICT ... DO UPDATE`, `BIGINT`
//! ids), so a PostgreSQL backend is the same statements on another pool.
//!
//! # Schema (version 1)
//! ```text
//! schema_version(version)                       one row
//! nodes(id PK, parent NULL, name, kind, owners) owners: ','-joined
//! node_tags(node_id, key, value)                PK (node_id, key)
//! hosts(id PK, hostname UNIQUE)
//! host_tags(host_id, key, value)                PK (host_id, key)
//! host_nodes(host_id, node_id)                  PK (host_id, node_id)
//! tokens(id PK, kind, name, hash UNIQUE,         kind: admin | api | enroll; hash: hex
//!        created, revoked NULL)                 SHA-256 of the token; times: Unix ms
//! agents(host_id PK, secret_hash UNIQUE,        one per enrolled host (see crate::agents);
//!        machine_id, enrolled_at, facts,        facts: the JSON object the agent sent;
//!        facts_at, status, status_at, last_seen) status: enrolled | online | lost
//! documents(kind, name, body,                   texts other subsystems keep here (see
//!           updated_at, updated_by)             crate::documents); PK (kind, name)
//! token_grants(token_id, node_id, role)         a scoped api token's grants (see
//!                                               crate::tokens); PK (token_id, node_id);
//!                                               role: read | run; dropped with the node
//! scoped_tokens(token_id PK)                    the api tokens that are scoped: such a
//!                                               token stays scoped with no grant left
//! ```
//! Loading checks every rule again ([`Inventory::from_parts`]): a database edited into an
//! invalid state is refused with the row named, never half-loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use sqlx::sqlite::SqlitePool;

use crate::tree::{Host, HostId, Inventory, Node, NodeId, TreeError};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: [&str; 11] = [
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS nodes (id BIGINT PRIMARY KEY, parent BIGINT NULL, \
     name TEXT NOT NULL, kind TEXT NOT NULL, owners TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS node_tags (node_id BIGINT NOT NULL, key TEXT NOT NULL, \
     value TEXT NOT NULL, PRIMARY KEY (node_id, key))",
    "CREATE TABLE IF NOT EXISTS hosts (id BIGINT PRIMARY KEY, hostname TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS host_tags (host_id BIGINT NOT NULL, key TEXT NOT NULL, \
     value TEXT NOT NULL, PRIMARY KEY (host_id, key))",
    "CREATE TABLE IF NOT EXISTS host_nodes (host_id BIGINT NOT NULL, node_id BIGINT NOT NULL, \
     PRIMARY KEY (host_id, node_id))",
    "CREATE TABLE IF NOT EXISTS tokens (id BIGINT PRIMARY KEY, kind TEXT NOT NULL, \
     name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created BIGINT NOT NULL, revoked BIGINT NULL)",
    "CREATE TABLE IF NOT EXISTS agents (host_id BIGINT PRIMARY KEY, \
     secret_hash TEXT NOT NULL UNIQUE, machine_id TEXT NOT NULL, enrolled_at BIGINT NOT NULL, \
     facts TEXT NOT NULL, facts_at BIGINT NOT NULL, status TEXT NOT NULL, \
     status_at BIGINT NOT NULL, last_seen BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS documents (kind TEXT NOT NULL, name TEXT NOT NULL, \
     body TEXT NOT NULL, updated_at BIGINT NOT NULL, updated_by TEXT NOT NULL, \
     PRIMARY KEY (kind, name))",
    "CREATE TABLE IF NOT EXISTS token_grants (token_id BIGINT NOT NULL, \
     node_id BIGINT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (token_id, node_id))",
    "CREATE TABLE IF NOT EXISTS scoped_tokens (token_id BIGINT PRIMARY KEY)",
];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The change breaks a rule of the inventory; nothing changed.
    #[error(transparent)]
    Rule(#[from] TreeError),
    /// The database failed; the snapshot is unchanged.
    #[error("metadata store: {0}")]
    Db(#[from] sqlx::Error),
    /// The stored data breaks a rule or was written by a newer version.
    #[error("metadata store: {0}")]
    Invalid(String),
    /// A change the store refuses (revoking the last admin token); nothing changed.
    #[error("{0}")]
    Refused(String),
}

/// The inventory and its database.
pub struct Store {
    pool: SqlitePool,
    current: RwLock<Arc<Inventory>>,
    writer: tokio::sync::Mutex<()>,
    /// Bumped at every published change.
    changes: tokio::sync::watch::Sender<u64>,
    /// The `agents` table, mirrored.
    agents: RwLock<crate::agents::Agents>,
}

fn id(v: u64) -> i64 {
    // Ids come from a counter that starts at 1: far below i64::MAX.
    v as i64
}

impl Store {
    /// Opens (creating if missing) the SQLite database at `path` and loads it.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        // An acknowledged change survives a power cut.
        let pool = sqlstore::open(path, &SCHEMA, SCHEMA_VERSION)
            .await
            .map_err(|e| match e {
                sqlstore::OpenError::Db(e) => StoreError::Db(e),
                sqlstore::OpenError::Schema(m) => StoreError::Invalid(m),
            })?;
        let inv = load(&pool).await?;
        let agents = crate::agents::load(&pool).await?;
        Ok(Store {
            agents: RwLock::new(agents),
            pool,
            current: RwLock::new(Arc::new(inv)),
            writer: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// The inventory as of now; later changes do not affect it.
    pub fn snapshot(&self) -> Arc<Inventory> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn agents_ref<T>(&self, f: impl FnOnce(&crate::agents::Agents) -> T) -> T {
        match self.agents.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    pub(crate) fn agents_mut<T>(&self, f: impl FnOnce(&mut crate::agents::Agents) -> T) -> T {
        match self.agents.write() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    pub(crate) fn publish(&self, inv: Inventory) {
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(inv),
            Err(p) => *p.into_inner() = Arc::new(inv),
        }
        self.changes.send_modify(|v| *v += 1);
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Adds a tree node.
    pub async fn add_node(
        &self,
        parent: Option<NodeId>,
        name: &str,
        kind: &str,
    ) -> Result<NodeId, StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        let nid = inv.add_node(parent, name, kind)?;
        sqlx::query(
            "INSERT INTO nodes (id, parent, name, kind, owners) VALUES ($1, $2, $3, $4, '')",
        )
        .bind(id(nid.0))
        .bind(parent.map(|p| id(p.0)))
        .bind(name)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        self.publish(inv);
        Ok(nid)
    }

    /// Moves a node (and everything below it) under `parent`.
    pub async fn move_node(&self, node: NodeId, parent: Option<NodeId>) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        inv.move_node(node, parent)?;
        sqlx::query("UPDATE nodes SET parent = $1 WHERE id = $2")
            .bind(parent.map(|p| id(p.0)))
            .bind(id(node.0))
            .execute(&self.pool)
            .await?;
        self.publish(inv);
        Ok(())
    }

    /// Removes an empty node with its tags.
    pub async fn remove_node(&self, node: NodeId) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        inv.remove_node(node)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM node_tags WHERE node_id = $1")
            .bind(id(node.0))
            .execute(&mut *tx)
            .await?;
        // A grant must not pass to a later node that gets the same id.
        sqlx::query("DELETE FROM token_grants WHERE node_id = $1")
            .bind(id(node.0))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id(node.0))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.publish(inv);
        Ok(())
    }

    /// Adds a host.
    pub async fn add_host(&self, hostname: &str) -> Result<HostId, StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        let hid = inv.add_host(hostname)?;
        sqlx::query("INSERT INTO hosts (id, hostname) VALUES ($1, $2)")
            .bind(id(hid.0))
            .bind(hostname)
            .execute(&self.pool)
            .await?;
        self.publish(inv);
        Ok(hid)
    }

    /// Adds a host attached to `nodes` with `tags`, as one change: all of it, or (when a
    /// rule refuses any part) nothing.
    pub async fn add_host_with(
        &self,
        hostname: &str,
        nodes: &[NodeId],
        tags: &BTreeMap<String, String>,
    ) -> Result<HostId, StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        let hid = inv.add_host(hostname)?;
        for &n in nodes {
            inv.attach(hid, n)?;
        }
        for (k, v) in tags {
            inv.tag_host(hid, k, Some(v))?;
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO hosts (id, hostname) VALUES ($1, $2)")
            .bind(id(hid.0))
            .bind(hostname)
            .execute(&mut *tx)
            .await?;
        for &n in nodes {
            sqlx::query(
                "INSERT INTO host_nodes (host_id, node_id) VALUES ($1, $2) \
                 ON CONFLICT (host_id, node_id) DO NOTHING",
            )
            .bind(id(hid.0))
            .bind(id(n.0))
            .execute(&mut *tx)
            .await?;
        }
        for (k, v) in tags {
            sqlx::query("INSERT INTO host_tags (host_id, key, value) VALUES ($1, $2, $3)")
                .bind(id(hid.0))
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.publish(inv);
        Ok(hid)
    }

    /// Attaches a host to a node.
    pub async fn attach(&self, host: HostId, node: NodeId) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        inv.attach(host, node)?;
        sqlx::query(
            "INSERT INTO host_nodes (host_id, node_id) VALUES ($1, $2) \
             ON CONFLICT (host_id, node_id) DO NOTHING",
        )
        .bind(id(host.0))
        .bind(id(node.0))
        .execute(&self.pool)
        .await?;
        self.publish(inv);
        Ok(())
    }

    /// Detaches a host from a node.
    pub async fn detach(&self, host: HostId, node: NodeId) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        inv.detach(host, node)?;
        sqlx::query("DELETE FROM host_nodes WHERE host_id = $1 AND node_id = $2")
            .bind(id(host.0))
            .bind(id(node.0))
            .execute(&self.pool)
            .await?;
        self.publish(inv);
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a host's tag.
    pub async fn tag_host(
        &self,
        host: HostId,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        self.tag(true, host.0, key, value).await
    }

    /// Sets (`Some`) or removes (`None`) a node's tag.
    pub async fn tag_node(
        &self,
        node: NodeId,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        self.tag(false, node.0, key, value).await
    }

    async fn tag(
        &self,
        on_host: bool,
        owner: u64,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut inv = (*self.snapshot()).clone();
        if on_host {
            inv.tag_host(HostId(owner), key, value)?;
        } else {
            inv.tag_node(NodeId(owner), key, value)?;
        }
        self.write_tag(on_host, owner, key, value).await?;
        self.publish(inv);
        Ok(())
    }

    async fn write_tag(
        &self,
        on_host: bool,
        owner: u64,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let sql = match (on_host, value.is_some()) {
            (true, true) => {
                "INSERT INTO host_tags (host_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (host_id, key) DO UPDATE SET value = excluded.value"
            }
            (false, true) => {
                "INSERT INTO node_tags (node_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (node_id, key) DO UPDATE SET value = excluded.value"
            }
            (true, false) => "DELETE FROM host_tags WHERE host_id = $1 AND key = $2",
            (false, false) => "DELETE FROM node_tags WHERE node_id = $1 AND key = $2",
        };
        let mut q = sqlx::query(sql).bind(id(owner)).bind(key);
        if let Some(v) = value {
            q = q.bind(v);
        }
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// The database pool, for the other tables of the store (tokens).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The lock every writer holds, for the other tables of the store (tokens).
    pub(crate) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Reads every table and checks the result against the model's rules.
async fn load(pool: &SqlitePool) -> Result<Inventory, StoreError> {
    let nodes: Vec<(i64, Option<i64>, String, String, String)> =
        sqlx::query_as("SELECT id, parent, name, kind, owners FROM nodes")
            .fetch_all(pool)
            .await?;
    let node_tags: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT node_id, key, value FROM node_tags")
            .fetch_all(pool)
            .await?;
    let hosts: Vec<(i64, String)> = sqlx::query_as("SELECT id, hostname FROM hosts")
        .fetch_all(pool)
        .await?;
    let host_tags: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT host_id, key, value FROM host_tags")
            .fetch_all(pool)
            .await?;
    let host_nodes: Vec<(i64, i64)> = sqlx::query_as("SELECT host_id, node_id FROM host_nodes")
        .fetch_all(pool)
        .await?;
    let uid = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} id {v} is negative")))
    };
    let mut ntags: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
    for (n, k, v) in node_tags {
        ntags.entry(n).or_default().insert(k, v);
    }
    let mut htags: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
    for (h, k, v) in host_tags {
        htags.entry(h).or_default().insert(k, v);
    }
    let mut attached: BTreeMap<i64, BTreeSet<NodeId>> = BTreeMap::new();
    for (h, n) in host_nodes {
        attached
            .entry(h)
            .or_default()
            .insert(NodeId(uid(n, "node")?));
    }
    let mut node_list = Vec::with_capacity(nodes.len());
    for (nid, parent, name, kind, owners) in nodes {
        node_list.push(Node {
            id: NodeId(uid(nid, "node")?),
            parent: parent.map(|p| uid(p, "node")).transpose()?.map(NodeId),
            name,
            kind,
            owners: owners
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
            tags: ntags.remove(&nid).unwrap_or_default(),
        });
    }
    let mut host_list = Vec::with_capacity(hosts.len());
    for (hid, hostname) in hosts {
        host_list.push(Host {
            id: HostId(uid(hid, "host")?),
            hostname,
            tags: htags.remove(&hid).unwrap_or_default(),
            nodes: attached.remove(&hid).unwrap_or_default(),
        });
    }
    if let Some(n) = ntags.keys().next() {
        return Err(StoreError::Invalid(format!("tags of missing node {n}")));
    }
    if let Some(h) = htags.keys().next().or(attached.keys().next()) {
        return Err(StoreError::Invalid(format!("rows of missing host {h}")));
    }
    Inventory::from_parts(node_list, host_list).map_err(StoreError::Invalid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Selector;

    /// A path for a database in a directory removed when the returned guard drops.
    pub(crate) fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("meta.db");
        (dir, db)
    }

    pub(crate) fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn changes_survive_reopening() {
        let (_dir, db) = temp_db();
        rt().block_on(async {
            let s = Store::open_sqlite(&db).await.unwrap();
            let sre = s.add_node(None, "sre", "team").await.unwrap();
            let minos = s.add_node(Some(sre), "minos", "service").await.unwrap();
            let web = s.add_node(Some(minos), "web", "module").await.unwrap();
            let tmp = s.add_node(None, "tmp", "team").await.unwrap();
            s.tag_node(sre, "env", Some("prod")).await.unwrap();
            let h1 = s.add_host("web-01").await.unwrap();
            let h2 = s.add_host("web-02").await.unwrap();
            s.attach(h1, web).await.unwrap();
            s.attach(h2, web).await.unwrap();
            s.tag_host(h2, "env", Some("canary")).await.unwrap();
            s.tag_host(h2, "rack", Some("r1")).await.unwrap();
            s.tag_host(h2, "rack", None).await.unwrap();
            s.remove_node(tmp).await.unwrap();
            let ops = s.add_node(None, "ops", "team").await.unwrap();
            s.move_node(minos, Some(ops)).await.unwrap();
            s.detach(h1, web).await.unwrap();
            s.close().await;

            let s = Store::open_sqlite(&db).await.unwrap();
            let inv = s.snapshot();
            assert_eq!(inv.node_by_path("/ops/minos/web"), Some(web));
            assert_eq!(inv.node_by_path("/tmp"), None);
            let names = |sel: &str| -> Vec<String> {
                Selector::parse(sel)
                    .unwrap()
                    .resolve(&inv)
                    .unwrap()
                    .into_iter()
                    .map(|h| inv.host(h).unwrap().hostname.clone())
                    .collect()
            };
            assert_eq!(names("/ops/minos/web"), ["web-02"]);
            assert_eq!(names("env=canary"), ["web-02"]);
            assert!(!inv.host(h2).unwrap().tags.contains_key("rack"));
            // New ids continue after the stored ones.
            let n = s.add_node(None, "new", "team").await.unwrap();
            assert!(n.0 > h2.0 && n.0 > ops.0);
            s.close().await;
        });
    }

    #[test]
    fn a_host_with_nodes_and_tags_is_added_whole_or_not_at_all() {
        let (_dir, db) = temp_db();
        rt().block_on(async {
            let s = Store::open_sqlite(&db).await.unwrap();
            let a = s.add_node(None, "a", "team").await.unwrap();
            let good: BTreeMap<String, String> = [("rack".to_string(), "r1".to_string())].into();
            let bad: BTreeMap<String, String> = [("9bad".to_string(), "x".to_string())].into();
            assert!(s.add_host_with("h1", &[a], &bad).await.is_err());
            assert!(s.snapshot().host_by_name("h1").is_none());
            let h = s.add_host_with("h1", &[a], &good).await.unwrap();
            s.close().await;
            let s = Store::open_sqlite(&db).await.unwrap();
            let inv = s.snapshot();
            let host = inv.host(h).unwrap();
            assert_eq!(host.tags["rack"], "r1");
            assert!(host.nodes.contains(&a));
            s.close().await;
        });
    }

    #[test]
    fn refused_changes_change_nothing() {
        let (_dir, db) = temp_db();
        rt().block_on(async {
            let s = Store::open_sqlite(&db).await.unwrap();
            let a = s.add_node(None, "a", "team").await.unwrap();
            let b = s.add_node(Some(a), "b", "service").await.unwrap();
            let before = s.snapshot();
            assert!(matches!(
                s.move_node(a, Some(b)).await,
                Err(StoreError::Rule(TreeError::Cycle(_)))
            ));
            assert!(matches!(
                s.remove_node(a).await,
                Err(StoreError::Rule(TreeError::NotEmpty(..)))
            ));
            assert!(matches!(
                s.add_node(None, "a", "team").await,
                Err(StoreError::Rule(TreeError::Exists(_)))
            ));
            assert!(
                Arc::ptr_eq(&before, &s.snapshot()),
                "the snapshot is unchanged"
            );
            s.close().await;
            let s = Store::open_sqlite(&db).await.unwrap();
            assert_eq!(s.snapshot().path(b), "/a/b");
            assert_eq!(s.snapshot().nodes().count(), 2);
            s.close().await;
        });
    }

    #[test]
    fn invalid_stored_data_is_refused_with_the_row_named() {
        let (_dir, db) = temp_db();
        rt().block_on(async {
            let s = Store::open_sqlite(&db).await.unwrap();
            let a = s.add_node(None, "a", "team").await.unwrap();
            let b = s.add_node(Some(a), "b", "service").await.unwrap();
            // A hand edit that makes a cycle.
            sqlx::query("UPDATE nodes SET parent = $1 WHERE id = $2")
                .bind(id(b.0))
                .bind(id(a.0))
                .execute(&s.pool)
                .await
                .unwrap();
            s.close().await;
            let e = Store::open_sqlite(&db).await.err().expect("refused");
            assert!(e.to_string().contains("cycle"), "{e}");
        });
    }
}
