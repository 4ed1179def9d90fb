//! The agent's messages to the server until the server acknowledges them.
//!
//! Messages keep their order and are sent again after every reconnect until
//! acknowledged (see `crate::proto`). *Durable* ones (task results) are also kept in
//! `<state>/outbox.json`, rewritten whole at each change, so a result produced while the
//! server was unreachable is delivered after an agent restart too, under its original
//! id. Streamed output is not durable: after an agent restart the result still arrives,
//! output chunks not yet acknowledged may not.
//!
//! `outbox.json` is a JSON array of `{"id": [incarnation, n], "kind": ..., "body": ...}`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::proto::MsgId;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: MsgId,
    kind: String,
    body: serde_json::Value,
}

#[derive(Debug, Clone)]
struct Pending {
    msg: Stored,
    durable: bool,
}

struct Inner {
    msgs: Vec<Pending>,
    next: u64,
}

/// The outbox. Cheap to share behind an `Arc`.
pub struct Outbox {
    inner: std::sync::Mutex<Inner>,
    notify: Notify,
    path: PathBuf,
    incarnation: u64,
}

impl Outbox {
    /// Opens the outbox of `state_dir` for an agent started at `incarnation`; durable
    /// messages of earlier runs come first, with their ids.
    pub fn open(state_dir: &std::path::Path, incarnation: u64) -> Result<Outbox, String> {
        let path = state_dir.join("outbox.json");
        let stored: Vec<Stored> = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => v,
                Err(e) => {
                    // Kept aside for a person to read; the agent carries on.
                    let aside = path.with_extension("json.corrupt");
                    tracing::error!(
                        "{}: {e}; moved to {} and starting with an empty outbox",
                        path.display(),
                        aside.display()
                    );
                    std::fs::rename(&path, &aside)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Outbox {
            inner: std::sync::Mutex::new(Inner {
                msgs: stored
                    .into_iter()
                    .map(|msg| Pending { msg, durable: true })
                    .collect(),
                next: 1,
            }),
            notify: Notify::new(),
            path,
            incarnation,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn persist(&self, inner: &Inner) {
        let durable: Vec<&Stored> = inner
            .msgs
            .iter()
            .filter(|p| p.durable)
            .map(|p| &p.msg)
            .collect();
        let bytes = serde_json::to_vec(&durable).unwrap_or_default();
        if let Err(e) = crate::client::write_atomic(&self.path, &bytes, 0o600) {
            tracing::error!("{}: {e}", self.path.display());
        }
    }

    /// Queues a message; a durable one is on disk when this returns.
    pub fn push(&self, kind: &str, body: serde_json::Value, durable: bool) -> MsgId {
        let mut inner = self.lock();
        let id = MsgId(self.incarnation, inner.next);
        inner.next += 1;
        inner.msgs.push(Pending {
            msg: Stored {
                id,
                kind: kind.to_string(),
                body,
            },
            durable,
        });
        if durable {
            self.persist(&inner);
        }
        drop(inner);
        self.notify.notify_one();
        id
    }

    /// The server has `id`: it leaves the outbox.
    pub fn ack(&self, id: MsgId) {
        let mut inner = self.lock();
        let Some(i) = inner.msgs.iter().position(|p| p.msg.id == id) else {
            return;
        };
        let p = inner.msgs.remove(i);
        if p.durable {
            self.persist(&inner);
        }
    }

    /// Every message not acknowledged, in order, after `after` (the ids already sent on
    /// this connection are skipped by the caller).
    pub fn pending(&self) -> Vec<(MsgId, String, serde_json::Value)> {
        self.lock()
            .msgs
            .iter()
            .map(|p| (p.msg.id, p.msg.kind.clone(), p.msg.body.clone()))
            .collect()
    }

    /// Resolves when a message was queued since the last wait.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_messages_survive_a_restart_with_their_ids() {
        let dir = tempfile::tempdir().expect("dir");
        let o = Outbox::open(dir.path(), 100).expect("open");
        let a = o.push("run.output", serde_json::json!(1), false);
        let b = o.push("run.finished", serde_json::json!(2), true);
        let c = o.push("run.finished", serde_json::json!(3), true);
        assert_eq!((a, b, c), (MsgId(100, 1), MsgId(100, 2), MsgId(100, 3)));
        o.ack(b);
        drop(o);
        let o = Outbox::open(dir.path(), 200).expect("reopen");
        let p = o.pending();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, MsgId(100, 3));
        let d = o.push("pong", serde_json::json!(4), false);
        assert_eq!(d, MsgId(200, 1));
        assert_eq!(o.pending().len(), 2);
        std::fs::write(dir.path().join("outbox.json"), b"[").expect("write");
        let o = Outbox::open(dir.path(), 300).expect("a corrupt file is set aside");
        assert!(o.is_empty());
        assert!(dir.path().join("outbox.json.corrupt").exists());
    }
}
