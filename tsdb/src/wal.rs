//! The write-ahead log: every accepted batch is here before it is acknowledged.
//!
//! The log is a directory of numbered segment files (`wal/00000001`, ...). Each segment
//! starts with an 8-byte header and holds checksummed records; `wal.md` in
//! `tsdb/docs/format/` documents the bytes. A batch's records are written with one
//! `write` call to the segment file before the caller is answered, so a killed process
//! loses nothing acknowledged; what survives a power loss depends on [`SyncPolicy`].
//!
//! On open, [`read_all`] replays every segment in order. A record whose header is cut
//! short, whose length runs past the end of the file, or whose checksum fails ends the
//! readable part of its segment: the segment is truncated there and the cut is reported
//! ([`ReplayReport`]); later segments are still read. Garbage is never replayed.
//!
//! # Layout
//! - `record`: encoding and decoding of the record payloads (series, samples).

pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Magic number at the start of every segment: `"MWAL"` read as a little-endian u32.
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"MWAL");
/// Format version of segment files.
pub const SEGMENT_VERSION: u8 = 1;
/// Bytes of the segment header: magic u32, version u8, 3 bytes padding.
pub const SEGMENT_HEADER_LEN: u64 = 8;
/// Bytes of a record header: payload length u32, crc32c u32, type u8.
pub const RECORD_HEADER_LEN: usize = 9;
/// Largest record payload accepted when reading (64 MiB); writers split batches below it.
pub const MAX_RECORD_LEN: usize = 64 << 20;
/// A segment is closed and a new one started once it reaches this size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 128 << 20;

/// When the log calls `fdatasync`.
///
/// Every policy writes a batch to the operating system before acknowledging it, so a
/// crash of the process (`kill -9`) loses nothing acknowledged. They differ on a crash of
/// the machine (power loss, kernel panic):
/// - `Always`: the segment is synced before each batch is acknowledged. Survives power
///   loss; costs one `fdatasync` per batch (concurrent batches share it).
/// - `Interval(d)`: synced every `d` in the background (default 1 s). A power loss can
///   lose up to `d` of acknowledged writes.
/// - `Never`: left to the operating system's writeback (typically up to 30 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    Always,
    Interval(Duration),
    Never,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// The writing side of the log. Callers serialise access (the database holds it under
/// its commit lock).
pub struct Wal {
    dir: PathBuf,
    segment: u32,
    /// Shared so that a sync can run outside the writer's lock (see [`Wal::sync_handle`]).
    file: Arc<File>,
    /// Bytes in the current segment, header included.
    len: u64,
    segment_size: u64,
    /// Total bytes written since open, for metrics.
    bytes_written: u64,
}

/// Where a replay found a damaged record and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// Bytes cut from the end of the segment.
    pub bytes_dropped: u64,
}

/// What [`read_all`] found.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub corruptions: Vec<Corruption>,
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}"))
}

/// Lists the segment numbers in `dir`, sorted. Files that are not segment names are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8
            && name.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = name.parse::<u32>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn header_bytes() -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
    h[4] = SEGMENT_VERSION;
    h
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens the log for writing after a replay: starts a fresh segment after the last
    /// existing one, so a damaged tail is never appended to.
    pub fn open(dir: &Path, segment_size: u64) -> io::Result<Wal> {
        fs::create_dir_all(dir)?;
        let last = list_segments(dir)?.last().copied().unwrap_or(0);
        let (file, segment) = Self::create_segment(dir, last + 1)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment,
            file: Arc::new(file),
            len: SEGMENT_HEADER_LEN,
            segment_size: segment_size.max(4096),
            bytes_written: SEGMENT_HEADER_LEN,
        })
    }

    fn create_segment(dir: &Path, n: u32) -> io::Result<(File, u32)> {
        let path = segment_path(dir, n);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        file.write_all(&header_bytes())?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok((file, n))
    }

    /// The number of the segment being written.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Total bytes written since open.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Appends already-framed records (see [`frame`]) with one write. On error the segment
    /// is cut back to its length before the call, so no partial record is left behind.
    pub fn write(&mut self, framed: &[u8]) -> io::Result<()> {
        if framed.is_empty() {
            return Ok(());
        }
        if self.len > SEGMENT_HEADER_LEN && self.len + framed.len() as u64 > self.segment_size {
            self.rotate()?;
        }
        let mut f: &File = &self.file;
        if let Err(e) = f.write_all(framed) {
            // Best effort: remove the partial record; replay would cut it anyway.
            let _ = f.set_len(self.len);
            let _ = f.seek(SeekFrom::End(0));
            return Err(e);
        }
        self.len += framed.len() as u64;
        self.bytes_written += framed.len() as u64;
        Ok(())
    }

    /// Syncs the current segment's data to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A handle on the current segment for syncing outside the writer's lock. Syncing
    /// it covers every write made to it before the call; segments closed since were
    /// synced when closed. Concurrent callers share one `fdatasync` where the kernel can.
    pub fn sync_handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Closes the current segment (synced) and starts the next one. Returns the new
    /// segment's number: every record written from now on is in it or later ones.
    pub fn rotate(&mut self) -> io::Result<u32> {
        self.file.sync_data()?;
        let (file, n) = Self::create_segment(&self.dir, self.segment + 1)?;
        self.file = Arc::new(file);
        self.segment = n;
        self.len = SEGMENT_HEADER_LEN;
        self.bytes_written += SEGMENT_HEADER_LEN;
        Ok(n)
    }

    /// Deletes every segment numbered below `n`.
    pub fn truncate_before(&self, n: u32) -> io::Result<usize> {
        let mut removed = 0;
        for s in list_segments(&self.dir)? {
            if s < n && s != self.segment {
                fs::remove_file(segment_path(&self.dir, s))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Bytes of all segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        list_segments(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| fs::metadata(segment_path(&self.dir, s)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Syncs and closes the log.
    pub fn close(self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Appends one framed record (`len | crc32c | type | payload`) to `out`.
pub fn frame(out: &mut Vec<u8>, typ: u8, payload: &[u8]) {
    let mut crc = crc32c::crc32c(&[typ]);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(typ);
    out.extend_from_slice(payload);
}

/// Reads every record of every segment in `dir`, in order, calling `f(type, payload)`.
///
/// A damaged record ends its segment: the file is truncated at that record (when
/// `repair` is true) and the cut is recorded in the report. A segment whose header is
/// wrong is reported and skipped whole (and, when repairing, renamed `*.corrupt`).
pub fn read_all(
    dir: &Path,
    repair: bool,
    mut f: impl FnMut(u8, &[u8]),
) -> io::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    if !dir.exists() {
        return Ok(report);
    }
    let mut buf = Vec::new();
    for seg in list_segments(dir)? {
        let path = segment_path(dir, seg);
        buf.clear();
        File::open(&path)?.read_to_end(&mut buf)?;
        report.segments += 1;
        report.bytes += buf.len() as u64;
        if buf.len() < SEGMENT_HEADER_LEN as usize || buf[..8] != header_bytes() {
            // An empty file is a segment whose creation was interrupted: harmless.
            if buf.is_empty() {
                if repair {
                    fs::remove_file(&path)?;
                }
                continue;
            }
            report.corruptions.push(Corruption {
                path: path.clone(),
                offset: 0,
                reason: "bad segment header".into(),
                bytes_dropped: buf.len() as u64,
            });
            if repair {
                fs::rename(&path, path.with_extension("corrupt"))?;
            }
            continue;
        }
        let mut off = SEGMENT_HEADER_LEN as usize;
        while off < buf.len() {
            match check_record(&buf[off..]) {
                Ok((typ, payload, n)) => {
                    f(typ, payload);
                    report.records += 1;
                    off += n;
                }
                Err(reason) => {
                    report.corruptions.push(Corruption {
                        path: path.clone(),
                        offset: off as u64,
                        reason,
                        bytes_dropped: (buf.len() - off) as u64,
                    });
                    if repair {
                        let file = OpenOptions::new().write(true).open(&path)?;
                        file.set_len(off as u64)?;
                        file.sync_all()?;
                    }
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// Validates the record at the start of `b`: returns its type, payload and framed length.
fn check_record(b: &[u8]) -> Result<(u8, &[u8], usize), String> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(format!("torn record header ({} bytes)", b.len()));
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let typ = b[8];
    if len > MAX_RECORD_LEN {
        return Err(format!("record length {len} exceeds limit"));
    }
    if b.len() - RECORD_HEADER_LEN < len {
        return Err(format!(
            "torn record: length {len}, {} bytes left",
            b.len() - RECORD_HEADER_LEN
        ));
    }
    let payload = &b[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
    let got = crc32c::crc32c_append(crc32c::crc32c(&[typ]), payload);
    if got != crc {
        return Err(format!(
            "checksum mismatch: stored {crc:#010x}, computed {got:#010x}"
        ));
    }
    Ok((typ, payload, RECORD_HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path) -> (Vec<(u8, Vec<u8>)>, ReplayReport) {
        let mut out = Vec::new();
        let rep = read_all(dir, true, |t, p| out.push((t, p.to_vec()))).unwrap();
        (out, rep)
    }

    #[test]
    fn written_records_replay_in_order_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), 4096).unwrap();
        for i in 0..100u32 {
            let mut f = Vec::new();
            frame(&mut f, 2, &[i as u8; 100]);
            w.write(&f).unwrap();
        }
        w.close().unwrap();
        assert!(list_segments(d.path()).unwrap().len() > 1);
        let (recs, rep) = records(d.path());
        assert_eq!(recs.len(), 100);
        assert!(rep.corruptions.is_empty());
        assert!(
            recs.iter()
                .enumerate()
                .all(|(i, (t, p))| *t == 2 && p[0] == i as u8)
        );
    }

    #[test]
    fn torn_tail_is_cut_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        for i in 0..10u8 {
            let mut f = Vec::new();
            frame(&mut f, 1, &[i; 50]);
            w.write(&f).unwrap();
        }
        let seg = w.segment();
        w.close().unwrap();
        let path = segment_path(d.path(), seg);
        let full = fs::metadata(&path).unwrap().len();
        // Cut the last record in half.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 20)
            .unwrap();
        let (recs, rep) = records(d.path());
        assert_eq!(recs.len(), 9);
        assert_eq!(rep.corruptions.len(), 1);
        assert_eq!(rep.corruptions[0].path, path);
        // The cut is permanent: a second replay is clean.
        let (recs, rep) = records(d.path());
        assert_eq!(recs.len(), 9);
        assert!(rep.corruptions.is_empty());
    }

    #[test]
    fn flipped_byte_stops_the_segment_but_not_later_ones() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        for i in 0..10u8 {
            let mut f = Vec::new();
            frame(&mut f, 1, &[i; 50]);
            w.write(&f).unwrap();
        }
        let first = w.segment();
        w.rotate().unwrap();
        let mut f = Vec::new();
        frame(&mut f, 1, &[99; 50]);
        w.write(&f).unwrap();
        w.close().unwrap();
        let path = segment_path(d.path(), first);
        let mut bytes = fs::read(&path).unwrap();
        let rec = RECORD_HEADER_LEN + 50;
        bytes[SEGMENT_HEADER_LEN as usize + 4 * rec + 20] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (recs, rep) = records(d.path());
        let firsts: Vec<u8> = recs.iter().map(|(_, p)| p[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 3, 99]);
        assert_eq!(rep.corruptions.len(), 1);
        assert!(rep.corruptions[0].reason.contains("checksum"));
    }

    #[test]
    fn garbage_segment_is_set_aside() {
        let d = tempfile::tempdir().unwrap();
        fs::write(segment_path(d.path(), 1), b"not a wal segment at all").unwrap();
        let (recs, rep) = records(d.path());
        assert!(recs.is_empty());
        assert_eq!(rep.corruptions.len(), 1);
        assert!(d.path().join("00000001.corrupt").exists());
        // A writer opened afterwards starts a new segment.
        let w = Wal::open(d.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(w.segment(), 1);
    }
}
