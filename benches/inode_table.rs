//! The inode table under contention: 1, 2, 4 and 8 threads each doing
//! lookup (insert or bump), get, and forget on a shared `InodeTable`, over
//! key ranges that overlap between threads, so they meet on the same shards
//! and the same entries.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cowfs::inode::{InodeTable, Layers};
use cowfs::sys::FileType;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Distinct inode numbers the threads share.
const KEYS: u64 = 4096;

/// One thread's work: `iters` rounds of lookup + get + forget; returns the
/// time it took from the common start.
fn worker(table: &InodeTable, thread: u64, iters: u64, start: &Barrier) -> Duration {
    // Each thread walks the key space from its own offset with its own
    // stride, so threads hit the same keys at different times.
    let stride = 2 * thread + 1;
    let mut key = thread * (KEYS / 8);
    start.wait();
    let t0 = Instant::now();
    for _ in 0..iters {
        key = (key + stride) % KEYS;
        let ino = key + 2; // 1 is the root
        let inode = table.lookup(ino, FileType::RegularFile, Layers::default());
        black_box(table.get(ino));
        drop(inode);
        table.forget(ino, 1);
    }
    t0.elapsed()
}

fn bench_inode_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("inode_table");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    for threads in [1u64, 2, 4, 8] {
        // One round = one lookup+get+forget in each thread.
        group.throughput(Throughput::Elements(threads));
        group.bench_with_input(
            BenchmarkId::new("lookup_get_forget", threads),
            &threads,
            |b, &threads| {
                let table = Arc::new(InodeTable::new());
                b.iter_custom(|iters| {
                    let start = Arc::new(Barrier::new(threads as usize));
                    thread::scope(|s| {
                        let handles: Vec<_> = (0..threads)
                            .map(|t| {
                                let (table, start) = (&table, &start);
                                s.spawn(move || worker(table, t, iters, start))
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().expect("worker"))
                            .max()
                            .unwrap_or_default()
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_inode_table);
criterion_main!(benches);
