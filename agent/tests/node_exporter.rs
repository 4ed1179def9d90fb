//! The agent's host metrics against the real node_exporter on the same machine: every
//! metric the agent exports exists in node_exporter's output with the same label names,
//! the same disks and network devices are reported (and at least its file systems), and
//! values that do not move (memory size, boot time, CPUs, root file system size) agree.
//!
//! Needs `prometheus-node-exporter` (Debian's package; `scripts/test` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::hostmetrics::HostCollector;

/// node_exporter on a free loopback port, killed on drop.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> String {
    for b in ["prometheus-node-exporter", "node_exporter"] {
        if Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return b.to_string();
        }
    }
    panic!("node_exporter not found: install prometheus-node-exporter (scripts/test does)");
}

fn start() -> NodeExporter {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(binary())
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.processes")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node_exporter");
    NodeExporter { child, port }
}

fn get_metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, body) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

/// `name -> [(labels, value)]` from the text exposition format.
type Parsed = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

fn parse(text: &str) -> Parsed {
    let mut out: Parsed = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        // Label values in these metrics hold no `",` sequence.
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label pair");
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.entry(name.to_string())
            .or_default()
            .push((map, value.parse().unwrap_or(f64::NAN)));
    }
    out
}

#[test]
fn host_metrics_match_node_exporter() {
    let ne = start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Some(t) = get_metrics(ne.port) {
            break t;
        }
        assert!(Instant::now() < deadline, "node_exporter did not answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    let theirs = parse(&text);
    let ours = HostCollector::new("/proc").collect();
    assert!(ours.errors.is_empty(), "{:?}", ours.errors);

    let mut missing = BTreeSet::new();
    for m in &ours.metrics {
        let keys: BTreeSet<&str> = m.labels.iter().map(|(k, _)| *k).collect();
        let found = theirs.get(&m.name).is_some_and(|v| {
            v.iter()
                .any(|(l, _)| l.keys().map(String::as_str).collect::<BTreeSet<_>>() == keys)
        });
        if !found {
            missing.insert(format!("{}{:?}", m.name, keys));
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by node_exporter: {missing:?}"
    );

    let label_set = |name: &str, key: &str| -> (BTreeSet<String>, BTreeSet<String>) {
        let a = ours
            .metrics
            .iter()
            .filter(|m| m.name == name)
            .filter_map(|m| {
                m.labels
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        let b = theirs
            .get(name)
            .map(|v| v.iter().filter_map(|(l, _)| l.get(key).cloned()).collect())
            .unwrap_or_default();
        (a, b)
    };
    for (name, key) in [
        ("node_disk_read_bytes_total", "device"),
        ("node_network_receive_bytes_total", "device"),
        ("node_cpu_seconds_total", "cpu"),
    ] {
        let (a, b) = label_set(name, key);
        assert_eq!(a, b, "{name} {key}: ours vs node_exporter's");
    }
    // Every file system node_exporter reports is reported. (node_exporter 1.5 also
    // leaves out some small read-only tmpfs mounts that statvfs answers for.)
    let (a, b) = label_set("node_filesystem_size_bytes", "mountpoint");
    assert!(
        b.is_subset(&a),
        "file systems: ours {a:?}, node_exporter's {b:?}"
    );

    let one = |name: &str| -> (f64, f64) {
        let a = ours
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
            .unwrap_or(f64::NAN);
        let b = theirs
            .get(name)
            .and_then(|v| v.first())
            .map(|x| x.1)
            .unwrap_or(f64::NAN);
        (a, b)
    };
    let (a, b) = one("node_memory_MemTotal_bytes");
    assert_eq!(a, b, "MemTotal");
    let (a, b) = one("node_boot_time_seconds");
    assert!((a - b).abs() <= 1.0, "boot time {a} vs {b}");
    let (a, b) = one("node_filefd_maximum");
    assert_eq!(a, b, "filefd maximum");
    let root = |v: &[(BTreeMap<String, String>, f64)]| {
        v.iter()
            .find(|(l, _)| l.get("mountpoint").map(String::as_str) == Some("/"))
            .map(|x| x.1)
    };
    let ours_root = ours
        .metrics
        .iter()
        .find(|m| {
            m.name == "node_filesystem_size_bytes"
                && m.labels.iter().any(|(k, v)| *k == "mountpoint" && v == "/")
        })
        .map(|m| m.value);
    let theirs_root = theirs
        .get("node_filesystem_size_bytes")
        .and_then(|v| root(v));
    assert_eq!(ours_root, theirs_root, "size of /");
}
