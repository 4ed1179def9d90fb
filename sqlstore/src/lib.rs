//! Opening the embedded SQLite databases of a data directory (`meta.db`, `exec.db`,
//! `alerts.db`) the same way: write-ahead journal, a full fsync at every commit (what a
//! caller acknowledges survives a power cut), a small connection pool, the schema
//! applied (every statement idempotent, `CREATE ... IF NOT EXISTS`), and a one-row
//! `schema_version` table that refuses a database written by another schema version.

use std::path::Path;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The database was written by another schema version, or its version table is
    /// damaged.
    #[error("{0}")]
    Schema(String),
}

/// Opens (creating if missing) the database at `path`, applies `schema` and checks that
/// the database is at `version` (recording it in a new database). `schema` must create
/// a table `schema_version (version INTEGER NOT NULL)`.
pub async fn open(
    path: &Path,
    schema: &[&'static str],
    version: i64,
) -> Result<SqlitePool, OpenError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await?;
    for &stmt in schema {
        sqlx::query(stmt).execute(&pool).await?;
    }
    let versions: Vec<(i64,)> = sqlx::query_as("SELECT version FROM schema_version")
        .fetch_all(&pool)
        .await?;
    match versions.as_slice() {
        [] => {
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(version)
                .execute(&pool)
                .await?;
        }
        [(v,)] if *v == version => {}
        [(v,)] => {
            return Err(OpenError::Schema(format!(
                "schema version {v}; this Minos reads version {version}"
            )));
        }
        _ => return Err(OpenError::Schema("several schema versions".into())),
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &[&str] = &[
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS t (x INTEGER)",
    ];

    #[tokio::test]
    async fn a_database_opens_again_at_its_version_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let pool = open(&path, SCHEMA, 3).await.unwrap();
        sqlx::query("INSERT INTO t (x) VALUES (7)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let pool = open(&path, SCHEMA, 3).await.unwrap();
        let (x,): (i64,) = sqlx::query_as("SELECT x FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(x, 7);
        pool.close().await;
        let err = open(&path, SCHEMA, 4).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("schema version 3; this Minos reads version 4"),
            "{err}"
        );
    }
}
