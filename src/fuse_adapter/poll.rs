//! Polling for the next request before sleeping.
//!
//! A request thread that sleeps between requests costs every request two
//! wake-ups: the caller's request wakes the thread, and the answer wakes the
//! caller, each often on the other CPU. Where waking an idle CPU is dear (a
//! virtual machine's halted vCPU: measured here, one FUSE round trip cost
//! ~35 µs more when caller and daemon were on different CPUs) that is most of
//! a request's price. So after an answer a thread first polls for the next
//! request for a short window, yielding its CPU between tries; a caller that
//! comes back within the window finds the thread awake, and the CPU of a
//! polling thread is not idle, so the scheduler keeps the caller where it
//! ran. A yield that took long means another task wanted the CPU: the
//! thread stops polling and sleeps, so polling never takes CPU time that
//! work needs, and an idle mount sleeps after one window.

use std::time::{Duration, Instant};

/// How long a request thread polls before it sleeps (`-o poll_us=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollWindow {
    window: Duration,
}

impl PollWindow {
    /// The window cowfs polls for unless told otherwise: about one round of
    /// a caller that works between its requests (an open, read and close of
    /// a small file, or `ls -l`'s lstat and getxattr of one entry).
    pub const DEFAULT: PollWindow = PollWindow::micros(100);
    /// No polling: a thread sleeps as soon as it has answered.
    pub const OFF: PollWindow = PollWindow::micros(0);
    /// A yield that returns later than this found other work on the CPU.
    const BUSY_CPU: Duration = Duration::from_micros(10);

    pub const fn micros(us: u64) -> PollWindow {
        PollWindow {
            window: Duration::from_micros(us),
        }
    }

    pub fn is_off(&self) -> bool {
        self.window.is_zero()
    }

    pub fn as_micros(&self) -> u128 {
        self.window.as_micros()
    }

    /// Calls `try_once` until it has something, the window is over, or the
    /// CPU is wanted by another task; `None` then: the caller sleeps.
    pub fn poll<T>(&self, mut try_once: impl FnMut() -> Option<T>) -> Option<T> {
        if self.is_off() {
            return None;
        }
        let start = Instant::now();
        loop {
            if let Some(found) = try_once() {
                return Some(found);
            }
            if start.elapsed() >= self.window {
                return None;
            }
            let yielded = Instant::now();
            std::thread::yield_now();
            if yielded.elapsed() > Self::BUSY_CPU {
                return None;
            }
        }
    }
}

impl Default for PollWindow {
    fn default() -> Self {
        PollWindow::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_tries() {
        let mut tries = 0;
        assert_eq!(
            PollWindow::OFF.poll(|| -> Option<()> {
                tries += 1;
                None
            }),
            None
        );
        assert_eq!(tries, 0);
    }

    #[test]
    fn found_within_the_window_is_returned() {
        let mut tries = 0;
        let found = PollWindow::micros(100_000).poll(|| {
            tries += 1;
            (tries == 3).then_some(tries)
        });
        assert_eq!(found, Some(3));
    }

    #[test]
    fn the_window_ends_the_poll() {
        let start = Instant::now();
        assert_eq!(
            PollWindow::micros(2_000).poll(|| -> Option<()> { None }),
            None
        );
        // Ended by the window (or earlier, by a busy CPU), never much later.
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
