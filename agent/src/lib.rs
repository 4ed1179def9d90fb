//! The host agent (`minos agent`): what it learns about its machine.
//!
//! [`hostmetrics`] collects the host's metrics under node_exporter's names and labels,
//! so dashboards built for node_exporter work on what the agent pushes; [`push`] turns a
//! collection into a remote_write request; [`spool`] keeps pushes on disk while the server
//! is unreachable. Enrollment and the channel to the server build on them. [`facts`]
//! gathers what the agent tells the server about its host (hardware, OS, addresses),
//! sent when it changes. [`proto`] is the channel's wire protocol, shared with the
//! server; [`client`] is the running agent (enrollment, channel, metrics loop). [`exec`]
//! runs the scripts of batch tasks the server pushes down the channel.

pub mod client;
pub mod exec;
pub mod facts;
pub mod hostmetrics;
pub mod outbox;
pub mod proto;
pub mod push;
pub mod spool;
pub mod tls;
