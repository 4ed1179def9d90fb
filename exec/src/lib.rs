//! Batch execution: run a script on many hosts through their agents.
//!
//! [`sched`] decides, for one task and without I/O, which hosts run next (concurrency,
//! rolling batches, a canary, a failure tolerance, a health gate between batches) and
//! what each result does to the task. Persistence, dispatch over the agent channel,
//! recipes and the audit trail build on it.

pub mod sched;

pub use sched::{HostState, Limit, Rollout, Sched, Step, TaskState};
