//! The host agent (`minos agent`): what it learns about its machine.
//!
//! [`hostmetrics`] collects the host's metrics under node_exporter's names and labels,
//! so dashboards built for node_exporter work on what the agent pushes; [`push`] turns a
//! collection into a remote_write request. Enrollment and the channel to the server
//! build on them.

pub mod hostmetrics;
pub mod push;
