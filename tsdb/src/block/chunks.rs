//! A block's chunk segments: the files `chunks/000001`, `000002`, … holding chunk bytes.
//!
//! The writer appends checksummed chunk records and cuts a new segment before one would
//! exceed [`MAX_SEGMENT_SIZE`]; the reader maps every segment and hands out a chunk's bytes
//! only after its CRC32C matched. The byte layout is documented in
//! `tsdb/docs/format/block-chunks.md`; the constants below are its single copy in code.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::chunkenc::Encoding;
use crate::error::StorageError;
use crate::index::encoding::{Decbuf, put_uvarint, uvarint_len};
use crate::mmap::MappedFile;

/// `"MBCK"` read as a little-endian u32: the first four bytes of a segment.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MBCK");
/// The segment format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Magic, version and padding.
pub const HEADER_LEN: usize = 4 + 1 + 3;
/// Largest segment file, header included.
pub const MAX_SEGMENT_SIZE: u64 = 512 << 20;
/// Length of the encoding byte and of the CRC32C around a chunk's data.
const ENCODING_LEN: usize = 1;
const CRC_LEN: usize = 4;
/// Segment file names are this many decimal digits.
const NAME_DIGITS: usize = 6;

/// Where a chunk lives in a block: the segment number (as in its file name, from 1) in
/// the upper 32 bits and the byte offset of the chunk's record in that file in the lower
/// 32 bits. References of one block increase in write order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockChunkRef(pub u64);

impl BlockChunkRef {
    /// A reference to the record at `offset` in segment `segment`.
    pub fn new(segment: u32, offset: u32) -> BlockChunkRef {
        BlockChunkRef((u64::from(segment) << 32) | u64::from(offset))
    }

    /// The segment number: the file `chunks/{segment:06}`.
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The byte offset of the chunk's record within its segment.
    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

/// The file name of segment `n`.
pub(crate) fn segment_name(n: u32) -> String {
    format!("{n:0width$}", width = NAME_DIGITS)
}

/// Appends chunk records to a block's segment files.
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    max_size: u64,
    /// The segment being appended to, if any; earlier ones are flushed and fsynced.
    cur: Option<OpenSegment>,
    /// Number of the last segment created.
    seq: u32,
    /// Bytes in all segments, headers included.
    total: u64,
}

struct OpenSegment {
    path: PathBuf,
    w: BufWriter<File>,
    size: u64,
}

impl SegmentWriter {
    /// A writer creating segments in `dir`, which must exist.
    pub(crate) fn new(dir: PathBuf, max_size: u64) -> SegmentWriter {
        SegmentWriter {
            dir,
            max_size,
            cur: None,
            seq: 0,
            total: 0,
        }
    }

    /// Appends one chunk and returns its reference.
    pub(crate) fn write(
        &mut self,
        enc: Encoding,
        data: &[u8],
    ) -> Result<BlockChunkRef, StorageError> {
        let rec_len = (uvarint_len(data.len() as u64) + ENCODING_LEN + data.len() + CRC_LEN) as u64;
        if HEADER_LEN as u64 + rec_len > self.max_size {
            return Err(StorageError::InvalidInput(format!(
                "chunk of {} bytes does not fit in a segment",
                data.len()
            )));
        }
        if self
            .cur
            .as_ref()
            .is_none_or(|c| c.size + rec_len > self.max_size)
        {
            self.cut()?;
        }
        let seg = self.seq;
        let Some(cur) = self.cur.as_mut() else {
            return Err(StorageError::InvalidInput("no open segment".into()));
        };
        let r = BlockChunkRef::new(seg, cur.size as u32);
        let mut head = Vec::with_capacity(11);
        put_uvarint(&mut head, data.len() as u64);
        head.push(enc.as_u8());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[enc.as_u8()]), data);
        let io = StorageError::io(&cur.path);
        cur.w
            .write_all(&head)
            .and_then(|_| cur.w.write_all(data))
            .and_then(|_| cur.w.write_all(&crc.to_le_bytes()))
            .map_err(io)?;
        cur.size += rec_len;
        self.total += rec_len;
        Ok(r)
    }

    /// Seals the current segment (if any) and starts the next one.
    fn cut(&mut self) -> Result<(), StorageError> {
        self.seal()?;
        self.seq += 1;
        let path = self.dir.join(segment_name(self.seq));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StorageError::io(&path))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4] = VERSION;
        w.write_all(&header).map_err(StorageError::io(&path))?;
        self.total += HEADER_LEN as u64;
        self.cur = Some(OpenSegment {
            path,
            w,
            size: HEADER_LEN as u64,
        });
        Ok(())
    }

    fn seal(&mut self) -> Result<(), StorageError> {
        if let Some(mut c) = self.cur.take() {
            c.w.flush().map_err(StorageError::io(&c.path))?;
            c.w.get_ref()
                .sync_all()
                .map_err(StorageError::io(&c.path))?;
        }
        Ok(())
    }

    /// Flushes and fsyncs every segment and the directory; returns the bytes written.
    /// A later [`Self::write`] starts a new segment.
    pub(crate) fn finish(&mut self) -> Result<u64, StorageError> {
        self.seal()?;
        sync_dir(&self.dir)?;
        Ok(self.total)
    }
}

/// Fsyncs a directory, making the creation and renaming of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io(dir))
}

/// The mapped segments of a block.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    dir: PathBuf,
    /// Segment `n` is at index `n - 1`.
    segments: Vec<MappedFile>,
}

impl SegmentReader {
    /// Maps every segment in `dir` and checks their headers. The names must be exactly
    /// `000001` to `{n:06}`.
    ///
    /// # Safety
    ///
    /// As [`MappedFile::open`]: the segment files must not be modified while the reader
    /// is alive.
    pub(crate) unsafe fn open(dir: &Path) -> Result<SegmentReader, StorageError> {
        let mut nums = Vec::new();
        for e in fs::read_dir(dir).map_err(StorageError::io(dir))? {
            let e = e.map_err(StorageError::io(dir))?;
            let name = e.file_name();
            let n = name
                .to_str()
                .filter(|s| s.len() == NAME_DIGITS && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| StorageError::corrupt(dir, format!("unexpected file {:?}", name)))?;
            nums.push(n);
        }
        nums.sort_unstable();
        for (i, &n) in nums.iter().enumerate() {
            if n as usize != i + 1 {
                return Err(StorageError::corrupt(
                    dir,
                    format!("segment {} is missing", segment_name(i as u32 + 1)),
                ));
            }
        }
        let mut segments = Vec::with_capacity(nums.len());
        for n in nums {
            let path = dir.join(segment_name(n));
            // SAFETY: passed on to our caller through this function's contract.
            let f = unsafe { MappedFile::open(&path) }?;
            check_header(f.as_slice()).map_err(|e| StorageError::corrupt(&path, e))?;
            if f.len() as u64 > MAX_SEGMENT_SIZE {
                return Err(StorageError::corrupt(
                    &path,
                    "segment larger than the limit",
                ));
            }
            segments.push(f);
        }
        Ok(SegmentReader {
            dir: dir.to_path_buf(),
            segments,
        })
    }

    /// Total size of the segment files.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len() as u64).sum()
    }

    /// The path of the segment `r` points into, for error messages.
    pub(crate) fn segment_path(&self, r: BlockChunkRef) -> PathBuf {
        self.dir.join(segment_name(r.segment()))
    }

    /// The encoding and data of the chunk at `r`, after checking its CRC32C.
    pub(crate) fn chunk(&self, r: BlockChunkRef) -> Result<(Encoding, &[u8]), StorageError> {
        let Some(seg) = (r.segment() as usize)
            .checked_sub(1)
            .and_then(|i| self.segments.get(i))
        else {
            return Err(StorageError::corrupt(
                &self.dir,
                format!("chunk reference {:#x}: no segment {}", r.0, r.segment()),
            ));
        };
        read_record(seg.as_slice(), r.offset() as usize).map_err(|e| {
            StorageError::corrupt(seg.path(), format!("chunk at offset {}: {e}", r.offset()))
        })
    }
}

fn check_header(b: &[u8]) -> Result<(), String> {
    let mut d = Decbuf::new(b);
    let magic = d.u32().map_err(|_| "file too short for its header")?;
    if magic != MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    let version = d.u8().map_err(|_| "file too short for its header")?;
    if version != VERSION {
        return Err(format!("unsupported version {version}"));
    }
    if d.bytes(3).map_err(|_| "file too short for its header")? != [0, 0, 0] {
        return Err("non-zero header padding".into());
    }
    Ok(())
}

/// Decodes the record at `off`: `len <uvarint> | encoding <1> | data <len> | crc <4>`.
fn read_record(b: &[u8], off: usize) -> Result<(Encoding, &[u8]), String> {
    if off < HEADER_LEN || off >= b.len() {
        return Err("offset out of range".into());
    }
    let mut d = Decbuf::new(&b[off..]);
    let len = d.uvarint_usize()?;
    let covered = d
        .rest()
        .get(..len.checked_add(ENCODING_LEN).ok_or("length overflows")?)
        .ok_or("record runs past the end of the segment")?;
    let enc_byte = d.u8()?;
    let data = d.bytes(len)?;
    let crc = d.u32()?;
    if crc != crc32c::crc32c(covered) {
        return Err("checksum mismatch".into());
    }
    let enc = Encoding::try_from(enc_byte).map_err(|e| e.to_string())?;
    Ok((enc, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_chunks(dir: &Path, max: u64, chunks: &[&[u8]]) -> Vec<BlockChunkRef> {
        let mut w = SegmentWriter::new(dir.to_path_buf(), max);
        let refs = chunks
            .iter()
            .map(|c| w.write(Encoding::Xor, c).unwrap())
            .collect();
        w.finish().unwrap();
        refs
    }

    #[test]
    fn chunks_round_trip_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 10 + i as usize]).collect();
        let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let refs = write_chunks(dir.path(), 200, &slices);
        assert!(
            refs.last().unwrap().segment() > 1,
            "expected several segments"
        );
        assert!(refs.windows(2).all(|w| w[0] < w[1]));
        // SAFETY: the files are private to this test.
        let r = unsafe { SegmentReader::open(dir.path()) }.unwrap();
        for (rf, d) in refs.iter().zip(&data) {
            assert_eq!(r.chunk(*rf).unwrap(), (Encoding::Xor, d.as_slice()));
        }
        for seg in fs::read_dir(dir.path()).unwrap() {
            assert!(seg.unwrap().metadata().unwrap().len() <= 200);
        }
    }

    #[test]
    fn flipped_byte_in_a_record_fails_that_read_naming_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let refs = write_chunks(dir.path(), MAX_SEGMENT_SIZE, &[b"abc", b"defgh"]);
        let path = dir.path().join("000001");
        let clean = fs::read(&path).unwrap();
        for i in HEADER_LEN..clean.len() {
            let mut b = clean.clone();
            b[i] ^= 0x41;
            fs::write(&path, &b).unwrap();
            // SAFETY: as above.
            let r = unsafe { SegmentReader::open(dir.path()) }.unwrap();
            let results: Vec<_> = refs.iter().map(|&x| r.chunk(x)).collect();
            let failed = results.iter().filter(|x| x.is_err()).count();
            assert_eq!(failed, 1, "flip at {i}");
            for e in results.into_iter().filter_map(Result::err) {
                assert!(e.is_corruption());
                assert!(e.to_string().contains("000001"), "{e}");
            }
        }
    }

    #[test]
    fn bad_header_missing_segment_and_stray_files_fail_open() {
        let dir = tempfile::tempdir().unwrap();
        write_chunks(dir.path(), 40, &[&[1; 20], &[2; 20], &[3; 20]]);
        let p2 = dir.path().join("000002");
        let orig = fs::read(&p2).unwrap();
        for len in 0..HEADER_LEN {
            fs::write(&p2, &orig[..len]).unwrap();
            // SAFETY: as above.
            let e = unsafe { SegmentReader::open(dir.path()) }.unwrap_err();
            assert!(e.is_corruption() && e.to_string().contains("000002"), "{e}");
        }
        fs::remove_file(&p2).unwrap();
        // SAFETY: as above.
        let e = unsafe { SegmentReader::open(dir.path()) }.unwrap_err();
        assert!(e.to_string().contains("000002 is missing"), "{e}");
        fs::write(&p2, &orig).unwrap();
        fs::write(dir.path().join("junk"), b"").unwrap();
        // SAFETY: as above.
        let e = unsafe { SegmentReader::open(dir.path()) }.unwrap_err();
        assert!(e.to_string().contains("junk"), "{e}");
    }

    #[test]
    fn truncated_segment_fails_only_the_cut_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let refs = write_chunks(dir.path(), MAX_SEGMENT_SIZE, &[b"abc", b"defgh"]);
        let path = dir.path().join("000001");
        let clean = fs::read(&path).unwrap();
        for len in HEADER_LEN..clean.len() {
            fs::write(&path, &clean[..len]).unwrap();
            // SAFETY: as above.
            let r = unsafe { SegmentReader::open(dir.path()) }.unwrap();
            assert!(r.chunk(refs[1]).is_err(), "len {len}");
            assert_eq!(r.chunk(refs[0]).is_ok(), len >= refs[1].offset() as usize);
        }
    }

    #[test]
    fn refs_pack_segment_and_offset() {
        let r = BlockChunkRef::new(3, 0xdead_beef);
        assert_eq!((r.segment(), r.offset()), (3, 0xdead_beef));
        assert_eq!(segment_name(12), "000012");
    }
}
