//! What counting a request for `cowfs stats` costs a request thread: one
//! `Stats::request` timer made and dropped (a count, two clock reads, the
//! time and a histogram bucket), in 1, 2, 4 and 8 threads counting the same
//! operation at once, where they would fight over shared cache lines if
//! the counters were not striped.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use cowfs::stats::{Op, Stats};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn worker(stats: &Stats, iters: u64, start: &Barrier) -> Duration {
    start.wait();
    let t0 = Instant::now();
    for _ in 0..iters {
        drop(black_box(stats.request(black_box(Op::Lookup))));
    }
    t0.elapsed()
}

fn bench_request_counting(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    // For scale: the two clock reads are most of it.
    group.bench_function("clock_read", |b| b.iter(|| black_box(Instant::now())));
    for threads in [1u64, 2, 4, 8] {
        group.throughput(Throughput::Elements(threads));
        group.bench_with_input(
            BenchmarkId::new("count_one_request", threads),
            &threads,
            |b, &threads| {
                let stats = Stats::default();
                b.iter_custom(|iters| {
                    let start = Barrier::new(threads as usize);
                    thread::scope(|s| {
                        let handles: Vec<_> = (0..threads)
                            .map(|_| s.spawn(|| worker(&stats, iters, &start)))
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

criterion_group!(benches, bench_request_counting);
criterion_main!(benches);
