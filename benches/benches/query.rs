//! PromQL query latency on the workload of the peer comparison, without HTTP.
//!
//! Builds a database of `MINOS_BENCH_QUERY_SERIES` series (default 10,000) ×
//! `MINOS_BENCH_QUERY_POINTS` points (default 1,000, one every 15 s) of the
//! node-exporter-like workload, flushes and compacts it into blocks, then times the
//! queries of `benches/peers/run` through the engine: range queries over the last hour at
//! a 15 s step, the rate sum over the whole span (at most a day) in 240 steps, and an
//! instant selector. Set `MINOS_BENCH_QUERY_HEAD=1` to leave the data
//! in the in-memory head instead.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use minos_benches::workload::{INTERVAL_MS, generators};
use tsdb::{Db, Options, Sample};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A database holding the workload; returns it with the time of the last step.
fn build(dir: &std::path::Path, series: usize, points: usize) -> (Db, i64) {
    let opts = Options {
        background: false,
        retention: Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let db = Db::open(dir, opts).expect("open");
    let mut gens = generators(series, 42);
    let labels: Vec<Vec<(String, String)>> = gens.iter().map(|g| g.labels.clone()).collect();
    let pairs: Vec<Vec<(&str, &str)>> = labels
        .iter()
        .map(|l| l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect())
        .collect();
    let t0 = tsdb::now_ms() - points as i64 * INTERVAL_MS;
    const PER_BATCH: usize = 10;
    let mut step = 0;
    while step < points {
        let n = PER_BATCH.min(points - step);
        let samples: Vec<Vec<Sample>> = gens
            .iter_mut()
            .map(|g| {
                (0..n)
                    .map(|k| {
                        let (t, v) = g.next(t0, (step + k) as i64);
                        Sample { t, v }
                    })
                    .collect()
            })
            .collect();
        db.append(
            pairs
                .iter()
                .zip(samples.iter())
                .map(|(p, s)| (p.as_slice(), s.as_slice())),
        )
        .expect("append");
        step += n;
    }
    if std::env::var_os("MINOS_BENCH_QUERY_HEAD").is_none() {
        db.force_merge().expect("merge");
    }
    (db, t0 + points as i64 * INTERVAL_MS)
}

fn queries(c: &mut Criterion) {
    let series = env_usize("MINOS_BENCH_QUERY_SERIES", 10_000);
    let points = env_usize("MINOS_BENCH_QUERY_POINTS", 1_000);
    let dir = std::env::var_os("MINOS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(dir).expect("tempdir");
    let (db, data_end) = build(tmp.path(), series, points);
    let end = data_end / 60_000 * 60_000;
    let engine = promql::Engine::new(promql::EngineOptions::default());
    let range = [
        (
            "cpu_rate_sum_1h",
            "sum by (instance) (rate(node_cpu_seconds_total[5m]))",
        ),
        (
            "topk_rate_1h",
            "topk(5, rate(node_network_receive_bytes_total[5m]))",
        ),
        (
            "count_regex_mode_1h",
            r#"count(node_cpu_seconds_total{mode=~"idle|user|sys.*"})"#,
        ),
        (
            "count_regex_all_1h",
            r#"count({job="node", instance=~"host-0.+"})"#,
        ),
    ];
    let mut g = c.benchmark_group(format!("query_{series}x{points}"));
    g.sample_size(10);
    for (name, q) in range {
        g.bench_function(name, |b| {
            b.iter(|| {
                engine
                    .range(&db, q, end - 3_600_000, end, 15_000)
                    .expect("query")
            })
        });
    }
    // The whole span (at most a day) in 240 steps, as the comparison's long query.
    let span_ms = (points as i64 * INTERVAL_MS).min(86_400_000);
    let step = (span_ms / 240 / 15_000).max(1) * 15_000;
    let long = step * 240;
    if long > 3_600_000 {
        g.bench_function("cpu_rate_sum_long", |b| {
            b.iter(|| {
                engine
                    .range(&db, range[0].1, end - long, end, step)
                    .expect("query")
            })
        });
    }
    g.bench_function("instant_selector", |b| {
        b.iter(|| {
            engine
                .instant(&db, r#"node_cpu_seconds_total{mode="idle"}"#, end)
                .expect("query")
        })
    });
    g.finish();
    db.close().expect("close");
}

criterion_group!(benches, queries);
criterion_main!(benches);
