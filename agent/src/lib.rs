//! The host agent (`minos agent`): what it learns about its machine.
//!
//! [`hostmetrics`] collects the host's metrics under node_exporter's names and labels,
//! so dashboards built for node_exporter work on what the agent pushes. Enrollment, the
//! channel to the server and the push loop build on it.

pub mod hostmetrics;
