//! Bytes per sample on disk after compaction, on the realistic workload.
//!
//! Loads `MINOS_COMPRESSION_SERIES` series (default 2,000) × `MINOS_COMPRESSION_POINTS`
//! points (default 2,000, about 8 hours at 15 s) into a database, forces a flush and a
//! full merge, and prints the size of the blocks divided by the samples they hold, per
//! kind of series and overall. Not a criterion bench: it prints figures.

use std::time::Duration;

use minos_benches::workload::{Kind, generators};
use tsdb::{Db, Options, Sample};

/// One series' labels and samples.
type Batch = (Vec<(String, String)>, Vec<Sample>);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load(kinds: Option<Kind>, series: usize, points: usize) -> (u64, u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        background: false,
        retention: Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let db = Db::open(tmp.path(), opts).expect("open");
    let mut gens: Vec<_> = generators(series * if kinds.is_some() { 6 } else { 1 }, 7)
        .into_iter()
        .filter(|g| kinds.is_none_or(|k| g.kind == k))
        .take(series)
        .collect();
    let t0 = tsdb::now_ms() - (points as i64 + 10) * 15_000;
    let chunk = 100;
    let mut step = 0;
    while step < points {
        let n = chunk.min(points - step);
        let batch: Vec<Batch> = gens
            .iter_mut()
            .map(|g| {
                let labels = g.labels.clone();
                let s = (0..n).map(|k| {
                    let (t, v) = g.next(t0, (step + k) as i64);
                    Sample { t, v }
                });
                (labels, s.collect())
            })
            .collect();
        let pairs: Vec<Vec<(&str, &str)>> = batch
            .iter()
            .map(|(l, _)| l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect())
            .collect();
        db.append(
            pairs
                .iter()
                .zip(batch.iter())
                .map(|(p, (_, s))| (p.as_slice(), s.as_slice())),
        )
        .expect("append");
        step += n;
    }
    db.force_merge().expect("merge");
    let st = db.stats();
    (st.block_bytes, st.block_samples)
}

fn main() {
    // Criterion passes `--bench`; ignore arguments.
    let series = env("MINOS_COMPRESSION_SERIES", 2000);
    let points = env("MINOS_COMPRESSION_POINTS", 2000);
    println!("bytes per sample after compaction ({series} series x {points} points)");
    println!(
        "{:<14} {:>14} {:>14} {:>10}",
        "series", "block bytes", "samples", "B/sample"
    );
    let kinds = [
        ("cpu seconds", Some(Kind::CpuSeconds)),
        ("byte counters", Some(Kind::ByteCounter)),
        ("memory bytes", Some(Kind::MemoryBytes)),
        ("load gauges", Some(Kind::Load)),
        ("constants", Some(Kind::Constant)),
        ("orders", Some(Kind::Orders)),
        ("node mix", None),
    ];
    for (name, k) in kinds {
        let n = if k.is_some() {
            (series / 5).max(1)
        } else {
            series
        };
        let (bytes, samples) = load(k, n, points);
        println!(
            "{name:<14} {bytes:>14} {samples:>14} {:>10.3}",
            bytes as f64 / samples.max(1) as f64
        );
    }
}
