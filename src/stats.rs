//! Live figures of a mount: what the request threads count as they go
//! (requests per operation, with a time histogram each), what copy-up and
//! the namespace operations made, and a snapshot of it all with the sizes of
//! the mount's tables, in text or JSON for `cowfs stats`.
//!
//! Counting sits on the path of every request, so it is kept to three
//! relaxed atomic adds (the count as the request starts, so that a caller
//! who got an answer finds its request counted; the time and one histogram
//! bucket as it ends) and two reads of the monotonic clock. The counters
//! are striped: each request thread adds to a stripe of its own (assigned
//! once per thread), so threads do not fight over the cache lines of the
//! operations they all serve; a snapshot sums the stripes.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Declares the FUSE operations cowfs serves, each with the name the
/// figures show it by.
macro_rules! ops {
    ($($op:ident => $name:literal,)*) => {
        /// A FUSE operation cowfs serves.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Op { $($op,)* }

        impl Op {
            pub const ALL: &[Op] = &[$(Op::$op,)*];

            pub fn name(self) -> &'static str {
                match self { $(Op::$op => $name,)* }
            }
        }
    };
}

ops! {
    Lookup => "lookup",
    Forget => "forget",
    Getattr => "getattr",
    Setattr => "setattr",
    Readlink => "readlink",
    Mknod => "mknod",
    Mkdir => "mkdir",
    Unlink => "unlink",
    Rmdir => "rmdir",
    Symlink => "symlink",
    Rename => "rename",
    Link => "link",
    Open => "open",
    Read => "read",
    Write => "write",
    Flush => "flush",
    Release => "release",
    Fsync => "fsync",
    Opendir => "opendir",
    Readdir => "readdir",
    Readdirplus => "readdirplus",
    Fsyncdir => "fsyncdir",
    Statfs => "statfs",
    Setxattr => "setxattr",
    Getxattr => "getxattr",
    Listxattr => "listxattr",
    Removexattr => "removexattr",
    Access => "access",
    Create => "create",
    Fallocate => "fallocate",
    Lseek => "lseek",
    CopyFileRange => "copy_file_range",
    Releasedir => "releasedir",
    Interrupt => "interrupt",
    Destroy => "destroy",
    Init => "init",
    // Every other request (locks, ioctls, statx, ...), answered ENOSYS.
    Unsupported => "unsupported",
}

const OPS: usize = Op::ALL.len();

/// The histogram: bucket 0 holds times below 2^MIN_SHIFT ns, then each
/// doubling up to 2^MAX_SHIFT ns is split in 2^SUB_BITS buckets (so a
/// bucket is at most 1/4 of its lower bound wide), and the last holds the
/// rest.
const SUB_BITS: u32 = 2;
const MIN_SHIFT: u32 = 8; // 256 ns
const MAX_SHIFT: u32 = 36; // 68.7 s
const BUCKETS: usize = 2 + (((MAX_SHIFT - MIN_SHIFT) as usize) << SUB_BITS);

fn bucket_of(ns: u64) -> usize {
    if ns < 1 << MIN_SHIFT {
        return 0;
    }
    let octave = 63 - ns.leading_zeros();
    if octave >= MAX_SHIFT {
        return BUCKETS - 1;
    }
    let sub = (ns >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    1 + (((octave - MIN_SHIFT) as usize) << SUB_BITS) + sub as usize
}

/// The largest time bucket `index` holds (the last one: its smallest).
fn bucket_bound(index: usize) -> u64 {
    match index {
        0 => 1 << MIN_SHIFT,
        i if i >= BUCKETS - 1 => 1 << MAX_SHIFT,
        i => {
            let octave = MIN_SHIFT + ((i - 1) >> SUB_BITS) as u32;
            let sub = ((i - 1) & ((1 << SUB_BITS) - 1)) as u64;
            let width = 1u64 << (octave - SUB_BITS);
            (1u64 << octave) + (sub + 1) * width
        }
    }
}

struct OpCounters {
    /// Requests begun.
    count: AtomicU64,
    /// Time of the requests done, in total and in buckets.
    total_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// The counters of all operations that a set of threads adds to; aligned so
/// that two stripes never share a cache line.
#[repr(align(128))]
struct Stripe {
    ops: [OpCounters; OPS],
}

const STRIPES: usize = 4;

thread_local! {
    /// The stripe this thread counts in (assigned on first use).
    static STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

fn my_stripe() -> usize {
    STRIPE.with(|stripe| match stripe.get() {
        Some(index) => index,
        None => {
            let index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(Some(index));
            index
        }
    })
}

/// How the mount talks to the kernel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Transport {
    /// What carries the requests ("/dev/fuse read").
    pub kind: String,
    /// Request threads.
    pub threads: u32,
    /// How long a thread polls for the next request before it sleeps.
    #[serde(default)]
    pub poll_us: u64,
}

/// The counters of one mount.
pub struct Stats {
    stripes: Box<[Stripe]>,
    started: Instant,
    copy_ups: AtomicU64,
    copy_up_ns: AtomicU64,
    bytes_copied: AtomicU64,
    bytes_cloned: AtomicU64,
    whiteouts: AtomicU64,
    opaque_dirs: AtomicU64,
    passthrough_files: AtomicU64,
    found_polling: AtomicU64,
    transport: OnceLock<Transport>,
}

impl Default for Stats {
    fn default() -> Self {
        let stripes = (0..STRIPES)
            .map(|_| Stripe {
                ops: std::array::from_fn(|_| OpCounters {
                    count: AtomicU64::new(0),
                    total_ns: AtomicU64::new(0),
                    buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                }),
            })
            .collect();
        Stats {
            stripes,
            started: Instant::now(),
            copy_ups: AtomicU64::new(0),
            copy_up_ns: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            bytes_cloned: AtomicU64::new(0),
            whiteouts: AtomicU64::new(0),
            opaque_dirs: AtomicU64::new(0),
            passthrough_files: AtomicU64::new(0),
            found_polling: AtomicU64::new(0),
            transport: OnceLock::new(),
        }
    }
}

/// Times one request; adds its time when dropped (also when it unwinds).
pub struct RequestTimer<'a> {
    counters: &'a OpCounters,
    started: Instant,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let counters = self.counters;
        counters.total_ns.fetch_add(ns, Ordering::Relaxed);
        counters.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
    }
}

/// How the data of a copy got into the upper file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataCopy {
    /// Written (copy_file_range, sendfile, read/write).
    Copied,
    /// Shared with the lower file (FICLONE).
    Cloned,
}

impl Stats {
    /// Counts a request of `op` and starts timing it.
    #[inline]
    pub fn request(&self, op: Op) -> RequestTimer<'_> {
        let counters = &self.stripes[my_stripe()].ops[op as usize];
        counters.count.fetch_add(1, Ordering::Relaxed);
        RequestTimer {
            counters,
            started: Instant::now(),
        }
    }

    /// A copy-up begun at `started` is done.
    pub fn copied_up(&self, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.copy_ups.fetch_add(1, Ordering::Relaxed);
        self.copy_up_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// `bytes` of file data reached an upper copy, by `how`.
    pub fn copied_data(&self, how: DataCopy, bytes: u64) {
        let counter = match how {
            DataCopy::Copied => &self.bytes_copied,
            DataCopy::Cloned => &self.bytes_cloned,
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn made_whiteout(&self) {
        self.whiteouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn made_opaque(&self) {
        self.opaque_dirs.fetch_add(1, Ordering::Relaxed);
    }

    /// An open file now passes through to its real file.
    pub fn passthrough_opened(&self) {
        self.passthrough_files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn passthrough_closed(&self) {
        let _ = self
            .passthrough_files
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Counts a request a thread found while polling (no wake-up).
    pub fn request_found_polling(&self) {
        self.found_polling.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how the mount talks to the kernel (once, at start).
    pub fn set_transport(&self, transport: Transport) {
        let _ = self.transport.set(transport);
    }

    /// The figures now, with the sizes of the mount's tables in `tables`.
    pub fn snapshot(&self, tables: TableFigures) -> Snapshot {
        let mut requests = BTreeMap::new();
        for &op in Op::ALL {
            let (mut count, mut total_ns) = (0u64, 0u64);
            let mut buckets = [0u64; BUCKETS];
            for stripe in self.stripes.iter() {
                let counters = &stripe.ops[op as usize];
                count += counters.count.load(Ordering::Relaxed);
                total_ns = total_ns.saturating_add(counters.total_ns.load(Ordering::Relaxed));
                for (sum, bucket) in buckets.iter_mut().zip(&counters.buckets) {
                    *sum += bucket.load(Ordering::Relaxed);
                }
            }
            if count == 0 {
                continue;
            }
            let done: u64 = buckets.iter().sum();
            let figures = OpFigures {
                count,
                total_ns,
                p50_ns: quantile(&buckets, done, 0.50),
                p99_ns: quantile(&buckets, done, 0.99),
            };
            requests.insert(op.name().to_owned(), figures);
        }
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Snapshot {
            pid: std::process::id(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            transport: self.transport.get().cloned().unwrap_or(Transport {
                kind: "none".into(),
                threads: 0,
                poll_us: 0,
            }),
            found_polling: load(&self.found_polling),
            requests,
            copy_ups: CopyUpFigures {
                count: load(&self.copy_ups),
                bytes_copied: load(&self.bytes_copied),
                bytes_cloned: load(&self.bytes_cloned),
                total_ns: load(&self.copy_up_ns),
            },
            whiteouts: load(&self.whiteouts),
            opaque_dirs: load(&self.opaque_dirs),
            passthrough_files: load(&self.passthrough_files),
            tables,
        }
    }
}

/// The bound of the bucket the `q` quantile of `count` times falls in.
fn quantile(buckets: &[u64; BUCKETS], count: u64, q: f64) -> u64 {
    let rank = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return bucket_bound(index);
        }
    }
    bucket_bound(BUCKETS - 1)
}

/// The figures of one operation.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpFigures {
    /// Requests begun (the times are those of the requests done).
    pub count: u64,
    pub total_ns: u64,
    /// Upper bounds of the histogram buckets the median and the 99th
    /// percentile fall in (at most 25% above the true value).
    pub p50_ns: u64,
    pub p99_ns: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyUpFigures {
    pub count: u64,
    pub bytes_copied: u64,
    pub bytes_cloned: u64,
    pub total_ns: u64,
}

/// Sizes of the mount's tables at the time of a snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableFigures {
    /// Slots of the inode table.
    pub inodes: u64,
    pub open_handles: u64,
    /// `O_PATH` fds kept, and how often one was found there or not.
    pub fd_cache_fds: u64,
    pub fd_cache_hits: u64,
    pub fd_cache_misses: u64,
    /// Merged listings kept for streams in progress.
    pub kept_listings: u64,
}

/// Everything `cowfs stats` shows, as the daemon sends it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub pid: u32,
    pub uptime_ms: u64,
    pub transport: Transport,
    /// Requests a thread found while polling, without sleeping for them.
    #[serde(default)]
    pub found_polling: u64,
    /// Operations served at least once, by name.
    pub requests: BTreeMap<String, OpFigures>,
    pub copy_ups: CopyUpFigures,
    /// Whiteouts and opaque dirs made in the upper dir.
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Open files the kernel reads and writes directly.
    pub passthrough_files: u64,
    #[serde(flatten)]
    pub tables: TableFigures,
}

impl Snapshot {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Snapshot, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The figures as a human reads them.
    pub fn to_text(&self, mountpoint: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cowfs stats {mountpoint}: pid {}, up {}, transport {} ({} threads, polling {} µs: {} requests found so)",
            self.pid,
            duration(self.uptime_ms.saturating_mul(1_000_000)),
            self.transport.kind,
            self.transport.threads,
            self.transport.poll_us,
            self.found_polling
        );
        let _ = writeln!(
            out,
            "\n{:<16} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "request", "count", "total", "mean", "p50", "p99"
        );
        let mut ops: Vec<_> = self.requests.iter().collect();
        ops.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        for (name, op) in ops {
            let _ = writeln!(
                out,
                "{name:<16} {:>10} {:>10} {:>10} {:>10} {:>10}",
                op.count,
                duration(op.total_ns),
                duration(op.total_ns / op.count.max(1)),
                duration(op.p50_ns),
                duration(op.p99_ns)
            );
        }
        let copy = &self.copy_ups;
        let _ = writeln!(
            out,
            "\ncopy-ups          {} ({} copied, {} cloned, {})",
            copy.count,
            bytes(copy.bytes_copied),
            bytes(copy.bytes_cloned),
            duration(copy.total_ns)
        );
        let _ = writeln!(out, "whiteouts made    {}", self.whiteouts);
        let _ = writeln!(out, "opaque dirs made  {}", self.opaque_dirs);
        let tables = &self.tables;
        let _ = writeln!(out, "inodes            {}", tables.inodes);
        let _ = writeln!(out, "open handles      {}", tables.open_handles);
        let _ = writeln!(out, "passthrough files {}", self.passthrough_files);
        let _ = writeln!(
            out,
            "fd cache          {} fds, {} hits, {} misses",
            tables.fd_cache_fds, tables.fd_cache_hits, tables.fd_cache_misses
        );
        let _ = writeln!(out, "kept listings     {}", tables.kept_listings);
        out
    }
}

fn duration(ns: u64) -> String {
    let d = Duration::from_nanos(ns);
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", d.as_secs_f64()),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_times_in_order_and_bound_them() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            255,
            256,
            300,
            1000,
            4095,
            4096,
            1 << 20,
            1 << 35,
            u64::MAX,
        ] {
            let index = bucket_of(ns);
            assert!(index >= last, "bucket of {ns} went down");
            assert!(index < BUCKETS);
            if index < BUCKETS - 1 {
                assert!(ns < bucket_bound(index), "{ns} above its bucket's bound");
            }
            if index > 0 {
                assert!(ns >= bucket_bound(index - 1), "{ns} below its bucket");
            }
            last = index;
        }
        for index in 1..BUCKETS - 1 {
            let (low, high) = (bucket_bound(index - 1), bucket_bound(index));
            assert!(high > low);
            assert!(
                (high - low) * 4 <= low,
                "bucket {index} wider than a quarter"
            );
        }
    }

    #[test]
    fn a_snapshot_counts_every_request_and_its_quantiles() {
        let stats = Stats::default();
        for _ in 0..99 {
            drop(stats.request(Op::Lookup));
        }
        let mut slow = stats.request(Op::Lookup);
        slow.started -= Duration::from_millis(50);
        drop(slow);
        let in_flight = stats.request(Op::Write);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        drop(stats.request(Op::Getattr));
                    }
                });
            }
        });
        stats.made_whiteout();
        stats.copied_data(DataCopy::Cloned, 10);
        let snapshot = stats.snapshot(TableFigures::default());
        let lookup = &snapshot.requests["lookup"];
        assert_eq!(lookup.count, 100);
        assert!(lookup.total_ns >= 50_000_000);
        assert!(lookup.p50_ns < 50_000_000, "p50 {}", lookup.p50_ns);
        assert!(lookup.p99_ns < 50_000_000, "p99 {}", lookup.p99_ns);
        assert_eq!(snapshot.requests["getattr"].count, 8000);
        assert_eq!(snapshot.requests["write"].count, 1, "counted as it starts");
        assert!(!snapshot.requests.contains_key("read"));
        drop(in_flight);
        assert_eq!(snapshot.whiteouts, 1);
        assert_eq!(snapshot.copy_ups.bytes_cloned, 10);
        let back = Snapshot::from_json(&snapshot.to_json()).expect("parse");
        assert_eq!(back, snapshot);
        assert!(snapshot.to_text("/mnt").contains("lookup"));
    }
}
