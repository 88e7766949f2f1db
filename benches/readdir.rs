//! Merged readdir: `Overlay::list_dir` of a 10k-entry dir spread over two
//! lower layers, with some names in both (deduplicated) and nothing in the
//! upper dir.

use std::ffi::OsStr;
use std::hint::black_box;
use std::time::Duration;

use cowfs::inode::ROOT_INO;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;

const ENTRIES: usize = 10_000;
/// Names present in both layers (the top one wins).
const SHARED: usize = 500;

fn bench_readdir(c: &mut Criterion) {
    let env = common::Layers::new(2);
    for i in 0..ENTRIES {
        // Even names in the top lower, odd in the bottom one.
        let layer = i % 2;
        common::touch(&env.lowers[layer].join(format!("big/file-{i:05}")));
    }
    for i in (0..ENTRIES).step_by(2).take(SHARED) {
        common::touch(&env.lowers[1].join(format!("big/file-{i:05}")));
    }
    let ov = env.mount();
    let root = ov.inode(ROOT_INO).expect("root inode");
    let (dir, _) = ov.lookup(&root, OsStr::new("big")).expect("lookup big");
    assert_eq!(ov.list_dir(&dir).expect("list_dir").len(), ENTRIES);

    let mut group = c.benchmark_group("readdir");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(ENTRIES as u64));
    group.bench_function("list_dir_10k_2_layers", |b| {
        b.iter(|| black_box(ov.list_dir(&dir).expect("list_dir")))
    });
    group.finish();
}

criterion_group!(benches, bench_readdir);
criterion_main!(benches);
