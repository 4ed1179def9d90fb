//! What the scale benches (`agent_scale`, `scrape_scale`) share: starting a server
//! binary on a fresh data directory and stopping it, reading a process's CPU time and RSS
//! from `/proc`, the machine's busy time, durations on the command line, and one sample
//! from a `/metrics` page.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Parses `10s`, `500ms`, `1m`, `2h` or a plain number of seconds; must be positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (10s, 500ms, 1m)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Raises this process's open-file soft limit to the hard limit; returns the new limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// CPU time and memory of a process, read from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    pub cpu_secs: f64,
    pub rss_mb: f64,
    pub hwm_mb: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `pid` is a number or `self`.
pub fn proc_sample(pid: &str) -> Result<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/<pid>/stat: no ')'")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        f.get(n - 3)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat: field {n}"))
    };
    let ticks = field(14)? + field(15)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcSample {
        at,
        cpu_secs: ticks as f64 / clock_ticks(),
        rss_mb: kb("VmRSS:") / 1024.0,
        hwm_mb: kb("VmHWM:") / 1024.0,
    })
}

/// CPU used between two samples, as a percentage of one core.
pub fn cpu_pct(a: &ProcSample, b: &ProcSample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (b.cpu_secs - a.cpu_secs) / wall * 100.0
}

/// The whole machine's busy and total CPU time in clock ticks (`/proc/stat`), to tell
/// how much of a window other processes used.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The report's `machine` line: how busy the whole machine was between two
/// [`machine_ticks`], as a percentage of one core, and how much of that was not `ours`
/// (the measured processes' CPU, % of one core).
pub fn machine_line(m0: Option<(u64, u64)>, m1: Option<(u64, u64)>, ours: f64) -> Option<String> {
    let ((b0, t0), (b1, t1)) = (m0?, m1?);
    if t1 <= t0 {
        return None;
    }
    // Total ticks count every core: scale to "% of one core".
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0 * cores;
    Some(format!(
        "{busy:.1} % of one core busy over the window ({cores} cores); other processes {:.1} %",
        busy - ours
    ))
}

/// A server process this bench started; stopped (SIGTERM, then SIGKILL) when dropped.
/// Its data directory and log live in a temporary directory, removed unless `keep`.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub log: PathBuf,
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl Server {
    /// Starts `program args...` with its output going to `server.log` in `dir`, and a
    /// `base` URL the caller made it listen on.
    pub fn spawn(
        program: &Path,
        args: &[OsString],
        base: String,
        dir: tempfile::TempDir,
        keep: bool,
    ) -> Result<Server> {
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).context("creating the server log")?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Server {
            child,
            base,
            log,
            dir: Some(dir),
            keep,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding the data directory and the log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls `GET /-/ready` until it answers 2xx and `also()` holds, for at most
    /// `timeout`; fails (and stops the server) when the server exits or the time is up.
    pub async fn wait_ready(&mut self, timeout: Duration, also: impl Fn() -> bool) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the server exited ({status}) before it was ready:\n{}",
                    self.log_tail(30)
                );
            }
            let ready = client
                .get(format!("{}/-/ready", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready && also() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tail = self.log_tail(30);
                self.stop(Duration::from_secs(5));
                bail!("the server was not ready within {timeout:?}:\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server; returns whether it exited within `grace` after SIGTERM.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            let _ = self.child.kill();
            return false;
        };
        // SAFETY: kill sends a signal to the child we spawned and still hold.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// The log's warning and error lines (Minos' ` WARN `/` ERROR `, Prometheus'
    /// `level=warn`/`level=error`): (warn count, error count, the first `n` of them).
    pub fn log_problems(&self, n: usize) -> (usize, usize, Vec<String>) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let warn_line = |l: &&str| l.contains(" WARN ") || l.contains("level=warn");
        let error_line = |l: &&str| l.contains(" ERROR ") || l.contains("level=error");
        let warn = log.lines().filter(warn_line).count();
        let error = log.lines().filter(error_line).count();
        let first = log
            .lines()
            .filter(|l| warn_line(l) || error_line(l))
            .take(n)
            .map(str::to_string)
            .collect();
        (warn, error, first)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(20));
        if self.keep
            && let Some(d) = self.dir.take()
        {
            let p = d.keep();
            eprintln!(
                "kept the server's data directory and log in {}",
                p.display()
            );
        }
    }
}

/// The `minos` binary to start when none is given: `$CARGO_TARGET_DIR/release/minos`,
/// else the workspace's `target/release/minos`, else `minos` on `PATH`.
pub fn default_minos() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release/minos"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/minos"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("minos")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("no minos binary: build it with `cargo build --release` or pass --minos")
}

/// Runs a bench's `run` on a multi-threaded runtime; a run that did not pass exits 1.
pub fn exit_with(run: impl std::future::Future<Output = Result<bool>>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let passed = rt.block_on(run)?;
    drop(rt);
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Reads metric `name` from `{base}/metrics`: its sample, or the sum of its samples when
/// it has several label sets.
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .context("GET /metrics")?
        .error_for_status()
        .context("GET /metrics")?
        .text()
        .await
        .context("GET /metrics: body")?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labels) => labels.split_once('}')?.1,
                None => rest,
            };
            let value = rest.strip_prefix(' ')?.split_whitespace().next()?;
            value.parse::<f64>().ok()
        })
        .collect();
    if values.is_empty() {
        bail!("/metrics has no {name}");
    }
    Ok(values.iter().sum())
}
