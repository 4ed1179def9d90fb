//! Memory-mapped files for the head's full chunks.
//!
//! When a series' open chunk is full it is copied into a file under `chunks_head/` and
//! read back through a shared memory map, so the head's resident memory grows with the
//! number of active series (one open chunk each), not with how much history it holds;
//! the kernel pages cold chunks out. These files are a cache of what the write-ahead log
//! already holds: they are deleted on start (replay rebuilds them) and once their chunks
//! have been persisted into a block. `tsdb/docs/format/head_chunks.md` documents the bytes.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;
use parking_lot::{Mutex, RwLock};

use crate::chunkenc::Encoding;

/// `"MHCK"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MHCK");
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// Chunk record header: encoding u8, samples u16, data length u32, crc32c u32.
pub const RECORD_HEADER_LEN: usize = 11;
/// Size of each file (sparse until written).
pub const FILE_SIZE: usize = 128 << 20;

/// Where a head chunk lives: file id in the high 32 bits, byte offset in the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadChunkRef(u64);

impl HeadChunkRef {
    pub fn new(file: u32, offset: u32) -> Self {
        HeadChunkRef(((file as u64) << 32) | offset as u64)
    }
    pub fn file(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

/// One mapped chunk file.
pub struct ChunkFile {
    id: u32,
    path: PathBuf,
    /// Chunks are written with `pwrite` on this handle, not through the map, so pages
    /// written but never read do not count towards the process' resident memory.
    file: File,
    /// Read-only use: the kernel's page cache keeps it coherent with the writes.
    map: MmapRaw,
    /// Bytes written so far. Only the writer (under `HeadChunks::writer`) changes it.
    len: Mutex<usize>,
}

impl Drop for ChunkFile {
    /// A chunk file is only useful while a head or a frozen head refers to it; the last
    /// reference removes it. The mapping itself stays valid until dropped here.
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(
                "{}: failed to remove head chunk file: {e}",
                self.path.display()
            );
        }
    }
}

impl ChunkFile {
    fn create(dir: &Path, id: u32) -> std::io::Result<ChunkFile> {
        let path = dir.join(format!("{id:06}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.set_len(FILE_SIZE as u64)?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4] = VERSION;
        file.write_all_at(&header, 0)?;
        let map = MmapRaw::map_raw(&file)?;
        Ok(ChunkFile {
            id,
            path,
            file,
            map,
            len: Mutex::new(HEADER_LEN),
        })
    }

    /// Appends a chunk record; `Ok(None)` when the file is full.
    fn append(&self, enc: Encoding, samples: u16, data: &[u8]) -> std::io::Result<Option<u32>> {
        let mut len = self.len.lock();
        let need = RECORD_HEADER_LEN + data.len();
        if *len + need > FILE_SIZE {
            return Ok(None);
        }
        let off = *len;
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0] = enc as u8;
        h[1..3].copy_from_slice(&samples.to_le_bytes());
        h[3..7].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..7]), data);
        h[7..11].copy_from_slice(&crc.to_le_bytes());
        // [off, off+need) lies past every published record, so no reader looks at it; it
        // becomes readable once `len` moves past it.
        let mut rec = Vec::with_capacity(need);
        rec.extend_from_slice(&h);
        rec.extend_from_slice(data);
        self.file.write_all_at(&rec, off as u64)?;
        *len += need;
        Ok(Some(off as u32))
    }

    /// Reads the chunk record at `off`, verifying its checksum.
    fn read(&self, off: u32) -> Result<(Encoding, &[u8]), String> {
        let published = *self.len.lock();
        let off = off as usize;
        if off < HEADER_LEN || off + RECORD_HEADER_LEN > published {
            return Err(format!(
                "chunk offset {off} outside written range {published}"
            ));
        }
        // SAFETY: [0, published) was fully written before `published` was stored and is
        // never written again; the map lives as long as `self`.
        let all = unsafe { std::slice::from_raw_parts(self.map.as_ptr(), published) };
        let h = &all[off..off + RECORD_HEADER_LEN];
        let len = u32::from_le_bytes([h[3], h[4], h[5], h[6]]) as usize;
        let end = off + RECORD_HEADER_LEN + len;
        if end > published {
            return Err(format!("chunk at {off} runs past the written range"));
        }
        let data = &all[off + RECORD_HEADER_LEN..end];
        let crc = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        if crc32c::crc32c_append(crc32c::crc32c(&h[..7]), data) != crc {
            return Err(format!("chunk at {off}: checksum mismatch"));
        }
        let enc = Encoding::try_from(h[0]).map_err(|e| format!("chunk at {off}: {e}"))?;
        Ok((enc, data))
    }
}

/// The set of head chunk files of one head generation.
pub struct HeadChunks {
    dir: PathBuf,
    next_id: Mutex<u32>,
    files: RwLock<Vec<Arc<ChunkFile>>>,
}

impl HeadChunks {
    /// Opens `dir`, removing files left by an earlier run (the log rebuilds them).
    pub fn open(dir: &Path) -> std::io::Result<HeadChunks> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
        Ok(HeadChunks {
            dir: dir.to_path_buf(),
            next_id: Mutex::new(1),
            files: RwLock::new(Vec::new()),
        })
    }

    /// Writes a full chunk and returns where it is.
    pub fn write(&self, enc: Encoding, samples: u16, data: &[u8]) -> std::io::Result<HeadChunkRef> {
        if let Some(f) = self.files.read().last()
            && let Some(off) = f.append(enc, samples, data)?
        {
            return Ok(HeadChunkRef::new(f.id, off));
        }
        let mut files = self.files.write();
        if let Some(f) = files.last()
            && let Some(off) = f.append(enc, samples, data)?
        {
            return Ok(HeadChunkRef::new(f.id, off));
        }
        let id = {
            let mut n = self.next_id.lock();
            *n += 1;
            *n - 1
        };
        let f = Arc::new(ChunkFile::create(&self.dir, id)?);
        let off = f
            .append(enc, samples, data)?
            .ok_or_else(|| std::io::Error::other("chunk larger than a head chunk file"))?;
        files.push(f);
        Ok(HeadChunkRef::new(id, off))
    }

    /// The file holding `r`, if it belongs to this generation.
    pub fn file(&self, r: HeadChunkRef) -> Option<Arc<ChunkFile>> {
        self.files.read().iter().find(|f| f.id == r.file()).cloned()
    }

    /// Hands the current files to the caller (a frozen head) and starts afresh; the
    /// files are deleted when the last holder drops them.
    pub fn take_files(&self) -> Vec<Arc<ChunkFile>> {
        std::mem::take(&mut *self.files.write())
    }

    /// Bytes written to this generation's files.
    pub fn bytes(&self) -> usize {
        self.files.read().iter().map(|f| *f.len.lock()).sum()
    }
}

/// Reads a chunk from one of `files`.
pub fn read_chunk(files: &[Arc<ChunkFile>], r: HeadChunkRef) -> Result<(Encoding, &[u8]), String> {
    let f = files
        .iter()
        .find(|f| f.id == r.file())
        .ok_or_else(|| format!("head chunk file {} not found", r.file()))?;
    f.read(r.offset())
        .map_err(|e| format!("{}: {e}", f.path.display()))
}

impl ChunkFile {
    /// Reads the chunk at `r` from this file.
    pub fn read_ref(&self, r: HeadChunkRef) -> Result<(Encoding, &[u8]), String> {
        self.read(r.offset())
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}
