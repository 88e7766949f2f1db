//! Helpers shared by the reliability tests (crash.rs, stress.rs, hostile.rs, fsx.rs): a seeded
//! RNG, deadlines, daemon resource probes and fast data generators. Only `std` and `libc`.
//!
//! Included with `mod reliability_support;` next to `mod common;`.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `COWFS_LONG=1` selects the long variants (more kills, ops, time, bigger files).
pub fn long_mode() -> bool {
    std::env::var("COWFS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The seed of a test: `COWFS_SEED` if set (to replay a run), else `fixed` in CI mode and a
/// time-based one in long mode. Always printed.
pub fn seed(test: &str, fixed: u64) -> u64 {
    let s = match std::env::var("COWFS_SEED") {
        Ok(v) => {
            let v = v.trim();
            v.strip_prefix("0x")
                .map(|h| u64::from_str_radix(h, 16))
                .unwrap_or_else(|| v.parse())
                .expect("COWFS_SEED: a decimal or 0x-hex u64")
        }
        Err(_) if long_mode() => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        Err(_) => fixed,
    };
    eprintln!("{test}: seed {s:#x} (replay with COWFS_SEED={s:#x})");
    s
}

/// splitmix64: small, fast, good enough for test choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.index(v.len())]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// `len` bytes of a fast, seed-dependent pattern (a 64-bit word per 8 bytes).
pub fn gen_data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Runs `f` on a new thread and waits at most `limit` for it; panics (naming `what`) on a
/// timeout, re-raises its panic. A hung thread is left behind: the mount guards' Drop then kills
/// the daemon, which fails its pending requests and lets the thread go.
pub fn with_deadline<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::Builder::new()
        .name(what.chars().take(15).collect())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .expect("spawn");
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => {
            let _ = h.join();
            v
        }
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: no answer within {limit:?} (the filesystem hangs)"),
    }
}

/// Waits for a batch of threads (`JoinHandle`s) with one overall deadline.
pub fn join_all<T>(
    what: &str,
    handles: Vec<std::thread::JoinHandle<T>>,
    limit: Duration,
) -> Vec<T> {
    let start = Instant::now();
    for h in &handles {
        while !h.is_finished() {
            assert!(
                start.elapsed() < limit,
                "{what}: threads still running after {limit:?} (the filesystem hangs)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    handles
        .into_iter()
        .map(|h| match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        })
        .collect()
}

pub fn kill9(pid: i32) {
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
}

/// `umount -l`, ignoring "not mounted".
pub fn lazy_umount(mnt: &Path) {
    let c = CString::new(mnt.as_os_str().as_bytes()).unwrap();
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// VmRSS of `pid` in KiB.
pub fn vm_rss_kb(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS line")
}

/// Number of open fds of `pid`.
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// Whether `e` is one of the errors an operation may get on a mount whose daemon was killed.
pub fn is_dead_mount_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN) | Some(libc::ECONNABORTED) | Some(libc::EIO) | Some(libc::ENODEV)
    )
}

/// First differing byte of two buffers (for messages).
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}
