//! Errors. Filesystem operations fail with an errno, which is what the
//! kernel gets back; setting a mount up (and the CLI around it) fails with a
//! `SetupError` that names the step and the path it was on, and why. The
//! CLI shows one as one line: `cowfs: error: <step> <path>: <cause>`.

use std::path::PathBuf;

pub use crate::sys::Errno;

/// The result of a filesystem operation.
pub type OpResult<T> = Result<T, Errno>;

/// The result of a setup step.
pub type SetupResult<T> = Result<T, SetupError>;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A command line that does not have the shape of any cowfs command;
    /// the CLI shows it with the usage text (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A step on a path failed: "lower dir /a: No such file or directory".
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A step with no path of its own failed: "starting the FUSE session: ...".
    #[error("{what}: {source}")]
    Step {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not a directory")]
    NotADirectory { what: &'static str, path: PathBuf },
    /// A setup that cannot work, said in words (the words name the paths).
    #[error("{0}")]
    Invalid(String),
    #[error("work dir {path} is in use by another cowfs mount")]
    WorkDirInUse { path: PathBuf },
    /// The daemon's own setup error, as it reported it to the command that
    /// started it (the text of a `SetupError` of the daemon's).
    #[error("{0}")]
    Daemon(String),
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

    pub fn step(what: &'static str, source: impl Into<std::io::Error>) -> Self {
        SetupError::Step {
            what,
            source: source.into(),
        }
    }

    /// The message on one line, whatever the paths in it hold: line breaks
    /// are shown escaped (`\n`, `\r`).
    pub fn one_line(&self) -> String {
        self.to_string().replace('\n', "\\n").replace('\r', "\\r")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_names_step_path_and_cause_on_one_line() {
        let e = SetupError::io(
            "pid file",
            "/no/such/dir/cowfs.pid",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(
            e.one_line(),
            "pid file /no/such/dir/cowfs.pid: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn errno_causes_read_as_io_errors() {
        let e = SetupError::step("starting the FUSE session", Errno::NOTCONN);
        assert_eq!(
            e.to_string(),
            format!(
                "starting the FUSE session: {}",
                std::io::Error::from_raw_os_error(libc::ENOTCONN)
            )
        );
    }

    #[test]
    fn line_breaks_in_paths_stay_on_one_line() {
        let e = SetupError::NotADirectory {
            what: "lower dir",
            path: "/tmp/a\nb".into(),
        };
        assert_eq!(e.one_line(), "lower dir /tmp/a\\nb is not a directory");
        assert!(!e.one_line().contains('\n'));
    }
}
