//! Errors injected at named steps, for tests of the error paths (cargo
//! feature `test-hooks` only; without it every check is a no-op that
//! the compiler removes, and no environment is read).

use super::Errno;

/// Fails with the errno a test asked for at `step`, if it asked.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn check(_step: &str) -> Result<(), Errno> {
    Ok(())
}

/// Fails with the errno a test asked for at `step`, if it asked: the file
/// named by `COWFS_FAULT_FILE` holds lines `STEP ERRNO`. It is read at
/// every check, so a test can set and clear faults while mounted.
#[cfg(feature = "test-hooks")]
pub fn check(step: &str) -> Result<(), Errno> {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(path) = FILE.get_or_init(|| std::env::var_os("COWFS_FAULT_FILE").map(PathBuf::from))
    else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(step)
            && let Some(errno) = words.next().and_then(|n| n.parse::<i32>().ok())
        {
            tracing::warn!(step, errno, "injected fault");
            return Err(Errno::from_raw_os_error(errno));
        }
    }
    Ok(())
}
