//! Name resolution through the layer stack: `Overlay::lookup` of a name that
//! only the bottom layer has (every layer above is searched first), and of a
//! name no layer has, with 1, 4 and 16 lower layers.

use std::ffi::OsStr;
use std::hint::black_box;
use std::time::Duration;

use cowfs::error::Errno;
use cowfs::inode::ROOT_INO;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

mod common;

/// Files per dir in each layer, so lookups are not in trivially small dirs.
const FILLER: usize = 200;

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    for depth in [1usize, 4, 16] {
        // Every layer has dir `d` (so `d` is a merged dir of `depth` layers)
        // with its own filler files; only the bottom one has `d/target`.
        let env = common::Layers::new(depth);
        for (i, lower) in env.lowers.iter().enumerate() {
            for f in 0..FILLER {
                common::touch(&lower.join(format!("d/l{i}-f{f}")));
            }
        }
        common::touch(&env.lowers[depth - 1].join("d/target"));
        let ov = env.mount();
        let root = ov.inode(ROOT_INO).expect("root inode");
        let (dir, _) = ov.lookup(&root, OsStr::new("d")).expect("lookup d");

        group.bench_with_input(BenchmarkId::new("bottom_layer", depth), &depth, |b, _| {
            b.iter(|| {
                let (inode, attr) = ov
                    .lookup(&dir, black_box(OsStr::new("target")))
                    .expect("lookup target");
                black_box(attr);
                let ino = inode.ino;
                drop(inode);
                // Balance the kernel reference the lookup took, as FUSE forget does.
                ov.forget(ino, 1);
            })
        });
        group.bench_with_input(BenchmarkId::new("missing", depth), &depth, |b, _| {
            b.iter(|| {
                let err = ov
                    .lookup(&dir, black_box(OsStr::new("no-such-name")))
                    .err()
                    .expect("missing name must not resolve");
                assert_eq!(err, Errno::NOENT);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
