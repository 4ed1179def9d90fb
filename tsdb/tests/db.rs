//! The database as a whole, against a model: what was appended is what is read, live,
//! after a crash (replay of the write-ahead log), and after flushes and compactions;
//! readers see consistent data while ingest, flushes and compactions run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tsdb::{Db, MatchOp, Matcher, Options, Sample};

fn opts() -> Options {
    Options {
        background: false,
        ..Default::default()
    }
}

fn all() -> Vec<Matcher> {
    vec![Matcher::new(MatchOp::Regex, "__name__", ".+").expect("regex")]
}

type Model = BTreeMap<String, BTreeMap<i64, u64>>;

fn read(db: &Db) -> Model {
    db.select(&all(), i64::MIN, i64::MAX)
        .expect("select")
        .into_iter()
        .map(|s| {
            let name = s.labels.metric_name().unwrap_or("").to_string();
            let m = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
            (name, m)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    /// (series, time offset in seconds, value bits)
    Append(Vec<(u8, u16, u64)>),
    Flush,
    Merge,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0u8..4, 0u16..400, prop_oneof![any::<u64>(), (0u64..4).prop_map(|x| (x as f64).to_bits())]), 1..30).prop_map(Op::Append),
        1 => Just(Op::Flush),
        1 => Just(Op::Merge),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any mix of in-order, out-of-order and repeated samples, flushes, merges and
    /// crashes reads back as the model: per series and timestamp, the last value written.
    #[test]
    fn reads_match_the_model_through_flushes_merges_and_crashes(ops in proptest::collection::vec(op(), 1..12)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = tsdb::now_ms() - 3 * 3_600_000;
        let mut model: Model = BTreeMap::new();
        let mut db = Db::open(dir.path(), opts()).expect("open");
        for op in ops {
            match op {
                Op::Append(items) => {
                    let names: Vec<String> = items.iter().map(|(s, _, _)| format!("m{s}")).collect();
                    let pairs: Vec<[(&str, &str); 1]> = names.iter().map(|n| [("__name__", n.as_str())]).collect();
                    let samples: Vec<[Sample; 1]> = items
                        .iter()
                        .map(|&(_, dt, bits)| [Sample { t: base + dt as i64 * 1000, v: f64::from_bits(bits) }])
                        .collect();
                    let rep = db
                        .append(pairs.iter().zip(samples.iter()).map(|(p, s)| (&p[..], &s[..])))
                        .expect("append");
                    prop_assert_eq!(rep.rejected_total(), 0);
                    for (n, s) in names.iter().zip(samples.iter()) {
                        model.entry(n.clone()).or_default().insert(s[0].t, s[0].v.to_bits());
                    }
                }
                Op::Flush => db.flush().expect("flush"),
                Op::Merge => db.force_merge().expect("merge"),
                Op::Crash => {
                    db.abandon();
                    db = Db::open(dir.path(), opts()).expect("reopen");
                }
            }
            prop_assert_eq!(&read(&db), &model);
        }
        db.close().expect("close");
        let db = Db::open(dir.path(), opts()).expect("reopen");
        prop_assert_eq!(&read(&db), &model);
    }
}

/// While one thread appends, another flushes and merges, and a third reads, every read
/// of every series is exactly the samples 0..k for some k: nothing missing, nothing twice.
#[test]
fn readers_see_consistent_prefixes_during_ingest_flush_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(dir.path(), opts()).expect("open"));
    let base = tsdb::now_ms() - 3_600_000;
    let stop = Arc::new(AtomicBool::new(false));
    const SERIES: usize = 20;
    let names: Vec<String> = (0..SERIES).map(|i| format!("c{i}")).collect();

    let writer = {
        let (db, stop, names) = (db.clone(), stop.clone(), names.clone());
        std::thread::spawn(move || {
            let mut step = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let pairs: Vec<[(&str, &str); 1]> =
                    names.iter().map(|n| [("__name__", n.as_str())]).collect();
                let samples: Vec<Vec<Sample>> = (0..SERIES)
                    .map(|_| {
                        (0..10)
                            .map(|k| Sample {
                                t: base + step + k,
                                v: (step + k) as f64,
                            })
                            .collect()
                    })
                    .collect();
                let rep = db
                    .append(
                        pairs
                            .iter()
                            .zip(samples.iter())
                            .map(|(p, s)| (&p[..], s.as_slice())),
                    )
                    .expect("append");
                assert_eq!(rep.rejected_total(), 0);
                step += 10;
            }
            step
        })
    };
    let done_rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let maintainer = {
        let (db, stop, done) = (db.clone(), stop.clone(), done_rounds.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                db.flush().expect("flush");
                if rounds % 3 == 2 {
                    db.force_merge().expect("merge");
                }
                rounds += 1;
                done.store(rounds, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            rounds
        })
    };
    let mut reads = 0;
    // At least 4 s of interleaving, and on a loaded machine until enough flushes and
    // merges happened (the work, not the clock, decides; the bound only stops a hang).
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4)
        || ((done_rounds.load(Ordering::Relaxed) < 4 || reads < 4)
            && started.elapsed() < Duration::from_secs(300))
    {
        for s in db.select(&all(), i64::MIN, i64::MAX).expect("select") {
            for (i, x) in s.samples.iter().enumerate() {
                assert_eq!(
                    x.t,
                    base + i as i64,
                    "{}: gap or duplicate at index {i}",
                    s.labels
                );
                assert_eq!(x.v, i as f64);
            }
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let steps = writer.join().expect("writer");
    let rounds = maintainer.join().expect("maintainer");
    assert!(
        steps > 100 && rounds > 3 && reads > 3,
        "steps {steps}, rounds {rounds}, reads {reads}"
    );
    let last = db.select(&all(), i64::MIN, i64::MAX).expect("select");
    assert_eq!(last.len(), SERIES);
    for s in &last {
        assert_eq!(s.samples.len(), steps as usize, "{}", s.labels);
    }
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _db = Db::open(dir.path(), opts()).expect("open");
    assert!(matches!(
        Db::open(dir.path(), opts()),
        Err(tsdb::OpenError::Locked(_))
    ));
}

#[test]
fn retention_drops_whole_old_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Options {
        retention: Duration::from_secs(3 * 86_400),
        ..opts()
    };
    let db = Db::open(dir.path(), o.clone()).expect("open");
    let now = tsdb::now_ms();
    let old = [("__name__", "old")];
    let new = [("__name__", "new")];
    let s_old = [Sample {
        t: now - 2 * 86_400_000 - 3_600_000,
        v: 1.0,
    }];
    let s_new = [Sample {
        t: now - 60_000,
        v: 2.0,
    }];
    db.append([(&old[..], &s_old[..]), (&new[..], &s_new[..])])
        .expect("append");
    db.flush().expect("flush");
    assert_eq!(db.stats().blocks, 2);
    drop(db);
    // Reopened with a shorter retention, the old block goes at the next maintenance.
    let o = Options {
        retention: Duration::from_secs(86_400),
        ..o
    };
    let db = Db::open(dir.path(), o).expect("open");
    db.maintain();
    assert_eq!(db.stats().blocks, 1);
    let got = read(&db);
    assert!(got.contains_key("new") && !got.contains_key("old"));
    assert_eq!(db.metrics().blocks_deleted.load(Ordering::Relaxed), 1);
}

#[test]
fn size_retention_drops_the_oldest_blocks_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), opts()).expect("open");
    let now = tsdb::now_ms();
    // Four blocks, one a day apart, each holding one series of 2,000 samples.
    for day in 0..4i64 {
        let name = format!("day{day}");
        let pairs = [("__name__", name.as_str())];
        // Aligned to a 2 h block window, so each day makes exactly one block.
        let start = (now - (4 - day) * 86_400_000).div_euclid(7_200_000) * 7_200_000;
        let samples: Vec<Sample> = (0..2000)
            .map(|i| Sample {
                t: start + i * 1000,
                v: (i + day) as f64,
            })
            .collect();
        db.append([(&pairs[..], samples.as_slice())])
            .expect("append");
        db.flush().expect("flush");
    }
    let st = db.stats();
    assert_eq!(st.blocks, 4);
    // Room for three blocks and the log (a few empty segment headers).
    let limit = st.block_bytes * 7 / 8 + st.wal_disk_bytes + 64;
    drop(db);
    let db = Db::open(
        dir.path(),
        Options {
            max_bytes: Some(limit),
            ..opts()
        },
    )
    .expect("open");
    db.maintain();
    assert_eq!(db.stats().blocks, 3, "one block over the limit");
    let got = read(&db);
    assert!(!got.contains_key("day0"), "the oldest block goes first");
    assert!(got.contains_key("day1") && got.contains_key("day3"));
}

/// The sink hears of the samples stored, and only of them: duplicates and rejected
/// samples are left out; an out-of-order sample within the window is stored, so heard.
#[test]
fn the_sink_hears_of_every_stored_sample_and_nothing_else() {
    struct Heard(std::sync::Mutex<Vec<(String, Vec<i64>)>>);
    impl tsdb::AppendSink for Heard {
        fn appended(&self, batch: Vec<tsdb::StoredSeries>) {
            let mut g = self.0.lock().unwrap();
            for s in batch {
                let name = s.labels().get("__name__").unwrap_or("").to_string();
                g.push((name, s.samples.iter().map(|s| s.t).collect()));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let heard = Arc::new(Heard(std::sync::Mutex::new(Vec::new())));
    db.set_sink(heard.clone()).map_err(|_| "sink").unwrap();
    let now = tsdb::now_ms();
    let a = [("__name__", "a")];
    let b = [("__name__", "b")];
    let s = |t: i64| Sample { t, v: 1.0 };
    db.append([(&a[..], &[s(now - 2000), s(now - 1000)][..])])
        .unwrap();
    // A duplicate, an older sample, one far in the future, and one new sample.
    let r = db
        .append([
            (
                &a[..],
                &[s(now - 1000), s(now - 1500), s(now + 3_600_000_000)][..],
            ),
            (&b[..], &[s(now)][..]),
        ])
        .unwrap();
    assert_eq!(
        (r.appended, r.out_of_order, r.duplicates),
        (1, 1, 1),
        "{r:?}"
    );
    assert_eq!(r.rejected_total(), 1);
    let got = heard.0.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            ("a".to_string(), vec![now - 2000, now - 1000]),
            ("a".to_string(), vec![now - 1500]),
            ("b".to_string(), vec![now])
        ]
    );
    db.close().unwrap();
}
