//! Damaged files: the server starts, reports what it cut or set aside (with the path),
//! and serves the rest, never garbage.

use std::path::{Path, PathBuf};

use collector::remote_write::proto;

use crate::util::{Server, now_ms, series};

fn write_series(server: &Server, name: &str, t0: i64, n: i64) -> Vec<(i64, f64)> {
    let samples: Vec<(i64, f64)> = (0..n)
        .map(|i| (t0 + i * 1000, (i * 7) as f64 + 0.25))
        .collect();
    let (st, body) = server.write(&proto::WriteRequest {
        timeseries: vec![series(&[("__name__", name), ("job", "corrupt")], &samples)],
    });
    assert_eq!(st, 204, "{body}");
    samples
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn newest_wal_segment(data: &Path) -> PathBuf {
    files(&data.join("wal"))
        .into_iter()
        .rfind(|p| std::fs::metadata(p).map(|m| m.len() > 8).unwrap_or(false))
        .expect("a wal segment with records")
}

#[test]
fn torn_wal_tail_is_cut_and_earlier_samples_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let t0 = now_ms() - 1_000_000;
    let first = write_series(&server, "torn_a", t0, 100);
    write_series(&server, "torn_b", t0, 100);
    server.kill9();
    let seg = newest_wal_segment(&data);
    let len = std::fs::metadata(&seg).expect("meta").len();
    // Cut the last record (torn_b's samples) in the middle.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 100)
        .expect("truncate");
    let server = Server::start(&data, &[]);
    let a = server.export("torn_a");
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].timestamps,
        first.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert_eq!(a[0].values, first.iter().map(|s| s.1).collect::<Vec<_>>());
    assert!(
        server
            .export("torn_b")
            .iter()
            .all(|e| e.timestamps.is_empty())
    );
    assert!(
        server
            .metric("minos_tsdb_wal_corruptions_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    let log = server.log_text();
    assert!(
        log.contains(&seg.display().to_string()),
        "log does not name {}: {log}",
        seg.display()
    );
}

#[test]
fn flipped_wal_byte_is_detected_not_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let t0 = now_ms() - 1_000_000;
    let first = write_series(&server, "flip_a", t0, 100);
    write_series(&server, "flip_b", t0, 100);
    server.kill9();
    let seg = newest_wal_segment(&data);
    let mut bytes = std::fs::read(&seg).expect("read");
    let at = bytes.len() - 50;
    bytes[at] ^= 0x10;
    std::fs::write(&seg, &bytes).expect("write");
    let server = Server::start(&data, &[]);
    let a = server.export("flip_a");
    assert_eq!(a[0].timestamps.len(), first.len());
    // flip_b's record failed its checksum: none of its samples, no altered value.
    assert!(
        server
            .export("flip_b")
            .iter()
            .all(|e| e.timestamps.is_empty())
    );
    assert!(
        server
            .metric("minos_tsdb_wal_corruptions_total")
            .unwrap_or(0.0)
            >= 1.0
    );
}

fn block_dirs(data: &Path) -> Vec<PathBuf> {
    files(&data.join("blocks"))
        .into_iter()
        .filter(|p| p.is_dir())
        .collect()
}

/// Two blocks in different windows: `good` and `bad`. Returns (bad block dir, good samples).
fn two_blocks(data: &Path) -> (PathBuf, Vec<(i64, f64)>) {
    let server = Server::start(data, &[]);
    let day = 86_400_000;
    // Start at a 2 h window boundary: each series' samples then make exactly one block.
    let window = |t: i64| t.div_euclid(7_200_000) * 7_200_000;
    write_series(&server, "bad_series", window(now_ms() - 2 * day), 50);
    assert_eq!(server.post("/internal/force_flush").0, 200);
    let bad = block_dirs(data);
    assert_eq!(bad.len(), 1);
    let good = write_series(&server, "good_series", window(now_ms() - day), 50);
    assert_eq!(server.stop(), Some(0));
    assert_eq!(block_dirs(data).len(), 2);
    (bad[0].clone(), good)
}

fn flip(path: &Path, at_fraction: f64) {
    let mut b = std::fs::read(path).expect("read");
    let at = ((b.len() as f64) * at_fraction) as usize;
    b[at] ^= 0xff;
    std::fs::write(path, &b).expect("write");
}

#[test]
fn corrupt_block_index_is_quarantined_and_the_rest_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (bad, good) = two_blocks(&data);
    flip(&bad.join("index"), 0.5);
    let server = Server::start(&data, &[]);
    let g = server.export("good_series");
    assert_eq!(g.len(), 1);
    assert_eq!(
        g[0].timestamps,
        good.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert!(server.export("bad_series").is_empty());
    assert_eq!(server.metric("minos_tsdb_quarantined_total"), Some(1.0));
    assert!(!bad.exists());
    assert_eq!(
        std::fs::read_dir(data.join("quarantine"))
            .expect("quarantine")
            .count(),
        1
    );
    assert!(server.log_text().contains(&bad.display().to_string()));
}

#[test]
fn corrupt_chunk_is_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (bad, good) = two_blocks(&data);
    let seg = files(&bad.join("chunks"))
        .into_iter()
        .next()
        .expect("chunk segment");
    flip(&seg, 0.6);
    let server = Server::start(&data, &[]);
    // Whether found at open or at read, the damaged block's samples never come back.
    assert!(
        server
            .export("bad_series")
            .iter()
            .all(|e| e.timestamps.is_empty())
    );
    let g = server.export("good_series");
    assert_eq!(
        g[0].timestamps,
        good.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert_eq!(server.metric("minos_tsdb_quarantined_total"), Some(1.0));
}

#[test]
fn truncated_block_files_are_quarantined() {
    for file in ["index", "meta.json"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let (bad, good) = two_blocks(&data);
        let p = bad.join(file);
        let len = std::fs::metadata(&p).expect("meta").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open")
            .set_len(len / 2)
            .expect("truncate");
        let server = Server::start(&data, &[]);
        assert_eq!(
            server.export("good_series")[0].timestamps.len(),
            good.len(),
            "{file}"
        );
        assert!(server.export("bad_series").is_empty(), "{file}");
        assert_eq!(
            server.metric("minos_tsdb_quarantined_total"),
            Some(1.0),
            "{file}"
        );
    }
}
