//! The agent channel's wire protocol, shared by the agent and the server.
//!
//! The agent opens one WebSocket to `GET /api/agent/v1/channel` on the server's HTTP
//! port, authenticated by `Authorization: Bearer <agent secret>`. Every frame is a text
//! frame holding one JSON object whose `type` names it:
//!
//! ```text
//! agent → server
//!   {"type":"hello","version":1,"agent_version":"0.1.0","heartbeat_ms":10000,
//!    "facts":{...}|null}
//!   {"type":"heartbeat","seq":7,"facts":{...}|null}     facts only when they changed
//!   {"type":"msg","id":[incarnation,n],"kind":"pong","body":{...}}
//!   {"type":"ack","id":[boot,n]}                        a server message was delivered
//! server → agent
//!   {"type":"welcome","boot":1732480000123,"lost_after_ms":30000}
//!   {"type":"heartbeat_ack","seq":7}
//!   {"type":"msg","id":[boot,n],"kind":"ping","body":{...}}
//!   {"type":"ack","id":[incarnation,n]}                 an agent message was delivered
//! ```
//!
//! # Delivery
//! A message id is a pair: the sender's incarnation (the server's boot time in ms; the
//! agent's start time in ms) and a counter that starts at 1 for each incarnation. A sender
//! keeps every message until it is acknowledged and, after a reconnect, sends the
//! unacknowledged ones again in order; a receiver remembers the highest id it delivered
//! per peer incarnation, drops (and acknowledges again) what it has seen, and so delivers
//! each message exactly once across reconnects. The agent records the last delivered
//! server id in its state directory before acknowledging, so an agent restart does not
//! deliver a message twice either.
//!
//! # Limits
//! A frame is at most [`MAX_FRAME_BYTES`]; facts at most [`MAX_FACTS_BYTES`] once
//! serialized. A peer that breaks a limit or sends something that is not one of these
//! frames is answered with a close frame naming the reason.

use serde::{Deserialize, Serialize};

use crate::facts::Facts;

/// The protocol version in `hello`.
pub const VERSION: u32 = 1;
/// The largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// The largest serialized facts object the server stores.
pub const MAX_FACTS_BYTES: usize = 64 << 10;
/// The path of the channel.
pub const CHANNEL_PATH: &str = "/api/agent/v1/channel";
/// The path of enrollment.
pub const ENROLL_PATH: &str = "/api/agent/v1/enroll";
/// The path of the agent's authenticated remote_write.
pub const WRITE_PATH: &str = "/api/agent/v1/write";

/// A message id: the sender's incarnation and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId(pub u64, pub u64);

/// A frame from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentFrame {
    Hello {
        version: u32,
        agent_version: String,
        heartbeat_ms: u64,
        facts: Option<Box<Facts>>,
    },
    Heartbeat {
        seq: u64,
        facts: Option<Box<Facts>>,
    },
    Msg {
        id: MsgId,
        kind: String,
        body: serde_json::Value,
    },
    Ack {
        id: MsgId,
    },
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        boot: u64,
        lost_after_ms: u64,
    },
    HeartbeatAck {
        seq: u64,
    },
    Msg {
        id: MsgId,
        kind: String,
        body: serde_json::Value,
    },
    Ack {
        id: MsgId,
    },
}

/// `POST /api/agent/v1/enroll`, with `Authorization: Bearer <enrollment token>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub hostname: String,
    pub facts: Facts,
}

/// The answer to enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub host_id: u64,
    pub hostname: String,
    /// The agent's own credential, shown once.
    pub secret: String,
}

/// Where a receiver stands in one peer's stream of messages: which ids it delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub incarnation: u64,
    pub last: u64,
}

impl Cursor {
    /// Whether `id` is new, and if so records it as delivered. Ids of one incarnation
    /// arrive in order; a newer incarnation starts over.
    pub fn accept(&mut self, id: MsgId) -> bool {
        let MsgId(inc, n) = id;
        if inc > self.incarnation || (inc == self.incarnation && n > self.last) {
            self.incarnation = inc;
            self.last = n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_as_documented() {
        let f: AgentFrame = serde_json::from_str(r#"{"type":"ack","id":[5,2]}"#).expect("ack");
        assert_eq!(f, AgentFrame::Ack { id: MsgId(5, 2) });
        let f: AgentFrame =
            serde_json::from_str(r#"{"type":"heartbeat","seq":7,"facts":null}"#).expect("hb");
        assert_eq!(
            f,
            AgentFrame::Heartbeat {
                seq: 7,
                facts: None
            }
        );
        assert!(serde_json::from_str::<AgentFrame>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<AgentFrame>(r#"{"type":"ack","id":[1,2],"x":1}"#).is_err());
        let s = serde_json::to_string(&ServerFrame::HeartbeatAck { seq: 3 }).expect("json");
        assert_eq!(s, r#"{"type":"heartbeat_ack","seq":3}"#);
    }

    #[test]
    fn a_cursor_delivers_each_id_once() {
        let mut c = Cursor::default();
        assert!(c.accept(MsgId(10, 1)));
        assert!(c.accept(MsgId(10, 2)));
        assert!(!c.accept(MsgId(10, 2)), "repeat");
        assert!(!c.accept(MsgId(10, 1)), "older");
        assert!(!c.accept(MsgId(9, 50)), "an older incarnation");
        assert!(c.accept(MsgId(11, 1)), "a restarted peer");
    }
}
