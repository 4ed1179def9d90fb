//! Batch execution: run a script on many hosts through their agents.
//!
//! [`sched`] decides, for one task and without I/O, which hosts run next (concurrency,
//! rolling batches, a canary, a failure tolerance, a health gate between batches) and
//! what each result does to the task. [`engine`] runs the tasks: dispatch over the
//! agent channel (through the [`engine::Channel`] the server gives it), the agents'
//! reports, health gates, and batched writes to [`taskdb`]. [`audit`] is the
//! append-only, hash-chained trail of who did what; `recipe` the reviewed script
//! library.

pub mod audit;
pub mod engine;
pub mod recipe;
pub mod sched;
pub mod taskdb;

pub use sched::{HostState, Limit, Rollout, Sched, Step, TaskState};
