//! The exposition parser against a real exporter: node_exporter's whole /metrics page
//! parses without a single rejected line, and every non-comment line is a sample.
//!
//! Needs `prometheus-node-exporter` (Debian's package; `scripts/test` installs it). Without
//! it the test prints a note and passes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector::exposition::{Entry, Format, Parser};

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

fn binary() -> Option<&'static str> {
    ["prometheus-node-exporter", "node_exporter"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

fn start(binary: &str) -> NodeExporter {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // Off by default; they add a few hundred samples (per-CPU interrupt counters).
        .arg("--collector.interrupts")
        .arg("--collector.processes")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node_exporter");
    NodeExporter { child, port }
}

/// The page and its Content-Type, once node_exporter answers.
fn get_metrics(port: u16) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: no chunked encoding, and the server closes when done.
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Some((body.to_string(), content_type))
}

#[test]
fn node_exporter_page_parses_cleanly() {
    let Some(binary) = binary() else {
        eprintln!(
            "note: node_exporter not installed (apt-get install prometheus-node-exporter); skipped"
        );
        return;
    };
    let ne = start(binary);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (page, content_type) = loop {
        if let Some(r) = get_metrics(ne.port) {
            break r;
        }
        assert!(Instant::now() < deadline, "node_exporter did not answer");
        std::thread::sleep(Duration::from_millis(100));
    };

    let format = Format::from_content_type(&content_type);
    let mut parser = Parser::with_format(&page, format);
    let (mut samples, mut helps, mut types, mut labels) = (0, 0, 0, 0);
    let mut errors = Vec::new();
    while let Some(r) = parser.next_entry() {
        match r {
            Ok(Entry::Sample(s)) => {
                samples += 1;
                labels += s.labels.len();
                assert!(!s.name.is_empty());
            }
            Ok(Entry::Help { .. }) => helps += 1,
            Ok(Entry::Type { .. }) => types += 1,
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(errors.is_empty(), "{content_type}: {errors:#?}");
    let sample_lines = page
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    assert_eq!(samples, sample_lines);
    assert!(samples > 500, "only {samples} samples");
    assert!(
        types > 50 && helps > 50,
        "{types} TYPE and {helps} HELP lines"
    );
    assert!(labels > 300, "{labels} labels on {samples} samples");
    eprintln!(
        "node_exporter: {} bytes, {samples} samples, {types} families, {content_type}",
        page.len()
    );
}
