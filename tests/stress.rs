//! Concurrency and resource tests: many threads on the same names, with fixed seeds, a time bound
//! and a deadline on every wait (a hang fails the test). `COWFS_LONG=1` runs them longer.
//!
//! * concurrent copy-up of one lower file: exactly one upper file, every writer's block kept;
//! * renames over each other, unlink and re-create, while readers list the dir: no duplicate in
//!   a readdir pass, untouched names always listed, no temporary names; after quiescing the
//!   merged view equals the threads' model, survives a remount and matches kernel overlayfs;
//! * resources: walking ~100k lower inodes then dropping the kernel's caches brings the daemon's
//!   RSS back near its start and keeps its fd count bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::reliability_support::*;

fn time_bound() -> Duration {
    if long_mode() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(6)
    }
}

/// Beyond the time bound, how long threads may take to notice the stop flag.
const GRACE: Duration = Duration::from_secs(60);

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// concurrent copy-up of the same lower file
// ---------------------------------------------------------------------------

#[test]
fn concurrent_copy_up_of_one_file() {
    let seed = seed("stress/copy-up", 0x5EED_0001);
    let mut rng = Rng::new(seed);
    let threads = 12;
    let files = if long_mode() { 400 } else { 60 };
    let len = 1 << 20;
    let layers = Layers::new(1);
    for k in 0..files {
        write_file_mode(
            &layers.lower(0).join(format!("s/f{k}")),
            gen_data(len, k as u64),
            0o644,
        );
    }
    let m = layers.mount();
    let t0 = Instant::now();
    let mut rounds = 0;
    for k in 0..files {
        if t0.elapsed() > time_bound() {
            break;
        }
        rounds += 1;
        let path = layers.mnt.join(format!("s/f{k}"));
        // each thread writes one distinct block; some first chmod, setxattr or truncate-extend
        let blocks: Vec<u64> = (0..threads).map(|_| rng.below(len as u64 / 4096)).collect();
        let blocks: Vec<u64> = {
            let mut seen = BTreeSet::new();
            blocks
                .into_iter()
                .enumerate()
                .map(|(t, b)| {
                    let mut b = b;
                    while !seen.insert(b) {
                        b = (b + 1 + t as u64) % (len as u64 / 4096);
                    }
                    b
                })
                .collect()
        };
        let how: Vec<u64> = (0..threads).map(|_| rng.below(4)).collect();
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (path, barrier) = (path.clone(), barrier.clone());
                let (block, how) = (blocks[t], how[t]);
                std::thread::spawn(move || {
                    barrier.wait();
                    match how {
                        0 => chmod(&path, 0o644),
                        1 => set_xattr(&path, &format!("user.t{t}"), b"v"),
                        2 => {
                            let _ = fs::metadata(&path).unwrap();
                        }
                        _ => {}
                    }
                    let f = OpenOptions::new().write(true).open(&path).unwrap();
                    f.write_all_at(&gen_data(4096, 7000 + t as u64), block * 4096)
                        .unwrap();
                })
            })
            .collect();
        join_all("copy-up writers", handles, GRACE);
        let mut want = gen_data(len, k as u64);
        for (t, b) in blocks.iter().enumerate() {
            let o = *b as usize * 4096;
            want[o..o + 4096].copy_from_slice(&gen_data(4096, 7000 + t as u64));
        }
        let got = fs::read(&path).unwrap();
        assert!(
            got == want,
            "f{k}: merged content lost a writer's block (first diff at {:?})",
            first_diff(&want, &got)
        );
        let up = fs::read(layers.upper.join(format!("s/f{k}"))).unwrap();
        assert!(up == want, "f{k}: upper copy differs from the merged view");
        for (t, h) in how.iter().enumerate() {
            if *h == 1 {
                assert_eq!(lgetxattr(&path, &format!("user.t{t}")).unwrap(), b"v");
            }
        }
    }
    // exactly one upper file per lower file, nothing else
    let mut want_names: Vec<String> = (0..rounds).map(|k| format!("f{k}")).collect();
    want_names.sort();
    assert_eq!(list_names(&layers.upper.join("s")), want_names);
    assert_no_artifacts(&layers.upper);
    assert!(list_names(&layers.work.join("work")).is_empty());
    m.unmount();
    eprintln!("stress/copy-up: {rounds} files copied up by {threads} racing threads each");
}

// ---------------------------------------------------------------------------
// rename / unlink / re-create storm with readers
// ---------------------------------------------------------------------------

const OWN: usize = 8;
const SHARED: usize = 8;
const KEEP: usize = 40;

fn content(t: usize, i: usize, generation: u64) -> Vec<u8> {
    let line = format!("t{t} i{i} g{generation}\n");
    line.as_bytes()
        .repeat(1 + (generation as usize * 37 + i) % 200)
}

/// One worker: owns names `t{t}_*` (exact model), renames the shared names `s*` over each other.
fn storm_worker(
    dir: PathBuf,
    t: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    mut model: BTreeMap<String, Vec<u8>>,
) -> (BTreeMap<String, Vec<u8>>, u64) {
    let mut rng = Rng::new(seed);
    let mut ops = 0u64;
    let mut generation = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ops += 1;
        generation += 1;
        let i = rng.index(OWN);
        let name = format!("t{t}_{i}");
        let p = dir.join(&name);
        match rng.below(6) {
            0 | 1 => {
                // (re)write in full: copy-up of a lower file, or create over a whiteout
                let c = content(t, i, generation);
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&p)
                    .unwrap_or_else(|e| panic!("t{t}: open {name}: {e}"));
                f.write_all(&c).unwrap();
                model.insert(name, c);
            }
            2 => match fs::remove_file(&p) {
                Ok(()) => assert!(
                    model.remove(&name).is_some(),
                    "t{t}: unlinked a ghost {name}"
                ),
                Err(e) if errno(&e) == libc::ENOENT => {
                    assert!(!model.contains_key(&name), "t{t}: {name} vanished")
                }
                Err(e) => panic!("t{t}: unlink {name}: {e}"),
            },
            3 => {
                let to = format!("t{t}_{}", rng.index(OWN));
                match fs::rename(&p, dir.join(&to)) {
                    Ok(()) => {
                        let c = model.remove(&name).expect("renamed a ghost");
                        model.insert(to, c);
                    }
                    Err(e) if errno(&e) == libc::ENOENT => {
                        assert!(!model.contains_key(&name), "t{t}: {name} vanished")
                    }
                    Err(e) => panic!("t{t}: rename {name} -> {to}: {e}"),
                }
            }
            4 => {
                // append: copy-up of a lower file in the middle of the storm
                if let Some(c) = model.get_mut(&name) {
                    let extra = format!("append {generation}\n");
                    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
                    f.write_all(extra.as_bytes()).unwrap();
                    c.extend_from_slice(extra.as_bytes());
                }
            }
            _ => {
                let (a, b) = (rng.index(SHARED), rng.index(SHARED));
                match fs::rename(dir.join(format!("s{a}")), dir.join(format!("s{b}"))) {
                    Ok(()) => {}
                    Err(e) if errno(&e) == libc::ENOENT => {}
                    Err(e) => panic!("t{t}: rename s{a} -> s{b}: {e}"),
                }
            }
        }
    }
    (model, ops)
}

/// Lists `dir` in one pass; no duplicates, all `keep*` names present, only known name shapes.
fn reader_pass(dir: &Path) -> Result<usize, String> {
    let mut seen = BTreeSet::new();
    let rd = fs::read_dir(dir).map_err(|e| format!("opendir: {e}"))?;
    for e in rd {
        let n = e
            .map_err(|e| format!("readdir: {e}"))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let known = n.starts_with("keep")
            || (n.starts_with('s') && n[1..].parse::<usize>().is_ok())
            || (n.starts_with('t') && n.contains('_'));
        if !known {
            return Err(format!("unexpected name {n:?} listed"));
        }
        if !seen.insert(n.clone()) {
            return Err(format!("{n} listed twice in one readdir pass"));
        }
    }
    for k in 0..KEEP {
        if !seen.contains(&format!("keep{k}")) {
            return Err(format!("untouched keep{k} missing from a readdir pass"));
        }
    }
    Ok(seen.len())
}

#[test]
fn rename_unlink_recreate_storm_with_readers() {
    let seed = seed("stress/storm", 0x5EED_0002);
    let writers = 10;
    let readers = 3;
    let layers = Layers::new(2);
    let (top, bottom) = (layers.lower(0), layers.lower(1));
    let mut shared_init = BTreeSet::new();
    for j in 0..SHARED {
        let c = format!("shared {j}\n").repeat(10 + j * 50).into_bytes();
        write_file(&[top, bottom][j % 2].join(format!("r/s{j}")), &c);
        shared_init.insert(c);
    }
    let mut models = Vec::new();
    for t in 0..writers {
        let mut m = BTreeMap::new();
        for i in (0..OWN).step_by(2) {
            let c = content(t, i, 0);
            write_file(
                &[top, bottom][(t + i / 2) % 2].join(format!("r/t{t}_{i}")),
                &c,
            );
            m.insert(format!("t{t}_{i}"), c);
        }
        models.push(m);
    }
    for k in 0..KEEP / 2 {
        write_file(&bottom.join(format!("r/keep{k}")), format!("keep {k}"));
    }
    let m = layers.mount();
    for k in KEEP / 2..KEEP {
        write_file(&layers.mnt.join(format!("r/keep{k}")), format!("keep {k}"));
    }
    let dir = layers.mnt.join("r");
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let reader_err = Arc::new(Mutex::new(None::<String>));
    let mut rh = Vec::new();
    for _ in 0..readers {
        let (dir, stop, passes, err) = (
            dir.clone(),
            stop.clone(),
            passes.clone(),
            reader_err.clone(),
        );
        rh.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match reader_pass(&dir) {
                    Ok(_) => {
                        passes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        err.lock().unwrap().get_or_insert(e);
                        return;
                    }
                }
            }
        }));
    }
    let wh: Vec<_> = models
        .iter()
        .enumerate()
        .map(|(t, mdl)| {
            let (dir, stop, mdl) = (dir.clone(), stop.clone(), mdl.clone());
            let s = seed.wrapping_add(t as u64 * 7919);
            std::thread::spawn(move || storm_worker(dir, t, s, stop, mdl))
        })
        .collect();
    std::thread::sleep(time_bound());
    stop.store(true, Ordering::Relaxed);
    let results = join_all("storm writers", wh, GRACE);
    join_all("storm readers", rh, GRACE);
    if let Some(e) = reader_err.lock().unwrap().take() {
        panic!("reader: {e}");
    }
    let total_ops: u64 = results.iter().map(|r| r.1).sum();

    // quiesced: the listing equals the model, every name stats twice, shared contents unique
    let check = |root: &Path, what: &str| {
        let dir = root.join("r");
        let names = check_dirents(&dir);
        for n in &names {
            for _ in 0..2 {
                fs::symlink_metadata(dir.join(n))
                    .unwrap_or_else(|e| panic!("{what}: {n} listed but stat fails: {e}"));
            }
        }
        let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (mdl, _) in &results {
            want.extend(mdl.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for k in 0..KEEP {
            want.insert(format!("keep{k}"), format!("keep {k}").into_bytes());
        }
        let mut shared_seen = BTreeSet::new();
        for n in &names {
            if n.starts_with('s') {
                let c = fs::read(dir.join(n)).unwrap();
                assert!(
                    shared_init.contains(&c),
                    "{what}: {n} holds no original content"
                );
                assert!(shared_seen.insert(c), "{what}: {n}: content duplicated");
            }
        }
        assert!(!shared_seen.is_empty(), "{what}: every shared file is gone");
        let got_names: BTreeSet<&String> = names.iter().filter(|n| !n.starts_with('s')).collect();
        let want_names: BTreeSet<&String> = want.keys().collect();
        assert_eq!(got_names, want_names, "{what}: names differ from the model");
        for (k, v) in &want {
            let got = fs::read(dir.join(k)).unwrap();
            assert!(got == *v, "{what}: {k}: content differs from the model");
        }
        tree_snapshot(root)
    };
    let live = check(&layers.mnt, "live mount");
    assert_no_artifacts(&layers.upper);
    m.unmount();
    let m = layers.mount();
    let again = check(&layers.mnt, "after remount");
    assert_trees_eq(&live, &again, "before remount", "after remount");
    m.unmount();
    let k = layers.kernel_mount("kernel");
    let kernel = check(&k.mnt, "kernel overlayfs");
    assert_trees_eq(&live, &kernel, "cowfs", "kernel overlayfs");
    k.unmount();
    eprintln!(
        "stress/storm: {writers} writers, {readers} readers, {total_ops} ops, {} readdir passes, \
         0 duplicates, 0 ghosts",
        passes.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------
// resources: ~100k inodes walked, then forgotten
// ---------------------------------------------------------------------------

/// Lists and lstats everything under `dirs` of `root`; returns the number of entries.
fn walk_dirs(root: &Path, dirs: std::ops::Range<usize>) -> usize {
    let mut n = 0;
    for d in dirs {
        let dp = root.join(format!("d{d:03}"));
        fs::symlink_metadata(&dp).unwrap();
        n += 1;
        for e in fs::read_dir(&dp).unwrap() {
            fs::symlink_metadata(e.unwrap().path()).unwrap();
            n += 1;
        }
    }
    n
}

// Fields drop in order: the cowfs mount goes before the tmpfs lower under it.
struct Walked {
    mount: CowfsMount,
    _tmpfs: Tmpfs,
    layers: Layers,
    pid: i32,
    dirs: usize,
    per_dir: usize,
    rss0: u64,
    fds0: usize,
}

/// A lower of `dirs` x 1000 empty files, mounted and warmed up; start RSS and fds measured.
fn inode_fixture() -> Walked {
    let (dirs, per_dir) = if long_mode() {
        (500, 1000)
    } else {
        (100, 1000)
    };
    let layers = Layers::new(1);
    // the lower on tmpfs: 100k inodes made in a second or two
    let tmpfs = Tmpfs::mount_sized(layers.lower(0), "1g");
    let t0 = Instant::now();
    for d in 0..dirs {
        let dp = layers.lower(0).join(format!("d{d:03}"));
        fs::create_dir_all(&dp).unwrap();
        for f in 0..per_dir {
            fs::File::create(dp.join(format!("file-with-a-longish-name-{f:05}"))).unwrap();
        }
    }
    eprintln!(
        "stress/resources: {} inodes made in {:.1?}",
        dirs * per_dir,
        t0.elapsed()
    );
    let mount = layers.mount();
    let pid = mount.pid().expect("daemon pid");
    walk_dirs(&layers.mnt, 0..2);
    std::thread::sleep(Duration::from_millis(300));
    let (rss0, fds0) = (vm_rss_kb(pid), fd_count(pid));
    Walked {
        mount,
        _tmpfs: tmpfs,
        layers,
        pid,
        dirs,
        per_dir,
        rss0,
        fds0,
    }
}

/// Walks `dirs` under a deadline; checks the fd bound; returns RSS after the walk.
fn walk_checked(w: &Walked, dirs: std::ops::Range<usize>) -> u64 {
    let mnt = w.layers.mnt.clone();
    let want = dirs.len() * (w.per_dir + 1);
    let n = with_deadline("inode walk", Duration::from_secs(300), move || {
        walk_dirs(&mnt, dirs)
    });
    assert_eq!(n, want);
    let fds = fd_count(w.pid);
    // the fd cache holds at most 16384 O_PATH fds (half the fd limit, clamped)
    assert!(fds < 20000, "daemon holds {fds} fds");
    assert!(
        fds <= w.fds0 + 16384 + 64,
        "fd count grew past the cache bound: {} -> {fds}",
        w.fds0
    );
    vm_rss_kb(w.pid)
}

/// Makes the kernel forget its inodes (FORGETs to the daemon); returns the daemon's RSS once it
/// is at most `bound` KiB, or after 10 s.
fn forget_all(w: &Walked, bound: u64) -> u64 {
    let t = Instant::now();
    loop {
        unsafe { libc::sync() };
        fs::write("/proc/sys/vm/drop_caches", "2").expect("write drop_caches (needs root)");
        std::thread::sleep(Duration::from_millis(500));
        let rss = vm_rss_kb(w.pid);
        if rss <= bound || t.elapsed() > Duration::from_secs(10) {
            return rss;
        }
    }
}

/// No leak per inode: after the kernel forgot half the tree, walking the other half takes no
/// more memory than the first half did (forgotten inodes were freed, and their memory is either
/// reused or was given back and taken again), rather than as much again on top; fds stay within
/// the fd cache's bound.
#[test]
fn inode_walk_forgotten_inodes_are_freed_and_fds_bounded() {
    let w = inode_fixture();
    let half = w.dirs / 2;
    let rss_a = walk_checked(&w, 0..half);
    let rss_a2 = forget_all(&w, 0);
    let rss_b = walk_checked(&w, half..w.dirs);
    let rss_b2 = forget_all(&w, 0);
    let fds_after = fd_count(w.pid);
    eprintln!(
        "stress/resources: RSS KiB start {}, walk A {rss_a}, forget {rss_a2}, walk B {rss_b}, \
         forget {rss_b2}; fds start {}, after {fds_after}",
        w.rss0, w.fds0
    );
    let growth_a = rss_a.saturating_sub(w.rss0);
    assert!(
        growth_a > 1024,
        "walking {} inodes grew RSS by only {growth_a} KiB: the test measures nothing",
        half * w.per_dir
    );
    assert!(
        rss_b <= rss_a + growth_a / 2,
        "inodes the kernel forgot were not freed: walk of a disjoint half took RSS to {rss_b} \
         KiB, the first half to {rss_a} KiB (it took {growth_a} KiB; after forgetting {rss_a2})"
    );
    assert!(
        fds_after <= w.fds0 + 16384 + 64,
        "fds after forget: {fds_after}"
    );
    assert_eq!(list_names(&w.layers.mnt.join("d000")).len(), w.per_dir);
    w.mount.unmount();
}

/// The daemon gives the memory back: RSS within 2x of its start once the kernel forgot 100k
/// inodes.
#[test]
fn inode_walk_then_drop_caches_returns_rss() {
    let w = inode_fixture();
    let peak = walk_checked(&w, 0..w.dirs);
    let bound = (2 * w.rss0).max(w.rss0 + 4096);
    let after = forget_all(&w, bound);
    eprintln!(
        "stress/resources: RSS KiB start {}, after walk {peak}, after drop_caches {after} \
         (bound {bound})",
        w.rss0
    );
    assert!(
        after <= bound,
        "daemon RSS did not come back after the kernel forgot its inodes: start {} KiB, peak \
         {peak} KiB, after drop_caches {after} KiB (bound {bound} KiB)",
        w.rss0
    );
    assert!(fd_count(w.pid) <= w.fds0 + 16384 + 64);
    w.mount.unmount();
}
