//! Chunk codec throughput: encode and decode of XOR chunks over a matrix of sample
//! patterns and chunk sizes, reported per sample.
//!
//! The data is generated once, up front, from a fixed seed, so adding a case does not
//! change the others' inputs. 120 samples is the head's chunk size (30 minutes at 15 s);
//! 1000 shows the steady state. The compressed size of each case is printed once at start.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use minos_benches::splitmix64;
use std::hint::black_box;
use tsdb::chunkenc::{XorAppender, XorIter};

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
}

impl Pattern {
    const ALL: [Pattern; 4] = [
        Pattern::Constant,
        Pattern::Counter,
        Pattern::Gauge,
        Pattern::RandomF64,
    ];

    fn name(self) -> &'static str {
        match self {
            Pattern::Constant => "constant",
            Pattern::Counter => "counter",
            Pattern::Gauge => "gauge_2dp",
            Pattern::RandomF64 => "random_f64",
        }
    }

    fn generate(self, n: usize, rng: &mut u64) -> Vec<(i64, f64)> {
        let mut v = match self {
            Pattern::Constant => 1.0,
            Pattern::Counter => 0.0,
            Pattern::Gauge => 50.0,
            Pattern::RandomF64 => 0.0,
        };
        (0..n as i64)
            .map(|i| {
                let x = splitmix64(rng);
                v = match self {
                    Pattern::Constant => v,
                    Pattern::Counter => v + (x % 100) as f64,
                    Pattern::Gauge => {
                        ((v + ((x % 201) as f64 - 100.0) / 100.0) * 100.0).round() / 100.0
                    }
                    Pattern::RandomF64 => (x >> 11) as f64 / (1u64 << 53) as f64,
                };
                (START_MS + i * STEP_MS, v)
            })
            .collect()
    }
}

struct Case {
    name: &'static str,
    samples: Vec<(i64, f64)>,
    chunk: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let mut rng = RNG_SEED;
    let mut out = Vec::new();
    for pattern in Pattern::ALL {
        for n in CHUNK_SIZES {
            let samples = pattern.generate(n, &mut rng);
            let chunk = encode(&samples).into_bytes();
            out.push(Case {
                name: pattern.name(),
                samples,
                chunk,
            });
        }
    }
    out
}

fn encode(samples: &[(i64, f64)]) -> XorAppender {
    let mut a = XorAppender::new();
    for &(t, v) in samples {
        a.append(t, v);
    }
    a
}

fn decode(chunk: &[u8]) -> (i64, u64) {
    let mut t_sum = 0i64;
    let mut v_xor = 0u64;
    for s in XorIter::new(chunk).expect("bench chunk has a header") {
        let s = s.expect("bench chunk decodes");
        t_sum = t_sum.wrapping_add(s.t);
        v_xor ^= s.v.to_bits();
    }
    (t_sum, v_xor)
}

fn bench_chunkenc(c: &mut Criterion) {
    let cases = cases();
    eprintln!("xor chunk size:");
    for case in &cases {
        eprintln!(
            "  {:<10} {:>4} samples: {:>5} bytes, {:.3} bytes/sample",
            case.name,
            case.samples.len(),
            case.chunk.len(),
            case.chunk.len() as f64 / case.samples.len() as f64
        );
    }

    let mut group = c.benchmark_group("xor_encode");
    for case in &cases {
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        group.bench_with_input(id, &case.samples, |b, samples| {
            b.iter(|| encode(black_box(samples)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("xor_decode");
    for case in &cases {
        group.throughput(Throughput::Elements(case.samples.len() as u64));
        let id = BenchmarkId::new(case.name, case.samples.len());
        group.bench_with_input(id, &case.chunk, |b, chunk| {
            b.iter(|| decode(black_box(chunk)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_chunkenc);
criterion_main!(benches);
