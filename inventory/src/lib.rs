//! The inventory: which machines exist and where they belong.
//!
//! Hosts are arranged in a service tree (nodes of any kind: team, business line,
//! service, module...; any depth) and carry free `key=value` tags, inherited down the
//! tree. A selector (`dept=sre,service=minos`, `/sre/minos/web`, `web-*`) names a set of
//! hosts; [`selector`] parses one and resolves it against a [`tree::Inventory`], the one
//! resolver every feature that targets hosts uses.
//!
//! [`tree`] holds the model and its rules, with no I/O; [`store`] persists it (SQLite by
//! default) and the HTTP API builds on that; [`agents`] holds each enrolled agent's
//! credential, facts and liveness.

pub mod agents;
pub mod documents;
pub mod glob;
pub mod import;
pub mod selector;
pub mod store;
pub mod tokens;
pub mod tree;

pub use agents::{AgentRecord, AgentStatus, Enrolled};
pub use documents::Document;
pub use selector::{Selector, SelectorError};
pub use store::{Store, StoreError};
pub use tokens::{Grant, Role, TokenInfo, TokenKind};
pub use tree::{HostId, Inventory, NodeId, TreeError};
