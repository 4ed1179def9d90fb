//! Chunk codec throughput and size: encode and decode of XOR and DoD chunks over a
//! matrix of sample patterns and chunk sizes, reported per sample.
//!
//! The data is generated once, up front, from a fixed seed, so adding a case does not
//! change the others' inputs. 120 samples is the head's chunk size (30 minutes at 15 s);
//! 1000 shows the steady state. At start the bench prints the bytes per sample of each
//! case in both encodings, then the bytes per sample of the realistic workload's series
//! (`minos_benches::workload`, `MINOS_CHUNKENC_SERIES` series × `MINOS_CHUNKENC_POINTS`
//! points, defaults 600 × 2000) cut into chunks of several sizes: chunk data only,
//! without the 6–7 bytes of each chunk record or the index.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use minos_benches::splitmix64;
use minos_benches::workload::{Kind, generators};
use tsdb::Sample;
use tsdb::chunkenc::{DodIter, Encoding, XorAppender, XorIter, encode_best, encode_dod};

const RNG_SEED: u64 = 0x6d69_6e6f_735f_6331;
const CHUNK_SIZES: [usize; 2] = [120, 1000];
const START_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 15_000;

/// How the values of a series move from sample to sample.
#[derive(Clone, Copy)]
enum Pattern {
    /// The same value every scrape (`up`, build info).
    Constant,
    /// A counter growing by a random integer each scrape.
    Counter,
    /// A gauge in a random walk, rounded to two decimals.
    Gauge,
    /// Uniform random floats in `[0, 1)`: no value compression to be had.
    RandomF64,
    /// As `Gauge`, scraped 0–2 ms late, as real scrapes are.
    JitteredGauge,
}

impl Pattern {
    const ALL: [Pattern; 5] = [
        Pattern::Constant,
        Pattern::Counter,
        Pattern::Gauge,
        Pattern::RandomF64,
        Pattern::JitteredGauge,
    ];

    fn name(self) -> &'static str {
        match self {
            Pattern::Constant => "constant",
            Pattern::Counter => "counter",
            Pattern::Gauge => "gauge_2dp",
            Pattern::RandomF64 => "random_f64",
            Pattern::JitteredGauge => "gauge_2dp_jitter",
        }
    }

    fn generate(self, n: usize, rng: &mut u64) -> Vec<Sample> {
        let mut v = match self {
            Pattern::Constant => 1.0,
            Pattern::Counter => 0.0,
            Pattern::Gauge | Pattern::JitteredGauge => 50.0,
            Pattern::RandomF64 => 0.0,
        };
        (0..n as i64)
            .map(|i| {
                let x = splitmix64(rng);
                v = match self {
                    Pattern::Constant => v,
                    Pattern::Counter => v + (x % 100) as f64,
                    Pattern::Gauge | Pattern::JitteredGauge => {
                        ((v + ((x % 201) as f64 - 100.0) / 100.0) * 100.0).round() / 100.0
                    }
                    Pattern::RandomF64 => (x >> 11) as f64 / (1u64 << 53) as f64,
                };
                let jitter = match self {
                    Pattern::JitteredGauge => (x >> 61) as i64 % 3,
                    _ => 0,
                };
                Sample {
                    t: START_MS + i * STEP_MS + jitter,
                    v,
                }
            })
            .collect()
    }
}

struct Case {
    name: &'static str,
    samples: Vec<Sample>,
    xor: Vec<u8>,
    best: (Encoding, Vec<u8>),
}

fn cases() -> Vec<Case> {
    let mut rng = RNG_SEED;
    let mut out = Vec::new();
    for pattern in Pattern::ALL {
        for n in CHUNK_SIZES {
            let samples = pattern.generate(n, &mut rng);
            out.push(Case {
                name: pattern.name(),
                xor: encode_xor(&samples).into_bytes(),
                best: encode_best(&samples),
                samples,
            });
        }
    }
    out
}

fn encode_xor(samples: &[Sample]) -> XorAppender {
    let mut a = XorAppender::new();
    for s in samples {
        a.append(s.t, s.v);
    }
    a
}

fn fold(acc: (i64, u64), s: Sample) -> (i64, u64) {
    (acc.0.wrapping_add(s.t), acc.1 ^ s.v.to_bits())
}

fn decode_xor(chunk: &[u8]) -> (i64, u64) {
    XorIter::new(chunk)
        .expect("bench chunk has a header")
        .map(|s| s.expect("bench chunk decodes"))
        .fold((0, 0), fold)
}

fn decode_dod(chunk: &[u8]) -> (i64, u64) {
    DodIter::new(chunk)
        .expect("bench chunk has a header")
        .map(|s| s.expect("bench chunk decodes"))
        .fold((0, 0), fold)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes per sample of the workload's series, per kind, cut into chunks of each size.
fn print_workload_sizes() {
    let series = env("MINOS_CHUNKENC_SERIES", 600);
    let points = env("MINOS_CHUNKENC_POINTS", 2000);
    let kinds = [
        ("cpu seconds", Some(Kind::CpuSeconds)),
        ("byte counters", Some(Kind::ByteCounter)),
        ("memory bytes", Some(Kind::MemoryBytes)),
        ("load gauges", Some(Kind::Load)),
        ("constants", Some(Kind::Constant)),
        ("orders", Some(Kind::Orders)),
        ("node mix", None),
    ];
    // (encoder, chunk size) columns; XOR at 120 is what the head flushes today.
    let columns: [(bool, usize); 5] = [
        (false, 120),
        (true, 120),
        (true, 480),
        (true, 1000),
        (true, 2000),
    ];
    let data: Vec<(Kind, Vec<Sample>)> = generators(series, 7)
        .into_iter()
        .map(|mut g| {
            let s = (0..points as i64)
                .map(|step| {
                    let (t, v) = g.next(START_MS, step);
                    Sample { t, v }
                })
                .collect();
            (g.kind, s)
        })
        .collect();
    eprintln!("workload chunk data, bytes/sample ({series} series x {points} points):");
    eprintln!(
        "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "series", "xor@120", "best@120", "best@480", "best@1000", "best@2000"
    );
    for (name, kind) in kinds {
        let mut line = format!("  {name:<14}");
        for (best, size) in columns {
            let (mut bytes, mut samples) = (0usize, 0usize);
            for (_, s) in data.iter().filter(|(k, _)| kind.is_none_or(|w| *k == w)) {
                for piece in s.chunks(size) {
                    bytes += if best {
                        encode_best(piece).1.len()
                    } else {
                        encode_xor(piece).bytes().len()
                    };
                    samples += piece.len();
                }
            }
            line += &format!(" {:>9.3}", bytes as f64 / samples.max(1) as f64);
        }
        eprintln!("{line}");
    }
}

fn bench_chunkenc(c: &mut Criterion) {
    let cases = cases();
    eprintln!("chunk size, bytes/sample:");
    eprintln!(
        "  {:<16} {:>7} {:>9} {:>9} {:>9}",
        "pattern", "samples", "xor", "best", "encoding"
    );
    for case in &cases {
        let n = case.samples.len() as f64;
        eprintln!(
            "  {:<16} {:>7} {:>9.3} {:>9.3} {:>9}",
            case.name,
            case.samples.len(),
            case.xor.len() as f64 / n,
            case.best.1.len() as f64 / n,
            case.best.0.to_string(),
        );
    }
    print_workload_sizes();

    let mut group = c.benchmark_group("xor_encode");
    for case in &cases {
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        group.bench_with_input(id, &case.samples, |b, samples| {
            b.iter(|| encode_xor(black_box(samples)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("dod_encode");
    for case in &cases {
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        group.bench_with_input(id, &case.samples, |b, samples| {
            b.iter(|| encode_dod(black_box(samples)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("best_encode");
    for case in &cases {
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        group.bench_with_input(id, &case.samples, |b, samples| {
            b.iter(|| encode_best(black_box(samples)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("xor_decode");
    for case in &cases {
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        group.bench_with_input(id, &case.xor, |b, chunk| {
            b.iter(|| decode_xor(black_box(chunk)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("dod_decode");
    for case in &cases {
        let chunk = encode_dod(&case.samples);
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        group.bench_with_input(id, &chunk, |b, chunk| {
            b.iter(|| decode_dod(black_box(chunk)))
        });
    }
    group.finish();

    // The bulk path queries take (`DodIter::decode_range`), into a reused buffer.
    let mut group = c.benchmark_group("dod_decode_range");
    for case in &cases {
        let chunk = encode_dod(&case.samples);
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        let mut out = Vec::with_capacity(case.samples.len());
        group.bench_with_input(id, &chunk, |b, chunk| {
            b.iter(|| {
                out.clear();
                DodIter::new(black_box(chunk))
                    .and_then(|mut it| it.decode_range(i64::MIN, i64::MAX, &mut out))
                    .expect("decode");
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_chunkenc
}
criterion_main!(benches);
