//! Errors of the storage engine.
//!
//! [`StorageError`] is the error every on-disk structure reports: a file that cannot be
//! read or written ([`StorageError::Io`]), a file whose bytes contradict their format
//! ([`StorageError::Corrupt`]), or a caller that broke a documented precondition
//! ([`StorageError::InvalidInput`]). Both file variants name the path, so an operator can
//! find (and quarantine) the file from the message alone. Operation-specific errors wrap
//! this one.

use std::io;
use std::path::{Path, PathBuf};

/// An error reading or writing the engine's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The file's bytes contradict its documented format: bad magic, checksum mismatch,
    /// truncation, an offset out of bounds, a broken invariant.
    #[error("{}: corrupt: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    /// The operating system failed an operation on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The caller broke a documented precondition (for example, series added out of
    /// order). Nothing on disk is wrong.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl StorageError {
    /// A [`StorageError::Corrupt`] for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, msg: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A closure turning an I/O error on `path` into a [`StorageError::Io`], for
    /// `map_err`.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
        move |source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StorageError::Corrupt { path, .. } | StorageError::Io { path, .. } => Some(path),
            StorageError::InvalidInput(_) => None,
        }
    }

    /// Whether the error reports corrupt data (as opposed to a failing device or a
    /// caller's mistake); a corrupt block is quarantined rather than retried.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StorageError::Corrupt { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_path() {
        let e = StorageError::corrupt("/d/index", "bad magic");
        assert_eq!(e.to_string(), "/d/index: corrupt: bad magic");
        assert_eq!(e.path(), Some(Path::new("/d/index")));
        assert!(e.is_corruption());
        let e = StorageError::io(Path::new("/d/x"))(io::Error::other("boom"));
        assert_eq!(e.to_string(), "/d/x: boom");
        assert!(!e.is_corruption());
    }
}
