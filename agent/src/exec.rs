//! The script runner: batch tasks the server pushes down the agent channel.
//!
//! [`start`] runs a script under an interpreter (`bash`, `sh` or `python3`) as a chosen
//! user, streams its output as [`RunEvent`]s and reports how it ended. What it guarantees:
//!
//! - **All or nothing.** An unknown user or interpreter, a user outside
//!   [`Policy::allowed_users`], a user the agent cannot become, a malformed environment
//!   variable: [`start`] returns a [`RunError`] and no process is started.
//! - **User switching.** The run-as user is the request's, else the agent's own; it is
//!   looked up with `getpwnam_r`. `allowed_users`, when not empty, applies to the run-as
//!   user however it was chosen. An agent running as root becomes the user fully in the
//!   child: supplementary groups (listed with `getgrouplist` before the fork, set with
//!   `setgroups` after it), then group id, then user id. An agent not running as root
//!   runs scripts only as its own user ([`RunError::CannotSwitchUser`] otherwise).
//! - **A clean environment.** The agent's environment is not inherited: the script gets
//!   `HOME`, `USER`, `LOGNAME` and `SHELL` from the user database, `PATH` =
//!   [`DEFAULT_PATH`], then the request's variables (which may override them). The
//!   interpreter is looked up on that `PATH`. stdin is `/dev/null`; the working directory
//!   is the user's home if it exists and the user may enter it, else `/`. The script
//!   inherits no descriptor but stdio and its own, even ones the agent inherited without
//!   close-on-exec.
//! - **The script file.** Written to `<work_dir>/task-<task>-<attempt>.<sh|py>`
//!   (`work_dir` is created 0700 if missing), mode 0700, owned by the run-as user. The
//!   interpreter reads it through a descriptor inherited from the agent
//!   (`/proc/self/fd/N`), so a work directory (or state directory) the user may not enter
//!   does not matter. The name is removed as soon as the interpreter has started (the
//!   descriptor keeps the content): a script, and any secret in it, is never left on
//!   disk, even when the agent dies mid-run.
//! - **A process group per run.** The script leads its own process group. A timeout or
//!   [`RunHandle::kill`] sends SIGTERM to the whole group and SIGKILL to what is left
//!   [`KILL_GRACE`] later; when the script ends by itself, whatever it left running in its
//!   group is stopped the same way. Background jobs and pipelines die with the run; a
//!   process meant to outlive it must leave the group (`setsid`). The group is signalled
//!   only while the script's own process is not yet reaped, so its id cannot have been
//!   reused by an unrelated group.
//! - **Bounded output.** stdout and stderr are read concurrently and sent as
//!   [`RunEvent::Output`] chunks of at most [`CHUNK_BYTES`], at the latest
//!   [`FLUSH_AFTER`] after their first byte was read. At most `max_output` bytes (both
//!   streams together) are sent; the rest is read and dropped (`truncated`), so a chatty
//!   script never blocks on a full pipe.
//! - **Events.** `Started` comes first, `Finished` last and exactly once. The channel is
//!   bounded and waited on: a slow receiver slows the output (and, once the pipes are
//!   full, the script), never the timeout or a kill. A dropped receiver does not stop the
//!   run. Nothing here panics: failures become a [`RunError`] or a `Finished` outcome.
//! - **Not tied to the agent's life.** A run is a task on the agent's runtime; if the
//!   agent exits or dies mid-run the script goes on (unwatched, its output lost), so
//!   whoever restarts the agent decides what to do about runs it had started.

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

/// `PATH` for scripts unless the request sets its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The largest [`RunEvent::Output`] chunk.
pub const CHUNK_BYTES: usize = 16 << 10;
/// Output is sent at the latest this long after its first byte was read.
pub const FLUSH_AFTER: Duration = Duration::from_millis(250);
/// Between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long output is still read once the script's group is gone: a process that left
/// the group (`setsid`) may hold the pipes open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How long reaping may take after SIGKILL (a process stuck in the kernel) before the run
/// is reported anyway.
const REAP_LIMIT: Duration = Duration::from_secs(10);
/// The most supplementary groups Linux allows (`NGROUPS_MAX`).
const MAX_GROUPS: usize = 65536;

/// A script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub task: u64,
    pub attempt: u32,
    /// `bash`, `sh` or `python3`.
    pub interpreter: String,
    pub script: String,
    /// The user to run as; `None` is the agent's own user.
    pub user: Option<String>,
    pub timeout: Duration,
    /// Added to the script's environment after `HOME`, `USER`, `LOGNAME`, `SHELL`, `PATH`
    /// (so they may override them); a later duplicate wins.
    pub env: Vec<(String, String)>,
    /// The most output bytes sent, stdout and stderr together (e.g. 1 MiB).
    pub max_output: usize,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Exit status 0.
    Succeeded,
    /// Any other exit status, or a terminating signal it did not get from us.
    Failed,
    /// The request's timeout expired and the run was stopped.
    TimedOut,
    /// [`RunHandle::kill`] stopped it.
    Killed,
}

/// What a run reports, in order: `Started`, any number of `Output`, `Finished`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    Started {
        pid: u32,
        /// Unix time in milliseconds.
        started_ms: i64,
    },
    Output {
        stream: Stream,
        /// Where `data` starts in that stream.
        offset: u64,
        data: Vec<u8>,
    },
    Finished {
        outcome: Outcome,
        /// The script's exit code when it exited.
        exit_code: Option<i32>,
        /// The signal that terminated the script's process, if one did.
        signal: Option<i32>,
        started_ms: i64,
        duration_ms: u64,
        /// Output beyond `max_output` was read and dropped.
        truncated: bool,
    },
}

/// What the agent allows, from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The users scripts may run as; empty allows any.
    pub allowed_users: Vec<String>,
    /// Where script files are written (e.g. `<state>/run`).
    pub work_dir: PathBuf,
}

/// Why a script was not started. Nothing was run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("user {0:?} is not among the users this agent may run scripts as")]
    UserNotAllowed(String),
    #[error(
        "the agent runs as {running_as:?}, not as root, so it cannot run scripts as {wanted:?}"
    )]
    CannotSwitchUser { running_as: String, wanted: String },
    #[error("unknown interpreter {0:?} (known: bash, sh, python3)")]
    UnknownInterpreter(String),
    #[error("the interpreter {interpreter} is not installed (not found on PATH {path})")]
    InterpreterNotFound { interpreter: String, path: String },
    #[error(
        "environment variable {0:?}: a name must be non-empty without '=', and neither name nor value may hold a NUL byte"
    )]
    InvalidEnv(String),
    #[error("{0}")]
    Io(String),
}

/// A running script. Dropping it does not stop the script.
#[derive(Debug, Clone)]
pub struct RunHandle {
    pid: u32,
    kill: Arc<Notify>,
}

impl RunHandle {
    /// Stops the run: SIGTERM to its process group, SIGKILL [`KILL_GRACE`] later; the
    /// outcome is [`Outcome::Killed`]. Does nothing once the run has finished.
    pub fn kill(&self) {
        self.kill.notify_one();
    }

    /// The script's process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interpreter {
    Bash,
    Sh,
    Python3,
}

impl Interpreter {
    fn parse(s: &str) -> Option<Interpreter> {
        match s {
            "bash" => Some(Interpreter::Bash),
            "sh" => Some(Interpreter::Sh),
            "python3" => Some(Interpreter::Python3),
            _ => None,
        }
    }

    fn program(self) -> &'static str {
        match self {
            Interpreter::Bash => "bash",
            Interpreter::Sh => "sh",
            Interpreter::Python3 => "python3",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Interpreter::Bash | Interpreter::Sh => "sh",
            Interpreter::Python3 => "py",
        }
    }
}

/// A user database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    home: PathBuf,
    shell: String,
}

/// Starts `req` and returns at once; its events go to `events`. Must be called inside a
/// tokio runtime (the run is a task on it).
pub fn start(
    req: RunRequest,
    policy: &Policy,
    events: mpsc::Sender<RunEvent>,
) -> Result<RunHandle, RunError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| RunError::Io("the script runner needs a tokio runtime".into()))?;
    let interpreter = Interpreter::parse(&req.interpreter)
        .ok_or_else(|| RunError::UnknownInterpreter(req.interpreter.clone()))?;
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(RunError::InvalidEnv(k.clone()));
        }
    }
    let (account, switch) = run_as(req.user.as_deref(), &policy.allowed_users)?;
    let path = req
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program =
        find_on_path(interpreter.program(), path).ok_or_else(|| RunError::InterpreterNotFound {
            interpreter: interpreter.program().into(),
            path: path.into(),
        })?;

    let name = format!(
        "task-{}-{}.{}",
        req.task,
        req.attempt,
        interpreter.extension()
    );
    let owner = switch.as_ref().map(|s| (s.uid, s.gid));
    let (file, file_path) =
        write_script(&policy.work_dir, &name, &req.script, owner).map_err(|e| {
            RunError::Io(format!(
                "writing the script to {}: {e}",
                policy.work_dir.display()
            ))
        })?;

    let home = std::fs::metadata(&account.home)
        .is_ok_and(|m| m.is_dir())
        .then(|| CString::new(account.home.as_os_str().as_bytes()).ok())
        .flatten();
    let script_fd = file.as_raw_fd();
    let setup = ChildSetup {
        script_fd,
        others: open_descriptors()
            .into_iter()
            .filter(|&fd| fd > 2 && fd != script_fd)
            .collect(),
        switch,
        home,
    };
    let shell = if account.shell.is_empty() {
        "/bin/sh"
    } else {
        account.shell.as_str()
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg(format!("/proc/self/fd/{}", setup.script_fd))
        .env_clear()
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", shell)
        .env("PATH", DEFAULT_PATH)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // Not CommandExt::uid/gid: std would drop the supplementary groups itself and call
    // setuid before this closure runs, after which setgroups fails with EPERM.
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // async-signal-safe functions (fcntl, setgroups, setgid, setuid, chdir) on data
    // prepared before the fork, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
    let spawned = cmd.spawn();
    let started = Instant::now();
    let started_ms = now_ms();
    // The child holds its own descriptor: the name and ours are no longer needed.
    drop(file);
    if let Err(e) = std::fs::remove_file(&file_path) {
        tracing::warn!("removing the script {}: {e}", file_path.display());
    }
    let mut child = spawned.map_err(|e| {
        RunError::Io(format!(
            "starting {} as {}: {e}",
            program.display(),
            account.name
        ))
    })?;
    let Some(pid) = child.id() else {
        return Err(RunError::Io("the script's process vanished at once".into()));
    };
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return Err(RunError::Io(format!("process id {pid} out of range")));
    };
    let kill = Arc::new(Notify::new());
    let pump = Pump {
        events: events.clone(),
        open: true,
        pending: [Vec::new(), Vec::new()],
        offset: [0, 0],
        kept: 0,
        max: req.max_output,
        truncated: false,
        flush_at: None,
    };
    let run = Run {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        child,
        pgid,
        started,
        started_ms,
        timeout: req.timeout,
        kill: kill.clone(),
    };
    runtime.spawn(run.run(pump, events));
    Ok(RunHandle { pid, kill })
}

/// Who the script runs as and, when the agent must switch to that user, how.
fn run_as(wanted: Option<&str>, allowed: &[String]) -> Result<(Account, Option<Switch>), RunError> {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let me = match lookup_user(UserKey::Uid(euid)) {
        Ok(Some(a)) => a,
        // Not in the user database (a container): still a user scripts can run as.
        Ok(None) | Err(_) => Account {
            name: euid.to_string(),
            uid: euid,
            gid: egid,
            home: PathBuf::from("/"),
            shell: String::new(),
        },
    };
    let (account, cname) = match wanted {
        None => (me.clone(), None),
        Some(name) => {
            let cname = CString::new(name).map_err(|_| RunError::UnknownUser(name.to_string()))?;
            match lookup_user(UserKey::Name(&cname)) {
                Ok(Some(a)) => (a, Some(cname)),
                Ok(None) => return Err(RunError::UnknownUser(name.to_string())),
                Err(e) => return Err(RunError::Io(format!("looking up user {name:?}: {e}"))),
            }
        }
    };
    let name = wanted.unwrap_or(&account.name);
    if !decide(name, account.uid, allowed, euid, &me.name)? {
        return Ok((account, None));
    }
    // Switching happens only for a named user (the agent's own never needs it).
    let Some(cname) = cname else {
        return Ok((account, None));
    };
    let groups = group_list(&cname, account.gid)
        .map_err(|e| RunError::Io(format!("listing the groups of {name:?}: {e}")))?;
    let switch = Switch {
        uid: account.uid,
        gid: account.gid,
        groups,
    };
    Ok((account, Some(switch)))
}

/// The user-switching rules: whether to switch to `uid` (named `wanted`), for an agent
/// whose effective user is `euid` (named `running_as`).
fn decide(
    wanted: &str,
    uid: libc::uid_t,
    allowed: &[String],
    euid: libc::uid_t,
    running_as: &str,
) -> Result<bool, RunError> {
    if !allowed.is_empty() && !allowed.iter().any(|a| a == wanted) {
        return Err(RunError::UserNotAllowed(wanted.to_string()));
    }
    if uid == euid {
        return Ok(false);
    }
    if euid != 0 {
        return Err(RunError::CannotSwitchUser {
            running_as: running_as.to_string(),
            wanted: wanted.to_string(),
        });
    }
    Ok(true)
}

enum UserKey<'a> {
    Name(&'a CStr),
    Uid(libc::uid_t),
}

/// Looks a user up in the user database; `Ok(None)` when there is no such user.
fn lookup_user(key: UserKey<'_>) -> Result<Option<Account>, String> {
    const MAX_BUF: usize = 1 << 20;
    // SAFETY: sysconf has no preconditions.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut size = usize::try_from(hint).unwrap_or(0).clamp(1024, MAX_BUF);
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `pwd` for one passwd, `buf` for
        // `buf.len()` bytes, `result` for one pointer, the name NUL-terminated.
        let rc = unsafe {
            match key {
                UserKey::Name(n) => libc::getpwnam_r(
                    n.as_ptr(),
                    pwd.as_mut_ptr(),
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                ),
                UserKey::Uid(u) => libc::getpwuid_r(
                    u,
                    pwd.as_mut_ptr(),
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                ),
            }
        };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => {
                // SAFETY: on success `result` points at `pwd`, filled in; its strings
                // are NUL-terminated inside `buf`, which is alive until the end of this
                // block, and are copied out here.
                let account = unsafe {
                    let p = &*result;
                    Account {
                        name: c_str(p.pw_name).to_string_lossy().into_owned(),
                        uid: p.pw_uid,
                        gid: p.pw_gid,
                        home: PathBuf::from(OsStr::from_bytes(c_str(p.pw_dir).to_bytes())),
                        shell: c_str(p.pw_shell).to_string_lossy().into_owned(),
                    }
                };
                return Ok(Some(account));
            }
            libc::ERANGE if size < MAX_BUF => size *= 2,
            // What some C libraries answer for "no such user".
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e).to_string()),
        }
    }
}

/// A C string from the user database, empty for a null pointer.
///
/// # Safety
/// `p` is null or points at a NUL-terminated string that outlives the result.
unsafe fn c_str<'a>(p: *const libc::c_char) -> &'a CStr {
    if p.is_null() {
        c""
    } else {
        // SAFETY: the caller's contract.
        unsafe { CStr::from_ptr(p) }
    }
}

/// The groups `name` belongs to, `gid` included (what `initgroups` would set).
fn group_list(name: &CStr, gid: libc::gid_t) -> Result<Vec<libc::gid_t>, String> {
    let mut size: usize = 64;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; size];
        let mut count = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: `groups` has room for `count` ids; the name is NUL-terminated.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(usize::try_from(count).unwrap_or(0).min(size));
            return Ok(groups);
        }
        // Too small: glibc says how many it needs; otherwise double.
        let needed = usize::try_from(count).unwrap_or(0);
        size = if needed > size { needed } else { size * 2 };
        if size > MAX_GROUPS {
            return Err(format!("more than {MAX_GROUPS} groups"));
        }
    }
}

/// How the child becomes the run-as user.
struct Switch {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// What the child does between fork and exec (after std's stdio and process group).
struct ChildSetup {
    /// Close-on-exec in the agent; kept open across exec for the interpreter.
    script_fd: libc::c_int,
    /// The agent's other descriptors (when it started the run): made close-on-exec, for
    /// those it inherited without the flag.
    others: Vec<libc::c_int>,
    switch: Option<Switch>,
    /// The home directory when it exists.
    home: Option<CString>,
}

impl ChildSetup {
    /// Async-signal-safe: runs in the forked child of a multi-threaded process.
    fn apply(&self) -> io::Result<()> {
        for &fd in &self.others {
            // SAFETY: fcntl on a descriptor number; one closed since is EBADF, ignored.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // SAFETY: fcntl on a descriptor number; it fails cleanly if it is not open.
        if unsafe { libc::fcntl(self.script_fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        if let Some(s) = &self.switch {
            // Groups first, then the group id, then the user id: each later step takes
            // away the right to do the earlier ones.
            // SAFETY: `groups` is a live slice of `groups.len()` ids.
            if unsafe { libc::setgroups(s.groups.len(), s.groups.as_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: setgid/setuid take plain ids.
            if unsafe { libc::setgid(s.gid) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: as above.
            if unsafe { libc::setuid(s.uid) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // As the user: a home it may not enter falls back to `/`.
        // SAFETY: chdir takes a NUL-terminated path, alive for the call.
        let at_home = self
            .home
            .as_ref()
            .is_some_and(|h| unsafe { libc::chdir(h.as_ptr()) } == 0);
        // SAFETY: as above.
        if !at_home && unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The agent's open descriptors (empty when /proc cannot say).
fn open_descriptors() -> Vec<libc::c_int> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// An executable regular file named `program` in an absolute directory of `path`.
fn find_on_path(program: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Writes the script to `dir/name` (mode 0700, owned by `owner` when given) and returns
/// it open.
fn write_script(
    dir: &Path,
    name: &str,
    script: &str,
    owner: Option<(libc::uid_t, libc::gid_t)>,
) -> io::Result<(std::fs::File, PathBuf)> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(name);
    // A file left by an agent that died mid-write.
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != io::ErrorKind::NotFound
    {
        return Err(e);
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)?;
    let written = (|| {
        f.write_all(script.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        Ok(())
    })();
    match written {
        Ok(()) => Ok((f, path)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A started script, watched by its task.
struct Run {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// The script's pid and process group.
    pgid: libc::pid_t,
    started: Instant,
    started_ms: i64,
    timeout: Duration,
    kill: Arc<Notify>,
}

impl Run {
    async fn run(self, pump: Pump, events: mpsc::Sender<RunEvent>) {
        let Run {
            mut child,
            stdout,
            stderr,
            pgid,
            started,
            started_ms,
            timeout,
            kill,
        } = self;
        let (done_tx, done_rx) = oneshot::channel();
        let first = RunEvent::Started {
            pid: pgid.unsigned_abs(),
            started_ms,
        };
        let output = pump.run(first, stdout, stderr, done_rx);
        let watch = async {
            let r = watch(&mut child, pgid, started, timeout, &kill).await;
            let _ = done_tx.send(());
            r
        };
        let (truncated, (stopped, status, ended)) = tokio::join!(output, watch);
        let (exit_code, signal) = status.map_or((None, None), |s| (s.code(), s.signal()));
        let outcome = stopped.unwrap_or(if exit_code == Some(0) {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        });
        let _ = events
            .send(RunEvent::Finished {
                outcome,
                exit_code,
                signal,
                started_ms,
                duration_ms: millis(ended.duration_since(started)),
                truncated,
            })
            .await;
    }
}

/// Waits for the script to end or be stopped, stops what it left in its group, reaps it.
/// Returns why we stopped it (if we did), its status, and when it ended.
async fn watch(
    child: &mut Child,
    pgid: libc::pid_t,
    started: Instant,
    timeout: Duration,
    kill: &Notify,
) -> (Option<Outcome>, Option<ExitStatus>, Instant) {
    let mut sigchld = tokio::signal::unix::signal(SignalKind::child()).ok();
    let deadline = started.checked_add(timeout);
    let stopped = tokio::select! {
        () = leader_exited(pgid, &mut sigchld) => None,
        () = sleep_until(deadline) => Some(Outcome::TimedOut),
        () = kill.notified() => Some(Outcome::Killed),
    };
    let mut ended = Instant::now();
    // The script's process is unreaped until `child.wait()` below, so the group id is
    // still ours to signal.
    if stopped.is_some() || group_alive(pgid) != Some(false) {
        let grace_end = Instant::now() + KILL_GRACE;
        signal_group(pgid, libc::SIGTERM);
        if stopped.is_some() {
            let _ = tokio::time::timeout_at(grace_end, leader_exited(pgid, &mut sigchld)).await;
        }
        if !group_gone(pgid, grace_end).await {
            signal_group(pgid, libc::SIGKILL);
            group_gone(pgid, Instant::now() + KILL_GRACE).await;
        }
    }
    let status = match tokio::time::timeout(REAP_LIMIT, child.wait()).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!("waiting for script process {pgid}: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("script process {pgid} does not end even after SIGKILL");
            None
        }
    };
    if stopped.is_some() {
        ended = Instant::now();
    }
    (stopped, status, ended)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Returns once process `pid` (our child) has exited, without reaping it.
async fn leader_exited(pid: libc::pid_t, sigchld: &mut Option<Signal>) {
    loop {
        if exited_unreaped(pid) {
            return;
        }
        match sigchld.as_mut() {
            // SIGCHLD can be coalesced and is not only about this child: look again on
            // every one, and now and then anyway.
            Some(s) => {
                if let Ok(None) = tokio::time::timeout(Duration::from_secs(1), s.recv()).await {
                    *sigchld = None;
                }
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Whether our child `pid` has exited; it is left a zombie (so its pid and process group
/// id stay reserved) for `Child::wait` to reap.
fn exited_unreaped(pid: libc::pid_t) -> bool {
    loop {
        let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: waitid writes at most one siginfo_t into `info`. WNOWAIT leaves the
        // child waitable, WNOHANG makes this a poll.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.unsigned_abs(),
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == -1 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // ECHILD: already reaped or not ours, nothing to wait for.
            return true;
        }
        // SAFETY: `info` was zeroed and waitid filled it in or left it zero; si_pid is
        // the child's pid for a SIGCHLD-style siginfo and 0 when no child had changed.
        return unsafe { info.assume_init_ref().si_pid() } != 0;
    }
}

/// Signals every process in group `pgid`.
fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    // Never -1 (every process) or 0 (the agent's own group).
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill takes plain numbers; the group is the run's own (see `watch`).
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Whether any live (not zombie) process is in group `pgid`; `None` when /proc cannot
/// be read.
fn group_alive(pgid: libc::pid_t) -> Option<bool> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Gone since the listing: not alive.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat)
            && pgrp == pgid
            && state != 'Z'
            && state != 'X'
        {
            return Some(true);
        }
    }
    Some(false)
}

/// The state and process group from a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(char, libc::pid_t)> {
    // The command name is in parentheses and may hold anything, parentheses included.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Waits until group `pgid` has no live process or `until`; whether it has none. Without
/// /proc there is no telling: `false` at once.
async fn group_gone(pgid: libc::pid_t, until: Instant) -> bool {
    loop {
        match group_alive(pgid) {
            Some(false) => return true,
            None => return false,
            Some(true) => {}
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(50))).await;
    }
}

/// Reads both pipes, bounds and chunks the output, and sends it.
struct Pump {
    events: mpsc::Sender<RunEvent>,
    /// The receiver is still there.
    open: bool,
    /// Read and not yet sent, per stream (stdout, stderr).
    pending: [Vec<u8>; 2],
    /// Bytes sent so far, per stream.
    offset: [u64; 2],
    /// Bytes kept so far, both streams.
    kept: usize,
    max: usize,
    truncated: bool,
    /// When pending output must go; `None` when nothing is pending.
    flush_at: Option<Instant>,
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

impl Pump {
    /// Sends `first`, then the output until both pipes close (or, once `done` fires, for
    /// at most [`DRAIN_AFTER_EXIT`] more). Returns whether output was dropped.
    async fn run(
        mut self,
        first: RunEvent,
        mut stdout: Option<ChildStdout>,
        mut stderr: Option<ChildStderr>,
        mut done: oneshot::Receiver<()>,
    ) -> bool {
        self.send(first).await;
        let mut out_buf = vec![0u8; CHUNK_BYTES];
        let mut err_buf = vec![0u8; CHUNK_BYTES];
        let mut done_seen = false;
        let mut drain_until = None;
        while stdout.is_some() || stderr.is_some() {
            tokio::select! {
                r = read_some(&mut stdout, &mut out_buf) => match r {
                    Some(n) => self.take(0, out_buf.get(..n).unwrap_or_default()).await,
                    None => stdout = None,
                },
                r = read_some(&mut stderr, &mut err_buf) => match r {
                    Some(n) => self.take(1, err_buf.get(..n).unwrap_or_default()).await,
                    None => stderr = None,
                },
                () = sleep_until(self.flush_at) => self.flush_all().await,
                _ = &mut done, if !done_seen => {
                    done_seen = true;
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                () = sleep_until(drain_until) => break,
            }
        }
        self.flush_all().await;
        self.truncated
    }

    async fn send(&mut self, event: RunEvent) {
        if self.open && self.events.send(event).await.is_err() {
            // Nobody listens any more: keep draining, send nothing.
            self.open = false;
        }
    }

    /// Keeps what fits of `data` from stream `s`; sends whole chunks.
    async fn take(&mut self, s: usize, data: &[u8]) {
        let n = self.max.saturating_sub(self.kept).min(data.len());
        if n < data.len() {
            self.truncated = true;
        }
        let (Some(kept), Some(pending)) = (data.get(..n), self.pending.get_mut(s)) else {
            return;
        };
        if kept.is_empty() {
            return;
        }
        pending.extend_from_slice(kept);
        self.kept += n;
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + FLUSH_AFTER);
        }
        self.flush(s, false).await;
    }

    async fn flush_all(&mut self) {
        self.flush(0, true).await;
        self.flush(1, true).await;
    }

    /// Sends stream `s`'s whole chunks, and with `all` the rest too.
    async fn flush(&mut self, s: usize, all: bool) {
        while let Some(pending) = self.pending.get_mut(s) {
            let n = pending.len().min(CHUNK_BYTES);
            if n == 0 || (n < CHUNK_BYTES && !all) {
                break;
            }
            let data: Vec<u8> = pending.drain(..n).collect();
            let (Some(offset), Some(stream)) = (self.offset.get_mut(s), STREAMS.get(s)) else {
                break;
            };
            let event = RunEvent::Output {
                stream: *stream,
                offset: *offset,
                data,
            };
            *offset += u64::try_from(n).unwrap_or(u64::MAX);
            self.send(event).await;
        }
        if self.pending.iter().all(Vec::is_empty) {
            self.flush_at = None;
        }
    }
}

/// Reads from an open pipe: `None` at its end (or on an error); never ready once closed.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(script: &str) -> RunRequest {
        RunRequest {
            task: 7,
            attempt: 1,
            interpreter: "bash".into(),
            script: script.into(),
            user: None,
            timeout: Duration::from_secs(30),
            env: Vec::new(),
            max_output: 1 << 20,
        }
    }

    struct Env {
        dir: tempfile::TempDir,
        policy: Policy,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = Policy {
            allowed_users: Vec::new(),
            work_dir: dir.path().join("run"),
        };
        Env { dir, policy }
    }

    /// Every event of a run, checked for order: `Started` first, `Finished` last and once.
    async fn collect(rx: mpsc::Receiver<RunEvent>) -> Vec<RunEvent> {
        let events = rest(rx).await;
        check_order(&events);
        events
    }

    /// The events still to come, until the runner lets go of the channel.
    async fn rest(mut rx: mpsc::Receiver<RunEvent>) -> Vec<RunEvent> {
        let mut events = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
            match next.expect("an event within a minute") {
                Some(e) => events.push(e),
                None => break,
            }
        }
        events
    }

    fn check_order(events: &[RunEvent]) {
        assert!(
            matches!(events.first(), Some(RunEvent::Started { .. })),
            "{events:?}"
        );
        let finished = events
            .iter()
            .filter(|e| matches!(e, RunEvent::Finished { .. }))
            .count();
        assert_eq!(finished, 1, "{events:?}");
        assert!(
            matches!(events.last(), Some(RunEvent::Finished { .. })),
            "{events:?}"
        );
    }

    async fn run(req: RunRequest, policy: &Policy) -> Vec<RunEvent> {
        let (tx, rx) = mpsc::channel(4);
        start(req, policy, tx).expect("started");
        collect(rx).await
    }

    /// The stream's bytes, checking the chunks are contiguous and at most CHUNK_BYTES.
    fn output(events: &[RunEvent], which: Stream) -> Vec<u8> {
        let mut all = Vec::new();
        for e in events {
            if let RunEvent::Output {
                stream,
                offset,
                data,
            } = e
                && *stream == which
            {
                assert_eq!(*offset, all.len() as u64);
                assert!(!data.is_empty() && data.len() <= CHUNK_BYTES);
                all.extend_from_slice(data);
            }
        }
        all
    }

    fn text(events: &[RunEvent], which: Stream) -> String {
        String::from_utf8(output(events, which)).expect("utf-8")
    }

    struct Ended {
        outcome: Outcome,
        exit_code: Option<i32>,
        signal: Option<i32>,
        duration_ms: u64,
        truncated: bool,
    }

    fn ended(events: &[RunEvent]) -> Ended {
        match events.last() {
            Some(RunEvent::Finished {
                outcome,
                exit_code,
                signal,
                duration_ms,
                truncated,
                ..
            }) => Ended {
                outcome: *outcome,
                exit_code: *exit_code,
                signal: *signal,
                duration_ms: *duration_ms,
                truncated: *truncated,
            },
            other => panic!("not finished: {other:?}"),
        }
    }

    /// Dead: no such process, or a zombie nobody reaped yet.
    fn dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            Ok(stat) => parse_stat(&stat).is_none_or(|(state, _)| state == 'Z' || state == 'X'),
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[tokio::test]
    async fn success_with_output_on_both_streams() {
        let t = env();
        let events = run(request("echo out; echo err >&2; printf 'more'"), &t.policy).await;
        assert_eq!(text(&events, Stream::Stdout), "out\nmore");
        assert_eq!(text(&events, Stream::Stderr), "err\n");
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::Succeeded);
        assert_eq!((e.exit_code, e.signal), (Some(0), None));
        assert!(!e.truncated);
        // The work directory was made private, and the script is gone.
        let meta = std::fs::metadata(&t.policy.work_dir).expect("work dir");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let left: Vec<_> = std::fs::read_dir(&t.policy.work_dir)
            .expect("list")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn failure_keeps_the_exit_code() {
        let t = env();
        let events = run(request("echo bad >&2\nexit 3"), &t.policy).await;
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::Failed);
        assert_eq!((e.exit_code, e.signal), (Some(3), None));
        assert_eq!(text(&events, Stream::Stderr), "bad\n");
    }

    #[tokio::test]
    async fn a_signal_that_ends_the_script_is_a_failure() {
        let t = env();
        let events = run(request("kill -USR1 $$; sleep 5"), &t.policy).await;
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::Failed);
        assert_eq!((e.exit_code, e.signal), (None, Some(libc::SIGUSR1)));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let t = env();
        let pidfile = t.dir.path().join("child.pid");
        let mut req = request(&format!(
            "sleep 600 &\necho $! > {}\nsleep 600 | cat\n",
            pidfile.display()
        ));
        req.timeout = Duration::from_millis(500);
        let began = std::time::Instant::now();
        let events = run(req, &t.policy).await;
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::TimedOut);
        assert_eq!(e.signal, Some(libc::SIGTERM));
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        let child = std::fs::read_to_string(&pidfile).expect("child pid");
        assert!(dead(&child), "background child {child} still runs");
    }

    #[tokio::test]
    async fn kill_stops_a_running_script_and_its_children() {
        let t = env();
        let pidfile = t.dir.path().join("child.pid");
        let req = request(&format!(
            "sleep 600 &\necho $! > {}\necho ready\nwait\n",
            pidfile.display()
        ));
        let (tx, mut rx) = mpsc::channel(4);
        let handle = start(req, &t.policy, tx).expect("started");
        let mut events = Vec::new();
        while let Some(e) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event")
        {
            let ready = matches!(&e, RunEvent::Output { data, .. } if data.starts_with(b"ready"));
            if let RunEvent::Started { pid, .. } = &e {
                assert_eq!(*pid, handle.pid());
            }
            events.push(e);
            if ready {
                break;
            }
        }
        handle.kill();
        events.extend(rest(rx).await);
        check_order(&events);
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::Killed);
        let child = std::fs::read_to_string(&pidfile).expect("child pid");
        assert!(dead(&child), "background child {child} still runs");
    }

    #[tokio::test]
    async fn sigkill_follows_an_ignored_sigterm() {
        let t = env();
        let pidfile = t.dir.path().join("child.pid");
        // SIGTERM ignored by the script and (inherited) by its child.
        let mut req = request(&format!(
            "trap '' TERM\nsleep 600 &\necho $! > {}\nwait\n",
            pidfile.display()
        ));
        req.timeout = Duration::from_millis(300);
        let events = run(req, &t.policy).await;
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::TimedOut);
        assert_eq!(e.signal, Some(libc::SIGKILL));
        assert!(e.duration_ms >= 2000, "{}", e.duration_ms);
        let child = std::fs::read_to_string(&pidfile).expect("child pid");
        assert!(dead(&child), "background child {child} still runs");
    }

    #[tokio::test]
    async fn what_the_script_leaves_running_is_stopped() {
        let t = env();
        let pidfile = t.dir.path().join("child.pid");
        let req = request(&format!(
            "sleep 600 >/dev/null 2>&1 &\necho $! > {}\n",
            pidfile.display()
        ));
        let events = run(req, &t.policy).await;
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::Succeeded);
        assert!(e.duration_ms < 1000, "{}", e.duration_ms);
        let child = std::fs::read_to_string(&pidfile).expect("child pid");
        assert!(dead(&child), "background child {child} still runs");
    }

    #[tokio::test]
    async fn a_process_that_left_the_group_does_not_hold_the_run() {
        let t = env();
        let pidfile = t.dir.path().join("escaped.pid");
        // setsid leaves the group but keeps the output pipes open.
        let req = request(&format!(
            "setsid sleep 30 &\necho $! > {}\necho bye\n",
            pidfile.display()
        ));
        let began = std::time::Instant::now();
        let events = run(req, &t.policy).await;
        let took = began.elapsed();
        let escaped = std::fs::read_to_string(&pidfile).expect("pid");
        if let Ok(pid) = escaped.trim().parse::<libc::pid_t>() {
            // SAFETY: kill takes plain numbers; the process is the test's own sleep.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        assert_eq!(ended(&events).outcome, Outcome::Succeeded);
        assert_eq!(text(&events, Stream::Stdout), "bye\n");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn output_streams_while_the_script_runs() {
        let t = env();
        let (tx, mut rx) = mpsc::channel(4);
        start(
            request("for i in 1 2 3 4 5 6; do echo line $i; sleep 0.2; done"),
            &t.policy,
            tx,
        )
        .expect("started");
        let began = std::time::Instant::now();
        let mut events = Vec::new();
        let mut first_output = None;
        while let Some(e) = rx.recv().await {
            if first_output.is_none() && matches!(e, RunEvent::Output { .. }) {
                first_output = Some(began.elapsed());
            }
            events.push(e);
        }
        check_order(&events);
        let outputs = events
            .iter()
            .filter(|e| matches!(e, RunEvent::Output { .. }))
            .count();
        assert!(outputs >= 3, "{events:?}");
        let first = first_output.expect("output");
        assert!(first < Duration::from_millis(600), "{first:?}");
        assert_eq!(
            text(&events, Stream::Stdout),
            "line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n"
        );
        assert_eq!(ended(&events).outcome, Outcome::Succeeded);
    }

    #[tokio::test]
    async fn output_is_bounded_and_still_drained() {
        let t = env();
        let events = run(
            request("head -c 5000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo done >&2"),
            &t.policy,
        )
        .await;
        let out = output(&events, Stream::Stdout);
        let err = output(&events, Stream::Stderr);
        assert_eq!(out.len() + err.len(), 1 << 20);
        assert!(out.iter().chain(&err).all(|b| *b == 0));
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::Succeeded);
        assert!(e.truncated);

        let mut req = request("printf aaaaaaaa; printf bbbbbbbb >&2");
        req.max_output = 10;
        let events = run(req, &t.policy).await;
        let total = output(&events, Stream::Stdout).len() + output(&events, Stream::Stderr).len();
        assert_eq!(total, 10);
        assert!(ended(&events).truncated);

        let mut req = request("printf 0123456789");
        req.max_output = 10;
        let events = run(req, &t.policy).await;
        assert_eq!(text(&events, Stream::Stdout), "0123456789");
        assert!(!ended(&events).truncated);
    }

    #[tokio::test]
    async fn a_slow_receiver_does_not_delay_the_timeout() {
        let t = env();
        let mut req = request("yes");
        req.timeout = Duration::from_millis(500);
        req.max_output = 64 << 20;
        let (tx, mut rx) = mpsc::channel(1);
        let began = std::time::Instant::now();
        start(req, &t.policy, tx).expect("started");
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        check_order(&events);
        assert_eq!(ended(&events).outcome, Outcome::TimedOut);
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
    }

    #[tokio::test]
    async fn a_dropped_receiver_does_not_stop_the_run() {
        let t = env();
        let marker = t.dir.path().join("marker");
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        start(
            request(&format!(
                "seq 100000\nsleep 0.2\ntouch {}",
                marker.display()
            )),
            &t.policy,
            tx,
        )
        .expect("started");
        for _ in 0..100 {
            if marker.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the script did not finish");
    }

    #[tokio::test]
    async fn runs_as_another_user() {
        if !is_root() {
            eprintln!("not root: switching users is not tested");
            return;
        }
        let t = env();
        let mut req = request("id -un; id -u; id -G; pwd; echo \"$HOME $USER $LOGNAME\"");
        req.user = Some("nobody".into());
        let events = run(req, &t.policy).await;
        assert_eq!(ended(&events).outcome, Outcome::Succeeded, "{events:?}");
        let out = text(&events, Stream::Stdout);
        let lines: Vec<&str> = out.lines().collect();
        let Some(&[name, uid, groups, cwd, vars]) = lines.get(..5) else {
            panic!("{out:?}");
        };
        assert_eq!(name, "nobody");
        assert_eq!(uid, "65534");
        // Root's groups are gone: only nobody's own.
        let expected = group_list(c"nobody", 65534).expect("groups");
        let got: Vec<libc::gid_t> = groups
            .split_whitespace()
            .map(|g| g.parse().expect("gid"))
            .collect();
        assert_eq!(
            got.iter().collect::<std::collections::BTreeSet<_>>(),
            expected.iter().collect()
        );
        assert!(!got.contains(&0));
        // nobody's home (/nonexistent) does not exist.
        assert_eq!(cwd, "/");
        assert_eq!(vars, "/nonexistent nobody nobody");
        let left: Vec<_> = std::fs::read_dir(&t.policy.work_dir)
            .expect("list")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn unknown_user_runs_nothing() {
        let t = env();
        let marker = t.dir.path().join("marker");
        let mut req = request(&format!("touch {}", marker.display()));
        req.user = Some("no-such-user-minos".into());
        let (tx, _rx) = mpsc::channel(4);
        let err = start(req.clone(), &t.policy, tx.clone()).expect_err("refused");
        assert_eq!(err, RunError::UnknownUser("no-such-user-minos".into()));
        req.user = Some("bad\0name".into());
        assert!(matches!(
            start(req, &t.policy, tx),
            Err(RunError::UnknownUser(_))
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!marker.exists());
        assert!(!t.policy.work_dir.exists());
    }

    #[tokio::test]
    async fn users_outside_the_allowed_list_are_refused() {
        let t = env();
        let marker = t.dir.path().join("marker");
        let policy = Policy {
            allowed_users: vec!["daemon".into()],
            ..t.policy.clone()
        };
        let mut req = request(&format!("touch {}", marker.display()));
        req.user = Some("nobody".into());
        let (tx, _rx) = mpsc::channel(4);
        let err = start(req.clone(), &policy, tx.clone()).expect_err("refused");
        assert_eq!(err, RunError::UserNotAllowed("nobody".into()));
        // The agent's own user is the run-as user when none is named: checked too.
        req.user = None;
        let err = start(req, &policy, tx).expect_err("refused");
        assert!(matches!(err, RunError::UserNotAllowed(_)), "{err}");
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn an_agent_not_root_runs_scripts_only_as_itself() {
        if is_root() {
            eprintln!("root: the not-root refusal is tested by switching_rules only");
            return;
        }
        let t = env();
        let mut req = request("true");
        req.user = Some("root".into());
        let (tx, _rx) = mpsc::channel(4);
        let err = start(req, &t.policy, tx).expect_err("refused");
        assert!(matches!(err, RunError::CannotSwitchUser { .. }), "{err}");
        assert!(!t.policy.work_dir.exists());
    }

    #[test]
    fn switching_rules() {
        let none: &[String] = &[];
        let ops = ["ops".to_string()];
        // Root switches to anyone allowed, and not to itself.
        assert_eq!(decide("nobody", 65534, none, 0, "root"), Ok(true));
        assert_eq!(decide("root", 0, none, 0, "root"), Ok(false));
        // Not root: only its own user.
        assert_eq!(decide("ops", 1000, none, 1000, "ops"), Ok(false));
        assert_eq!(
            decide("nobody", 65534, none, 1000, "ops"),
            Err(RunError::CannotSwitchUser {
                running_as: "ops".into(),
                wanted: "nobody".into()
            })
        );
        // The allowed list comes first, for every agent.
        assert_eq!(decide("ops", 1000, &ops, 1000, "ops"), Ok(false));
        assert_eq!(
            decide("nobody", 65534, &ops, 0, "root"),
            Err(RunError::UserNotAllowed("nobody".into()))
        );
        assert_eq!(
            decide("nobody", 65534, &ops, 1000, "ops"),
            Err(RunError::UserNotAllowed("nobody".into()))
        );
        let e = RunError::CannotSwitchUser {
            running_as: "ops".into(),
            wanted: "nobody".into(),
        };
        assert!(e.to_string().contains("not as root"), "{e}");
    }

    #[test]
    fn user_database_lookups() {
        let root = lookup_user(UserKey::Name(c"root"))
            .expect("lookup")
            .expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.name, "root");
        let by_uid = lookup_user(UserKey::Uid(0))
            .expect("lookup")
            .expect("uid 0");
        assert_eq!(by_uid, root);
        assert_eq!(
            lookup_user(UserKey::Name(c"no-such-user-minos")).expect("lookup"),
            None
        );
        let groups = group_list(c"root", 0).expect("groups");
        assert!(groups.contains(&0), "{groups:?}");
    }

    #[tokio::test]
    async fn interpreters() {
        let t = env();
        let (tx, _rx) = mpsc::channel(4);
        let mut req = request("print 1");
        req.interpreter = "perl".into();
        assert_eq!(
            start(req.clone(), &t.policy, tx.clone()).expect_err("refused"),
            RunError::UnknownInterpreter("perl".into())
        );
        req.interpreter = "bash".into();
        req.env = vec![("PATH".into(), "/nonexistent-minos".into())];
        let err = start(req, &t.policy, tx).expect_err("refused");
        assert!(matches!(err, RunError::InterpreterNotFound { .. }), "{err}");
        assert!(!t.policy.work_dir.exists());

        let mut req =
            request("echo \"$0\"; [ -n \"$BASH_VERSION\" ] && echo bash || echo not bash");
        req.interpreter = "sh".into();
        let events = run(req, &t.policy).await;
        assert_eq!(ended(&events).outcome, Outcome::Succeeded);
        assert!(text(&events, Stream::Stdout).starts_with("/proc/self/fd/"));
    }

    #[tokio::test]
    async fn python3_scripts() {
        if find_on_path("python3", DEFAULT_PATH).is_none() {
            eprintln!("no python3 on {DEFAULT_PATH}: the python3 test is skipped");
            return;
        }
        let t = env();
        let mut req = request("import os, sys\nprint('py', os.environ['GREETING'])\nsys.exit(4)\n");
        req.interpreter = "python3".into();
        req.env = vec![("GREETING".into(), "hello".into())];
        let events = run(req, &t.policy).await;
        assert_eq!(text(&events, Stream::Stdout), "py hello\n");
        let e = ended(&events);
        assert_eq!(e.outcome, Outcome::Failed);
        assert_eq!(e.exit_code, Some(4));
    }

    #[tokio::test]
    async fn the_environment_is_the_requests_and_no_more() {
        let t = env();
        let mut req = request("echo \"$FOO|$PATH|$HOME\"; env | cut -d= -f1 | sort");
        req.env = vec![
            ("FOO".into(), "bar baz".into()),
            ("FOO".into(), "last wins".into()),
        ];
        let events = run(req, &t.policy).await;
        let out = text(&events, Stream::Stdout);
        let mut lines = out.lines();
        let me = lookup_user(UserKey::Uid(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() },
        ))
        .expect("lookup")
        .expect("the test's user");
        assert_eq!(
            lines.next(),
            Some(format!("last wins|{DEFAULT_PATH}|{}", me.home.display()).as_str())
        );
        let names: Vec<&str> = lines.collect();
        for n in ["FOO", "HOME", "USER", "LOGNAME", "SHELL", "PATH"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        // Only what we set, and what bash sets for itself.
        let bash_own = ["PWD", "SHLVL", "_", "OLDPWD"];
        for n in &names {
            assert!(
                ["FOO", "HOME", "USER", "LOGNAME", "SHELL", "PATH"].contains(n)
                    || bash_own.contains(n),
                "{n} leaked from the agent: {names:?}"
            );
        }
        // A cwd of $HOME when it exists.
        let events = run(request("pwd"), &t.policy).await;
        let cwd = if me.home.is_dir() {
            me.home.display().to_string()
        } else {
            "/".to_string()
        };
        assert_eq!(text(&events, Stream::Stdout).trim_end(), cwd);

        let (tx, _rx) = mpsc::channel(4);
        for bad in ["", "A=B", "A\0"] {
            let mut req = request("true");
            req.env = vec![(bad.into(), "x".into())];
            assert_eq!(
                start(req, &t.policy, tx.clone()).expect_err("refused"),
                RunError::InvalidEnv(bad.into())
            );
        }
    }

    #[tokio::test]
    async fn the_script_inherits_no_other_descriptors() {
        let t = env();
        let events = run(request("echo \"$0\"; ls /proc/self/fd"), &t.policy).await;
        let out = text(&events, Stream::Stdout);
        let mut lines = out.lines();
        let script_fd = lines
            .next()
            .and_then(|l| l.strip_prefix("/proc/self/fd/"))
            .expect("the script's name");
        // stdio, the script, and the directory ls reads.
        let others: Vec<&str> = lines
            .filter(|fd| !["0", "1", "2", script_fd].contains(fd))
            .collect();
        assert!(others.len() <= 1, "{out}");
    }

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat("42 (a) b) c) S 1 42 42 0 -1"), Some(('S', 42)));
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat(""), None);
    }
}
