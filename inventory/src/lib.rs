//! The inventory: which machines exist and where they belong.
//!
//! Hosts are arranged in a service tree (nodes of any kind: team, business line,
//! service, module...; any depth) and carry free `key=value` tags, inherited down the
//! tree. A selector (`dept=sre,service=minos`, `/sre/minos/web`, `web-*`) names a set of
//! hosts; [`selector`] parses one and resolves it against a [`tree::Inventory`], the one
//! resolver every feature that targets hosts uses.
//!
//! This crate holds the model and its rules, with no I/O; the metadata store and the HTTP
//! API build on it.

pub mod glob;
pub mod selector;
pub mod tree;

pub use selector::{Selector, SelectorError};
pub use tree::{HostId, Inventory, NodeId, TreeError};
