/*!
`minos run`, `minos tasks` and `minos audit`: clients of the tasks API under
`/api/ops/v1/` (`/tasks…`, `/recipes…`, `/audit…`, served by `web::tasks`).

`minos run` creates a task and follows it: it polls the task, draws a progress line on
stderr, prints each host's output on stdout as the host finishes, and ends with a table of
the hosts and an exit status saying how the task ended ([`exit`]). `minos tasks retry
--follow` follows the new task the same way ([`follow`]). The connection flags and the
HTTP client are `ops_cli`'s; a refused call prints the server's message and exits 2.
*/

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write as _};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::ops_cli::{Client, Conn, Refused, utc};

/// Exit statuses of the commands that follow a task (`minos run`, `minos tasks retry
/// --follow`); the other commands exit 0, or [`REFUSED`](exit::REFUSED) on any error.
pub mod exit {
    /// The task succeeded on every host (or `--detach`: it was created).
    pub const SUCCEEDED: u8 = 0;
    /// The task failed or was cancelled: some host did not succeed.
    pub const FAILED: u8 = 1;
    /// The request was refused (bad input, unknown task, no token) or the server could not
    /// be reached; nothing was run.
    pub const REFUSED: u8 = 2;
    /// The task paused (failures past `--max-fail`, a health gate fired, a user paused
    /// it): it waits for `minos tasks resume` or `minos tasks cancel`.
    pub const PAUSED: u8 = 3;
    /// Ctrl-C while following: the task was left running.
    pub const INTERRUPTED: u8 = 130;
}

const AFTER_RUN: &str = "\
Output: `task N: M hosts (target …)`, then each host's output under a `── host ── state \
(exit, duration)` heading as the host finishes (stderr under `stderr:`), a progress line on \
stderr (redrawn on a terminal, one line per change otherwise), and a table of the hosts. \
Ctrl-C stops following and leaves the task running (`minos tasks follow N` follows it again, \
`minos tasks cancel N` stops it).

Exit status: 0 the task succeeded; 1 it failed or was cancelled; 2 the request was refused \
(nothing ran) or the server could not be reached; 3 the task paused and waits for \
`minos tasks resume N` or `minos tasks cancel N`; 130 interrupted (the task keeps running).";

/// `minos run`: a script or a recipe on the hosts a selector names.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_RUN)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["script", "recipe"])))]
pub struct RunArgs {
    #[command(flatten)]
    conn: Conn,
    /// The hosts: `key=value`, `/tree/path`, host names and globs, joined with `,`
    /// (`*` for every host).
    #[arg(long)]
    target: String,
    /// The script to run (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    script: Option<String>,
    /// A recipe of the library instead of a script: `name` (its newest version) or
    /// `name@version` (`minos tasks recipes` lists them).
    #[arg(long, value_name = "NAME[@V]")]
    recipe: Option<String>,
    /// A recipe parameter `name=value` (repeatable).
    #[arg(short = 'p', long = "param", value_name = "K=V")]
    params: Vec<String>,
    /// The interpreter [default: the script's `#!` line if it names one of these, else
    /// bash; a recipe's own].
    #[arg(long, value_parser = ["bash", "sh", "python3"])]
    interpreter: Option<String>,
    /// Most hosts running at once: a count or a percentage of the hosts [server default:
    /// 10%].
    #[arg(long, value_name = "N|P%")]
    concurrency: Option<String>,
    /// Roll out N hosts at a time: a batch starts when the previous one finished.
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Run the first N hosts first; the rest start only if all of them succeed.
    #[arg(long, value_name = "N")]
    canary: Option<usize>,
    /// Failures tolerated before the task pauses: a count or a percentage [default: 0].
    #[arg(long, value_name = "N|P%")]
    max_fail: Option<String>,
    /// A PromQL expression checked between batches: if it returns anything, the task
    /// pauses.
    #[arg(long, value_name = "PROMQL")]
    gate: Option<String>,
    /// Longest the script may run on one host (`90s`, `10m`) [server default: 10m].
    #[arg(long, value_name = "DUR")]
    timeout: Option<String>,
    /// The user to run the script as [default: the agent's].
    #[arg(long)]
    user: Option<String>,
    /// An environment variable `KEY=VALUE` for the script (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VAL")]
    env: Vec<String>,
    /// Most output kept per host, in bytes [server default].
    #[arg(long, value_name = "BYTES")]
    max_output: Option<usize>,
    /// Print the task's id (with --json, the created task) and return at once.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    show: FollowOpts,
}

/// How a followed task is shown.
#[derive(clap::Args, Debug, Clone, Copy)]
struct FollowOpts {
    /// Don't print the hosts' output, only progress and the final table.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// At the end print the task as JSON instead of the table (and no output on stdout
    /// before it).
    #[arg(long)]
    json: bool,
}

/// `minos tasks …`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Recipes: `minos tasks recipes` lists the library, `minos tasks recipes show NAME[@V]` shows a \
recipe's parameters and script, `minos tasks recipes add FILE.json` adds one (admin); \
`minos run --recipe NAME -p KEY=VALUE` runs one.")]
pub struct TasksArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: TasksCmd,
}

#[derive(clap::Subcommand, Debug)]
enum TasksCmd {
    /// List tasks, newest first.
    List {
        /// Only tasks in this state: pending, running, paused, succeeded, failed, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// At most this many [server default: 50].
        #[arg(long)]
        limit: Option<usize>,
        /// Only tasks older than this id (to page on).
        #[arg(long, value_name = "ID")]
        before: Option<i64>,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a task: its settings, why it stands where it does, and every host.
    Show {
        /// The task.
        id: i64,
        /// Print the script too.
        #[arg(long)]
        script: bool,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print each host's output (so far, while the task runs) under its name.
    Output {
        /// The task.
        id: i64,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Only hosts in this state (`failed`, `timed_out`, …).
        #[arg(long)]
        state: Option<String>,
    },
    /// Follow a task like `minos run` does (again after Ctrl-C, or after a resume):
    /// the output of hosts already finished first.
    #[command(after_help = "Output and exit status are those of `minos run`.")]
    Follow {
        /// The task.
        id: i64,
        #[command(flatten)]
        show: FollowOpts,
    },
    /// Pause a running task: nothing more starts; what runs finishes.
    Pause {
        /// The task.
        id: i64,
    },
    /// Resume a paused task.
    Resume {
        /// The task.
        id: i64,
    },
    /// Cancel a task: hosts not started are skipped, running scripts are killed.
    Cancel {
        /// The task.
        id: i64,
    },
    /// Run a finished task again on the hosts that ended in some states; prints the new
    /// task's id.
    #[command(after_help = "With --follow, output and exit status are those of `minos run`.")]
    Retry {
        /// The task.
        id: i64,
        /// Host states to run again, comma-separated (`failed,agent_lost`), or `all`
        /// [default: every failure: failed, timed_out, killed, agent_lost, interrupted].
        #[arg(long = "state", value_delimiter = ',', value_name = "STATES")]
        states: Vec<String>,
        /// Follow the new task like `minos run` does.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        show: FollowOpts,
    },
    /// The recipe library: list it, show a recipe, or add one (admin).
    Recipes {
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<RecipesCmd>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum RecipesCmd {
    /// Show a recipe's parameters and script: `name` or `name@version`.
    Show {
        /// `name` (the newest version) or `name@version`.
        name: String,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add a recipe, or a new version of one (needs an admin token).
    #[command(after_help = "\
FILE is JSON: {\"name\": \"…\", \"description\": \"…\", \"interpreter\": \"bash\", \
\"params\": [{\"name\": \"…\", \"type\": \"string|int|bool|enum\", \"choices\": […], \
\"default\": \"…\", \"required\": false, \"description\": \"…\"}], \"script\": \"…\"}; \
`minos tasks recipes show NAME --json` prints one in that shape.")]
    Add {
        /// The recipe, as JSON.
        file: std::path::PathBuf,
        /// Take the script from this file instead of the JSON's `script`.
        #[arg(long, value_name = "FILE")]
        script: Option<std::path::PathBuf>,
    },
}

/// `minos audit`: the audit trail, or a check of its hash chain.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without --after, the newest entries (--limit, 50 by default); with --after SEQ, the \
entries after SEQ, oldest first. Either way they print in order. With --verify, exit status 0 when the chain is intact, 1 when \
an entry was changed or removed (the first one is named).")]
pub struct AuditArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only entries about this task.
    #[arg(long, value_name = "ID")]
    task: Option<i64>,
    /// Only entries by this actor (`admin:NAME`, `api:NAME`, `agent:HOST`, `system`,
    /// `gate`).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (`task.create`, `task.retry`, `task.pause`, `task.resume`,
    /// `task.cancel`, `task.finish`, `task.gate_passed`, `host.result`, `recipe.add`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries since then: a duration ago (`1h`, `-30m`, `now-1d`), RFC 3339 or
    /// Unix seconds.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only entries after this sequence number (to page on).
    #[arg(long, value_name = "SEQ")]
    after: Option<i64>,
    /// At most this many entries [default: 50].
    #[arg(long)]
    limit: Option<usize>,
    /// Print the API's JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Check the hash chain instead of listing.
    #[arg(
        long,
        conflicts_with_all = ["task", "actor", "action", "since", "after", "limit", "json"]
    )]
    verify: bool,
}

/// The exit status of a command: its own, or [`exit::REFUSED`] with the error printed.
pub fn status(res: Result<u8>) -> ExitCode {
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("minos: {e:#}");
            ExitCode::from(exit::REFUSED)
        }
    }
}

/// Writes to stdout at once (output is line-based, followed as it comes); a closed
/// stdout (`minos tasks list | head -1`) ends the program quietly, with status 0, as
/// ripgrep does.
pub(crate) fn emit(s: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(s.as_bytes()).and_then(|()| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! outln {
    () => { emit("\n") };
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*))) };
}

pub(crate) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(crate) fn query(pairs: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

/// `K=V` pairs as a JSON object; the value may be empty.
fn key_values(list: &[String], what: &str) -> Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    for p in list {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), Value::String(v.to_string()));
            }
            _ => bail!("{what} {p:?}: expected KEY=VALUE"),
        }
    }
    Ok(m)
}

/// The interpreter a `#!` line names, if it is one a task can run with.
fn shebang_interpreter(script: &str) -> Option<&'static str> {
    let line = script.lines().next()?.strip_prefix("#!")?;
    let mut words = line.split_whitespace();
    let mut prog = words.next()?.rsplit('/').next()?;
    if prog == "env" {
        prog = words.find(|w| !w.starts_with('-'))?;
    }
    ["bash", "sh", "python3"].into_iter().find(|i| *i == prog)
}

/// Milliseconds as `0.4 s`, `12.0 s`, `3m05s`, `2h10m`.
fn duration_text(ms: i64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

/// Rows of cells as left-aligned columns two spaces apart, without trailing blanks.
pub(crate) fn columns(rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            let n = c.chars().count();
            match w.get_mut(i) {
                Some(x) => *x = (*x).max(n),
                None => w.push(n),
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<0$}  ", w[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Cuts `s` to `n` characters, marking the cut with `…`.
pub(crate) fn clip(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut t: String = one_line.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// What a host's state says about it, in one place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queued,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

fn kind(state: &str) -> Kind {
    match exec::HostState::parse(state) {
        Some(exec::HostState::Queued) | None => Kind::Queued,
        Some(exec::HostState::Succeeded) => Kind::Succeeded,
        Some(exec::HostState::Skipped) => Kind::Skipped,
        Some(s) if s.is_failure() => Kind::Failed,
        Some(_) => Kind::Running,
    }
}

fn is_final(state: &str) -> bool {
    matches!(kind(state), Kind::Succeeded | Kind::Failed | Kind::Skipped)
}

/// `(exit 0, 1.2 s)`, `(signal 9, 10.0 s)`; empty when nothing ran.
fn result_text(h: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(c) = h["exit_code"].as_i64() {
        parts.push(format!("exit {c}"));
    }
    if let Some(s) = h["signal"].as_i64() {
        parts.push(format!("signal {s}"));
    }
    if let Some(d) = h["duration_ms"].as_i64() {
        parts.push(duration_text(d));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// One host's output under its name, as `minos run` and `minos tasks output` print it.
/// `h` has the host's row (state, exit, duration, error), `o` its output, `limit` the
/// task's bound on kept output.
fn host_block(h: &Value, o: &Value, limit: Option<i64>) -> String {
    let mut out = format!(
        "── {} ── {}{}",
        text(&h["hostname"]),
        text(&h["state"]),
        result_text(h)
    );
    let err = o["error"].as_str().or(h["error"].as_str()).unwrap_or("");
    if !err.is_empty() {
        let _ = write!(out, ": {err}");
    }
    out.push('\n');
    let mut body = |s: &str| {
        out.push_str(s);
        if !s.ends_with('\n') {
            out.push('\n');
        }
    };
    let stdout = text(&o["stdout"]);
    if !stdout.is_empty() {
        body(stdout);
    }
    let stderr = text(&o["stderr"]);
    if !stderr.is_empty() {
        body("stderr:");
        body(stderr);
    }
    if o["truncated"] == true || h["truncated"] == true {
        body(&match limit {
            Some(n) => format!("(output truncated: the task keeps the first {n} bytes per host)"),
            None => "(output truncated)".to_string(),
        });
    }
    out
}

/// `3 succeeded, 1 failed` over the hosts' states, in a fixed order.
fn state_counts(hosts: &[Value]) -> String {
    const ORDER: [&str; 11] = [
        "succeeded",
        "failed",
        "timed_out",
        "killed",
        "agent_lost",
        "interrupted",
        "skipped",
        "running",
        "acknowledged",
        "sent",
        "queued",
    ];
    let mut parts = Vec::new();
    for s in ORDER {
        let n = hosts.iter().filter(|h| h["state"] == s).count();
        if n > 0 {
            parts.push(format!("{n} {s}"));
        }
    }
    parts.join(", ")
}

/// The per-host table; past `max_rows` hosts, only those that did not succeed.
fn hosts_table(hosts: &[Value], max_rows: usize, started: bool) -> String {
    let mut rows = vec![vec![
        "HOST".to_string(),
        "STATE".into(),
        "EXIT".into(),
        "DURATION".into(),
    ]];
    if started {
        rows[0].push("STARTED".into());
    }
    rows[0].push("ERROR".into());
    let all = hosts.len() <= max_rows;
    let mut hidden = 0;
    for h in hosts {
        if !all && h["state"] == "succeeded" {
            hidden += 1;
            continue;
        }
        let exit = match (h["exit_code"].as_i64(), h["signal"].as_i64()) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("sig {s}"),
            _ => "-".into(),
        };
        let mut row = vec![
            text(&h["hostname"]).to_string(),
            text(&h["state"]).to_string(),
            exit,
            h["duration_ms"].as_i64().map_or("-".into(), duration_text),
        ];
        if started {
            row.push(h["started_ms"].as_i64().map_or("-".into(), utc));
        }
        row.push(clip(text(&h["error"]), 80));
        rows.push(row);
    }
    let mut out = columns(&rows);
    if hidden > 0 {
        let _ = writeln!(out, "({hidden} hosts that succeeded are not listed)");
    }
    out
}

/// Set by the SIGINT handler while a task is followed.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns the first Ctrl-C into a request to stop following; a second one ends the
/// program at once (the default action, restored by `SA_RESETHAND`).
fn catch_sigint() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
    // struct is zeroed (a valid empty mask and no flags) before the fields are set.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut()) != 0 {
            tracing::debug!("cannot catch SIGINT; Ctrl-C will end minos at once");
        }
    }
}

/// The progress line on stderr: redrawn in place on a terminal, else one line each time
/// it changes.
struct Progress {
    tty: bool,
    /// What was last drawn or printed.
    last: String,
    /// A line is on the terminal, without a newline.
    drawn: bool,
    start: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: String::new(),
            drawn: false,
            start: Instant::now(),
        }
    }

    fn show(&mut self, line: String) {
        if self.tty {
            let secs = self.start.elapsed().as_secs();
            eprint!("\r\x1b[K{line} [{}:{:02}]", secs / 60, secs % 60);
            let _ = std::io::stderr().flush();
            self.drawn = true;
        } else if line != self.last {
            eprintln!("{line}");
        }
        self.last = line;
    }

    /// Takes the line off the terminal before something else is printed.
    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}

fn progress_line(t: &Value, hosts: &[Value]) -> String {
    let n = |k: Kind| {
        hosts
            .iter()
            .filter(|h| kind(text(&h["state"])) == k)
            .count()
    };
    let (ok, failed, skipped) = (n(Kind::Succeeded), n(Kind::Failed), n(Kind::Skipped));
    let mut line = format!(
        "task {} {}: {}/{} done ({ok} succeeded, {failed} failed",
        t["id"],
        text(&t["state"]),
        ok + failed + skipped,
        hosts.len()
    );
    if skipped > 0 {
        let _ = write!(line, ", {skipped} skipped");
    }
    let _ = write!(
        line,
        "), {} running, {} queued",
        n(Kind::Running),
        n(Kind::Queued)
    );
    line
}

/// Prints a line where the command's answer goes: stdout, or stderr when stdout is
/// kept for JSON.
fn say(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        outln!("{line}");
    }
}

/// `task N: M hosts (target …)`.
fn header(t: &Value) -> String {
    let mut about = vec![format!("target {}", text(&t["target"]))];
    if let Some(r) = t["recipe"].as_object() {
        about.push(format!(
            "recipe {}@{}",
            r.get("name").and_then(Value::as_str).unwrap_or(""),
            r.get("version").unwrap_or(&Value::Null)
        ));
    }
    if let Some(r) = t["retry_of"].as_i64() {
        about.push(format!("retry of task {r}"));
    }
    let n = t["hosts_total"].as_i64().unwrap_or(0);
    format!(
        "task {}: {n} host{} ({})",
        t["id"],
        if n == 1 { "" } else { "s" },
        about.join(", ")
    )
}

/// How many failed polls in a row (about 300 ms apart) end the follow.
const MAX_POLL_ERRORS: u32 = 30;

/// Follows task `id` until it is finished, or paused with nothing left running; prints
/// each host's output as it finishes, then the table. Answers the exit status.
fn follow(c: &Client, id: i64, opts: FollowOpts) -> Result<u8> {
    catch_sigint();
    let mut progress = Progress::new();
    let mut printed: Vec<bool> = Vec::new();
    let mut errors = 0u32;
    let t = loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            progress.clear();
            eprintln!(
                "interrupted: task {id} keeps running; `minos tasks follow {id}` follows it \
                 again, `minos tasks cancel {id}` stops it"
            );
            return Ok(exit::INTERRUPTED);
        }
        let t = match c.call(Method::GET, &format!("/tasks/{id}"), None) {
            Ok(t) => {
                errors = 0;
                t
            }
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) => {
                errors += 1;
                if errors >= MAX_POLL_ERRORS {
                    progress.clear();
                    return Err(e.context(format!(
                        "lost the server while following task {id}, which may still run \
                         (`minos tasks show {id}`)"
                    )));
                }
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
        };
        let hosts = t["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        printed.resize(hosts.len(), false);
        // Hosts that reached a final state since the last poll, in the order they did.
        let mut fresh: Vec<usize> = (0..hosts.len())
            .filter(|&i| !printed[i] && is_final(text(&hosts[i]["state"])))
            .collect();
        fresh.sort_by_key(|&i| (hosts[i]["updated_at"].as_i64().unwrap_or(0), i));
        for i in fresh {
            printed[i] = true;
            let h = &hosts[i];
            if opts.quiet || opts.json || h["state"] == "skipped" {
                continue;
            }
            let o = if h["output_bytes"].as_i64().unwrap_or(0) > 0 || h["truncated"] == true {
                let q = query(&[("host", text(&h["hostname"]).to_string())]);
                // The output is shown, not needed: a failed fetch does not end the follow.
                match c.call(Method::GET, &format!("/tasks/{id}/output{q}"), None) {
                    Ok(d) => d["hosts"][0].clone(),
                    Err(e) => {
                        let host = text(&h["hostname"]);
                        let note = format!(
                            "(output not shown: {e:#}; `minos tasks output {id} --host {host}`)"
                        );
                        json!({ "stdout": note })
                    }
                }
            } else {
                Value::Null
            };
            progress.clear();
            out!("{}", host_block(h, &o, t["max_output"].as_i64()));
        }
        let state = text(&t["state"]);
        let busy = hosts
            .iter()
            .any(|h| kind(text(&h["state"])) == Kind::Running);
        // A cancelled task is finished only once its killed hosts reported.
        let finished = !t["finished_at"].is_null();
        if finished || (state == "paused" && !busy) {
            progress.clear();
            if !progress.tty {
                // The last line of a non-terminal log shows the final counts.
                progress.show(progress_line(&t, hosts));
            }
            break t;
        }
        progress.show(progress_line(&t, hosts));
        for _ in 0..6 {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let hosts = t["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if opts.json {
        outln!("{t}");
    } else {
        outln!();
        out!("{}", hosts_table(hosts, 50, false));
        outln!(
            "total: {} host{}: {}",
            hosts.len(),
            if hosts.len() == 1 { "" } else { "s" },
            state_counts(hosts)
        );
    }
    let state = text(&t["state"]);
    let reason = text(&t["reason"]);
    let mut end = format!("task {id} {state}");
    if !reason.is_empty() {
        let _ = write!(end, ": {reason}");
    }
    say(opts.json, &end);
    Ok(match state {
        "succeeded" => exit::SUCCEEDED,
        "paused" => {
            say(
                opts.json,
                &format!(
                    "the task waits: `minos tasks resume {id}` goes on (then `minos tasks follow \
                 {id}`), `minos tasks cancel {id}` stops it"
                ),
            );
            exit::PAUSED
        }
        _ => exit::FAILED,
    })
}

/// `minos run`.
pub fn run(a: RunArgs) -> Result<u8> {
    let c = Client::new(&a.conn)?;
    let mut body = json!({"target": a.target});
    if let Some(path) = &a.script {
        let script = if path == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the script from standard input")?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("{path}: cannot read"))?
        };
        let interpreter = match &a.interpreter {
            Some(i) => i.clone(),
            None => {
                let found = shebang_interpreter(&script);
                if found.is_none() && script.starts_with("#!") {
                    eprintln!(
                        "minos: warning: {path}: the #! line names no interpreter a task runs \
                         (bash, sh, python3); running it with bash"
                    );
                }
                found.unwrap_or("bash").to_string()
            }
        };
        body["script"] = json!(script);
        body["interpreter"] = json!(interpreter);
    } else if let Some(r) = &a.recipe {
        body["recipe"] = json!(r);
        if let Some(i) = &a.interpreter {
            body["interpreter"] = json!(i);
        }
    }
    if !a.params.is_empty() {
        // With a script the server refuses them, saying why.
        body["params"] = Value::Object(key_values(&a.params, "--param")?);
    }
    if !a.env.is_empty() {
        body["env"] = Value::Object(key_values(&a.env, "--env")?);
    }
    for (k, v) in [
        ("concurrency", &a.concurrency),
        ("max_fail", &a.max_fail),
        ("gate", &a.gate),
        ("timeout", &a.timeout),
        ("user", &a.user),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    for (k, v) in [
        ("batch", a.batch),
        ("canary", a.canary),
        ("max_output", a.max_output),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    let t = c.call(Method::POST, "/tasks", Some(body))?;
    let id = t["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("the server answered a task without an id: {t}"))?;
    if a.detach {
        if a.show.json {
            outln!("{t}");
        } else {
            eprintln!("{}", header(&t));
            outln!("{id}");
        }
        return Ok(exit::SUCCEEDED);
    }
    say(a.show.json, &header(&t));
    follow(&c, id, a.show)
}

/// `minos tasks …`.
pub fn tasks(a: TasksArgs) -> Result<u8> {
    let c = Client::new(&a.conn)?;
    match a.cmd {
        TasksCmd::List {
            state,
            limit,
            before,
            json,
        } => {
            let mut q = Vec::new();
            if let Some(s) = state {
                q.push(("state", s));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            if let Some(b) = before {
                q.push(("before", b.to_string()));
            }
            let d = c.call(Method::GET, &format!("/tasks{}", query(&q)), None)?;
            if json {
                outln!("{d}");
            } else {
                out!("{}", list_table(&d));
            }
        }
        TasksCmd::Show { id, script, json } => {
            let t = c.call(Method::GET, &format!("/tasks/{id}"), None)?;
            if json {
                outln!("{t}");
            } else {
                out!("{}", show_text(&t, script));
            }
        }
        TasksCmd::Output { id, host, state } => {
            let t = c.call(Method::GET, &format!("/tasks/{id}"), None)?;
            let mut q = Vec::new();
            if let Some(h) = host {
                q.push(("host", h));
            }
            if let Some(s) = state {
                q.push(("state", s));
            }
            let d = c.call(
                Method::GET,
                &format!("/tasks/{id}/output{}", query(&q)),
                None,
            )?;
            let rows = t["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let list = d["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if list.is_empty() {
                eprintln!("(no host matches)");
            }
            for o in list {
                let h = rows
                    .iter()
                    .find(|h| h["hostname"] == o["hostname"])
                    .unwrap_or(o);
                out!("{}", host_block(h, o, t["max_output"].as_i64()));
            }
            if let Some(n) = d["omitted"].as_u64().filter(|n| *n > 0) {
                eprintln!(
                    "({n} hosts left out: the answer is at most 64 MiB; ask for them with --host \
                     or --state)"
                );
            }
        }
        TasksCmd::Follow { id, show } => {
            let t = c.call(Method::GET, &format!("/tasks/{id}"), None)?;
            say(show.json, &header(&t));
            return follow(&c, id, show);
        }
        TasksCmd::Pause { id } => act(&c, id, "pause")?,
        TasksCmd::Resume { id } => act(&c, id, "resume")?,
        TasksCmd::Cancel { id } => act(&c, id, "cancel")?,
        TasksCmd::Retry {
            id,
            states,
            follow: follow_it,
            show,
        } => {
            let body = (!states.is_empty()).then(|| json!({ "states": states }));
            let t = c.call(Method::POST, &format!("/tasks/{id}/retry"), body)?;
            let new = t["id"]
                .as_i64()
                .ok_or_else(|| anyhow!("the server answered a task without an id: {t}"))?;
            if follow_it {
                say(show.json, &header(&t));
                return follow(&c, new, show);
            }
            if show.json {
                outln!("{t}");
            } else {
                eprintln!("{}", header(&t));
                outln!("{new}");
            }
        }
        TasksCmd::Recipes { json, cmd } => recipes(&c, json, cmd)?,
    }
    Ok(exit::SUCCEEDED)
}

/// Pause, resume or cancel; prints where the task stands then.
fn act(c: &Client, id: i64, what: &str) -> Result<()> {
    let t = c.call(Method::POST, &format!("/tasks/{id}/{what}"), None)?;
    let reason = text(&t["reason"]);
    outln!(
        "task {id}: {}{}",
        text(&t["state"]),
        if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        }
    );
    Ok(())
}

fn recipe_name(r: &Value) -> String {
    match r.as_object() {
        Some(o) => format!(
            "{}@{}",
            o.get("name").and_then(Value::as_str).unwrap_or(""),
            o.get("version").unwrap_or(&Value::Null)
        ),
        None => "-".into(),
    }
}

/// `minos tasks list` as a table.
fn list_table(d: &Value) -> String {
    let mut rows = vec![
        [
            "ID", "STATE", "CREATED", "BY", "TARGET", "RECIPE", "HOSTS", "FAILED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for t in d["tasks"].as_array().into_iter().flatten() {
        let counts = t["counts"].as_object();
        let count = |pred: &dyn Fn(Kind) -> bool| -> i64 {
            counts
                .into_iter()
                .flatten()
                .filter(|(s, _)| pred(kind(s)))
                .map(|(_, n)| n.as_i64().unwrap_or(0))
                .sum()
        };
        let done = count(&|k| matches!(k, Kind::Succeeded | Kind::Failed | Kind::Skipped));
        let failed = count(&|k| k == Kind::Failed);
        rows.push(vec![
            t["id"].to_string(),
            text(&t["state"]).to_string(),
            t["created_at"].as_i64().map_or("-".into(), utc),
            text(&t["created_by"]).to_string(),
            clip(text(&t["target"]), 40),
            recipe_name(&t["recipe"]),
            format!("{done}/{}", t["hosts_total"].as_i64().unwrap_or(0)),
            failed.to_string(),
        ]);
    }
    if rows.len() == 1 {
        return "(no task)\n".into();
    }
    columns(&rows)
}

/// `minos tasks show`: settings, reason, hosts.
fn show_text(t: &Value, with_script: bool) -> String {
    let mut out = String::new();
    let reason = text(&t["reason"]);
    let _ = writeln!(
        out,
        "task {}: {}{}",
        t["id"],
        text(&t["state"]),
        if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        }
    );
    let opt = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut fields: Vec<(&str, String)> = vec![
        (
            "created",
            format!(
                "{} by {}",
                t["created_at"].as_i64().map_or("-".into(), utc),
                text(&t["created_by"])
            ),
        ),
        (
            "finished",
            t["finished_at"].as_i64().map_or("-".into(), utc),
        ),
        ("target", text(&t["target"]).to_string()),
    ];
    if t["recipe"].is_object() {
        fields.push(("recipe", recipe_name(&t["recipe"])));
        let params: Vec<String> = t["params"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", opt(v)))
            .collect();
        fields.push(("params", params.join(" ")));
    }
    fields.push((
        "script",
        format!(
            "{}, sha256 {}",
            text(&t["interpreter"]),
            text(&t["script_sha256"])
        ),
    ));
    let env: Vec<&str> = t["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !env.is_empty() {
        fields.push(("env", env.join(" ")));
    }
    fields.push(("user", opt(&t["user"])));
    fields.push((
        "timeout",
        t["timeout_ms"]
            .as_i64()
            .map_or("-".into(), crate::format_duration),
    ));
    fields.push((
        "rollout",
        format!(
            "concurrency {}, batch {}, canary {}, max-fail {}",
            opt(&t["concurrency"]),
            opt(&t["batch"]),
            opt(&t["canary"]),
            opt(&t["max_fail"])
        ),
    ));
    fields.push(("gate", opt(&t["gate"])));
    if let Some(r) = t["retry_of"].as_i64() {
        fields.push(("retry of", format!("task {r}")));
    }
    let hosts = t["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    fields.push(("hosts", format!("{}: {}", hosts.len(), state_counts(hosts))));
    for (k, v) in fields {
        let _ = writeln!(out, "{k}: {v}");
    }
    out.push('\n');
    out.push_str(&hosts_table(hosts, usize::MAX, true));
    if with_script {
        let _ = writeln!(out, "\nscript:");
        out.push_str(text(&t["script"]));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `minos tasks recipes …`.
fn recipes(c: &Client, json: bool, cmd: Option<RecipesCmd>) -> Result<()> {
    match cmd {
        None => {
            let d = c.call(Method::GET, "/recipes", None)?;
            if json {
                outln!("{d}");
                return Ok(());
            }
            let mut rows = vec![
                [
                    "NAME",
                    "VERSION",
                    "ORIGIN",
                    "INTERPRETER",
                    "PARAMS",
                    "DESCRIPTION",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in d["recipes"].as_array().into_iter().flatten() {
                let params: Vec<&str> = r["params"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                rows.push(vec![
                    text(&r["name"]).to_string(),
                    r["version"].to_string(),
                    text(&r["origin"]).to_string(),
                    text(&r["interpreter"]).to_string(),
                    if params.is_empty() {
                        "-".into()
                    } else {
                        clip(&params.join(","), 40)
                    },
                    clip(text(&r["description"]), 60),
                ]);
            }
            out!("{}", columns(&rows));
        }
        Some(RecipesCmd::Show { name, json }) => {
            let r = c.call(
                Method::GET,
                &format!("/recipes/{}", path_segment(&name)),
                None,
            )?;
            if json {
                outln!("{r}");
                return Ok(());
            }
            out!("{}", recipe_text(&r));
        }
        Some(RecipesCmd::Add { file, script }) => {
            let raw = std::fs::read_to_string(&file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            let mut body: Value = serde_json::from_str(&raw)
                .with_context(|| format!("{}: not JSON", file.display()))?;
            if let Some(s) = script {
                let text = std::fs::read_to_string(&s)
                    .with_context(|| format!("{}: cannot read", s.display()))?;
                body["script"] = json!(text);
            }
            let r = c.call(Method::POST, "/recipes", Some(body))?;
            outln!(
                "added recipe {}@{} (sha256 {})",
                text(&r["name"]),
                r["version"],
                text(&r["script_sha256"])
            );
        }
    }
    Ok(())
}

/// A recipe name as one URL path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.@~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `minos tasks recipes show`: description, parameters, script.
fn recipe_text(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "recipe {}@{} ({}, {})",
        text(&r["name"]),
        r["version"],
        text(&r["origin"]),
        text(&r["interpreter"])
    );
    let _ = writeln!(out, "{}", text(&r["description"]));
    let _ = writeln!(out, "script sha256: {}", text(&r["script_sha256"]));
    let params = r["params"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if params.is_empty() {
        out.push_str("\nparameters: none\n");
    } else {
        out.push_str("\nparameters:\n");
        let mut rows = vec![
            ["  NAME", "TYPE", "DEFAULT", "DESCRIPTION"]
                .map(String::from)
                .to_vec(),
        ];
        for p in params {
            let mut ty = text(&p["type"]).to_string();
            if let Some(ch) = p["choices"].as_array() {
                let ch: Vec<&str> = ch.iter().filter_map(Value::as_str).collect();
                ty = format!("{ty}({})", ch.join("|"));
            }
            let default = if p["required"] == true {
                "(required)".to_string()
            } else {
                p["default"].as_str().unwrap_or("-").to_string()
            };
            rows.push(vec![
                format!("  {}", text(&p["name"])),
                ty,
                default,
                text(&p["description"]).to_string(),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    out.push_str("\nscript:\n");
    out.push_str(text(&r["script"]));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `--since`: a duration ago (`1h`, `-1h`, `now-1h`), RFC 3339 or Unix seconds; in ms.
pub(crate) fn since_ms(s: &str, now: i64) -> Result<i64> {
    let s = s.trim();
    let rel = s.strip_prefix("now").unwrap_or(s);
    let rel = rel.strip_prefix('-').unwrap_or(rel);
    if rel.ends_with(|c: char| c.is_ascii_alphabetic())
        && rel.starts_with(|c: char| c.is_ascii_digit())
        && !rel.contains('T')
    {
        let ms = web::parse_duration(rel).map_err(|e| anyhow!("--since: {e}"))?;
        return Ok(now.saturating_sub(ms));
    }
    web::params::parse_time(s).map_err(|e| anyhow!("--since: {e}"))
}

/// An audit entry's detail in a few words.
fn audit_detail(e: &Value) -> String {
    let d = &e["detail"];
    let s = |k: &str| text(&d[k]).to_string();
    let out = match text(&e["action"]) {
        "task.create" | "task.retry" => {
            let mut parts = vec![format!("target={}", s("target"))];
            if let Some(n) = d["hosts"].as_array().map(Vec::len) {
                parts.push(format!("hosts={n}"));
            }
            if d["recipe"].is_object() {
                parts.push(format!("recipe={}", recipe_name(&d["recipe"])));
            }
            let sha = s("script_sha256");
            parts.push(format!("sha256={}", &sha[..sha.len().min(12)]));
            if let Some(r) = d["retry_of"].as_i64() {
                parts.push(format!("retry_of={r}"));
            }
            parts.join(" ")
        }
        "host.result" => {
            let mut t = format!("{} {}", s("hostname"), s("state"));
            if let Some(c) = d["exit_code"].as_i64() {
                let _ = write!(t, " exit={c}");
            }
            if let Some(c) = d["signal"].as_i64() {
                let _ = write!(t, " signal={c}");
            }
            if !s("error").is_empty() {
                let _ = write!(t, ": {}", s("error"));
            }
            t
        }
        "recipe.add" => format!(
            "{}@{} sha256={}",
            s("name"),
            d["version"],
            &s("script_sha256")[..s("script_sha256").len().min(12)]
        ),
        _ if d["state"].is_string() => {
            let mut t = s("state");
            if !s("reason").is_empty() {
                let _ = write!(t, ": {}", s("reason"));
            }
            t
        }
        _ if d.as_object().is_some_and(|o| o.is_empty()) => String::new(),
        _ => d.to_string(),
    };
    clip(&out, 100)
}

/// `minos audit`.
pub fn audit(a: AuditArgs) -> Result<u8> {
    let c = Client::new(&a.conn)?;
    if a.verify {
        return match c.call(Method::GET, "/audit/verify", None) {
            Ok(v) => {
                outln!(
                    "audit chain intact: {} entries, head {}",
                    v["entries"],
                    text(&v["head"])
                );
                Ok(exit::SUCCEEDED)
            }
            Err(e) => match e.downcast_ref::<Refused>() {
                Some(r) if r.error_type == "tampered" => {
                    outln!("audit chain broken: {}", r.message);
                    Ok(exit::FAILED)
                }
                _ => Err(e),
            },
        };
    }
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(t) = a.task {
        q.push(("task", t.to_string()));
    }
    if let Some(x) = a.actor {
        q.push(("actor", x));
    }
    if let Some(x) = a.action {
        q.push(("action", x));
    }
    if let Some(s) = &a.since {
        q.push(("since", since_ms(s, tsdb::now_ms())?.to_string()));
    }
    let asked = a.limit.unwrap_or(50);
    match a.after {
        Some(x) => {
            q.push(("after", x.to_string()));
            q.push(("limit", asked.to_string()));
        }
        None => q.push(("last", asked.to_string())),
    }
    let d = c.call(Method::GET, &format!("/audit{}", query(&q)), None)?;
    if a.json {
        outln!("{d}");
        return Ok(exit::SUCCEEDED);
    }
    let entries = d["entries"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut rows = vec![
        ["SEQ", "TIME", "ACTOR", "ACTION", "TASK", "DETAIL"]
            .map(String::from)
            .to_vec(),
    ];
    for e in entries {
        rows.push(vec![
            e["seq"].to_string(),
            e["at"].as_i64().map_or("-".into(), utc),
            text(&e["actor"]).to_string(),
            text(&e["action"]).to_string(),
            e["task"].as_i64().map_or("-".into(), |t| t.to_string()),
            audit_detail(e),
        ]);
    }
    if entries.is_empty() {
        eprintln!("(no entry)");
    } else {
        out!("{}", columns(&rows));
    }
    if entries.len() >= asked {
        match (a.after, entries.last().and_then(|e| e["seq"].as_i64())) {
            (Some(_), Some(last)) => eprintln!("(more may follow: --after {last})"),
            _ => eprintln!("(older entries may exist: raise --limit, or page with --after SEQ)"),
        }
    }
    Ok(exit::SUCCEEDED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_names_the_interpreter() {
        assert_eq!(shebang_interpreter("#!/bin/bash\necho"), Some("bash"));
        assert_eq!(
            shebang_interpreter("#!/usr/bin/env python3\n"),
            Some("python3")
        );
        assert_eq!(shebang_interpreter("#!/usr/bin/env -S sh -e\n"), Some("sh"));
        assert_eq!(shebang_interpreter("#!/usr/bin/perl\n"), None);
        assert_eq!(shebang_interpreter("echo hi\n"), None);
    }

    #[test]
    fn host_block_shows_result_output_and_stderr() {
        let h = json!({"hostname": "web-01", "state": "failed", "exit_code": 3,
                       "duration_ms": 1200, "error": null, "truncated": false});
        let o = json!({"stdout": "a\nb", "stderr": "oops\n", "truncated": false});
        assert_eq!(
            host_block(&h, &o, None),
            "── web-01 ── failed (exit 3, 1.2 s)\na\nb\nstderr:\noops\n"
        );
        let lost = json!({"hostname": "h2", "state": "agent_lost",
                          "error": "the host's agent is lost"});
        assert_eq!(
            host_block(&lost, &Value::Null, None),
            "── h2 ── agent_lost: the host's agent is lost\n"
        );
    }

    #[test]
    fn columns_align_and_trim() {
        let rows = vec![
            vec!["A".to_string(), "BB".into(), "".into()],
            vec!["ccc".to_string(), "d".into(), "e".into()],
        ];
        assert_eq!(columns(&rows), "A    BB\nccc  d   e\n");
    }

    #[test]
    fn since_takes_durations_ago_and_times() {
        let now = 1_700_000_000_000;
        assert_eq!(since_ms("1h", now).ok(), Some(now - 3_600_000));
        assert_eq!(since_ms("-30m", now).ok(), Some(now - 1_800_000));
        assert_eq!(since_ms("now-1d", now).ok(), Some(now - 86_400_000));
        assert_eq!(since_ms("1700000000", now).ok(), Some(now));
        assert_eq!(
            since_ms("2023-11-14T22:13:20Z", now).ok(),
            Some(1_700_000_000_000)
        );
        assert!(since_ms("yesterday", now).is_err());
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_text(1234), "1.2 s");
        assert_eq!(duration_text(185_000), "3m05s");
        assert_eq!(duration_text(7_800_000), "2h10m");
    }
}
