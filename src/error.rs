//! Errors. Filesystem operations fail with an errno, which is what the
//! kernel gets back; setting a mount up fails with a `SetupError` that says
//! which path was wrong and why.

use std::path::PathBuf;

pub use crate::sys::Errno;

/// The result of a filesystem operation.
pub type OpResult<T> = Result<T, Errno>;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not a directory")]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("work dir {path} is in use by another cowfs mount")]
    WorkDirInUse { path: PathBuf },
}

impl SetupError {
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        SetupError::Io {
            what,
            path: path.into(),
            source: source.into(),
        }
    }
}
