//! The server's side of the agent channel, without HTTP: who is connected, what waits
//! for each agent, what each agent sent, and who is lost.
//!
//! Each enrolled agent has a slot: its connection (at most one; a newer one replaces it),
//! a bounded queue of messages for it ([`Limits::max_queued`] messages,
//! [`Limits::max_queued_bytes`] bytes: a slow or absent agent cannot grow the server's
//! memory), the cursor of what it already delivered upward, and its last heartbeat.
//! Messages stay queued until acknowledged and are sent again after a reconnect (see
//! `agent::proto` for the delivery rules). Queues live in memory: they do not survive a
//! server restart (work that must, such as tasks, is kept by its owner and pushed again).
//!
//! [`Hub::watch_lost`] marks an agent `lost` when it has not heartbeated for
//! [`Limits::lost_after`] and writes every status change to the metadata store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent::proto::{Cursor, MsgId, ServerFrame};
use inventory::{AgentStatus, HostId, Store};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Bounds of the channel.
#[derive(Debug, Clone)]
pub struct Limits {
    /// An agent silent this long is `lost`.
    pub lost_after: Duration,
    /// Messages waiting for one agent, at most.
    pub max_queued: usize,
    /// Bytes of messages waiting for one agent, at most.
    pub max_queued_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lost_after: Duration::from_secs(30),
            max_queued: 1000,
            max_queued_bytes: 4 << 20,
        }
    }
}

/// How many delivered and received messages each slot remembers for the API.
const RECENT: usize = 100;

/// A message for an agent, until it is acknowledged.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: MsgId,
    pub kind: String,
    pub body: serde_json::Value,
    bytes: usize,
    /// Unix ms.
    pub queued_at: i64,
    /// Sent on the current connection (sent again after a reconnect).
    sent: bool,
}

/// A message that crossed the channel, as remembered for the API.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: MsgId,
    pub kind: String,
    pub body: serde_json::Value,
    /// Unix ms when it was acknowledged (downward) or received (upward).
    pub at: i64,
}

#[derive(Default)]
struct Slot {
    /// The current connection's generation, if connected.
    conn: Option<u64>,
    notify: Arc<Notify>,
    next_id: u64,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    delivered: VecDeque<Record>,
    received: VecDeque<Record>,
    upward: Cursor,
    last_seen: Option<Instant>,
    last_seen_ms: i64,
    status: Option<AgentStatus>,
    heartbeat_ms: u64,
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("host {0} has no enrolled agent")]
    NoAgent(u64),
    #[error("the queue of host {0}'s agent is full ({1} messages waiting); try again later")]
    Full(u64, usize),
    #[error("the message is {0} bytes; at most {1}")]
    TooLarge(usize, usize),
}

/// A snapshot of one agent's slot.
#[derive(Debug, Clone)]
pub struct SlotView {
    pub connected: bool,
    pub queued: Vec<Queued>,
    pub delivered: Vec<Record>,
    pub received: Vec<Record>,
    /// Unix ms of the last heartbeat since the server started (0: none).
    pub last_seen: i64,
    pub heartbeat_ms: u64,
}

/// Counters exported at `/metrics`.
#[derive(Default)]
pub struct ChannelCounters {
    pub heartbeats: AtomicU64,
    pub connects: AtomicU64,
    pub refused: AtomicU64,
    pub bad_frames: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
}

/// The channel's state, shared by every connection.
pub struct Hub {
    /// This server's incarnation: its start time in Unix ms.
    pub boot: u64,
    pub limits: Limits,
    slots: Mutex<HashMap<HostId, Slot>>,
    next_conn: AtomicU64,
    pub counters: ChannelCounters,
    /// Messages from agents, for whoever consumes them.
    upward: tokio::sync::broadcast::Sender<(HostId, Record)>,
    /// Called for each agent found lost (the task engine ends its work there).
    on_lost: std::sync::OnceLock<Box<dyn Fn(HostId) + Send + Sync>>,
    /// Agents that came online since the last write of statuses, with the Unix ms.
    came_online: Mutex<Vec<(HostId, i64)>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn push_recent(v: &mut VecDeque<Record>, r: Record) {
    if v.len() == RECENT {
        v.pop_front();
    }
    v.push_back(r);
}

impl Hub {
    pub fn new(limits: Limits) -> Hub {
        Hub {
            boot: u64::try_from(now_ms()).unwrap_or(0),
            limits,
            slots: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            counters: ChannelCounters::default(),
            upward: tokio::sync::broadcast::channel(1024).0,
            on_lost: std::sync::OnceLock::new(),
            came_online: Mutex::new(Vec::new()),
        }
    }

    /// Messages agents send upward, as they arrive (each once).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(HostId, Record)> {
        self.upward.subscribe()
    }

    /// Registers a new connection of `host`'s agent, replacing any earlier one, and
    /// returns its generation and the signal that wakes it when it has work.
    pub fn connect(&self, host: HostId, heartbeat_ms: u64) -> (u64, Arc<Notify>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock();
        let slot = slots.entry(host).or_default();
        // The replaced connection notices its generation is gone at its next wake-up.
        slot.notify.notify_one();
        slot.notify = Arc::new(Notify::new());
        slot.conn = Some(conn);
        slot.heartbeat_ms = heartbeat_ms;
        for q in &mut slot.queue {
            q.sent = false;
        }
        (conn, slot.notify.clone())
    }

    /// Whether `conn` is still `host`'s connection.
    pub fn is_current(&self, host: HostId, conn: u64) -> bool {
        self.slots.lock().get(&host).and_then(|s| s.conn) == Some(conn)
    }

    /// Forgets connection `conn` of `host` (if it is still the current one).
    pub fn disconnect(&self, host: HostId, conn: u64) {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get_mut(&host)
            && s.conn == Some(conn)
        {
            s.conn = None;
        }
    }

    /// Records a heartbeat (or a hello); returns true when the agent was not `online`
    /// (the status is written to the store by [`Hub::watch_lost`]'s next tick).
    pub fn heartbeat(&self, host: HostId) -> bool {
        self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock();
        let s = slots.entry(host).or_default();
        s.last_seen = Some(Instant::now());
        s.last_seen_ms = now_ms();
        if s.status != Some(AgentStatus::Online) {
            s.status = Some(AgentStatus::Online);
            self.came_online.lock().push((host, s.last_seen_ms));
            true
        } else {
            false
        }
    }

    /// The status the hub holds for `host`, if it decided one since the server started.
    pub fn status(&self, host: HostId) -> Option<AgentStatus> {
        self.slots.lock().get(&host).and_then(|s| s.status)
    }

    /// Queues a message for `host`'s agent (which must be enrolled) and wakes its
    /// connection.
    pub fn push(
        &self,
        store: &Store,
        host: HostId,
        kind: &str,
        body: serde_json::Value,
    ) -> Result<MsgId, PushError> {
        if store.agent(host).is_none() {
            return Err(PushError::NoAgent(host.0));
        }
        let bytes = kind.len() + body.to_string().len();
        if bytes
            > self
                .limits
                .max_queued_bytes
                .min(agent::proto::MAX_FRAME_BYTES - 256)
        {
            return Err(PushError::TooLarge(
                bytes,
                self.limits
                    .max_queued_bytes
                    .min(agent::proto::MAX_FRAME_BYTES - 256),
            ));
        }
        let mut slots = self.slots.lock();
        let s = slots.entry(host).or_default();
        if s.queue.len() >= self.limits.max_queued
            || s.queued_bytes + bytes > self.limits.max_queued_bytes
        {
            return Err(PushError::Full(host.0, s.queue.len()));
        }
        s.next_id += 1;
        let id = MsgId(self.boot, s.next_id);
        s.queue.push_back(Queued {
            id,
            kind: kind.to_string(),
            body,
            bytes,
            queued_at: now_ms(),
            sent: false,
        });
        s.queued_bytes += bytes;
        s.notify.notify_one();
        Ok(id)
    }

    /// The frames connection `conn` must send now: queued messages it has not sent.
    pub fn outgoing(&self, host: HostId, conn: u64) -> Vec<ServerFrame> {
        let mut slots = self.slots.lock();
        let Some(s) = slots.get_mut(&host) else {
            return Vec::new();
        };
        if s.conn != Some(conn) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for q in s.queue.iter_mut().filter(|q| !q.sent) {
            q.sent = true;
            out.push(ServerFrame::Msg {
                id: q.id,
                kind: q.kind.clone(),
                body: q.body.clone(),
            });
        }
        self.counters
            .sent
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// The agent acknowledged `id`: it leaves the queue. Returns the message, the
    /// first time.
    pub fn acked(&self, host: HostId, id: MsgId) -> Option<Queued> {
        let mut slots = self.slots.lock();
        let s = slots.get_mut(&host)?;
        if let Some(i) = s.queue.iter().position(|q| q.id == id)
            && let Some(q) = s.queue.remove(i)
        {
            s.queued_bytes -= q.bytes;
            self.counters.acked.fetch_add(1, Ordering::Relaxed);
            push_recent(
                &mut s.delivered,
                Record {
                    id: q.id,
                    kind: q.kind.clone(),
                    body: q.body.clone(),
                    at: now_ms(),
                },
            );
            return Some(q);
        }
        None
    }

    /// A message from the agent: kept (once) and published unless seen before. Either
    /// way the caller acknowledges it.
    pub fn received(&self, host: HostId, id: MsgId, kind: String, body: serde_json::Value) {
        let rec = {
            let mut slots = self.slots.lock();
            let s = slots.entry(host).or_default();
            if !s.upward.accept(id) {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let rec = Record {
                id,
                kind,
                body,
                at: now_ms(),
            };
            push_recent(&mut s.received, rec.clone());
            rec
        };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        // Nobody listening is fine: the record is kept for the API.
        let _ = self.upward.send((host, rec));
    }

    /// Whether `host`'s agent is connected now.
    pub fn is_connected(&self, host: HostId) -> bool {
        self.slots
            .lock()
            .get(&host)
            .is_some_and(|s| s.conn.is_some())
    }

    /// What the hub holds for `host`.
    pub fn view(&self, host: HostId) -> SlotView {
        let slots = self.slots.lock();
        match slots.get(&host) {
            None => SlotView {
                connected: false,
                queued: Vec::new(),
                delivered: Vec::new(),
                received: Vec::new(),
                last_seen: 0,
                heartbeat_ms: 0,
            },
            Some(s) => SlotView {
                connected: s.conn.is_some(),
                queued: s.queue.iter().cloned().collect(),
                delivered: s.delivered.iter().cloned().collect(),
                received: s.received.iter().cloned().collect(),
                last_seen: s.last_seen_ms,
                heartbeat_ms: s.heartbeat_ms,
            },
        }
    }

    /// Connected agents, and messages queued per connected-or-not agent (host, count).
    pub fn gauges(&self) -> (usize, Vec<(HostId, usize)>) {
        let slots = self.slots.lock();
        let connected = slots.values().filter(|s| s.conn.is_some()).count();
        let queued = slots
            .iter()
            .filter(|(_, s)| !s.queue.is_empty())
            .map(|(h, s)| (*h, s.queue.len()))
            .collect();
        (connected, queued)
    }

    /// Agents whose heartbeats stopped: marks them `lost` and returns them with the
    /// Unix ms of their last heartbeat.
    fn newly_lost(&self) -> Vec<(HostId, i64)> {
        let mut slots = self.slots.lock();
        let mut lost = Vec::new();
        for (h, s) in slots.iter_mut() {
            if s.status == Some(AgentStatus::Online)
                && s.last_seen
                    .is_some_and(|t| t.elapsed() > self.limits.lost_after)
            {
                s.status = Some(AgentStatus::Lost);
                lost.push((*h, s.last_seen_ms));
            }
        }
        lost
    }

    /// Takes over the statuses stored by an earlier run: an agent `online` then is given
    /// [`Limits::lost_after`] from now to come back before it is `lost`.
    pub fn load(&self, store: &Store) {
        let mut slots = self.slots.lock();
        for r in store.agents() {
            let s = slots.entry(r.host).or_default();
            s.status = Some(r.status);
            s.last_seen_ms = r.last_seen;
            if r.status == AgentStatus::Online {
                s.last_seen = Some(Instant::now());
            }
        }
    }

    /// Sets what to call for each agent found lost (once; later calls are ignored).
    pub fn on_lost(&self, f: Box<dyn Fn(HostId) + Send + Sync>) {
        let _ = self.on_lost.set(f);
    }

    /// Marks silent agents `lost` every `tick`, writing each change to the store; runs
    /// until the task is dropped.
    pub async fn watch_lost(self: Arc<Hub>, store: Arc<Store>) {
        let tick =
            (self.limits.lost_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let mut changes: Vec<(HostId, AgentStatus, i64)> =
                std::mem::take(&mut *self.came_online.lock())
                    .into_iter()
                    .map(|(h, t)| (h, AgentStatus::Online, t))
                    .collect();
            let lost = self.newly_lost();
            if !lost.is_empty() {
                let inv = store.snapshot();
                for (host, last_seen) in &lost {
                    let name = inv.host(*host).map(|h| h.hostname.as_str()).unwrap_or("?");
                    tracing::warn!(
                        "agent of {name} is lost: no heartbeat since {last_seen} (Unix ms)"
                    );
                    if let Some(f) = self.on_lost.get() {
                        f(*host);
                    }
                }
            }
            // A host that came back and was lost again within one tick ends lost.
            changes.extend(lost.into_iter().map(|(h, t)| (h, AgentStatus::Lost, t)));
            if let Err(e) = store.set_agent_statuses(&changes).await {
                tracing::error!("recording {} agent status changes: {e}", changes.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<Store>, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let s = rt
            .block_on(Store::open_sqlite(&dir.path().join("meta.db")))
            .expect("store");
        (dir, Arc::new(s), rt)
    }

    #[test]
    fn queued_messages_are_resent_after_a_reconnect_until_acknowledged() {
        let (_d, store, rt) = store();
        let host = rt
            .block_on(store.enroll_agent("a", "", "{}"))
            .expect("enroll")
            .host;
        let hub = Hub::new(Limits::default());
        let id1 = hub
            .push(&store, host, "ping", serde_json::json!(1))
            .expect("push");
        let (c1, _) = hub.connect(host, 1000);
        assert_eq!(hub.outgoing(host, c1).len(), 1);
        assert!(
            hub.outgoing(host, c1).is_empty(),
            "sent once per connection"
        );
        let id2 = hub
            .push(&store, host, "ping", serde_json::json!(2))
            .expect("push");
        hub.acked(host, id1);
        let (c2, _) = hub.connect(host, 1000);
        assert!(!hub.is_current(host, c1));
        assert!(
            hub.outgoing(host, c1).is_empty(),
            "a replaced connection sends nothing"
        );
        let again = hub.outgoing(host, c2);
        assert_eq!(again.len(), 1);
        assert!(matches!(&again[0], ServerFrame::Msg { id, .. } if *id == id2));
        hub.acked(host, id2);
        hub.acked(host, id2);
        let v = hub.view(host);
        assert!(v.queued.is_empty());
        assert_eq!(v.delivered.len(), 2);
    }

    #[test]
    fn queues_are_bounded_and_unknown_agents_refused() {
        let (_d, store, rt) = store();
        let host = rt
            .block_on(store.enroll_agent("a", "", "{}"))
            .expect("enroll")
            .host;
        let hub = Hub::new(Limits {
            max_queued: 2,
            ..Limits::default()
        });
        hub.push(&store, host, "k", serde_json::json!(1))
            .expect("1");
        hub.push(&store, host, "k", serde_json::json!(2))
            .expect("2");
        assert!(matches!(
            hub.push(&store, host, "k", serde_json::json!(3)),
            Err(PushError::Full(..))
        ));
        assert!(matches!(
            hub.push(&store, HostId(999), "k", serde_json::json!(3)),
            Err(PushError::NoAgent(999))
        ));
        let big = serde_json::Value::String("x".repeat(5 << 20));
        assert!(matches!(
            hub.push(&store, host, "k", big),
            Err(PushError::TooLarge(..))
        ));
    }

    #[test]
    fn upward_messages_are_kept_once() {
        let hub = Hub::new(Limits::default());
        let h = HostId(1);
        hub.received(h, MsgId(5, 1), "pong".into(), serde_json::json!(1));
        hub.received(h, MsgId(5, 1), "pong".into(), serde_json::json!(1));
        hub.received(h, MsgId(5, 2), "pong".into(), serde_json::json!(2));
        assert_eq!(hub.view(h).received.len(), 2);
        assert_eq!(hub.counters.duplicates.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn silent_agents_are_lost() {
        let hub = Hub::new(Limits {
            lost_after: Duration::from_millis(20),
            ..Limits::default()
        });
        let h = HostId(1);
        assert!(hub.heartbeat(h));
        assert!(!hub.heartbeat(h));
        assert!(hub.newly_lost().is_empty());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(hub.newly_lost().len(), 1);
        assert!(hub.newly_lost().is_empty(), "once");
        assert_eq!(hub.status(h), Some(AgentStatus::Lost));
        assert!(hub.heartbeat(h), "back online");
    }
}
