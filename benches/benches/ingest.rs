//! Append throughput into the head, with the write-ahead log, on the realistic workload.
//!
//! Each iteration appends one batch (a remote_write-sized request: 1,000 series × 10
//! samples) to a database in a temporary directory, as the HTTP handler does after
//! decoding. Reported in samples per second.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use minos_benches::workload::{INTERVAL_MS, generators};
use tsdb::{Db, Options, Sample};

const SERIES: usize = 1000;
const PER_SERIES: usize = 10;

fn append(c: &mut Criterion) {
    let dir = std::env::var_os("MINOS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(dir).expect("tempdir");
    let opts = Options {
        background: false,
        retention: Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let db = Db::open(tmp.path(), opts).expect("open");
    let mut gens = generators(SERIES, 42);
    let labels: Vec<Vec<(String, String)>> = gens.iter().map(|g| g.labels.clone()).collect();
    let t0 = tsdb::now_ms() - 30 * 86_400_000;
    let mut step = 0i64;
    let mut g = c.benchmark_group("head_append");
    g.throughput(Throughput::Elements((SERIES * PER_SERIES) as u64));
    g.bench_function("1000x10_with_wal", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let samples: Vec<Vec<Sample>> = gens
                    .iter_mut()
                    .map(|sg| {
                        (0..PER_SERIES as i64)
                            .map(|k| {
                                let (t, v) = sg.next(t0, step + k);
                                Sample { t, v }
                            })
                            .collect()
                    })
                    .collect();
                step += PER_SERIES as i64;
                let pairs: Vec<Vec<(&str, &str)>> = labels
                    .iter()
                    .map(|l| l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect())
                    .collect();
                let start = Instant::now();
                let rep = db
                    .append(
                        pairs
                            .iter()
                            .zip(samples.iter())
                            .map(|(p, s)| (p.as_slice(), s.as_slice())),
                    )
                    .expect("append");
                total += start.elapsed();
                assert_eq!(rep.rejected_total(), 0);
            }
            total
        })
    });
    g.finish();
    let _ = INTERVAL_MS;
    db.close().expect("close");
}

criterion_group!(benches, append);
criterion_main!(benches);
