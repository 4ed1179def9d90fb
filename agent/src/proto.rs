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
//! An acknowledgement names one message, not every message up to it, and says the
//! receiver has taken it for good: the server acknowledges a task report (`run.started`,
//! `run.output`, `run.finished`) only once it is stored durably, so its acknowledgement
//! may come after later messages were sent. The server acknowledges in the order the
//! messages arrived. A message the server received but did not acknowledge (it died
//! first) is sent again and taken once: results by the task's rules, output by its
//! offset in its stream.
//!
//! # Signed work
//! The server signs every `run` message with its task key (Ed25519; the private half in
//! the server's `<data>/task-signing.key`). The agent learns the public half when it
//! enrolls (`task_key` in [`EnrollResponse`]; an identity from before that takes it from
//! the first `welcome`) and keeps it in its identity; from then on it refuses a `run`
//! whose `signature` does not verify. The signature covers [`RunBody::signed_bytes`]:
//! the work, the task and attempt, and the host it is for, so it cannot be replayed to
//! another host or changed on the way.
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
        /// The server's task key (hex Ed25519 public key).
        #[serde(default)]
        task_key: Option<String>,
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
    /// The key the server signs work with (hex Ed25519 public key).
    #[serde(default)]
    pub task_key: Option<String>,
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

/// The body of a `run` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBody {
    pub task: u64,
    pub attempt: u32,
    /// `bash`, `sh` or `python3`.
    pub interpreter: String,
    pub script: String,
    #[serde(default)]
    pub user: Option<String>,
    pub timeout_ms: u64,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default = "default_max_output")]
    pub max_output: u64,
    /// Hex Ed25519 signature of [`RunBody::signed_bytes`] by the server's task key.
    #[serde(default)]
    pub signature: Option<String>,
}

fn default_max_output() -> u64 {
    1 << 20
}

/// What a signature covers, versioned so that no other message signs the same bytes.
const RUN_DOMAIN: &[u8] = b"minos-run-v1";

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_le_bytes());
    out.extend_from_slice(field);
}

impl RunBody {
    /// The bytes the server signs for host `host_id`. Each field is its length as a
    /// little-endian u64 followed by its bytes; numbers are their little-endian u64
    /// bytes (8 bytes, so length 8). In order: `minos-run-v1`, host id, task, attempt,
    /// interpreter, script, user (empty when none), timeout in ms, output bound, the
    /// number of environment variables, then each name and value.
    pub fn signed_bytes(&self, host_id: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.script.len() + 256);
        put(&mut out, RUN_DOMAIN);
        for n in [host_id, self.task, u64::from(self.attempt)] {
            put(&mut out, &n.to_le_bytes());
        }
        put(&mut out, self.interpreter.as_bytes());
        put(&mut out, self.script.as_bytes());
        put(&mut out, self.user.as_deref().unwrap_or("").as_bytes());
        put(&mut out, &self.timeout_ms.to_le_bytes());
        put(&mut out, &self.max_output.to_le_bytes());
        put(&mut out, &(self.env.len() as u64).to_le_bytes());
        for (k, v) in &self.env {
            put(&mut out, k.as_bytes());
            put(&mut out, v.as_bytes());
        }
        out
    }

    /// Signs the body for host `host_id`.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey, host_id: u64) {
        use ed25519_dalek::Signer as _;
        let sig = key.sign(&self.signed_bytes(host_id));
        self.signature = Some(hex(&sig.to_bytes()));
    }

    /// Checks the signature against the server's key (hex), for host `host_id`.
    pub fn verify(&self, key_hex: &str, host_id: u64) -> Result<(), String> {
        let key: [u8; 32] = unhex(key_hex)
            .and_then(|b| b.try_into().ok())
            .ok_or("the stored task key is not 32 bytes of hex")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
            .map_err(|e| format!("the stored task key: {e}"))?;
        let sig = self.signature.as_deref().ok_or("the work is not signed")?;
        let sig: [u8; 64] = unhex(sig)
            .and_then(|b| b.try_into().ok())
            .ok_or("the signature is not 64 bytes of hex")?;
        key.verify_strict(
            &self.signed_bytes(host_id),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| "the signature does not match the server's task key".to_string())
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Hex (either case) to bytes; `None` when it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod signing_tests {
    use super::*;

    fn body() -> RunBody {
        RunBody {
            task: 7,
            attempt: 1,
            interpreter: "bash".into(),
            script: "echo hi".into(),
            user: None,
            timeout_ms: 1000,
            env: vec![("A".into(), "b".into())],
            max_output: 1 << 20,
            signature: None,
        }
    }

    #[test]
    fn signed_work_verifies_only_unchanged_and_for_its_host() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let public = hex(key.verifying_key().as_bytes());
        let mut b = body();
        assert!(b.verify(&public, 3).is_err(), "unsigned");
        b.sign(&key, 3);
        assert_eq!(b.verify(&public, 3), Ok(()));
        assert!(b.verify(&public, 4).is_err(), "another host");
        let mut changed = b.clone();
        changed.script = "rm -rf /".into();
        assert!(changed.verify(&public, 3).is_err(), "changed script");
        let mut changed = b.clone();
        changed.env.push(("LD_PRELOAD".into(), "/tmp/x.so".into()));
        assert!(changed.verify(&public, 3).is_err(), "added env");
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        assert!(b.verify(&hex(other.verifying_key().as_bytes()), 3).is_err());
        assert!(b.verify("zz", 3).is_err());
        // Field boundaries are part of what is signed.
        let mut a = body();
        a.interpreter = "bas".into();
        a.script = "hecho hi".into();
        assert_ne!(a.signed_bytes(3), body().signed_bytes(3));
        assert_eq!(unhex(&hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0g"), None);
    }
}
