//! Host facts: what the agent tells the server about its machine, sent when they change.
//!
//! Facts are read from `/proc`, `/sys` and `/etc` roots ([`Roots`]) that tests point at
//! fixtures, plus `statvfs` for file system sizes and `getifaddrs(3)` for addresses (both
//! IPv4 and IPv6, so there is one source of addresses rather than `/proc/net/if_inet6`
//! plus something else for IPv4; it is not rooted, so fixtures cannot stand in for it).
//!
//! The agent compares facts with `==` to decide whether to send them, so nothing here
//! moves on an idle machine: sizes, not free space; the boot time, not the uptime (see
//! [`Facts::uptime_seconds`]). File systems whose reported size follows their usage
//! (ZFS datasets, some FUSE file systems) do change as data is written.
//!
//! A source that cannot be read is named in the errors [`collect`] returns; the others
//! are still collected. Something that is simply absent (no machine id, a disk without
//! a model) is empty rather than an error.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hostmetrics::{EXCLUDED_FSTYPES, excluded_mount, unescape_mount};

/// What the agent reports about its host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    pub hostname: String,
    /// `/etc/machine-id` (else `/var/lib/dbus/machine-id`), trimmed; empty if neither exists.
    pub machine_id: String,
    /// Addresses as `addr/prefix`, sorted; loopback and IPv6 link-local ones left out.
    pub ips: Vec<String>,
    /// `model name` from `/proc/cpuinfo` (else `Hardware`, `cpu model`, or empty).
    pub cpu_model: String,
    /// Logical CPUs: `processor` entries in `/proc/cpuinfo`.
    pub cpu_count: u32,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    /// Block devices with a medium, sorted by name; loop and RAM disks left out.
    pub disks: Vec<Disk>,
    /// Mounted file systems, sorted by mount point; those node_exporter leaves out left out.
    pub filesystems: Vec<Filesystem>,
    pub os: Os,
    /// The kernel release, as `uname -r` prints it.
    pub kernel: String,
    pub arch: String,
    /// Unix seconds, `btime` from `/proc/stat`.
    pub boot_time: i64,
    pub agent_version: String,
}

/// A whole block device from `/sys/block`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub rotational: bool,
    /// `device/model`, trimmed; empty if the device has none (virtio disks).
    pub model: String,
}

/// A mounted file system and its size.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filesystem {
    pub mountpoint: String,
    pub device: String,
    pub fstype: String,
    pub size_bytes: u64,
}

/// The operating system, from `os-release(5)`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Os {
    pub id: String,
    pub version_id: String,
    pub pretty_name: String,
}

/// Where the facts are read from. Fallbacks outside `/etc` (`/var/lib/dbus/machine-id`,
/// `/usr/lib/os-release`) are looked up under `etc_root`'s parent, so a fixture tree
/// mirrors `/`.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub etc_root: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots {
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            etc_root: "/etc".into(),
        }
    }
}

impl Facts {
    /// Seconds since boot at `now_unix` (never negative).
    pub fn uptime_seconds(&self, now_unix: i64) -> i64 {
        now_unix.saturating_sub(self.boot_time).max(0)
    }
}

/// Collects the host's facts. The second value has `source: error` for each source that
/// could not be read.
pub fn collect(roots: &Roots, hostname: &str, agent_version: &str) -> (Facts, Vec<String>) {
    let mut errors = Vec::new();
    let e = &mut errors;
    let (proc_root, etc_root) = (&roots.proc_root, &roots.etc_root);
    let base = etc_root.parent().unwrap_or(etc_root);
    let proc = |rel: &str| read(&proc_root.join(rel));
    let cpuinfo = proc("cpuinfo").map(|t| parse_cpuinfo(&t));
    let (cpu_model, cpu_count) = take(e, "cpuinfo", cpuinfo);
    let meminfo = proc("meminfo").and_then(|t| parse_meminfo(&t));
    let (memory_bytes, swap_bytes) = take(e, "meminfo", meminfo);
    let machine_id = [
        etc_root.join("machine-id"),
        base.join("var/lib/dbus/machine-id"),
    ];
    let os_release = [etc_root.join("os-release"), base.join("usr/lib/os-release")];
    let facts = Facts {
        hostname: hostname.to_string(),
        machine_id: take(e, "machine-id", read_first(&machine_id))
            .unwrap_or_default()
            .trim()
            .to_string(),
        ips: take(e, "ips", addresses()),
        cpu_model,
        cpu_count: match cpu_count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        },
        memory_bytes,
        swap_bytes,
        disks: disks(&roots.sys_root, e),
        filesystems: take(e, "filesystems", filesystems(proc_root)),
        os: take(
            e,
            "os-release",
            read_first(&os_release).and_then(|t| Ok(parse_os_release(&t.ok_or("not found")?))),
        ),
        kernel: take(e, "kernel", proc("sys/kernel/osrelease"))
            .trim()
            .to_string(),
        arch: std::env::consts::ARCH.to_string(),
        boot_time: take(e, "stat", proc("stat").and_then(|t| parse_btime(&t))),
        agent_version: agent_version.to_string(),
    };
    (facts, errors)
}

/// `r`'s value, or the default with `source: error` added to `errors`.
fn take<T: Default>(errors: &mut Vec<String>, source: &str, r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| {
        errors.push(format!("{source}: {e}"));
        T::default()
    })
}

fn read(p: &Path) -> Result<String, String> {
    fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// The first of `paths` that exists; `None` if none does, an error if one exists but
/// cannot be read and no later one can.
fn read_first(paths: &[PathBuf]) -> Result<Option<String>, String> {
    let mut errs = Vec::new();
    for p in paths {
        match fs::read_to_string(p) {
            Ok(t) => return Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errs.push(format!("{}: {e}", p.display())),
        }
    }
    if errs.is_empty() {
        Ok(None)
    } else {
        Err(errs.join("; "))
    }
}

/// The CPU model and the number of `processor` entries.
fn parse_cpuinfo(text: &str) -> (String, u32) {
    const MODEL_KEYS: [&str; 3] = ["model name", "Hardware", "cpu model"];
    let mut models: [Option<&str>; 3] = [None; 3];
    let mut count = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k == "processor" {
            count += 1;
        } else if let Some(i) = MODEL_KEYS.iter().position(|m| *m == k) {
            models[i].get_or_insert(v.trim());
        }
    }
    let model = models.into_iter().flatten().next().unwrap_or_default();
    (model.to_string(), count)
}

/// `MemTotal` and `SwapTotal` in bytes; a missing `SwapTotal` is 0.
fn parse_meminfo(text: &str) -> Result<(u64, u64), String> {
    let (mut mem, mut swap) = (None, 0);
    for line in text.lines() {
        let Some((k, rest)) = line.split_once(':') else {
            continue;
        };
        if k != "MemTotal" && k != "SwapTotal" {
            continue;
        }
        let mut f = rest.split_whitespace();
        let n: u64 = f
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| format!("{k} {:?}: {e}", rest.trim()))?;
        let bytes = match f.next() {
            Some("kB") => n.saturating_mul(1024),
            None => n,
            Some(u) => return Err(format!("{k}: unknown unit {u:?}")),
        };
        if k == "MemTotal" {
            mem = Some(bytes);
        } else {
            swap = bytes;
        }
    }
    Ok((mem.ok_or("no MemTotal")?, swap))
}

/// `btime` from `/proc/stat`.
fn parse_btime(text: &str) -> Result<i64, String> {
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or("no btime")?
        .trim();
    v.parse().map_err(|e| format!("btime {v:?}: {e}"))
}

/// `ID`, `VERSION_ID` and `PRETTY_NAME`, with os-release(5)'s defaults for missing ones.
fn parse_os_release(text: &str) -> Os {
    let mut os = Os {
        id: "linux".into(),
        version_id: String::new(),
        pretty_name: "Linux".into(),
    };
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let slot = match k {
            "ID" => &mut os.id,
            "VERSION_ID" => &mut os.version_id,
            "PRETTY_NAME" => &mut os.pretty_name,
            _ => continue,
        };
        *slot = unquote(v.trim());
    }
    os
}

/// A shell-style value: `"…"` with backslash escapes, `'…'` verbatim, or bare.
fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            out.extend(if c == '\\' { chars.next() } else { Some(c) });
        }
        out
    } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        inner.to_string()
    } else {
        v.to_string()
    }
}

/// Whole block devices in `sys_root/block`. Loop and RAM disks are left out, and so are
/// devices of size 0 (an empty CD drive, an unconnected `nbd`). Errors, including a
/// device whose size cannot be read (it is left out), go to `errors` as `disks: …`.
fn disks(sys_root: &Path, errors: &mut Vec<String>) -> Vec<Disk> {
    let dir = sys_root.join("block");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(format!("disks: {}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for name in rd.filter_map(|d| d.ok()?.file_name().into_string().ok()) {
        if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let dev = dir.join(&name);
        let size = read(&dev.join("size")).and_then(|t| {
            (t.trim().parse::<u64>()).map_err(|e| format!("{}/size: {e}", dev.display()))
        });
        let size_bytes = match size {
            Ok(0) => continue,
            Ok(n) => n.saturating_mul(512),
            Err(e) => {
                errors.push(format!("disks: {e}"));
                continue;
            }
        };
        let read_opt = |rel: &str| fs::read_to_string(dev.join(rel)).unwrap_or_default();
        out.push(Disk {
            rotational: read_opt("queue/rotational").trim() == "1",
            model: read_opt("device/model").trim().to_string(),
            name,
            size_bytes,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Mounted file systems from `proc_root/mounts` (else `self/mounts`), left out as
/// node_exporter's filesystem collector leaves them out. Where several are mounted on one
/// point the last (the visible one) counts. Mount points are looked up as given, so
/// fixtures name real paths; one whose `statvfs` fails is skipped, as in `hostmetrics`.
fn filesystems(proc_root: &Path) -> Result<Vec<Filesystem>, String> {
    let text = read_first(&[proc_root.join("mounts"), proc_root.join("self/mounts")])?
        .ok_or("no mounts file")?;
    let mut by_mountpoint = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [device, mp, fstype, ..] = f[..] {
            by_mountpoint.insert(unescape_mount(mp), (unescape_mount(device), fstype));
        }
    }
    Ok(by_mountpoint
        .into_iter()
        .filter(|(mp, (_, fstype))| !excluded_mount(mp) && !EXCLUDED_FSTYPES.contains(fstype))
        .filter_map(|(mountpoint, (device, fstype))| {
            let st = rustix::fs::statvfs(Path::new(&mountpoint)).ok()?;
            Some(Filesystem {
                size_bytes: st.f_blocks.saturating_mul(st.f_frsize),
                mountpoint,
                device,
                fstype: fstype.to_string(),
            })
        })
        .collect())
}

/// `addr/prefix` if `ip` is worth reporting: not loopback, not IPv6 link-local.
fn format_ip(ip: IpAddr, prefix: u32) -> Option<String> {
    let skip = ip.is_loopback() || matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
    (!skip).then(|| format!("{ip}/{prefix}"))
}

/// The address in `sa` and the prefix length of `mask` (the full length without one).
///
/// # Safety
/// `sa` and `mask` are null or point to valid socket addresses of their family's size.
unsafe fn ip_and_prefix(
    sa: *const libc::sockaddr,
    mask: *const libc::sockaddr,
) -> Option<(IpAddr, u32)> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` is non-null and valid; `sa_family` is in every sockaddr's common prefix.
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in; read unaligned to assume nothing.
            let a = unsafe { sa.cast::<libc::sockaddr_in>().read_unaligned() };
            let prefix = if mask.is_null() {
                32
            } else {
                // SAFETY: the mask of an AF_INET address is a sockaddr_in too.
                unsafe { mask.cast::<libc::sockaddr_in>().read_unaligned() }
                    .sin_addr
                    .s_addr
                    .count_ones()
            };
            Some((
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                prefix,
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6; read unaligned to assume nothing.
            let a = unsafe { sa.cast::<libc::sockaddr_in6>().read_unaligned() };
            let prefix = if mask.is_null() {
                128
            } else {
                // SAFETY: the mask of an AF_INET6 address is a sockaddr_in6 too.
                let m = unsafe { mask.cast::<libc::sockaddr_in6>().read_unaligned() };
                m.sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum()
            };
            Some((Ipv6Addr::from(a.sin6_addr.s6_addr).into(), prefix))
        }
        _ => None,
    }
}

/// The list `getifaddrs` returned, freed when dropped (also on panic).
struct IfAddrs(*mut libc::ifaddrs);

impl Drop for IfAddrs {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful getifaddrs and is freed only here;
        // nothing borrowed from the list outlives `addresses`, which owns this guard.
        unsafe { libc::freeifaddrs(self.0) }
    }
}

/// Addresses of the host's interfaces, from `getifaddrs(3)`, sorted and deduplicated.
fn addresses() -> Result<Vec<String>, String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs only writes the list's head through the pointer it is given.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(format!("getifaddrs: {}", io::Error::last_os_error()));
    }
    let list = IfAddrs(head);
    let mut out = Vec::new();
    let mut cur = list.0.cast_const();
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list, alive until `list` is dropped.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0 {
            continue;
        }
        // SAFETY: getifaddrs fills ifa_addr and ifa_netmask with null or valid addresses.
        if let Some((ip, prefix)) = unsafe { ip_and_prefix(ifa.ifa_addr, ifa.ifa_netmask) } {
            out.extend(format_ip(ip, prefix));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tempdir with `files` (path, content) and roots under it.
    fn fixture(files: &[(&str, &str)]) -> (tempfile::TempDir, Roots) {
        let d = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = d.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        let roots = Roots {
            proc_root: d.path().join("proc"),
            sys_root: d.path().join("sys"),
            etc_root: d.path().join("etc"),
        };
        (d, roots)
    }

    fn disk(name: &str, size_bytes: u64, rotational: bool, model: &str) -> Disk {
        let (name, model) = (name.to_string(), model.to_string());
        Disk {
            name,
            size_bytes,
            rotational,
            model,
        }
    }

    #[test]
    fn fixtures_are_parsed() {
        let (_d, roots) = fixture(&[
            (
                "proc/cpuinfo",
                "processor\t: 0\nmodel name\t: Example CPU\n\nprocessor\t: 1\nmodel name\t: Other\n",
            ),
            ("proc/meminfo", "MemTotal:  16384 kB\nSwapTotal:  0 kB\n"),
            ("proc/stat", "cpu  1 2 3\nbtime 1700000000\n"),
            ("proc/sys/kernel/osrelease", "6.1.0-test\n"),
            (
                "proc/mounts",
                "/dev/root / ext4 rw 0 0\nproc /proc proc rw 0 0\n/dev/x /no\\040such ext4 rw 0 0\n",
            ),
            ("var/lib/dbus/machine-id", " abc123\n"),
            (
                "usr/lib/os-release",
                "# c\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian \\\"12\\\"\"\n",
            ),
            ("sys/block/sda/size", "2048\n"),
            ("sys/block/sda/queue/rotational", "1\n"),
            ("sys/block/sda/device/model", "Disk Model    \n"),
            ("sys/block/nvme0n1/size", "100\n"),
            ("sys/block/nvme0n1/queue/rotational", "0\n"),
            ("sys/block/dm-0/size", "10\n"),
            ("sys/block/loop0/size", "8\n"),
            ("sys/block/zram0/size", "8\n"),
            ("sys/block/sr0/size", "0\n"),
        ]);
        let (f, errors) = collect(&roots, "box", "1.2.3");
        assert!(errors.iter().all(|e| e.starts_with("ips: ")), "{errors:?}");
        assert_eq!(
            (f.hostname.as_str(), f.agent_version.as_str()),
            ("box", "1.2.3")
        );
        assert_eq!(f.machine_id, "abc123");
        assert_eq!((f.cpu_model.as_str(), f.cpu_count), ("Example CPU", 2));
        assert_eq!((f.memory_bytes, f.swap_bytes), (16384 * 1024, 0));
        assert_eq!(f.boot_time, 1_700_000_000);
        assert_eq!(
            (f.uptime_seconds(1_700_000_100), f.uptime_seconds(0)),
            (100, 0)
        );
        assert_eq!(f.kernel, "6.1.0-test");
        let (id, version_id) = ("debian".into(), "12".into());
        let pretty_name = "Debian \"12\"".into();
        assert_eq!(
            f.os,
            Os {
                id,
                version_id,
                pretty_name
            }
        );
        let want = [
            disk("dm-0", 5120, false, ""),
            disk("nvme0n1", 51200, false, ""),
            disk("sda", 1024 * 1024, true, "Disk Model"),
        ];
        assert_eq!(f.disks, want);
        // `/proc` is excluded and the escaped mount point does not exist.
        let fs: Vec<_> = f
            .filesystems
            .iter()
            .map(|f| (&*f.mountpoint, &*f.fstype))
            .collect();
        assert_eq!(fs, [("/", "ext4")]);
        assert!(f.filesystems[0].size_bytes > 0);
    }

    #[test]
    fn missing_and_malformed_sources_are_named() {
        let (_d, roots) = fixture(&[
            ("proc/cpuinfo", "garbage without colons\n:::\n"),
            ("proc/meminfo", "MemTotal: lots kB\n"),
            ("proc/stat", "btime soon\n"),
            ("etc/os-release", "=\n\"\nID=\"\n"),
            ("sys/block/vda/size", "many\n"),
            ("sys/block/vdb/size", "16\n"),
        ]);
        let (f, errors) = collect(&roots, "box", "v");
        let named = |source: &str| errors.iter().any(|e| e.starts_with(&format!("{source}: ")));
        for source in ["meminfo", "stat", "kernel", "filesystems", "disks"] {
            assert!(named(source), "{source} not in {errors:?}");
        }
        assert!(errors.iter().any(|e| e.contains("vda/size")), "{errors:?}");
        assert!(!named("machine-id") && !named("os-release") && !named("cpuinfo"));
        assert_eq!((f.machine_id.as_str(), f.cpu_model.as_str()), ("", ""));
        assert!(f.cpu_count >= 1);
        assert_eq!((f.memory_bytes, f.boot_time), (0, 0));
        assert_eq!(f.disks, [disk("vdb", 8192, false, "")]);
        assert_eq!((&*f.os.id, &*f.os.pretty_name), ("\"", "Linux"));

        let unit = parse_meminfo("MemTotal: 1 MB\n");
        assert_eq!(unit, Err("MemTotal: unknown unit \"MB\"".into()));
        assert!(parse_meminfo("SwapTotal: 1 kB\n").is_err());
        let arm = parse_cpuinfo("Hardware\t: BCM2835\nprocessor : 0\n");
        assert_eq!(arm, ("BCM2835".into(), 1));
        assert_eq!(unquote("'a b'"), "a b");

        let (_empty, roots) = fixture(&[]);
        let (_, errors) = collect(&roots, "box", "v");
        assert!(
            errors.iter().any(|e| e.starts_with("os-release: ")),
            "{errors:?}"
        );
    }

    #[test]
    fn addresses_are_formatted_and_filtered() {
        let f = |ip: &str, prefix| format_ip(ip.parse().unwrap(), prefix);
        assert_eq!(f("192.0.2.2", 24).as_deref(), Some("192.0.2.2/24"));
        assert_eq!(f("fd00::2", 64).as_deref(), Some("fd00::2/64"));
        assert_eq!(
            [f("fe80::1", 64), f("::1", 128), f("127.0.0.1", 8)],
            [None, None, None]
        );
    }

    #[test]
    fn real_machine() {
        let (a, errors) = collect(&Roots::default(), "this-host", "0.0.0");
        eprintln!("errors: {errors:?}\n{a:#?}");
        assert_eq!(a.hostname, "this-host");
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        assert!(
            a.cpu_count >= parallelism,
            "{} < {parallelism}",
            a.cpu_count
        );
        assert!(a.memory_bytes > 0 && a.boot_time > 0);
        let uname = std::process::Command::new("uname")
            .arg("-r")
            .output()
            .unwrap();
        assert_eq!(a.kernel, String::from_utf8_lossy(&uname.stdout).trim());
        assert!(a.ips.iter().all(|ip| ip.contains('/')));
        let (b, _) = collect(&Roots::default(), "this-host", "0.0.0");
        assert_eq!(a, b);
    }
}
