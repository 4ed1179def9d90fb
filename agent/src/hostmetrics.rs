//! Host metrics under node_exporter's names and labels.
//!
//! Read from `/proc` (a root that tests point at fixtures) and `statvfs`, as
//! node_exporter's default collectors read them: `cpu`, `meminfo`, `loadavg`,
//! `diskstats`, `netdev`, `filesystem`, `filefd`, `stat`, `time`, `uname`, plus the process count
//! (`node_processes_pids`, from the `processes` collector). Counters stay raw counters.
//!
//! The parsers are ours rather than `procfs`'s typed structs: node_exporter exports every
//! `/proc/meminfo` field under a name derived from it (a typed struct drops the ones it
//! does not know), keeps load averages as the kernel writes them (`procfs` parses them as
//! `f32`), and the formats are a few whitespace-separated columns.
//!
//! A source that cannot be read is skipped and named in [`Collection::errors`]; the
//! others are still collected.

use std::fs;
use std::path::{Path, PathBuf};

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// What one collection found.
#[derive(Debug, Default)]
pub struct Collection {
    pub metrics: Vec<Metric>,
    /// `source: error` for every source that could not be read.
    pub errors: Vec<String>,
}

impl Collection {
    fn push(&mut self, name: impl Into<String>, labels: Vec<(&'static str, String)>, value: f64) {
        self.metrics.push(Metric {
            name: name.into(),
            labels,
            value,
        });
    }
}

/// Reads host metrics from a `/proc` tree.
#[derive(Debug, Clone)]
pub struct HostCollector {
    proc_root: PathBuf,
    ticks_per_second: f64,
}

/// Mount points node_exporter's filesystem collector leaves out by default.
pub(crate) fn excluded_mount(mp: &str) -> bool {
    let under = |p: &str| mp == p || mp.starts_with(&format!("{p}/"));
    under("/dev")
        || under("/proc")
        || under("/sys")
        || mp.starts_with("/run/credentials/")
        || mp.starts_with("/var/lib/docker/")
        || mp.starts_with("/var/lib/containers/storage/")
}

/// File system types node_exporter's filesystem collector leaves out by default.
pub(crate) const EXCLUDED_FSTYPES: [&str; 24] = [
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Block devices node_exporter's diskstats collector leaves out by default: RAM and loop
/// devices, and partitions. As in node_exporter 1.5 (Debian 12's, which the tests run):
/// `zram` devices are kept (later versions leave them out too).
fn excluded_disk(name: &str) -> bool {
    let strip = |prefix: &str| name.strip_prefix(prefix);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    for p in ["ram", "loop", "fd"] {
        if strip(p).is_some_and(digits) {
            return true;
        }
    }
    // hda1, sda1, vda1, xvda1: a letter then digits.
    for p in ["h", "s", "v", "xv"] {
        if let Some(rest) = name.strip_prefix(p).and_then(|r| r.strip_prefix('d'))
            && let Some((first, tail)) = rest.split_at_checked(1)
            && first.bytes().all(|b| b.is_ascii_lowercase())
            && digits(tail)
        {
            return true;
        }
    }
    // nvme0n1p1, mmcblk0p1
    if let Some(p) = name.rfind('p')
        && (name.starts_with("nvme") || name.starts_with("mmcblk"))
        && digits(&name[p + 1..])
        && name[..p].bytes().last().is_some_and(|b| b.is_ascii_digit())
    {
        return true;
    }
    false
}

/// `Active(anon)` → `Active_anon`, as node_exporter names meminfo fields.
fn meminfo_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| if c == '(' || c == ')' { '_' } else { c })
        .collect();
    while s.ends_with('_') {
        s.pop();
    }
    s
}

/// Mount points in `/proc/*/mounts` escape spaces and a few other bytes as `\NNN`.
pub(crate) fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl HostCollector {
    /// A collector reading `proc_root` (normally `/proc`).
    pub fn new(proc_root: impl Into<PathBuf>) -> HostCollector {
        // SAFETY: sysconf only reads a system constant.
        let tps = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        HostCollector {
            proc_root: proc_root.into(),
            ticks_per_second: if tps > 0 { tps as f64 } else { 100.0 },
        }
    }

    fn read(&self, rel: &str) -> Result<String, String> {
        let p = self.proc_root.join(rel);
        fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Collects everything; sources that fail are listed in `errors`.
    pub fn collect(&self) -> Collection {
        let mut c = Collection::default();
        type Source = fn(&HostCollector, &mut Collection) -> Result<(), String>;
        let sources: [(&str, Source); 9] = [
            ("stat", HostCollector::stat),
            ("meminfo", HostCollector::meminfo),
            ("loadavg", HostCollector::loadavg),
            ("diskstats", HostCollector::diskstats),
            ("netdev", HostCollector::netdev),
            ("filesystem", HostCollector::filesystem),
            ("filefd", HostCollector::filefd),
            ("processes", HostCollector::processes),
            ("uname", HostCollector::uname),
        ];
        for (name, f) in sources {
            if let Err(e) = f(self, &mut c) {
                c.errors.push(format!("{name}: {e}"));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        c.push("node_time_seconds", vec![], now);
        c
    }

    /// `/proc/stat`: CPU seconds by mode, boot time, context switches, forks,
    /// interrupts, running and blocked processes.
    fn stat(&self, c: &mut Collection) -> Result<(), String> {
        const MODES: [&str; 8] = [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ];
        let text = self.read("stat")?;
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let Some(key) = f.next() else { continue };
            let num = |s: Option<&str>| s.and_then(|v| v.parse::<f64>().ok());
            if let Some(cpu) = key.strip_prefix("cpu")
                && !cpu.is_empty()
            {
                let vals: Vec<f64> = f.filter_map(|v| v.parse().ok()).collect();
                for (i, mode) in MODES.iter().enumerate() {
                    if let Some(v) = vals.get(i) {
                        c.push(
                            "node_cpu_seconds_total",
                            vec![("cpu", cpu.to_string()), ("mode", mode.to_string())],
                            v / self.ticks_per_second,
                        );
                    }
                }
                continue;
            }
            let name = match key {
                "btime" => "node_boot_time_seconds",
                "ctxt" => "node_context_switches_total",
                "processes" => "node_forks_total",
                "intr" => "node_intr_total",
                "procs_running" => "node_procs_running",
                "procs_blocked" => "node_procs_blocked",
                _ => continue,
            };
            if let Some(v) = num(f.next()) {
                c.push(name, vec![], v);
            }
        }
        Ok(())
    }

    /// `/proc/meminfo`: every field, `kB` ones in bytes.
    fn meminfo(&self, c: &mut Collection) -> Result<(), String> {
        for line in self.read("meminfo")?.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let mut f = rest.split_whitespace();
            let Some(v) = f.next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let name = meminfo_name(key.trim());
            match f.next() {
                Some("kB") => c.push(format!("node_memory_{name}_bytes"), vec![], v * 1024.0),
                _ => c.push(format!("node_memory_{name}"), vec![], v),
            }
        }
        Ok(())
    }

    /// `/proc/loadavg`.
    fn loadavg(&self, c: &mut Collection) -> Result<(), String> {
        let text = self.read("loadavg")?;
        let v: Vec<f64> = text
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() != 3 {
            return Err(format!("unexpected content {:?}", text.trim()));
        }
        c.push("node_load1", vec![], v[0]);
        c.push("node_load5", vec![], v[1]);
        c.push("node_load15", vec![], v[2]);
        Ok(())
    }

    /// `/proc/diskstats`, whole disks only.
    fn diskstats(&self, c: &mut Collection) -> Result<(), String> {
        const SECTOR: f64 = 512.0;
        for line in self.read("diskstats")?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 || excluded_disk(f[2]) {
                continue;
            }
            let n: Vec<f64> = f[3..14].iter().map(|x| x.parse().unwrap_or(0.0)).collect();
            let dev = || vec![("device", f[2].to_string())];
            c.push("node_disk_reads_completed_total", dev(), n[0]);
            c.push("node_disk_reads_merged_total", dev(), n[1]);
            c.push("node_disk_read_bytes_total", dev(), n[2] * SECTOR);
            c.push("node_disk_read_time_seconds_total", dev(), n[3] / 1000.0);
            c.push("node_disk_writes_completed_total", dev(), n[4]);
            c.push("node_disk_writes_merged_total", dev(), n[5]);
            c.push("node_disk_written_bytes_total", dev(), n[6] * SECTOR);
            c.push("node_disk_write_time_seconds_total", dev(), n[7] / 1000.0);
            c.push("node_disk_io_now", dev(), n[8]);
            c.push("node_disk_io_time_seconds_total", dev(), n[9] / 1000.0);
            c.push(
                "node_disk_io_time_weighted_seconds_total",
                dev(),
                n[10] / 1000.0,
            );
        }
        Ok(())
    }

    /// `/proc/net/dev`, but the loopback device.
    fn netdev(&self, c: &mut Collection) -> Result<(), String> {
        const RX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "frame",
            "compressed",
            "multicast",
        ];
        const TX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "colls",
            "carrier",
            "compressed",
        ];
        for line in self.read("net/dev")?.lines().skip(2) {
            let Some((dev, rest)) = line.split_once(':') else {
                continue;
            };
            let n: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            if n.len() < 16 {
                continue;
            }
            let dev = dev.trim();
            // node_exporter leaves the loopback device out by default.
            if dev == "lo" {
                continue;
            }
            for (i, k) in RX.iter().enumerate() {
                c.push(
                    format!("node_network_receive_{k}_total"),
                    vec![("device", dev.to_string())],
                    n[i],
                );
            }
            for (i, k) in TX.iter().enumerate() {
                c.push(
                    format!("node_network_transmit_{k}_total"),
                    vec![("device", dev.to_string())],
                    n[8 + i],
                );
            }
        }
        Ok(())
    }

    /// Mounted file systems (`/proc/1/mounts`, else `/proc/self/mounts`) and their
    /// `statvfs`. Mount points are looked up as given, so fixtures name real paths.
    fn filesystem(&self, c: &mut Collection) -> Result<(), String> {
        let text = self
            .read("1/mounts")
            .or_else(|_| self.read("self/mounts"))?;
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let (device, mp, fstype) = (unescape_mount(f[0]), unescape_mount(f[1]), f[2]);
            if excluded_mount(&mp) || EXCLUDED_FSTYPES.contains(&fstype) {
                continue;
            }
            if !seen.insert((device.clone(), mp.clone())) {
                continue;
            }
            let Ok(st) = rustix::fs::statvfs(Path::new(&mp)) else {
                continue;
            };
            let labels = || {
                vec![
                    ("device", device.clone()),
                    ("fstype", fstype.to_string()),
                    ("mountpoint", mp.clone()),
                ]
            };
            let bs = st.f_frsize as f64;
            let ro = f[3].split(',').any(|o| o == "ro");
            c.push(
                "node_filesystem_size_bytes",
                labels(),
                st.f_blocks as f64 * bs,
            );
            c.push(
                "node_filesystem_free_bytes",
                labels(),
                st.f_bfree as f64 * bs,
            );
            c.push(
                "node_filesystem_avail_bytes",
                labels(),
                st.f_bavail as f64 * bs,
            );
            c.push("node_filesystem_files", labels(), st.f_files as f64);
            c.push("node_filesystem_files_free", labels(), st.f_ffree as f64);
            c.push(
                "node_filesystem_readonly",
                labels(),
                if ro { 1.0 } else { 0.0 },
            );
        }
        Ok(())
    }

    /// `/proc/sys/fs/file-nr`: allocated and maximum file descriptors.
    fn filefd(&self, c: &mut Collection) -> Result<(), String> {
        let text = self.read("sys/fs/file-nr")?;
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() != 3 {
            return Err(format!("unexpected content {:?}", text.trim()));
        }
        c.push("node_filefd_allocated", vec![], v[0]);
        c.push("node_filefd_maximum", vec![], v[2]);
        Ok(())
    }

    /// `node_uname_info`, from `/proc/sys/kernel` (what `uname(2)` reports); dashboards
    /// list hosts by it.
    fn uname(&self, c: &mut Collection) -> Result<(), String> {
        let read = |f: &str| {
            self.read(&format!("sys/kernel/{f}"))
                .map(|s| s.trim().to_string())
        };
        let labels = vec![
            ("domainname", read("domainname")?),
            ("machine", std::env::consts::ARCH.to_string()),
            ("nodename", read("hostname")?),
            ("release", read("osrelease")?),
            ("sysname", read("ostype")?),
            ("version", read("version")?),
        ];
        c.push("node_uname_info", labels, 1.0);
        Ok(())
    }

    /// The number of processes: numeric entries of the `/proc` root.
    fn processes(&self, c: &mut Collection) -> Result<(), String> {
        let rd = fs::read_dir(&self.proc_root)
            .map_err(|e| format!("{}: {e}", self.proc_root.display()))?;
        let n = rd
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            })
            .count();
        c.push("node_processes_pids", vec![], n as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        w(
            "stat",
            "cpu  10 0 5 100 1 0 0 0 0 0\ncpu0 10 0 5 100 1 0 0 0 0 0\nintr 1234 0 0\nctxt 999\nbtime 1700000000\nprocesses 42\nprocs_running 3\nprocs_blocked 1\n",
        );
        w(
            "meminfo",
            "MemTotal:       16384 kB\nActive(anon):     100 kB\nHugePages_Total:       0\n",
        );
        w("loadavg", "0.52 0.40 0.31 2/345 6789\n");
        w(
            "diskstats",
            "   8       0 sda 100 2 800 50 200 3 1600 70 0 90 120 0 0 0 0\n   8       1 sda1 1 1 1 1 1 1 1 1 0 1 1 0 0 0 0\n   7       0 loop0 1 1 1 1 1 1 1 1 0 1 1\n",
        );
        w(
            "net/dev",
            "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 2000 20 1 0 0 0 0 0 3000 30 0 0 0 0 0 0\n",
        );
        w("sys/fs/file-nr", "1024\t0\t9223372036854775807\n");
        w("sys/kernel/domainname", "(none)\n");
        w("sys/kernel/hostname", "box\n");
        w("sys/kernel/osrelease", "6.1.0\n");
        w("sys/kernel/ostype", "Linux\n");
        w("sys/kernel/version", "#1 SMP\n");
        w(
            "1/mounts",
            "/dev/root / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n",
        );
        fs::create_dir_all(d.path().join("77")).unwrap();
        d
    }

    fn get<'a>(c: &'a Collection, name: &str, labels: &[(&str, &str)]) -> Option<&'a Metric> {
        c.metrics.iter().find(|m| {
            m.name == name
                && labels
                    .iter()
                    .all(|(k, v)| m.labels.iter().any(|(mk, mv)| mk == k && mv == v))
        })
    }

    #[test]
    fn fixtures_map_to_node_exporter_names() {
        let d = fixture();
        let col = HostCollector {
            proc_root: d.path().to_path_buf(),
            ticks_per_second: 100.0,
        };
        let c = col.collect();
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let v = |n: &str, l: &[(&str, &str)]| get(&c, n, l).map(|m| m.value);
        assert_eq!(
            v("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "idle")]),
            Some(1.0)
        );
        assert_eq!(
            v("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "user")]),
            Some(0.1)
        );
        assert_eq!(v("node_boot_time_seconds", &[]), Some(1_700_000_000.0));
        assert_eq!(v("node_procs_running", &[]), Some(3.0));
        assert_eq!(v("node_memory_MemTotal_bytes", &[]), Some(16384.0 * 1024.0));
        assert_eq!(v("node_memory_Active_anon_bytes", &[]), Some(102_400.0));
        assert_eq!(v("node_memory_HugePages_Total", &[]), Some(0.0));
        assert_eq!(v("node_load1", &[]), Some(0.52));
        assert_eq!(
            v("node_disk_read_bytes_total", &[("device", "sda")]),
            Some(800.0 * 512.0)
        );
        assert_eq!(
            v("node_disk_io_time_seconds_total", &[("device", "sda")]),
            Some(0.09)
        );
        assert!(get(&c, "node_disk_read_bytes_total", &[("device", "sda1")]).is_none());
        assert!(get(&c, "node_disk_read_bytes_total", &[("device", "loop0")]).is_none());
        let eth0 = [("device", "eth0")];
        assert_eq!(v("node_network_receive_bytes_total", &eth0), Some(2000.0));
        assert_eq!(v("node_network_receive_errs_total", &eth0), Some(1.0));
        assert_eq!(v("node_network_transmit_packets_total", &eth0), Some(30.0));
        let lo = [("device", "lo")];
        assert!(get(&c, "node_network_receive_bytes_total", &lo).is_none());
        assert_eq!(v("node_filefd_allocated", &[]), Some(1024.0));
        assert_eq!(
            v(
                "node_uname_info",
                &[("nodename", "box"), ("sysname", "Linux")]
            ),
            Some(1.0)
        );
        assert_eq!(v("node_processes_pids", &[]), Some(2.0), "1/ and 77/");
        // `/` is real (statvfs on the machine running the test); `/proc` is excluded.
        assert!(get(&c, "node_filesystem_size_bytes", &[("mountpoint", "/")]).is_some());
        assert!(get(&c, "node_filesystem_size_bytes", &[("mountpoint", "/proc")]).is_none());
    }

    #[test]
    fn missing_sources_are_reported_not_fatal() {
        let d = fixture();
        fs::remove_file(d.path().join("loadavg")).unwrap();
        fs::write(d.path().join("sys/fs/file-nr"), "garbage").unwrap();
        let c = HostCollector::new(d.path()).collect();
        assert_eq!(c.errors.len(), 2, "{:?}", c.errors);
        assert!(c.errors[0].starts_with("loadavg: "));
        assert!(
            c.metrics
                .iter()
                .any(|m| m.name == "node_memory_MemTotal_bytes")
        );
    }

    #[test]
    fn names_and_exclusions_follow_node_exporter() {
        assert_eq!(meminfo_name("Active(anon)"), "Active_anon");
        assert_eq!(meminfo_name("MemTotal"), "MemTotal");
        for d in [
            "sda1",
            "vda2",
            "xvda1",
            "nvme0n1p1",
            "mmcblk0p2",
            "loop3",
            "ram0",
        ] {
            assert!(excluded_disk(d), "{d}");
        }
        for d in ["sda", "vda", "nvme0n1", "mmcblk0", "dm-0", "md0", "zram0"] {
            assert!(!excluded_disk(d), "{d}");
        }
        for m in [
            "/proc",
            "/proc/sys",
            "/sys",
            "/dev",
            "/dev/shm",
            "/run/credentials/x",
        ] {
            assert!(excluded_mount(m), "{m}");
        }
        for m in ["/", "/home", "/devices", "/run", "/var/lib/docker"] {
            assert!(!excluded_mount(m), "{m}");
        }
        assert_eq!(unescape_mount("/mnt/with\\040space"), "/mnt/with space");
    }
}
