//! Arbitrary bytes as a write-ahead log segment: opening a database on it must never
//! panic, and whatever it replays must be readable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let wal = dir.path().join("wal");
    if std::fs::create_dir_all(&wal).is_err() {
        return;
    }
    // A valid header followed by the input, so the fuzzer explores records, and the raw
    // input as a second segment, so it explores headers too.
    let mut seg = b"MWAL\x01\x00\x00\x00".to_vec();
    seg.extend_from_slice(data);
    if std::fs::write(wal.join("00000001"), &seg).is_err()
        || std::fs::write(wal.join("00000002"), data).is_err()
    {
        return;
    }
    let opts = tsdb::Options {
        background: false,
        ..Default::default()
    };
    if let Ok(db) = tsdb::Db::open(dir.path(), opts) {
        let all = [tsdb::Matcher::new(tsdb::MatchOp::Regex, "__name__", ".*").expect("regex")];
        let _ = db.select(&all, i64::MIN, i64::MAX);
        // Skip the flush on close: replay is what is under test.
        db.abandon();
    }
});
