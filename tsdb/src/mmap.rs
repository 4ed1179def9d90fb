//! Read-only views of whole files, memory-mapped when possible.
//!
//! [`MappedFile`] maps a file the engine wrote and published (a block's index and chunk
//! segments) and hands out its bytes as one `&[u8]`. If the mapping fails (some file
//! systems refuse it, or the address space is exhausted) it falls back to reading the file
//! into memory, which is slower to open but reads the same bytes. The view never changes
//! after it is built; everything read from it is still bounds-checked and checksummed by
//! the format readers, because the bytes on disk may be corrupt.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::StorageError;

/// The bytes of one file: a read-only memory map, or a heap copy if mapping failed.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    data: Backing,
}

#[derive(Debug)]
enum Backing {
    Map(memmap2::Mmap),
    Heap(Vec<u8>),
}

impl MappedFile {
    /// Maps the whole file at `path` read-only, or reads it into memory if it cannot be
    /// mapped.
    ///
    /// # Safety
    ///
    /// The caller promises that nothing modifies or truncates the file while the returned
    /// value (or any slice borrowed from it) is alive. If another process does, reads may
    /// observe torn bytes or the process may be killed by `SIGBUS`. The engine upholds
    /// this by mapping only files it wrote itself and never modifies once published;
    /// deleting (unlinking) the file while it is mapped is fine.
    pub unsafe fn open(path: &Path) -> Result<MappedFile, StorageError> {
        let file = File::open(path).map_err(StorageError::io(path))?;
        let len = file.metadata().map_err(StorageError::io(path))?.len();
        if len == 0 {
            // Zero-length mappings are not portable; there is nothing to map anyway.
            return Ok(MappedFile {
                path: path.to_path_buf(),
                data: Backing::Heap(Vec::new()),
            });
        }
        // SAFETY: the obligation that nobody mutates the file while it is mapped is passed
        // on to our caller through this function's `# Safety` contract.
        let mapped = unsafe { memmap2::Mmap::map(&file) };
        let data = match mapped {
            Ok(m) => Backing::Map(m),
            Err(err) => {
                tracing::debug!(
                    path = %path.display(),
                    %err,
                    "failed to memory-map file, reading it into memory instead"
                );
                Backing::Heap(read_all(&file, path, len)?)
            }
        };
        Ok(MappedFile {
            path: path.to_path_buf(),
            data,
        })
    }

    /// The file's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.data {
            Backing::Map(m) => m,
            Backing::Heap(v) => v,
        }
    }

    /// The file's length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path the file was opened from; errors about its bytes name it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the bytes are memory-mapped (false after a fallback to reading).
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, Backing::Map(_))
    }
}

fn read_all(mut file: &File, path: &Path, len: u64) -> Result<Vec<u8>, StorageError> {
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut buf).map_err(StorageError::io(path))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_reads_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        // SAFETY: the file is private to this test and not modified while mapped.
        let m = unsafe { MappedFile::open(&p) }.unwrap();
        assert_eq!(m.as_slice(), b"hello");
        assert!(m.is_mapped());
        assert_eq!(m.path(), p);
    }

    #[test]
    fn empty_file_gives_empty_slice() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        // SAFETY: as above.
        let m = unsafe { MappedFile::open(&p) }.unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing");
        // SAFETY: nothing is mapped.
        let err = unsafe { MappedFile::open(&p) }.unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }));
        assert!(err.to_string().contains("missing"));
    }
}
