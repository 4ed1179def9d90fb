//! The on-disk spool: remote_write requests kept until their receiver takes them (the
//! agent's metric pushes while the server is unreachable; the server's forwarding queue,
//! `web::forward`).
//!
//! When a push fails, the agent keeps its body (an already-encoded remote_write request)
//! here and sends the spooled bodies oldest-first once the server answers again. The
//! spool is bounded in bytes: a push that would pass the bound drops the oldest records
//! first ([`Spool::dropped`]). Within the bound nothing is lost, across a restart of the
//! agent or a crash in the middle of a write.
//!
//! # Layout
//! A directory with one file per record, named by its sequence number as 20 zero-padded
//! decimal digits: `00000000000000000042.rec`. Sequence numbers only grow; at open they
//! continue after the highest one present. A record file is:
//!
//! | bytes | content                                                |
//! |-------|--------------------------------------------------------|
//! | 0..4  | magic `MSP1` (`4d 53 50 31`)                           |
//! | 4..8  | payload length, u32 little-endian                      |
//! | 8..12 | CRC32C (Castagnoli) of the payload, u32 little-endian  |
//! | 12..  | the payload, exactly `length` bytes; nothing after it  |
//!
//! A record is written to `<name>.rec.tmp`, `fsync`ed, renamed to `<name>.rec` and the
//! directory `fsync`ed, so a crash leaves either no record or a whole one. [`Spool::open`]
//! removes leftover `.tmp` files, checks every record (magic, length against the file
//! size, checksum) and deletes the ones that fail, counting them in [`Spool::corrupt`];
//! [`Spool::front`] checks again when it reads. Files whose names are not ours are left
//! alone. Removing a delivered record is not `fsync`ed: after a crash it may be sent again
//! (delivery is at least once). One process owns the directory; there is no locking.
//!
//! The bound counts whole files (header included), so the directory holds at most
//! `max_bytes` of records.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The first four bytes of every record file.
const MAGIC: &[u8; 4] = b"MSP1";
/// Bytes before the payload: magic, length, checksum.
const HEADER_LEN: u64 = 12;

/// A bounded, durable FIFO of byte payloads in a directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Sequence number and file size of each record, oldest first.
    records: VecDeque<(u64, u64)>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
    corrupt: u64,
}

impl Spool {
    /// Opens the spool in `dir` (creating it), keeping at most `max_bytes` of records.
    ///
    /// Records left by an earlier run are recovered in order; torn or corrupt ones are
    /// deleted and counted in [`Spool::corrupt`], leftover `.tmp` files are deleted. If the
    /// records found exceed `max_bytes`, the oldest are dropped.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = parse_name(name, ".rec") {
                found.push(seq);
            } else if parse_name(name, ".rec.tmp").is_some() {
                remove(&entry.path())?;
            }
        }
        found.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            records: VecDeque::new(),
            bytes: 0,
            next_seq: found.last().map_or(0, |s| s + 1),
            dropped: 0,
            corrupt: 0,
        };
        for seq in found {
            let path = spool.path(seq);
            match decode(&fs::read(&path)?) {
                Some(payload) => {
                    let size = HEADER_LEN + payload.len() as u64;
                    spool.records.push_back((seq, size));
                    spool.bytes += size;
                }
                None => {
                    remove(&path)?;
                    spool.corrupt += 1;
                }
            }
        }
        spool.make_room(0)?;
        Ok(spool)
    }

    /// Appends `payload` durably, dropping the oldest records if it would not fit.
    ///
    /// A payload whose record (payload plus the 12-byte header) is larger than the whole
    /// bound is refused with [`io::ErrorKind::InvalidInput`], and nothing is dropped.
    pub fn push(&mut self, payload: &[u8]) -> io::Result<()> {
        let size = HEADER_LEN + payload.len() as u64;
        let Ok(len) = u32::try_from(payload.len()) else {
            return Err(invalid("payload longer than u32::MAX bytes"));
        };
        if size > self.max_bytes {
            return Err(invalid("payload larger than the spool's bound"));
        }
        self.make_room(size)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.path(seq);
        let tmp = path.with_extension("rec.tmp");
        let mut file = File::create(&tmp)?;
        let written = (|| {
            file.write_all(MAGIC)?;
            file.write_all(&len.to_le_bytes())?;
            file.write_all(&crc32c::crc32c(payload).to_le_bytes())?;
            file.write_all(payload)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The record is in the directory now: track it even if the directory sync fails.
        self.records.push_back((seq, size));
        self.bytes += size;
        File::open(&self.dir)?.sync_all()
    }

    /// The oldest record's payload, without removing it; `None` when the spool is empty.
    ///
    /// A record that no longer checks out (damaged on disk since it was written) is
    /// deleted, counted in [`Spool::corrupt`], and the next one is returned.
    pub fn front(&mut self) -> io::Result<Option<Vec<u8>>> {
        while let Some(&(seq, _)) = self.records.front() {
            let data = match fs::read(self.path(seq)) {
                Ok(data) => data,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            if let Some(payload) = decode(&data) {
                return Ok(Some(payload.to_vec()));
            }
            self.corrupt += 1;
            self.pop_front()?;
        }
        Ok(None)
    }

    /// Removes the oldest record (once it was delivered); does nothing when empty.
    pub fn pop_front(&mut self) -> io::Result<()> {
        if let Some(&(seq, size)) = self.records.front() {
            remove(&self.path(seq))?;
            self.records.pop_front();
            self.bytes -= size;
        }
        Ok(())
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of the records held, headers included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records dropped to stay within the bound since open.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Torn or corrupt records deleted since open (at open or when read).
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Drops the oldest records until `extra` more bytes fit within the bound.
    fn make_room(&mut self, extra: u64) -> io::Result<()> {
        while !self.records.is_empty() && self.bytes + extra > self.max_bytes {
            self.pop_front()?;
            self.dropped += 1;
        }
        Ok(())
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.rec"))
    }
}

/// The sequence number in `name` if it is 20 decimal digits followed by `suffix`.
fn parse_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The payload of a record file's contents, if the record is whole and intact.
fn decode(data: &[u8]) -> Option<&[u8]> {
    let (header, payload) = data.split_at_checked(HEADER_LEN as usize)?;
    let (magic, rest) = header.split_first_chunk::<4>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (crc, _) = rest.split_first_chunk::<4>()?;
    let intact = magic == MAGIC
        && u32::from_le_bytes(*len) as usize == payload.len()
        && u32::from_le_bytes(*crc) == crc32c::crc32c(payload);
    intact.then_some(payload)
}

/// Removes a file; one already gone is fine.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record files in `dir`, oldest first.
    fn records(dir: &Path) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rec"))
            .collect();
        paths.sort();
        paths
    }

    fn drain(spool: &mut Spool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(payload) = spool.front().unwrap() {
            out.push(payload);
            spool.pop_front().unwrap();
        }
        out
    }

    #[test]
    fn order_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for p in [&b"a"[..], b"bb", b"ccc"] {
            spool.push(p).unwrap();
        }
        assert_eq!(spool.front().unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(spool.bytes(), 3 * HEADER_LEN + 6);
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((spool.len(), spool.bytes()), (3, 3 * HEADER_LEN + 6));
        spool.push(b"dddd").unwrap();
        let want: Vec<Vec<u8>> = vec![b"a".into(), b"bb".into(), b"ccc".into(), b"dddd".into()];
        assert_eq!(drain(&mut spool), want);
        assert!(spool.is_empty() && spool.bytes() == 0);
        assert!(records(dir.path()).is_empty());
        assert_eq!((spool.dropped(), spool.corrupt()), (0, 0));
    }

    #[test]
    fn bound_drops_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 3 * (HEADER_LEN + 10)).unwrap();
        for i in 0..5u8 {
            spool.push(&[i; 10]).unwrap();
        }
        assert_eq!((spool.len(), spool.dropped()), (3, 2));
        assert_eq!(spool.bytes(), 3 * (HEADER_LEN + 10));
        assert_eq!(records(dir.path()).len(), 3);
        drop(spool);

        // A smaller bound at open drops the oldest too.
        let mut spool = Spool::open(dir.path(), 2 * (HEADER_LEN + 10)).unwrap();
        assert_eq!(spool.dropped(), 1);
        assert_eq!(drain(&mut spool), vec![vec![3; 10], vec![4; 10]]);
    }

    #[test]
    fn oversize_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        spool.push(b"keep").unwrap();
        let err = spool.push(&[0; 89]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!((spool.len(), spool.dropped()), (1, 0));
        spool.push(&[0; 88]).unwrap();
        assert_eq!((spool.len(), spool.dropped()), (1, 1));
    }

    #[test]
    fn corrupt_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5u8 {
            spool.push(&[i; 100]).unwrap();
        }
        drop(spool);
        let paths = records(dir.path());
        // Torn: cut in the payload. Flipped: one payload byte changed.
        let data = fs::read(&paths[1]).unwrap();
        fs::write(&paths[1], &data[..50]).unwrap();
        let mut data = fs::read(&paths[2]).unwrap();
        data[60] ^= 0x01;
        fs::write(&paths[2], &data).unwrap();
        // Too short for a header.
        fs::write(&paths[3], b"MSP").unwrap();

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((spool.len(), spool.corrupt()), (2, 3));
        assert_eq!(records(dir.path()).len(), 2);
        // Damage after open is caught when read.
        let mut data = fs::read(&paths[0]).unwrap();
        data[0] = b'X';
        fs::write(&paths[0], &data).unwrap();
        assert_eq!(drain(&mut spool), vec![vec![4; 100]]);
        assert_eq!(spool.corrupt(), 4);
    }

    #[test]
    fn leftovers_removed_and_foreign_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("00000000000000000007.rec.tmp");
        let foreign = dir.path().join("notes.txt");
        let odd = dir.path().join("42.rec");
        for p in [&tmp, &foreign, &odd] {
            fs::write(p, b"x").unwrap();
        }
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!tmp.exists() && foreign.exists() && odd.exists());
        assert_eq!((spool.len(), spool.corrupt()), (0, 0));
        spool.push(b"p").unwrap();
        assert!(dir.path().join("00000000000000000000.rec").exists());
    }

    #[test]
    fn empty_spool() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&dir.path().join("new/spool"), 1 << 20).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.front().unwrap(), None);
        spool.pop_front().unwrap();
        assert_eq!(spool.len(), 0);
    }
}
