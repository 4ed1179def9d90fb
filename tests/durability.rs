//! Acknowledged samples survive `kill -9` and restarts, exactly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collector::remote_write::proto;

use crate::util::{Server, client, now_ms, series};

/// A value that exercises many bits: integers, decimals, tiny and huge magnitudes. (-0.0
/// is left to the codec's property tests: proto3 encoders omit it as a default value.)
fn value(series: usize, i: usize) -> f64 {
    match (series + i) % 6 {
        0 => i as f64,
        1 => (i as f64) * 0.1 + series as f64,
        2 => -1.5e-10 * (i as f64 + 1.0),
        3 => 1e-300 * (i as f64 + 1.0),
        4 => f64::from_bits(0x4009_21fb_5444_2d18 ^ (i as u64)),
        _ => 1.7976931348623157e308 / (i as f64 + 1.0),
    }
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let url = server.url("/api/v1/write");
    let base = now_ms() - 3_600_000;
    let acked: Arc<Mutex<Vec<(usize, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    const SERIES: usize = 50;
    const PER_REQ: usize = 20;
    // Two writers, each owning half of the series, sending batches back to back.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut batch = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let ts: Vec<proto::TimeSeries> = (0..SERIES)
                        .filter(|s| s % 2 == w)
                        .map(|s| {
                            let name = format!("s{s}");
                            let samples: Vec<(i64, f64)> = (0..PER_REQ)
                                .map(|k| {
                                    let i = batch * PER_REQ + k;
                                    (base + i as i64 * 10, value(s, i))
                                })
                                .collect();
                            series(&[("__name__", "kill_test"), ("series", &name)], &samples)
                        })
                        .collect();
                    let body = collector::remote_write::encode_snappy(&proto::WriteRequest {
                        timeseries: ts,
                    });
                    match c.post(&url).body(body).send() {
                        Ok(r) if r.status().as_u16() == 204 => {
                            acked.lock().expect("lock").push((w, batch))
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => return, // the server is gone
                    }
                    batch += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 10,
        "too few acknowledged batches: {}",
        acked.len()
    );

    let server = Server::start(&data, &[]);
    let got = server.export(r#"{__name__="kill_test"}"#);
    let by_series: HashMap<String, (Vec<i64>, Vec<f64>)> = got
        .into_iter()
        .map(|e| {
            (
                e.metric["series"].as_str().unwrap_or("").to_string(),
                (e.timestamps, e.values),
            )
        })
        .collect();
    let mut checked = 0;
    for (w, batch) in &acked {
        for s in (0..SERIES).filter(|s| s % 2 == *w) {
            let (ts, vs) = by_series
                .get(&format!("s{s}"))
                .unwrap_or_else(|| panic!("series s{s} missing"));
            for k in 0..PER_REQ {
                let i = batch * PER_REQ + k;
                let t = base + i as i64 * 10;
                let pos = ts
                    .binary_search(&t)
                    .unwrap_or_else(|_| panic!("s{s}: acknowledged sample at {t} missing"));
                assert_eq!(vs[pos].to_bits(), value(s, i).to_bits(), "s{s} at {t}");
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
    // Nothing was written that was not sent: every series holds a prefix of its batches.
    for (name, (ts, _)) in &by_series {
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "{name}: timestamps not strictly increasing"
        );
    }
}

#[test]
fn graceful_shutdown_flushes_and_restart_serves_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let t0 = now_ms() - 600_000;
    let samples: Vec<(i64, f64)> = (0..500).map(|i| (t0 + i * 1000, i as f64 * 1.5)).collect();
    let (st, body) = server.write(&proto::WriteRequest {
        timeseries: vec![series(&[("__name__", "graceful"), ("job", "a")], &samples)],
    });
    assert_eq!(st, 204, "{body}");
    assert_eq!(server.stop(), Some(0), "server did not exit cleanly");
    // The head went into a block: the directory holds at least one block.
    let blocks = std::fs::read_dir(data.join("blocks"))
        .expect("blocks dir")
        .count();
    assert!(blocks >= 1);
    let server = Server::start(&data, &[]);
    let got = server.export("graceful");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].timestamps,
        samples.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert_eq!(
        got[0].values,
        samples.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    assert_eq!(server.stop(), Some(0));
}
