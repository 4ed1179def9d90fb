//! Alerting: Prometheus-compatible rule files, their evaluation (recording rules and
//! alert states), the templates of labels and annotations, and notifications.

pub mod eval;
pub mod manager;
pub mod notify;
pub mod rulefile;
pub mod template;
pub mod unittest;
