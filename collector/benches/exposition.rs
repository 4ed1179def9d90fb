//! Text exposition parsing throughput, in bytes/s and in lines/s.
//!
//! The page is generated once from a fixed seed: about 10,000 lines in the style of
//! node_exporter and instrumented applications (one HELP and one TYPE line per family,
//! 3–6 labels per sample, histogram buckets, some escaped label values, integer, decimal
//! and exponent values, a few timestamps). `lines_only` splits the page into lines with
//! memchr and nothing else: the ceiling for a line-based parser.
//!
//! `long_value` parses one line whose label value is 1 MiB, to show that long tokens cost
//! memchr speed and nothing quadratic.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use collector::exposition::{Entry, Format, Parser};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SEED: u64 = 0x6578_706f_7369_7469;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A page of about `target_lines` lines; returns it and its line count.
fn page(target_lines: usize) -> (String, usize) {
    let mut rng = SEED;
    let mut out = String::new();
    let mut lines = 0;
    let names = [
        "node_cpu_seconds_total",
        "node_network_receive_bytes_total",
        "node_filesystem_avail_bytes",
        "http_server_requests_seconds",
        "grpc_server_handled_total",
        "process_resident_memory_bytes",
        "job:http_requests:rate5m",
        "kube_pod_container_status_restarts_total",
    ];
    let label_names = [
        "instance",
        "job",
        "method",
        "code",
        "handler",
        "namespace",
        "pod",
        "container",
        "device",
        "mode",
    ];
    let mut family = 0;
    while lines < target_lines {
        let base = names[family % names.len()];
        let histogram = family % 5 == 3;
        let name = format!("{base}_{family}");
        let kind = if histogram {
            "histogram"
        } else if base.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP {name} Help for {name}, with a \\\\ backslash and a \\n newline."
        );
        let _ = writeln!(out, "# TYPE {name} {kind}");
        lines += 2;
        let series = 5 + (splitmix64(&mut rng) % 40) as usize;
        for s in 0..series {
            let n_labels = 3 + (splitmix64(&mut rng) % 4) as usize;
            let mut labels = String::new();
            for (k, key) in label_names.iter().take(n_labels).enumerate() {
                let r = splitmix64(&mut rng);
                let value = match r % 10 {
                    0 => format!("path \\\"{s}\\\" at C:\\\\tmp\\\\{k}"),
                    1 => format!("10.0.{}.{}:9100", r % 256, (r >> 8) % 256),
                    2..=4 => format!("{key}-{}", r % 1000),
                    _ => format!("{}", r % 64),
                };
                if k > 0 {
                    labels.push(',');
                }
                let _ = write!(labels, "{key}=\"{value}\"");
            }
            let r = splitmix64(&mut rng);
            let value = match r % 4 {
                0 => format!("{}", r % 100_000),
                1 => format!("{:.2}", (r % 10_000_000) as f64 / 100.0),
                2 => format!("{:e}", (r % 1_000_000_007) as f64 * 1.37),
                _ => format!("{}", (r % 1_000_000) as f64 / 7.0),
            };
            let ts = if s % 10 == 0 { " 1700000000000" } else { "" };
            if histogram {
                for le in ["0.005", "0.01", "0.1", "1", "10", "+Inf"] {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels},le=\"{le}\"}} {}{ts}",
                        r % 5000
                    );
                    lines += 1;
                }
                let _ = writeln!(out, "{name}_sum{{{labels}}} {value}{ts}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {}{ts}", r % 5000);
                lines += 2;
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}{ts}");
                lines += 1;
            }
        }
        family += 1;
    }
    (out, lines)
}

/// Parses with the lending API, touching every label; returns a checksum.
fn parse_lending(text: &[u8]) -> (usize, f64) {
    let mut p = Parser::with_format(text, Format::Prometheus);
    let mut n = 0;
    let mut sum = 0.0;
    while let Some(r) = p.next_entry() {
        match r {
            Ok(Entry::Sample(s)) => {
                n += s.name.len();
                for (k, v) in s.labels.iter() {
                    n += k.len() + v.len();
                }
                sum += s.value;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    (n, sum)
}

/// Parses with the Iterator API (a label vector allocated per sample).
fn parse_owned(text: &[u8]) -> (usize, f64) {
    let mut n = 0;
    let mut sum = 0.0;
    for r in Parser::with_format(text, Format::Prometheus) {
        if let Ok(Entry::Sample(s)) = r {
            n += s.labels.len();
            sum += s.value;
        }
    }
    (n, sum)
}

fn lines_only(text: &[u8]) -> usize {
    let mut n = 0;
    let mut pos = 0;
    while let Some(k) = memchr::memchr(b'\n', &text[pos..]) {
        n += 1;
        pos += k + 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    let (text, lines) = page(10_000);
    let bytes = text.as_bytes();
    let (_, errors) = collector::exposition::parse_all(&text);
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(3)]);
    eprintln!(
        "page: {lines} lines, {} bytes, {:.1} bytes/line",
        bytes.len(),
        bytes.len() as f64 / lines as f64
    );

    let mut g = c.benchmark_group("exposition_bytes");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("next_entry", |b| b.iter(|| parse_lending(black_box(bytes))));
    g.bench_function("iterator", |b| b.iter(|| parse_owned(black_box(bytes))));
    g.bench_function("lines_only", |b| b.iter(|| lines_only(black_box(bytes))));
    g.finish();

    let mut g = c.benchmark_group("exposition_lines");
    g.throughput(Throughput::Elements(lines as u64));
    g.bench_function("next_entry", |b| b.iter(|| parse_lending(black_box(bytes))));
    g.finish();

    let long = format!("m{{a=\"{}\",b=\"x\"}} 1\n", "v".repeat(1 << 20));
    let mut g = c.benchmark_group("exposition_long_value");
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("1MiB", |b| {
        b.iter(|| parse_lending(black_box(long.as_bytes())))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
