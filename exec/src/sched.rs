//! The scheduler of one task, without I/O: which hosts run next, and what a result does
//! to the task.
//!
//! A task's hosts are split into batches: with `--canary N` the first batch is the
//! first N hosts, and it must succeed whole before anything else starts; with
//! `--batch N` the rest go N at a time (rolling: a batch starts when the previous one is
//! finished); without, the rest are one batch. Within a batch at most `concurrency`
//! hosts are in flight (sent, acknowledged or running). After each batch the task may
//! ask for its health gate to be checked ([`Step::CheckGate`]) before the next starts.
//!
//! Failures (failed, timed out, killed, agent lost, interrupted) are counted; once they
//! exceed `max_fail`, the task pauses and starts no other host. Cancelling skips every
//! host that has not started and asks for the running ones to be killed.

use serde::{Deserialize, Serialize};

/// "1 host", "2 hosts".
fn hosts(n: usize) -> String {
    if n == 1 {
        "1 host".into()
    } else {
        format!("{n} hosts")
    }
}

/// A count, or a percentage of the task's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    Count(usize),
    Percent(u32),
}

impl Limit {
    /// Reads `10` or `25%`.
    pub fn parse(s: &str) -> Result<Limit, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: u32 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: expected a count or a percentage"))?;
            if p > 100 {
                return Err(format!("{s:?}: a percentage is at most 100%"));
            }
            Ok(Limit::Percent(p))
        } else {
            s.parse()
                .map(Limit::Count)
                .map_err(|_| format!("{s:?}: expected a count or a percentage"))
        }
    }

    /// The count for `n` hosts; a percentage rounds up.
    pub fn of(self, n: usize) -> usize {
        match self {
            Limit::Count(c) => c,
            Limit::Percent(p) => (n * p as usize).div_ceil(100),
        }
    }
}

/// Where one host of a task stands. Only the server's records move a host; a state is
/// never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Queued,
    /// Pushed down the channel, not yet acknowledged.
    Sent,
    /// The agent acknowledged the work.
    Acknowledged,
    Running,
    Succeeded,
    /// Exit code not 0.
    Failed,
    TimedOut,
    Killed,
    /// Not started: the task was paused or cancelled before the host's turn.
    Skipped,
    AgentLost,
    /// The agent restarted while the script ran.
    Interrupted,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Queued => "queued",
            HostState::Sent => "sent",
            HostState::Acknowledged => "acknowledged",
            HostState::Running => "running",
            HostState::Succeeded => "succeeded",
            HostState::Failed => "failed",
            HostState::TimedOut => "timed_out",
            HostState::Killed => "killed",
            HostState::Skipped => "skipped",
            HostState::AgentLost => "agent_lost",
            HostState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<HostState> {
        Some(match s {
            "queued" => HostState::Queued,
            "sent" => HostState::Sent,
            "acknowledged" => HostState::Acknowledged,
            "running" => HostState::Running,
            "succeeded" => HostState::Succeeded,
            "failed" => HostState::Failed,
            "timed_out" => HostState::TimedOut,
            "killed" => HostState::Killed,
            "skipped" => HostState::Skipped,
            "agent_lost" => HostState::AgentLost,
            "interrupted" => HostState::Interrupted,
            _ => return None,
        })
    }

    /// Sent, acknowledged or running.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            HostState::Sent | HostState::Acknowledged | HostState::Running
        )
    }

    /// A final state.
    pub fn done(self) -> bool {
        !self.in_flight() && self != HostState::Queued
    }

    /// A final state that counts against the failure tolerance.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            HostState::Failed
                | HostState::TimedOut
                | HostState::Killed
                | HostState::AgentLost
                | HostState::Interrupted
        )
    }
}

/// Where the task stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum TaskState {
    Running,
    /// Paused by a user or by the task itself; the reason says which.
    Paused(String),
    Succeeded,
    Failed(String),
    Cancelled,
}

impl TaskState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Paused(_) => "paused",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed(_) => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn finished(&self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed(_) | TaskState::Cancelled
        )
    }
}

/// How a task rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub concurrency: Limit,
    /// Hosts per batch after the canary (`None`: all of them).
    pub batch: Option<usize>,
    /// Hosts of the canary batch (0: none).
    pub canary: usize,
    pub max_fail: Limit,
    /// Whether a health gate is checked after each batch.
    pub gated: bool,
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the work to these hosts (indices into the task's hosts); they are now `Sent`.
    Dispatch(Vec<usize>),
    /// A batch finished: check the gate, then call [`Sched::gate_passed`] or
    /// [`Sched::pause`].
    CheckGate,
    /// Nothing to do until a result arrives.
    Wait,
    /// The task is finished.
    Finished,
}

/// One task's schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sched {
    pub rollout: Rollout,
    pub hosts: Vec<HostState>,
    /// Batch boundaries: batch `i` is hosts `bounds[i]..bounds[i + 1]`.
    pub bounds: Vec<usize>,
    /// The batch running now.
    pub batch: usize,
    pub state: TaskState,
    /// A finished batch waits for its gate check.
    pub gate_pending: bool,
}

impl Sched {
    pub fn new(rollout: Rollout, n: usize) -> Sched {
        let mut bounds = vec![0];
        let canary = rollout.canary.min(n);
        if canary > 0 {
            bounds.push(canary);
        }
        let step = rollout.batch.unwrap_or(n).max(1);
        let mut at = canary;
        while at < n {
            at = (at + step).min(n);
            bounds.push(at);
        }
        if bounds.len() == 1 {
            bounds.push(0);
        }
        Sched {
            rollout,
            hosts: vec![HostState::Queued; n],
            bounds,
            batch: 0,
            state: TaskState::Running,
            gate_pending: false,
        }
    }

    fn batch_range(&self, b: usize) -> std::ops::Range<usize> {
        let start = self.bounds.get(b).copied().unwrap_or(self.hosts.len());
        let end = self.bounds.get(b + 1).copied().unwrap_or(self.hosts.len());
        start..end
    }

    fn batches(&self) -> usize {
        self.bounds.len() - 1
    }

    pub fn failures(&self) -> usize {
        self.hosts.iter().filter(|h| h.is_failure()).count()
    }

    fn max_fail(&self) -> usize {
        self.rollout.max_fail.of(self.hosts.len())
    }

    /// The next step, given which hosts are busy with another task.
    pub fn step(&mut self, busy: &dyn Fn(usize) -> bool) -> Step {
        let in_flight = self.hosts.iter().filter(|h| h.in_flight()).count();
        if matches!(self.state, TaskState::Cancelled) {
            // Finished once the killed hosts reported.
            return if in_flight == 0 {
                Step::Finished
            } else {
                Step::Wait
            };
        }
        if self.state.finished() {
            return Step::Finished;
        }
        if !matches!(self.state, TaskState::Running) {
            return Step::Wait;
        }
        if self.gate_pending {
            return Step::CheckGate;
        }
        let range = self.batch_range(self.batch);
        let batch_done = self.hosts[range.clone()].iter().all(|h| h.done());
        if batch_done {
            let canary = self.rollout.canary > 0 && self.batch == 0;
            if canary
                && self.hosts[range.clone()]
                    .iter()
                    .any(|h| *h != HostState::Succeeded)
            {
                for h in self.hosts.iter_mut().filter(|h| **h == HostState::Queued) {
                    *h = HostState::Skipped;
                }
                self.state = TaskState::Failed("the canary batch did not succeed".into());
                return Step::Finished;
            }
            if self.batch + 1 >= self.batches() {
                self.state = if self.failures() > 0 {
                    TaskState::Failed(format!("{} failed", hosts(self.failures())))
                } else {
                    TaskState::Succeeded
                };
                return Step::Finished;
            }
            self.batch += 1;
            if self.rollout.gated {
                self.gate_pending = true;
                return Step::CheckGate;
            }
            return self.step(busy);
        }
        let limit = self.rollout.concurrency.of(self.hosts.len()).max(1);
        let mut free = limit.saturating_sub(in_flight);
        let mut out = Vec::new();
        for i in range {
            if free == 0 {
                break;
            }
            if self.hosts[i] == HostState::Queued && !busy(i) {
                self.hosts[i] = HostState::Sent;
                out.push(i);
                free -= 1;
            }
        }
        if out.is_empty() {
            Step::Wait
        } else {
            Step::Dispatch(out)
        }
    }

    /// Records a host's new state; a failure past the tolerance pauses the task.
    pub fn set(&mut self, host: usize, state: HostState) {
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        // A final state is final: a late or replayed report does not move it.
        if h.done() {
            return;
        }
        *h = state;
        // Pausing protects the hosts not started yet: with none left, the task just
        // ends once the running ones report.
        if state.is_failure()
            && self.failures() > self.max_fail()
            && matches!(self.state, TaskState::Running)
            && self.hosts.contains(&HostState::Queued)
        {
            self.state = TaskState::Paused(format!(
                "failure tolerance reached: {} failed, at most {} allowed",
                hosts(self.failures()),
                self.max_fail()
            ));
        }
    }

    /// The gate passed: the next batch may start.
    pub fn gate_passed(&mut self) {
        self.gate_pending = false;
    }

    /// Pauses the task (by a user, or a gate that fired).
    pub fn pause(&mut self, reason: impl Into<String>) {
        if matches!(self.state, TaskState::Running) {
            self.state = TaskState::Paused(reason.into());
        }
    }

    /// Resumes a paused task; a gate that paused it counts as passed.
    pub fn resume(&mut self) -> Result<(), String> {
        match &self.state {
            TaskState::Paused(_) => {
                self.state = TaskState::Running;
                self.gate_pending = false;
                Ok(())
            }
            s => Err(format!("the task is {}, not paused", s.as_str())),
        }
    }

    /// Cancels: hosts not started are skipped; returns the in-flight ones to kill.
    pub fn cancel(&mut self) -> Result<Vec<usize>, String> {
        if self.state.finished() {
            return Err(format!("the task is already {}", self.state.as_str()));
        }
        for h in self.hosts.iter_mut().filter(|h| **h == HostState::Queued) {
            *h = HostState::Skipped;
        }
        self.state = TaskState::Cancelled;
        Ok((0..self.hosts.len())
            .filter(|&i| self.hosts[i].in_flight())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(
        concurrency: Limit,
        batch: Option<usize>,
        canary: usize,
        max_fail: Limit,
    ) -> Rollout {
        Rollout {
            concurrency,
            batch,
            canary,
            max_fail,
            gated: false,
        }
    }

    fn none(_: usize) -> bool {
        false
    }

    #[test]
    fn limits_read_counts_and_percentages() {
        assert_eq!(Limit::parse("10"), Ok(Limit::Count(10)));
        assert_eq!(Limit::parse("25%"), Ok(Limit::Percent(25)));
        assert!(Limit::parse("150%").is_err());
        assert!(Limit::parse("x").is_err());
        assert_eq!(Limit::Percent(10).of(15), 2);
        assert_eq!(Limit::Percent(0).of(15), 0);
    }

    #[test]
    fn concurrency_is_never_exceeded_and_all_hosts_run() {
        let mut s = Sched::new(rollout(Limit::Count(2), None, 0, Limit::Count(0)), 5);
        let mut seen = Vec::new();
        loop {
            match s.step(&none) {
                Step::Dispatch(v) => {
                    assert!(s.hosts.iter().filter(|h| h.in_flight()).count() <= 2);
                    seen.extend(v.clone());
                    for i in v {
                        s.set(i, HostState::Running);
                        s.set(i, HostState::Succeeded);
                    }
                }
                Step::Finished => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.state, TaskState::Succeeded);
    }

    #[test]
    fn the_failure_tolerance_pauses_and_nothing_more_starts() {
        let mut s = Sched::new(rollout(Limit::Count(1), None, 0, Limit::Count(1)), 5);
        let Step::Dispatch(v) = s.step(&none) else {
            panic!()
        };
        s.set(v[0], HostState::Failed);
        let Step::Dispatch(v) = s.step(&none) else {
            panic!()
        };
        s.set(v[0], HostState::Failed);
        assert!(matches!(s.state, TaskState::Paused(_)), "{:?}", s.state);
        assert_eq!(s.step(&none), Step::Wait);
        assert_eq!(
            s.hosts.iter().filter(|h| **h == HostState::Queued).count(),
            3
        );
        s.resume().expect("resume");
        assert!(matches!(s.step(&none), Step::Dispatch(_)));
    }

    #[test]
    fn a_failed_canary_stops_the_rest() {
        let mut s = Sched::new(rollout(Limit::Count(10), Some(2), 1, Limit::Count(10)), 5);
        assert_eq!(s.bounds, vec![0, 1, 3, 5]);
        let Step::Dispatch(v) = s.step(&none) else {
            panic!()
        };
        assert_eq!(v, vec![0]);
        s.set(0, HostState::Failed);
        assert_eq!(s.step(&none), Step::Finished);
        assert!(matches!(s.state, TaskState::Failed(_)));
        assert!(s.hosts[1..].iter().all(|h| *h == HostState::Skipped));
    }

    #[test]
    fn rolling_batches_wait_for_each_other_and_the_gate() {
        let mut r = rollout(Limit::Count(10), Some(2), 0, Limit::Count(0));
        r.gated = true;
        let mut s = Sched::new(r, 4);
        let Step::Dispatch(v) = s.step(&none) else {
            panic!()
        };
        assert_eq!(v, vec![0, 1]);
        s.set(0, HostState::Succeeded);
        assert_eq!(s.step(&none), Step::Wait, "batch not finished");
        s.set(1, HostState::Succeeded);
        assert_eq!(s.step(&none), Step::CheckGate);
        assert_eq!(s.step(&none), Step::CheckGate, "until answered");
        s.pause("gate fired: 1 series");
        assert_eq!(s.step(&none), Step::Wait);
        s.resume().expect("resume");
        let Step::Dispatch(v) = s.step(&none) else {
            panic!()
        };
        assert_eq!(v, vec![2, 3]);
    }

    #[test]
    fn busy_hosts_wait_and_cancel_skips_the_rest() {
        let mut s = Sched::new(rollout(Limit::Count(3), None, 0, Limit::Count(0)), 3);
        let Step::Dispatch(v) = s.step(&|i| i == 0) else {
            panic!()
        };
        assert_eq!(v, vec![1, 2]);
        let kill = s.cancel().expect("cancel");
        assert_eq!(kill, vec![1, 2]);
        assert_eq!(s.hosts[0], HostState::Skipped);
        assert_eq!(s.step(&none), Step::Wait, "until the killed report back");
        s.set(1, HostState::Killed);
        s.set(2, HostState::Killed);
        assert_eq!(s.step(&none), Step::Finished);
        // A replayed result does not move a final state.
        s.set(1, HostState::Succeeded);
        assert_eq!(s.hosts[1], HostState::Killed);
    }
}
