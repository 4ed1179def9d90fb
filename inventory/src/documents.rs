//! Documents other subsystems keep in the metadata store: named texts of a kind (alert
//! rule groups created through the API, for one), with who changed them last and when.
//! The store keeps them and never reads inside them; their owner validates them before
//! they are written.

use crate::store::{Store, StoreError};

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: String,
    pub name: String,
    pub body: String,
    /// Unix ms.
    pub updated_at: i64,
    pub updated_by: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Every document of `kind`, by name.
    pub async fn documents(&self, kind: &str) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
            "SELECT kind, name, body, updated_at, updated_by FROM documents \
             WHERE kind = $1 ORDER BY name",
        )
        .bind(kind)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, name, body, updated_at, updated_by)| Document {
                kind,
                name,
                body,
                updated_at,
                updated_by,
            })
            .collect())
    }

    /// Creates or replaces a document; returns whether it existed.
    pub async fn put_document(
        &self,
        kind: &str,
        name: &str,
        body: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        let _w = self.write_lock().await;
        let existed: Option<(i64,)> =
            sqlx::query_as("SELECT 1 FROM documents WHERE kind = $1 AND name = $2")
                .bind(kind)
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        sqlx::query(
            "INSERT INTO documents (kind, name, body, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, name) DO UPDATE SET \
             body = excluded.body, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
        )
        .bind(kind)
        .bind(name)
        .bind(body)
        .bind(now_ms())
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(existed.is_some())
    }

    /// Deletes a document; returns whether it existed.
    pub async fn delete_document(&self, kind: &str, name: &str) -> Result<bool, StoreError> {
        let _w = self.write_lock().await;
        let r = sqlx::query("DELETE FROM documents WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn documents_are_put_replaced_listed_and_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Store::open_sqlite(&dir.path().join("meta.db"))
            .await
            .expect("open");
        assert!(
            !s.put_document("rules", "b", "x", "alice")
                .await
                .expect("put")
        );
        assert!(
            !s.put_document("rules", "a", "y", "alice")
                .await
                .expect("put")
        );
        assert!(s.put_document("rules", "b", "z", "bob").await.expect("put"));
        s.put_document("other", "a", "w", "bob").await.expect("put");
        let d = s.documents("rules").await.expect("list");
        assert_eq!(
            d.iter()
                .map(|d| (d.name.as_str(), d.body.as_str(), d.updated_by.as_str()))
                .collect::<Vec<_>>(),
            vec![("a", "y", "alice"), ("b", "z", "bob")]
        );
        assert!(s.delete_document("rules", "a").await.expect("delete"));
        assert!(!s.delete_document("rules", "a").await.expect("delete"));
        drop(s);
        let s = Store::open_sqlite(&dir.path().join("meta.db"))
            .await
            .expect("reopen");
        assert_eq!(s.documents("rules").await.expect("list").len(), 1);
    }
}
