//! Many Prometheus scrape targets behind one loopback port, for `scrape_scale`.
//!
//! [`Catalog`] is what one target exposes: `n` series in the Prometheus text format
//! (0.0.4), shaped like a node_exporter plus an instrumented web service — CPU, network,
//! disk, filesystem, memory, vmstat, hwmon and systemd families, then
//! `http_requests_total` and an `http_request_duration_seconds` histogram per handler to
//! reach `n` — each family with its `# HELP` and `# TYPE` lines, 1 to 3 labels per series
//! (the scraper adds `job` and `instance`). Every target exposes the same series with its
//! own values: counters grow with the time at per-series rates (integer counters by whole
//! units), gauges wander, histogram buckets stay cumulative. 1,000 series make about
//! 80 KB.
//!
//! [`serve`] answers `GET /metrics?target=<i>` for `i` below the number of targets, with
//! target `i`'s page, on HTTP/1.1 keep-alive connections (a minimal responder: request
//! line and headers, no request body). [`file_sd`] writes the `file_sd_configs` file
//! that names them: one group per target, all on the same address, with a `target`
//! label that [`RELABEL_CONFIGS`] turns into the `target` URL parameter and the
//! `instance` label `host-<i>:9100`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::splitmix64;

/// How a series' value moves.
#[derive(Debug, Clone, Copy)]
enum Value {
    /// A counter of whole units growing at `rate`·(0.5..1.5) a second.
    Count { rate: f64 },
    /// A counter of seconds (two decimals) growing at `rate`·(0.5..1.5) a second.
    Seconds { rate: f64 },
    /// A gauge around `base`·(0.5..1.5) moving by up to `swing` of it, rounded to
    /// `step`.
    Gauge { base: f64, swing: f64, step: f64 },
    /// A value that does not change: `base`·(0.5..1.5) rounded to `step`.
    Constant { base: f64, step: f64 },
    /// 0 or 1, changing rarely.
    Flag,
    /// A histogram bucket: the handler's request count (growing at `rate`) times `share`.
    Bucket { rate: f64, share: f64 },
    /// A histogram's `_sum`: request count times `mean` seconds.
    HistSum { rate: f64, mean: f64 },
}

struct Series {
    /// `# HELP`/`# TYPE` lines when the series starts a family, else empty.
    header: String,
    /// `name{labels} `.
    prefix: String,
    value: Value,
    /// Series that share a handler's request count share this (histograms).
    group: u64,
}

/// The series every target exposes.
pub struct Catalog {
    series: Vec<Series>,
    seed: u64,
    started: Instant,
}

struct Builder {
    series: Vec<Series>,
    pending_header: String,
}

impl Builder {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.pending_header = format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn push(&mut self, name: &str, labels: &[(&str, &str)], value: Value, group: u64) {
        let mut prefix = String::from(name);
        if !labels.is_empty() {
            prefix.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    prefix.push(',');
                }
                let _ = write!(prefix, "{k}=\"{v}\"");
            }
            prefix.push('}');
        }
        prefix.push(' ');
        self.series.push(Series {
            header: std::mem::take(&mut self.pending_header),
            prefix,
            value,
            group,
        });
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const BUCKETS: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];
const BUCKET_SHARES: [f64; 11] = [
    0.05, 0.18, 0.42, 0.63, 0.8, 0.92, 0.97, 0.99, 0.996, 0.999, 1.0,
];

impl Catalog {
    /// The `n` series of every target; values derive from `seed`.
    pub fn new(n: usize, seed: u64) -> Catalog {
        let mut b = Builder {
            series: Vec::with_capacity(n + 64),
            pending_header: String::new(),
        };
        node_families(&mut b);
        // Fill up with a web service's metrics: per handler, 3 request counters and a
        // histogram of 13 series; the last few series are queue gauges.
        let rest = n.saturating_sub(b.series.len());
        let handlers = rest / 16;
        let methods = ["GET", "POST", "PUT", "DELETE"];
        let handler = |h: usize| {
            let what = ["orders", "items", "users", "carts", "invoices", "sessions"][h % 6];
            format!("/api/v{}/{what}/{{id}}", h / 6 + 1)
        };
        b.family(
            "http_requests_total",
            "counter",
            "Requests served, by handler, method and status code.",
        );
        for h in 0..handlers {
            let (path, method) = (handler(h), methods[h % 4]);
            for (code, rate) in [("200", 20.0), ("404", 0.3), ("500", 0.02)] {
                b.push(
                    "http_requests_total",
                    &[("handler", &path), ("method", method), ("code", code)],
                    Value::Count { rate },
                    0,
                );
            }
        }
        b.family(
            "http_request_duration_seconds",
            "histogram",
            "Request latency, by handler and method.",
        );
        for h in 0..handlers {
            let (path, method) = (handler(h), methods[h % 4]);
            let group = h as u64 + 1;
            let rate = 20.0;
            for (le, share) in BUCKETS.iter().zip(BUCKET_SHARES) {
                b.push(
                    "http_request_duration_seconds_bucket",
                    &[("handler", &path), ("method", method), ("le", le)],
                    Value::Bucket { rate, share },
                    group,
                );
            }
            let labels = [("handler", path.as_str()), ("method", method)];
            b.push(
                "http_request_duration_seconds_sum",
                &labels,
                Value::HistSum { rate, mean: 0.031 },
                group,
            );
            b.push(
                "http_request_duration_seconds_count",
                &labels,
                Value::Bucket { rate, share: 1.0 },
                group,
            );
        }
        b.family(
            "app_queue_depth",
            "gauge",
            "Jobs waiting in each work queue.",
        );
        for q in 0..n.saturating_sub(b.series.len()) {
            let queue = format!("queue-{q:02}");
            b.push(
                "app_queue_depth",
                &[("queue", &queue)],
                Value::Gauge {
                    base: 40.0,
                    swing: 0.9,
                    step: 1.0,
                },
                0,
            );
        }
        b.series.truncate(n);
        Catalog {
            series: b.series,
            seed,
            started: Instant::now(),
        }
    }

    /// Series per target.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Writes target `target`'s page as of now into `out` (cleared first).
    pub fn render(&self, target: u64, out: &mut String) {
        out.clear();
        // Seconds since an origin some days back, so counters start at realistic values.
        let now = self.started.elapsed().as_secs_f64() + 3.0 * 86_400.0;
        let mut group_count = (0u64, 0.0f64);
        for (i, s) in self.series.iter().enumerate() {
            let mut st = self.seed ^ target.wrapping_mul(0x9e37_79b9) ^ ((i as u64) << 32);
            let r = unit(splitmix64(&mut st)) + 0.5;
            let r2 = unit(splitmix64(&mut st));
            out.push_str(&s.header);
            out.push_str(&s.prefix);
            match s.value {
                Value::Count { rate } => {
                    let _ = write!(out, "{}", (rate * r * now).floor() as u64);
                }
                Value::Seconds { rate } => {
                    let _ = write!(out, "{:.2}", rate * r * now);
                }
                Value::Gauge { base, swing, step } => {
                    let phase = r2 * std::f64::consts::TAU;
                    let v = base * r * (1.0 + swing * (now / 97.0 + phase).sin());
                    let _ = write!(out, "{}", (v / step).round() * step);
                }
                Value::Constant { base, step } => {
                    let _ = write!(out, "{}", (base * r / step).round() * step);
                }
                Value::Flag => {
                    let on = !((now / 3600.0 + r2 * 40.0) as u64).is_multiple_of(40);
                    out.push_str(if on { "1" } else { "0" });
                }
                Value::Bucket { rate, share } | Value::HistSum { rate, mean: share } => {
                    // The handler's request count, the same for all its series.
                    if group_count.0 != s.group {
                        let mut gs = self.seed ^ target.wrapping_mul(0x9e37_79b9) ^ s.group;
                        let gr = unit(splitmix64(&mut gs)) + 0.5;
                        group_count = (s.group, rate * gr * now);
                    }
                    if matches!(s.value, Value::Bucket { .. }) {
                        let _ = write!(out, "{}", (group_count.1 * share).floor() as u64);
                    } else {
                        let _ = write!(out, "{:.3}", group_count.1 * share);
                    }
                }
            }
            out.push('\n');
        }
    }
}

/// A uniform value in [0, 1) from 64 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The node_exporter part of the catalog: 317 series.
fn node_families(b: &mut Builder) {
    let modes = [
        "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
    ];
    b.family(
        "node_cpu_seconds_total",
        "counter",
        "Seconds the CPUs spent in each mode.",
    );
    for cpu in 0..8 {
        let c = cpu.to_string();
        for (m, mode) in modes.iter().enumerate() {
            let rate = if m == 0 { 0.7 } else { 0.05 };
            b.push(
                "node_cpu_seconds_total",
                &[("cpu", &c), ("mode", mode)],
                Value::Seconds { rate },
                0,
            );
        }
    }
    for (dir, what, rate) in [
        ("receive", "bytes", 2.0e6),
        ("receive", "packets", 1500.0),
        ("receive", "errs", 0.001),
        ("receive", "drop", 0.01),
        ("transmit", "bytes", 1.5e6),
        ("transmit", "packets", 1200.0),
        ("transmit", "errs", 0.001),
        ("transmit", "drop", 0.005),
    ] {
        let name = format!("node_network_{dir}_{what}_total");
        b.family(
            &name,
            "counter",
            &format!("Network device statistic {dir}_{what}."),
        );
        for dev in ["eth0", "eth1", "lo", "docker0"] {
            b.push(&name, &[("device", dev)], Value::Count { rate }, 0);
        }
    }
    for (what, rate, secs) in [
        ("reads_completed", 80.0, false),
        ("writes_completed", 150.0, false),
        ("read_bytes", 3.0e6, false),
        ("written_bytes", 5.0e6, false),
        ("io_time_seconds", 0.05, true),
        ("read_time_seconds", 0.02, true),
        ("write_time_seconds", 0.08, true),
    ] {
        let name = format!("node_disk_{what}_total");
        b.family(&name, "counter", &format!("The total {what} of the disk."));
        for dev in ["sda", "sdb", "nvme0n1", "nvme1n1"] {
            let value = if secs {
                Value::Seconds { rate }
            } else {
                Value::Count { rate }
            };
            b.push(&name, &[("device", dev)], value, 0);
        }
    }
    let mounts = [
        ("/dev/sda1", "ext4", "/"),
        ("/dev/sda2", "ext4", "/boot"),
        ("/dev/sdb1", "xfs", "/var/lib/data"),
        ("/dev/nvme0n1p1", "xfs", "/srv"),
        ("tmpfs", "tmpfs", "/run"),
        ("tmpfs", "tmpfs", "/dev/shm"),
    ];
    for (what, constant) in [
        ("size_bytes", true),
        ("avail_bytes", false),
        ("free_bytes", false),
        ("files", true),
        ("files_free", false),
    ] {
        let name = format!("node_filesystem_{what}");
        b.family(&name, "gauge", &format!("Filesystem {what}."));
        let (base, step) = if what.starts_with("files") {
            (6.0e6, 1.0)
        } else {
            (200.0 * GIB, 4096.0)
        };
        for (device, fstype, mountpoint) in mounts {
            let value = if constant {
                Value::Constant { base, step }
            } else {
                Value::Gauge {
                    base: base / 2.0,
                    swing: 0.01,
                    step,
                }
            };
            b.push(
                &name,
                &[
                    ("device", device),
                    ("fstype", fstype),
                    ("mountpoint", mountpoint),
                ],
                value,
                0,
            );
        }
    }
    for what in [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "SwapCached",
        "Active",
        "Inactive",
        "Active_anon",
        "Inactive_anon",
        "Active_file",
        "Inactive_file",
        "Dirty",
        "Writeback",
        "AnonPages",
        "Mapped",
        "Shmem",
        "Slab",
        "SReclaimable",
        "PageTables",
    ] {
        let name = format!("node_memory_{what}_bytes");
        b.family(
            &name,
            "gauge",
            &format!("Memory information field {what}_bytes."),
        );
        let value = if what == "MemTotal" {
            Value::Constant {
                base: 64.0 * GIB,
                step: 4096.0,
            }
        } else {
            Value::Gauge {
                base: 4.0 * GIB,
                swing: 0.1,
                step: 4096.0,
            }
        };
        b.push(&name, &[], value, 0);
    }
    for what in ["load1", "load5", "load15"] {
        let name = format!("node_{what}");
        b.family(&name, "gauge", &format!("{what} load average."));
        let value = Value::Gauge {
            base: 2.0,
            swing: 0.5,
            step: 0.01,
        };
        b.push(&name, &[], value, 0);
    }
    for (what, rate) in [
        ("pgfault", 5000.0),
        ("pgmajfault", 2.0),
        ("pgpgin", 800.0),
        ("pgpgout", 1500.0),
        ("pswpin", 0.01),
        ("pswpout", 0.01),
        ("oom_kill", 0.00001),
        ("pgsteal_kswapd", 10.0),
        ("pgscan_kswapd", 12.0),
        ("workingset_refault_file", 3.0),
    ] {
        let name = format!("node_vmstat_{what}");
        b.family(
            &name,
            "untyped",
            &format!("/proc/vmstat information field {what}."),
        );
        b.push(&name, &[], Value::Count { rate }, 0);
    }
    b.family(
        "node_hwmon_temp_celsius",
        "gauge",
        "Hardware monitor for temperature (input)",
    );
    for chip in ["platform_coretemp_0", "platform_coretemp_1"] {
        for sensor in ["temp1", "temp2", "temp3", "temp4"] {
            b.push(
                "node_hwmon_temp_celsius",
                &[("chip", chip), ("sensor", sensor)],
                Value::Gauge {
                    base: 50.0,
                    swing: 0.1,
                    step: 1.0,
                },
                0,
            );
        }
    }
    for (name, kind, value) in [
        (
            "node_context_switches_total",
            "counter",
            Value::Count { rate: 9000.0 },
        ),
        ("node_intr_total", "counter", Value::Count { rate: 7000.0 }),
        ("node_forks_total", "counter", Value::Count { rate: 30.0 }),
        (
            "node_boot_time_seconds",
            "gauge",
            Value::Constant {
                base: 1.7e9,
                step: 1.0,
            },
        ),
        (
            "node_procs_running",
            "gauge",
            Value::Gauge {
                base: 3.0,
                swing: 0.6,
                step: 1.0,
            },
        ),
        (
            "node_procs_blocked",
            "gauge",
            Value::Gauge {
                base: 0.5,
                swing: 1.0,
                step: 1.0,
            },
        ),
    ] {
        b.family(name, kind, &format!("Node statistic {name}."));
        b.push(name, &[], value, 0);
    }
    for (what, rate) in [("processed", 2000.0), ("dropped", 0.001)] {
        let name = format!("node_softnet_{what}_total");
        b.family(
            &name,
            "counter",
            &format!("Number of {what} packets by softnet."),
        );
        for cpu in 0..8 {
            b.push(
                &name,
                &[("cpu", &cpu.to_string())],
                Value::Count { rate },
                0,
            );
        }
    }
    b.family("node_systemd_unit_state", "gauge", "Systemd unit state.");
    let units = [
        "sshd",
        "cron",
        "nginx",
        "postgresql",
        "docker",
        "containerd",
        "rsyslog",
        "chrony",
        "node_exporter",
        "systemd-journald",
        "systemd-logind",
        "systemd-udevd",
        "dbus",
        "getty@tty1",
        "polkit",
        "unattended-upgrades",
        "snapd",
        "multipathd",
        "ufw",
        "networkd-dispatcher",
    ];
    for unit in units {
        let name = format!("{unit}.service");
        for state in ["activating", "active", "deactivating", "failed", "inactive"] {
            b.push(
                "node_systemd_unit_state",
                &[("name", &name), ("state", state), ("type", "simple")],
                if state == "active" {
                    Value::Flag
                } else {
                    Value::Constant {
                        base: 0.0,
                        step: 1.0,
                    }
                },
                0,
            );
        }
    }
}

/// What the simulator served.
#[derive(Debug, Default)]
pub struct Stats {
    /// Pages served (200).
    pub pages: AtomicU64,
    /// Body bytes of those pages.
    pub bytes: AtomicU64,
    /// Requests answered 404 or 400.
    pub bad: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// Answers `GET /metrics?target=<i>` (for `i < targets`) on every connection `listener`
/// accepts, until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    catalog: Arc<Catalog>,
    targets: u64,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    loop {
        let (conn, _) = listener.accept().await?;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = conn.set_nodelay(true);
        let (catalog, stats) = (catalog.clone(), stats.clone());
        tokio::spawn(async move {
            let _ = connection(conn, &catalog, targets, &stats).await;
        });
    }
}

async fn connection(
    conn: TcpStream,
    catalog: &Catalog,
    targets: u64,
    stats: &Stats,
) -> std::io::Result<()> {
    let (rd, mut wr) = conn.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    let mut body = String::with_capacity(catalog.len() * 100);
    let mut head = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let request = line.trim_end().to_string();
        let mut close = request.ends_with("HTTP/1.0");
        // Headers, up to the empty line.
        loop {
            line.clear();
            if rd.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("connection")
            {
                close = v.trim().eq_ignore_ascii_case("close");
            }
        }
        let target = request
            .strip_prefix("GET /metrics?")
            .and_then(|r| r.split(' ').next())
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("target=")))
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|&t| t < targets);
        head.clear();
        match target {
            Some(t) => {
                catalog.render(t, &mut body);
                stats.pages.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                let _ = write!(
                    head,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
            }
            None => {
                stats.bad.fetch_add(1, Ordering::Relaxed);
                body.clear();
                body.push_str("not found: GET /metrics?target=<0..targets>\n");
                let _ = write!(
                    head,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
            }
        }
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(body.as_bytes()).await?;
        if close {
            return wr.shutdown().await;
        }
    }
}

/// Relabeling that makes a [`file_sd`] group's `target` label the `target` URL parameter
/// and the `instance` label `host-<target>:9100`, then drops it (a YAML list, indented
/// for a scrape config's keys).
pub const RELABEL_CONFIGS: &str = r#"    relabel_configs:
      - source_labels: [target]
        target_label: __param_target
      - source_labels: [target]
        target_label: instance
        replacement: "host-${1}:9100"
      - action: labeldrop
        regex: target
"#;

/// A `file_sd_configs` file: `targets` groups on `address`, each labelled `target`
/// `00000`, `00001`...
pub fn file_sd(address: &str, targets: usize) -> String {
    let mut out = String::from("[\n");
    for i in 0..targets {
        let sep = if i + 1 < targets { "," } else { "" };
        let _ = writeln!(
            out,
            r#"  {{"targets": ["{address}"], "labels": {{"target": "{i:05}"}}}}{sep}"#
        );
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_n_series_in_families() {
        for n in [10, 317, 1000, 1003, 5000] {
            let c = Catalog::new(n, 1);
            assert_eq!(c.len(), n);
            let mut page = String::new();
            c.render(3, &mut page);
            let samples: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(samples.len(), n, "n = {n}");
            // Every family is announced once, before its series.
            let mut types = std::collections::HashSet::new();
            for l in page.lines().filter(|l| l.starts_with("# TYPE ")) {
                assert!(types.insert(l.to_string()), "{l} twice");
            }
        }
        let mut page = String::new();
        Catalog::new(1000, 1).render(0, &mut page);
        assert!((60_000..100_000).contains(&page.len()), "{}", page.len());
    }

    #[test]
    fn counters_grow_and_targets_differ() {
        let c = Catalog::new(1000, 7);
        let (mut a, mut b, mut other) = (String::new(), String::new(), String::new());
        c.render(1, &mut a);
        c.render(2, &mut other);
        assert_ne!(a, other);
        std::thread::sleep(std::time::Duration::from_millis(50));
        c.render(1, &mut b);
        let value = |page: &str, prefix: &str| -> f64 {
            page.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        let p = r#"node_network_receive_bytes_total{device="eth0"} "#;
        assert!(value(&b, p) > value(&a, p));
        // Histogram buckets are cumulative.
        let buckets: Vec<f64> = b
            .lines()
            .filter(|l| {
                l.starts_with(
                    "http_request_duration_seconds_bucket{handler=\"/api/v1/orders/{id}\"",
                )
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), 11);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }

    #[test]
    fn file_sd_is_json() {
        let v: serde_json::Value = serde_json::from_str(&file_sd("127.0.0.1:9", 3)).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[2]["labels"]["target"], "00002");
    }
}
