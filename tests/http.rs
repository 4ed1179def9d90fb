//! The HTTP surface: remote_write answers and limits, export, metadata endpoints,
//! operator endpoints, metrics.

use collector::remote_write::proto;
use prost::Message;

use crate::util::{Server, now_ms, series};

fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&dir.path().join("data"), &[]);
    (dir, s)
}

#[test]
fn remote_write_rejects_malformed_bodies_with_400() {
    let (_d, s) = server();
    let (st, body) = s.post_raw("/api/v1/write", b"definitely not snappy".to_vec());
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("snappy"), "{body}");
    let junk = snap::raw::Encoder::new()
        .compress_vec(&[0xff; 64])
        .expect("snappy");
    let (st, body) = s.post_raw("/api/v1/write", junk);
    assert_eq!(st, 400, "{body}");
    // Unsorted labels.
    let t = now_ms();
    let req = proto::WriteRequest {
        timeseries: vec![proto::TimeSeries {
            labels: vec![
                proto::Label {
                    name: "zone".into(),
                    value: "a".into(),
                },
                proto::Label {
                    name: "__name__".into(),
                    value: "m".into(),
                },
            ],
            samples: vec![proto::Sample {
                value: 1.0,
                timestamp: t,
            }],
        }],
    };
    let raw = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let (st, body) = s.post_raw("/api/v1/write", raw);
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("sorted"), "{body}");
    // Nothing of the rejected requests was stored.
    assert_eq!(
        s.get("/api/v1/label/__name__/values").1,
        r#"{"data":[],"status":"success"}"#
    );
}

#[test]
fn samples_outside_the_time_window_are_refused_and_counted() {
    let (_d, s) = server();
    let now = now_ms();
    let req = proto::WriteRequest {
        timeseries: vec![series(
            &[("__name__", "window")],
            &[
                (now - 1000, 1.0),
                (now + 86_400_000, 2.0),
                (now - 30 * 86_400_000, 3.0),
            ],
        )],
    };
    let (st, body) = s.write(&req);
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("too far in future"), "{body}");
    assert_eq!(
        s.metric(r#"minos_tsdb_samples_rejected_total{reason="too_far_in_future"}"#),
        Some(1.0)
    );
    assert_eq!(
        s.metric(r#"minos_tsdb_samples_rejected_total{reason="too_old"}"#),
        Some(1.0)
    );
    // The valid sample was stored.
    let e = s.export("window");
    assert_eq!(e[0].timestamps, vec![now - 1000]);
}

#[test]
fn duplicates_are_accepted_and_backfill_is_stored() {
    let (_d, s) = server();
    let now = now_ms();
    let req = proto::WriteRequest {
        timeseries: vec![series(
            &[("__name__", "dup")],
            &[(now - 5000, 1.0), (now - 4000, 2.0)],
        )],
    };
    assert_eq!(s.write(&req).0, 204);
    // A sender's retry of the same batch: accepted, stored once.
    assert_eq!(s.write(&req).0, 204);
    // Older history for the same series (backfill).
    let old = proto::WriteRequest {
        timeseries: vec![series(&[("__name__", "dup")], &[(now - 86_400_000, 0.5)])],
    };
    assert_eq!(s.write(&old).0, 204);
    let e = s.export("dup");
    assert_eq!(
        e[0].timestamps,
        vec![now - 86_400_000, now - 5000, now - 4000]
    );
    assert_eq!(e[0].values, vec![0.5, 1.0, 2.0]);
    assert_eq!(s.metric("minos_tsdb_samples_duplicate_total"), Some(2.0));
}

#[test]
fn oversized_body_gets_413() {
    let (_d, s) = server();
    let (st, _) = s.post_raw("/api/v1/write", vec![0u8; 17 << 20]);
    assert_eq!(st, 413);
}

#[test]
fn series_labels_and_values_have_prometheus_shapes() {
    let (_d, s) = server();
    let now = now_ms();
    let req = proto::WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "up"), ("job", "api"), ("instance", "a:1")],
                &[(now - 1000, 1.0)],
            ),
            series(
                &[("__name__", "up"), ("job", "db"), ("instance", "b:1")],
                &[(now - 1000, 0.0)],
            ),
            series(
                &[("__name__", "other"), ("job", "api")],
                &[(now - 1000, 5.0)],
            ),
        ],
    };
    assert_eq!(s.write(&req).0, 204);
    let (st, body) = s.get("/api/v1/series?match[]=up");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(v["data"][0]["__name__"], "up");
    let (_, body) = s.get("/api/v1/labels");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["data"],
        serde_json::json!(["__name__", "instance", "job"])
    );
    let (_, body) = s.get("/api/v1/label/job/values?match[]=up");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"], serde_json::json!(["api", "db"]));
    let (st, body) = s.get("/api/v1/series");
    assert_eq!(st, 400);
    assert!(body.contains("bad_data"), "{body}");
    let (st, _) = s.get("/api/v1/series?match[]={job=~\".*\"}");
    assert_eq!(st, 400);
    // After a flush the same answers come from blocks.
    assert_eq!(s.post("/internal/force_flush").0, 200);
    let (_, body) = s.get("/api/v1/label/job/values");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"], serde_json::json!(["api", "db"]));
    assert_eq!(s.export("up").len(), 2);
}

#[test]
fn force_flush_and_merge_leave_data_compacted_and_readable() {
    let (_d, s) = server();
    // Three flushes into the same 2h window (aligned to its start), then a merge.
    let base = (now_ms() - 3 * 86_400_000).div_euclid(7_200_000) * 7_200_000;
    for round in 0..3 {
        let samples: Vec<(i64, f64)> = (0..100)
            .map(|i| (base + round * 100_000 + i * 1000, i as f64))
            .collect();
        let req = proto::WriteRequest {
            timeseries: vec![series(&[("__name__", "merge_me")], &samples)],
        };
        assert_eq!(s.write(&req).0, 204);
        assert_eq!(s.post("/internal/force_flush").0, 200);
    }
    assert_eq!(s.metric("minos_tsdb_blocks"), Some(3.0));
    assert_eq!(s.post("/internal/force_merge").0, 200);
    assert_eq!(s.metric("minos_tsdb_blocks"), Some(1.0));
    assert!(s.metric("minos_tsdb_compactions_total").unwrap_or(0.0) >= 1.0);
    let e = s.export("merge_me");
    assert_eq!(e[0].timestamps.len(), 300);
    assert!(e[0].timestamps.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn health_readiness_and_metrics() {
    let (_d, s) = server();
    assert_eq!(s.get("/-/healthy").0, 200);
    assert_eq!(s.get("/-/ready").0, 200);
    let (_, m) = s.get("/metrics");
    for name in [
        "minos_tsdb_samples_appended_total",
        "minos_tsdb_head_series",
        "minos_tsdb_wal_bytes_written_total",
        "minos_tsdb_blocks",
        "minos_tsdb_compactions_total",
        "minos_tsdb_samples_rejected_total{reason=\"too_old\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(m.contains(name), "missing {name}");
    }
}
