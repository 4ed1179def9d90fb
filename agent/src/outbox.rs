//! The agent's messages to the server until the server acknowledges them.
//!
//! Messages keep their order and are sent again after every reconnect until
//! acknowledged (see `crate::proto`); the server acknowledges a task report only once it
//! has stored it. *Durable* ones (task results) are also kept in `<state>/outbox.json`,
//! rewritten whole at each change, so a result produced while the server was
//! unreachable is delivered after an agent restart too, under its original id.
//!
//! Streamed output (`run.output`) is kept in memory only. While the agent runs, a
//! script's output reaches the server whole across server restarts and network cuts:
//! printed while the server is unreachable, it waits here and goes once the channel is
//! back; sent and not acknowledged (the server died before it stored it), it goes again,
//! and the server takes each byte once, by its offset. (A server that already ended the
//! host, e.g. `agent_lost` because the agent did not come back in time, keeps its final
//! state and drops what arrives later.) After an agent restart the result still arrives
//! (durable); output chunks that were not acknowledged are lost.
//!
//! # Memory
//! A run sends at most its `max_output` bytes of output, both streams together
//! (`crate::exec`; the server allows at most 16 MiB per run), so at most that much of
//! a run's output waits here, base64-encoded (a third more) in messages of at most
//! [`CHUNK_BYTES`] bytes of output each. Output joins the newest message of its run and
//! stream while that message was never sent ([`Outbox::push_output`]), so a server
//! outage adds at most `max_output / CHUNK_BYTES + 1` messages per stream of a run,
//! however slowly or in however small pieces the script prints. Besides output, a run
//! leaves two small messages (started, finished).
//!
//! `outbox.json` is a JSON array of `{"id": [incarnation, n], "kind": ..., "body": ...}`.

use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::exec::CHUNK_BYTES;
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
    /// Sent on the current connection (every message goes again after a reconnect).
    sent: bool,
    /// Ever sent: the server may have it under its id, so it no longer changes. The
    /// messages ever sent are a prefix of the queue (messages are sent in order).
    fixed: bool,
}

/// Base64 as `run.output` carries it.
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How many bytes padded base64 text holds; `None` when it is not whole groups of four.
fn b64_len(b64: &str) -> Option<usize> {
    if !b64.len().is_multiple_of(4) {
        return None;
    }
    let pad = b64.bytes().rev().take_while(|&c| c == b'=').count();
    (pad <= 2).then(|| b64.len() / 4 * 3 - pad)
}

/// The padded base64 of the bytes of `b64` followed by `data`, re-encoding only the
/// last group (the one with padding, if any) rather than everything.
fn b64_append(b64: &str, data: &[u8]) -> Option<String> {
    b64_len(b64)?;
    let keep = if b64.ends_with('=') {
        b64.len() - 4
    } else {
        b64.len()
    };
    let mut tail = B64.decode(b64.get(keep..)?).ok()?;
    tail.extend_from_slice(data);
    let mut joined = String::with_capacity(keep + tail.len().div_ceil(3) * 4);
    joined.push_str(b64.get(..keep)?);
    B64.encode_string(&tail, &mut joined);
    Some(joined)
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
                    .map(|msg| Pending {
                        msg,
                        durable: true,
                        sent: false,
                        fixed: true,
                    })
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
        let id = self.enqueue(&mut inner, kind, body, durable);
        drop(inner);
        self.notify.notify_one();
        id
    }

    fn enqueue(
        &self,
        inner: &mut Inner,
        kind: &str,
        body: serde_json::Value,
        durable: bool,
    ) -> MsgId {
        let id = MsgId(self.incarnation, inner.next);
        inner.next += 1;
        inner.msgs.push(Pending {
            msg: Stored {
                id,
                kind: kind.to_string(),
                body,
            },
            durable,
            sent: false,
            fixed: false,
        });
        if durable {
            self.persist(inner);
        }
        id
    }

    /// Queues output of a run (`run.output` messages, not durable). While the newest
    /// message of the same run and stream was never sent and ends where `data` starts,
    /// `data` fills it up to [`CHUNK_BYTES`] (a message never sent can still change, and
    /// the server places output by its offset); the rest, if any, starts a new message.
    /// Returns the id of the message holding the end of `data`.
    pub fn push_output(
        &self,
        task: u64,
        attempt: u32,
        stream: &str,
        offset: u64,
        data: &[u8],
    ) -> MsgId {
        let mut inner = self.lock();
        let same_run = |b: &serde_json::Value| {
            b["task"].as_u64() == Some(task)
                && b["attempt"].as_u64() == Some(u64::from(attempt))
                && b["stream"].as_str() == Some(stream)
        };
        let last = inner
            .msgs
            .iter_mut()
            .rev()
            .take_while(|p| !p.fixed)
            .find(|p| p.msg.kind == "run.output" && same_run(&p.msg.body));
        let mut rest = (offset, data);
        if let Some(p) = last
            && let (Some(at), Some(held), Some(b64)) = (
                p.msg.body["offset"].as_u64(),
                p.msg.body["data"].as_str().and_then(b64_len),
                p.msg.body["data"].as_str(),
            )
            && at.checked_add(held as u64) == Some(offset)
        {
            let (fill, more) = data.split_at(CHUNK_BYTES.saturating_sub(held).min(data.len()));
            if !fill.is_empty()
                && let Some(joined) = b64_append(b64, fill)
            {
                p.msg.body["data"] = joined.into();
                rest = (offset.saturating_add(fill.len() as u64), more);
                if more.is_empty() {
                    let id = p.msg.id;
                    drop(inner);
                    self.notify.notify_one();
                    return id;
                }
            }
        }
        let (offset, data) = rest;
        let id = self.enqueue(
            &mut inner,
            "run.output",
            serde_json::json!({"task": task, "attempt": attempt, "stream": stream,
                "offset": offset, "data": B64.encode(data)}),
            false,
        );
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

    /// Every message not acknowledged, in order.
    pub fn pending(&self) -> Vec<(MsgId, String, serde_json::Value)> {
        self.lock()
            .msgs
            .iter()
            .map(|p| (p.msg.id, p.msg.kind.clone(), p.msg.body.clone()))
            .collect()
    }

    /// The messages not sent on this connection yet, in order, now counted as sent: they
    /// no longer change.
    pub fn take_unsent(&self) -> Vec<(MsgId, String, serde_json::Value)> {
        self.lock()
            .msgs
            .iter_mut()
            .filter(|p| !p.sent)
            .map(|p| {
                p.sent = true;
                p.fixed = true;
                (p.msg.id, p.msg.kind.clone(), p.msg.body.clone())
            })
            .collect()
    }

    /// A new connection: every message not acknowledged is to be sent again.
    pub fn reconnected(&self) {
        for p in &mut self.lock().msgs {
            p.sent = false;
        }
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

    /// (id, stream, offset, data) of every `run.output` waiting.
    fn outputs(o: &Outbox) -> Vec<(MsgId, String, u64, Vec<u8>)> {
        o.pending()
            .into_iter()
            .filter(|(_, kind, _)| kind == "run.output")
            .map(|(id, _, b)| {
                let data = B64
                    .decode(b["data"].as_str().expect("data"))
                    .expect("base64");
                let stream = b["stream"].as_str().expect("stream").to_string();
                (id, stream, b["offset"].as_u64().expect("offset"), data)
            })
            .collect()
    }

    #[test]
    fn output_not_sent_yet_joins_its_streams_last_message_and_sent_output_never_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let o = Outbox::open(dir.path(), 100).expect("open");
        let a = o.push_output(1, 1, "stdout", 0, b"ab");
        let e = o.push_output(1, 1, "stderr", 0, b"E");
        assert_eq!(
            o.push_output(1, 1, "stdout", 2, b"cd"),
            a,
            "joined across stderr"
        );
        assert_eq!(o.push_output(1, 1, "stderr", 1, b"F"), e);
        // Filled up to CHUNK_BYTES; the rest starts a message of its own.
        let big = vec![b'b'; CHUNK_BYTES];
        let spill = o.push_output(9, 1, "stdout", 0, &big[..10]);
        assert_eq!(o.push_output(9, 1, "stdout", 10, &big), MsgId(100, 4));
        let spilled: Vec<_> = outputs(&o).into_iter().filter(|m| m.0 >= spill).collect();
        assert_eq!(spilled.len(), 2);
        assert_eq!((spilled[0].2, spilled[0].3.len()), (0, CHUNK_BYTES));
        assert_eq!((spilled[1].2, spilled[1].3.len()), (CHUNK_BYTES as u64, 10));
        o.ack(spill);
        o.ack(MsgId(100, 4));
        // Not contiguous, or another run: a message of its own.
        let gap = o.push_output(1, 1, "stdout", 10, b"x");
        assert_ne!(gap, a);
        let other = o.push_output(2, 1, "stdout", 0, b"y");
        assert_ne!(other, gap);
        assert_eq!(o.len(), 4);
        // Sent: fixed, even once the connection is gone and it waits to go again.
        assert_eq!(o.take_unsent().len(), 4);
        assert!(o.take_unsent().is_empty(), "sent once per connection");
        let later = o.push_output(1, 1, "stdout", 11, b"z");
        assert_ne!(later, gap);
        o.reconnected();
        let again = o.take_unsent();
        assert_eq!(again.len(), 5, "every message goes again after a reconnect");
        assert_eq!(o.push_output(1, 1, "stdout", 12, b"!"), MsgId(100, 8));
        assert_eq!(
            outputs(&o),
            vec![
                (a, "stdout".into(), 0, b"abcd".to_vec()),
                (e, "stderr".into(), 0, b"EF".to_vec()),
                (gap, "stdout".into(), 10, b"x".to_vec()),
                (other, "stdout".into(), 0, b"y".to_vec()),
                (later, "stdout".into(), 11, b"z".to_vec()),
                (MsgId(100, 8), "stdout".into(), 12, b"!".to_vec()),
            ]
        );
        o.ack(a);
        assert_eq!(o.len(), 5);
    }

    #[test]
    fn base64_appends_like_encoding_the_joined_bytes() {
        for a in 0..7usize {
            for b in 0..5usize {
                let (x, y): (Vec<u8>, Vec<u8>) =
                    ((0..a as u8).collect(), (9..9 + b as u8).collect());
                let joined = [x.clone(), y.clone()].concat();
                assert_eq!(b64_append(&B64.encode(&x), &y), Some(B64.encode(&joined)));
                assert_eq!(b64_len(&B64.encode(&joined)), Some(a + b));
            }
        }
        assert_eq!(b64_len("abc"), None);
        assert_eq!(b64_len("a==="), None);
        assert_eq!(b64_append("ab!=", b"x"), None);
    }

    #[test]
    fn an_outage_holds_a_runs_output_in_full_messages() {
        // A script printing in small pieces while the server is unreachable: its output
        // (bounded by max_output, here about 100,000 bytes) waits in messages of
        // CHUNK_BYTES, all full but the last of each stream.
        let dir = tempfile::tempdir().expect("dir");
        let o = Outbox::open(dir.path(), 100).expect("open");
        let mut end = [0u64; 2];
        for i in 0..3000 {
            for (s, stream) in ["stdout", "stderr"].into_iter().enumerate() {
                let piece = vec![b'a' + (i % 26) as u8; if i % 2 == 0 { 1 } else { 31 }];
                o.push_output(1, 1, stream, end[s], &piece);
                end[s] += piece.len() as u64;
            }
        }
        let per_stream = end[0].div_ceil(CHUNK_BYTES as u64);
        assert_eq!(o.len() as u64, 2 * per_stream);
        let mut next = [0u64; 2];
        for (_, stream, offset, data) in outputs(&o) {
            let s = usize::from(stream == "stderr");
            assert_eq!(offset, next[s], "{stream}: contiguous");
            next[s] += data.len() as u64;
            assert!(
                data.len() == CHUNK_BYTES || next[s] == end[s],
                "{stream}: full"
            );
        }
        assert_eq!(next, end);
    }
}
