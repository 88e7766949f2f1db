//! Polling for the next request before sleeping.
//!
//! A request thread that sleeps between requests costs every request two
//! wake-ups: the caller's request wakes the thread, and the answer wakes the
//! caller, each often on the other CPU. Where waking an idle CPU is dear (a
//! virtual machine's halted vCPU: measured here, `ls -l` of 10,000 names took
//! 0.24 s with caller and daemon on one CPU, 0.95 s on two) that is most of a
//! request's price. So after an answer a thread first polls for the next
//! request, yielding its CPU between tries; a caller that comes back within
//! the window finds the thread awake, and the CPU of a polling thread is not
//! idle, so the scheduler wakes the caller where it ran.
//!
//! Polling must not cost what it saves. A yield that returns late means
//! another task wanted the CPU: the thread stops polling and sleeps. And each
//! thread sizes its window by what its waits were, as KVM's halt polling does:
//! a request that came after a longer wait than the longest window allowed
//! (a caller waiting on the disk, an idle mount) halves the window, down to no
//! polling at all; one that came within the allowed window but after the
//! current one doubles it. Bursts of requests poll; slow or idle streams
//! sleep at once.

use std::time::{Duration, Instant};

/// The longest a request thread may poll before it sleeps (`-o poll_us=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollWindow {
    max: Duration,
}

impl PollWindow {
    /// The window cowfs allows unless told otherwise: about one round of a
    /// caller that works between its requests (an open, read and close of a
    /// small file, or `ls -l`'s lstat and getxattr of one entry).
    pub const DEFAULT: PollWindow = PollWindow::micros(100);
    /// No polling: a thread sleeps as soon as it has answered.
    pub const OFF: PollWindow = PollWindow::micros(0);

    pub const fn micros(us: u64) -> PollWindow {
        PollWindow {
            max: Duration::from_micros(us),
        }
    }

    pub fn as_micros(&self) -> u128 {
        self.max.as_micros()
    }
}

impl Default for PollWindow {
    fn default() -> Self {
        PollWindow::DEFAULT
    }
}

/// One request thread's polling: the window it polls for now, sized by the
/// waits it saw.
#[derive(Debug)]
pub struct Poller {
    max: Duration,
    current: Duration,
    /// Whether the window follows the waits (else it stays at `max`).
    sized_by_waits: bool,
}

impl Poller {
    /// The smallest window polled for; halving below it stops polling.
    const MIN_WINDOW: Duration = Duration::from_micros(10);
    /// A yield that returns later than this found other work on the CPU.
    const BUSY_CPU: Duration = Duration::from_micros(10);

    /// Starts polling for the whole allowed window, then sizes it by the
    /// waits seen.
    pub fn new(window: PollWindow) -> Poller {
        Poller {
            max: window.max,
            current: window.max,
            sized_by_waits: true,
        }
    }

    /// Always polls for the whole allowed window. For the threads of an
    /// io_uring queue: the kernel hands a queue's requests to its threads in
    /// turn, so one thread's waits span other threads' requests and say
    /// little about the caller (measured: a window sized by them found a
    /// sixth of 20,000 small-file opens and took twice as long as a fixed one).
    pub fn fixed(window: PollWindow) -> Poller {
        Poller {
            sized_by_waits: false,
            ..Poller::new(window)
        }
    }

    /// Whether the next wait polls at all.
    pub fn polls(&self) -> bool {
        !self.current.is_zero()
    }

    /// The window polled for now.
    #[cfg(test)]
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Calls `try_once` until it has something, the window is over, or the
    /// CPU is wanted by another task; `None` then: the caller sleeps and
    /// reports with `slept` how long its whole wait was.
    pub fn poll<T>(
        &mut self,
        started: Instant,
        mut try_once: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        if !self.polls() {
            return None;
        }
        loop {
            if let Some(found) = try_once() {
                return Some(found);
            }
            if started.elapsed() >= self.current {
                return None;
            }
            let yielded = Instant::now();
            std::thread::yield_now();
            if yielded.elapsed() > Self::BUSY_CPU {
                return None;
            }
        }
    }

    /// Sizes the window by a wait that ended in sleep: `waited` is the time
    /// from the end of the last answer to the request that ended the sleep.
    pub fn slept(&mut self, waited: Duration) {
        if !self.sized_by_waits {
            return;
        }
        if waited > self.max {
            // No window allowed would have caught it.
            self.current /= 2;
            if self.current < Self::MIN_WINDOW {
                self.current = Duration::ZERO;
            }
        } else if waited > self.current {
            // A longer window would have.
            self.current = (self.current * 2).clamp(Self::MIN_WINDOW, self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_window_ignores_the_waits() {
        let mut poller = Poller::fixed(PollWindow::micros(100));
        for _ in 0..8 {
            poller.slept(Duration::from_millis(5));
        }
        assert_eq!(poller.current(), Duration::from_micros(100));
    }

    #[test]
    fn off_never_tries() {
        let mut poller = Poller::new(PollWindow::OFF);
        let mut tries = 0;
        let found = poller.poll(Instant::now(), || -> Option<()> {
            tries += 1;
            None
        });
        assert_eq!(found, None);
        assert_eq!(tries, 0);
        // Short waits never turn it on: the allowed window is none.
        poller.slept(Duration::from_micros(1));
        assert!(!poller.polls());
    }

    #[test]
    fn found_within_the_window_is_returned() {
        let mut poller = Poller::new(PollWindow::micros(1000));
        // Found on the first try (later tries may meet a busy CPU, which ends the poll).
        let mut tries = 0;
        let found = poller.poll(Instant::now(), || {
            tries += 1;
            Some(tries)
        });
        assert_eq!(found, Some(1));
    }

    #[test]
    fn the_window_ends_the_poll() {
        let mut poller = Poller::new(PollWindow::micros(1000));
        let start = Instant::now();
        assert_eq!(poller.poll(start, || -> Option<()> { None }), None);
        // Ended by the window (or earlier, by a busy CPU), never much later.
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn long_waits_stop_polling_and_short_ones_start_it_again() {
        let mut poller = Poller::new(PollWindow::micros(100));
        assert_eq!(poller.current(), Duration::from_micros(100));
        // A slow caller: every request comes after more than the allowed window.
        for _ in 0..4 {
            poller.slept(Duration::from_micros(500));
        }
        assert!(!poller.polls(), "window {:?}", poller.current());
        // A burst: requests come back within the allowed window, the window grows to it.
        poller.slept(Duration::from_micros(30));
        assert_eq!(poller.current(), Duration::from_micros(10));
        poller.slept(Duration::from_micros(30));
        poller.slept(Duration::from_micros(30));
        assert_eq!(poller.current(), Duration::from_micros(40));
        for _ in 0..4 {
            poller.slept(Duration::from_micros(90));
        }
        assert_eq!(poller.current(), Duration::from_micros(100));
        // A wait the current window covers changes nothing.
        poller.slept(Duration::from_micros(50));
        assert_eq!(poller.current(), Duration::from_micros(100));
    }
}
