//! Crash consistency: the daemon is killed with SIGKILL at random moments while a worker runs
//! copy-ups of big files, renames, unlinks (whiteouts), mkdir/rmdir and opaque-dir creation.
//! After each kill the dead mount is lazily unmounted and cowfs mounted again on the same upper
//! and work dirs, and:
//!
//! * the merged view equals the model either before or after the operation that was in flight
//!   (every file old or new in full, no partial copy, no temporary or ghost names);
//! * the upper dir holds only names the merged view explains (no `#cowfs-*` temporaries, whiteouts
//!   only for names that are gone);
//! * the work dir's `work/` is empty after the remount.
//!
//! `COWFS_LONG=1`: 200 kills, 200 MiB files. `COWFS_SEED=N` replays a seed (kill timing varies).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::reliability_support::*;

#[derive(Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    /// `data` with the 4 KiB blocks `(offset, seed)` of `patches` written over it, in order
    File {
        mode: u32,
        data: Arc<Vec<u8>>,
        patches: Vec<(u64, u64)>,
    },
    Other(String),
}

impl Node {
    fn file(mode: u32, data: Vec<u8>) -> Node {
        Node::File {
            mode,
            data: Arc::new(data),
            patches: Vec::new(),
        }
    }

    /// The same node with its patches applied.
    fn materialize(&self) -> Node {
        match self {
            Node::File {
                mode,
                data,
                patches,
            } if !patches.is_empty() => {
                let mut d = data.as_ref().clone();
                for (off, seed) in patches {
                    d[*off as usize..*off as usize + 4096].copy_from_slice(&gen_data(4096, *seed));
                }
                Node::file(*mode, d)
            }
            other => other.clone(),
        }
    }
}

fn materialize(m: &Model) -> Model {
    m.iter()
        .map(|(k, v)| (k.clone(), v.materialize()))
        .collect()
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Dir { mode } => write!(f, "dir {mode:o}"),
            Node::File {
                mode,
                data,
                patches,
            } => write!(
                f,
                "file {mode:o} {} bytes fnv {:016x} +{} patches",
                data.len(),
                fnv1a(&data[..data.len().min(1 << 16)]),
                patches.len()
            ),
            Node::Other(k) => write!(f, "{k}"),
        }
    }
}

type Model = BTreeMap<String, Node>;

#[derive(Clone, Debug)]
enum Op {
    /// chmod of a big lower file: a full copy-up.
    ChmodBig {
        path: String,
        mode: u32,
    },
    /// open O_WRONLY (copy-up) and overwrite one aligned 4 KiB block.
    WriteBig {
        path: String,
        off: u64,
        seed: u64,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    /// create an empty file (mode 0644)
    Create {
        path: String,
    },
    /// write `data` at offset 0 of an empty file
    Write {
        path: String,
        data: Arc<Vec<u8>>,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::ChmodBig { .. } => "chmod-copyup",
            Op::WriteBig { .. } => "write-copyup",
            Op::Rename { .. } => "rename",
            Op::Unlink { .. } => "unlink",
            Op::Create { .. } => "create",
            Op::Write { .. } => "write",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
        }
    }

    fn is_big(&self) -> bool {
        matches!(self, Op::ChmodBig { .. } | Op::WriteBig { .. })
    }

    fn apply(&self, m: &Model) -> Model {
        let mut m = m.clone();
        match self {
            Op::ChmodBig { path, mode } => match m.get_mut(path) {
                Some(Node::File { mode: md, .. }) => *md = *mode,
                other => panic!("model: chmod {path} on {other:?}"),
            },
            Op::WriteBig { path, off, seed } => match m.get_mut(path) {
                Some(Node::File { patches, .. }) => patches.push((*off, *seed)),
                other => panic!("model: write {path} on {other:?}"),
            },
            Op::Rename { from, to } => {
                let moved: Vec<(String, Node)> = m
                    .iter()
                    .filter(|(k, _)| *k == from || k.starts_with(&format!("{from}/")))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                m.retain(|k, _| {
                    !(k == from
                        || k.starts_with(&format!("{from}/"))
                        || k == to
                        || k.starts_with(&format!("{to}/")))
                });
                for (k, v) in moved {
                    m.insert(format!("{to}{}", &k[from.len()..]), v);
                }
            }
            Op::Unlink { path } | Op::Rmdir { path } => {
                m.remove(path).expect("model: remove of a missing name");
            }
            Op::Create { path } => {
                m.insert(path.clone(), Node::file(0o644, Vec::new()));
            }
            Op::Write { path, data } => {
                m.insert(path.clone(), Node::file(0o644, data.as_ref().clone()));
            }
            Op::Mkdir { path } => {
                m.insert(path.clone(), Node::Dir { mode: 0o755 });
            }
        }
        m
    }

    fn run(&self, mnt: &Path) -> std::io::Result<()> {
        let p = |s: &str| mnt.join(s);
        match self {
            Op::ChmodBig { path, mode } => {
                fs::set_permissions(p(path), fs::Permissions::from_mode(*mode))
            }
            Op::WriteBig { path, off, seed } => {
                let f = OpenOptions::new().write(true).open(p(path))?;
                f.write_all_at(&gen_data(4096, *seed), *off)
            }
            Op::Rename { from, to } => fs::rename(p(from), p(to)),
            Op::Unlink { path } => fs::remove_file(p(path)),
            Op::Create { path } => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(p(path))
                .map(drop),
            Op::Write { path, data } => {
                let f = OpenOptions::new().write(true).open(p(path))?;
                f.write_all_at(data, 0)
            }
            Op::Mkdir { path } => {
                fs::create_dir(p(path))?;
                fs::set_permissions(p(path), fs::Permissions::from_mode(0o755))
            }
            Op::Rmdir { path } => fs::remove_dir(p(path)),
        }
    }
}

fn children<'a>(m: &'a Model, dir: &str) -> Vec<&'a String> {
    let pre = format!("{dir}/");
    m.keys()
        .filter(|k| k.starts_with(&pre) && !k[pre.len()..].contains('/'))
        .collect()
}

/// Appends a few valid operations (one "step") for model `m` to `ops`.
fn gen_step(rng: &mut Rng, m: &Model, bigs: &[String], ops: &mut Vec<Op>) {
    let mut step = Vec::new();
    let files_r: Vec<&String> = children(m, "r")
        .into_iter()
        .filter(|k| matches!(m[*k], Node::File { .. }))
        .collect();
    let pool = |rng: &mut Rng, dir: &str| format!("{dir}/n{}", rng.below(12));
    match rng.below(12) {
        0..=2 => {
            let path = rng.pick(bigs).clone();
            if rng.chance(1, 2) {
                let mode = if rng.chance(1, 2) { 0o600 } else { 0o640 };
                step.push(Op::ChmodBig { path, mode });
            } else {
                let len = match &m[&path] {
                    Node::File { data, .. } => data.len() as u64,
                    _ => unreachable!(),
                };
                let off = rng.below(len / 4096) * 4096;
                step.push(Op::WriteBig {
                    path,
                    off,
                    seed: rng.next_u64(),
                });
            }
        }
        3..=5 if !files_r.is_empty() => {
            let from = (*rng.pick(&files_r)).clone();
            let to = pool(rng, "r");
            if to != from {
                step.push(Op::Rename { from, to });
            }
        }
        6 | 7 if !files_r.is_empty() => step.push(Op::Unlink {
            path: (*rng.pick(&files_r)).clone(),
        }),
        8 => {
            let path = pool(rng, "r");
            if !m.contains_key(&path) {
                let len = rng.range(1, 4096) as usize;
                step.push(Op::Create { path: path.clone() });
                step.push(Op::Write {
                    path,
                    data: Arc::new(rng.bytes(len)),
                });
            }
        }
        9 => {
            // opaque dir: empty a dir (lower children become whiteouts), rmdir, mkdir again
            let dirs: Vec<&String> = children(m, "d")
                .into_iter()
                .filter(|k| matches!(m[*k], Node::Dir { .. }))
                .collect();
            if let Some(d) = (!dirs.is_empty()).then(|| (*rng.pick(&dirs)).clone()) {
                for c in children(m, &d) {
                    step.push(Op::Unlink { path: c.clone() });
                }
                step.push(Op::Rmdir { path: d.clone() });
                step.push(Op::Mkdir { path: d });
            }
        }
        10 => {
            let path = pool(rng, "d");
            match m.get(&path) {
                None => step.push(Op::Mkdir { path }),
                Some(Node::Dir { .. }) if children(m, &path).is_empty() => {
                    step.push(Op::Rmdir { path })
                }
                _ => {}
            }
        }
        _ => {
            // rename a dir (with lower content: a redirect) to a free name
            let dirs: Vec<&String> = children(m, "d")
                .into_iter()
                .filter(|k| matches!(m[*k], Node::Dir { .. }))
                .collect();
            let to = pool(rng, "d");
            if !dirs.is_empty() && !m.contains_key(&to) {
                let from = (*rng.pick(&dirs)).clone();
                step.push(Op::Rename { from, to });
            }
        }
    }
    ops.extend(step);
}

/// The merged view (or any tree) as a model, reading every file in full.
fn snapshot(root: &Path) -> Model {
    fn walk(dir: &Path, rel: &str, out: &mut Model) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {key}: {e}"));
            let mode = md.mode() & 0o7777;
            let node = if md.is_dir() {
                walk(&p, &key, out);
                Node::Dir { mode }
            } else if md.is_file() {
                let data = fs::read(&p).unwrap_or_else(|e| panic!("read {key}: {e}"));
                assert_eq!(data.len() as u64, md.len(), "st_size of {key}");
                Node::file(mode, data)
            } else {
                Node::Other(format!("{:?}", md.file_type()))
            };
            assert!(
                out.insert(key.clone(), node).is_none(),
                "{key} listed twice"
            );
        }
    }
    let mut out = Model::new();
    walk(root, "", &mut out);
    out
}

fn describe_diff(want: &Model, got: &Model) -> Vec<String> {
    let mut d = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => d.push(format!("missing {k} ({w:?})")),
            Some(g) if g != w => {
                let extra = match (w, g) {
                    (Node::File { data: a, .. }, Node::File { data: b, .. }) => {
                        format!(", first differing byte {:?}", first_diff(a, b))
                    }
                    _ => String::new(),
                };
                d.push(format!("{k}: want {w:?}, got {g:?}{extra}"));
            }
            _ => {}
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            d.push(format!("unexpected {k} ({g:?})"));
        }
    }
    d
}

/// Names in `upper` the merged view does not explain; whiteouts must hide a name that is gone.
fn stray_upper_names(upper: &Path, merged: &Model) -> Vec<String> {
    let mut bad = Vec::new();
    for p in all_paths(upper) {
        let md = fs::symlink_metadata(upper.join(&p)).unwrap();
        let base = p.rsplit('/').next().unwrap();
        if base.contains("cowfs") || base.starts_with(".wh.") {
            bad.push(format!("temporary/artifact name {p}"));
        } else if md.file_type().is_char_device() && md.rdev() == 0 {
            if merged.contains_key(&p) {
                bad.push(format!("whiteout {p} but the merged view shows it"));
            }
        } else {
            match merged.get(&p) {
                None => bad.push(format!("{p} in upper but not in the merged view")),
                Some(Node::Dir { .. }) if !md.is_dir() => bad.push(format!("{p}: kind")),
                Some(Node::File { .. }) if !md.is_file() => bad.push(format!("{p}: kind")),
                _ => {}
            }
        }
    }
    bad
}

fn work_leftovers(work: &Path) -> Vec<String> {
    match fs::read_dir(work.join("work")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

struct Fixture {
    layers: Layers,
    bigs: Vec<String>,
    /// the model with every upper change undone (the lowers)
    lower_model: Model,
}

fn build_fixture(big_len: usize, nbig: usize) -> Fixture {
    let layers = Layers::new(2);
    let (top, bottom) = (layers.lower(0), layers.lower(1));
    let mut bigs = Vec::new();
    for i in 0..nbig {
        let rel = format!("big/big{i}");
        let p = if i % 2 == 0 { top } else { bottom }.join(&rel);
        write_file_mode(&p, gen_data(big_len, 1000 + i as u64), 0o644);
        bigs.push(rel);
    }
    // r/: small files in both layers, the top one hiding some of the bottom ones
    for i in 0..6u64 {
        write_file_mode(
            &bottom.join(format!("r/n{i}")),
            gen_data(100 + 700 * i as usize, 10 + i),
            0o644,
        );
    }
    for i in 3..9u64 {
        write_file_mode(
            &top.join(format!("r/n{i}")),
            gen_data(50 + 1000 * i as usize, 20 + i),
            0o644,
        );
    }
    // d/: empty dirs and dirs with children, spread over the layers
    for i in 0..4 {
        mkdir_mode(&bottom.join(format!("d/n{i}")), 0o755);
        for c in 0..3u64 {
            write_file_mode(
                &bottom.join(format!("d/n{i}/c{c}")),
                gen_data(64, 40 + c),
                0o644,
            );
        }
    }
    for i in 2..6 {
        mkdir_mode(&top.join(format!("d/n{i}")), 0o755);
        if i % 2 == 1 {
            write_file_mode(&top.join(format!("d/n{i}/t")), b"top", 0o644);
        }
    }
    for d in ["big", "r", "d"] {
        for l in [top, bottom] {
            if l.join(d).exists() {
                chmod(&l.join(d), 0o755);
            }
        }
    }
    let m = layers.mount();
    let lower_model = snapshot(&layers.mnt);
    m.unmount();
    Fixture {
        layers,
        bigs,
        lower_model,
    }
}

#[derive(Default)]
struct Stats {
    kills: usize,
    in_flight: BTreeMap<&'static str, usize>,
    leftovers_cleaned: usize,
    matched_after: usize,
    ops_done: usize,
}

/// One round: mount, run `ops` on a worker, SIGKILL the daemon, remount and check.
/// Returns the model the merged view matched.
fn crash_round(fx: &Fixture, rng: &mut Rng, round: usize, base: &Model, st: &mut Stats) -> Model {
    let layers = &fx.layers;
    let mut ops = Vec::new();
    let mut models = vec![base.clone()];
    while ops.len() < 60 {
        let before = ops.len();
        gen_step(rng, models.last().unwrap(), &fx.bigs, &mut ops);
        // per-op models (a step may hold several ops)
        let mut mm = models.last().unwrap().clone();
        for op in &ops[before..] {
            mm = op.apply(&mm);
            models.push(mm.clone());
        }
    }
    let ops = Arc::new(ops);
    let mount = layers.mount();
    let pid = mount.pid().expect("daemon pid");
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let worker = {
        let (ops, started, done, killed) =
            (ops.clone(), started.clone(), done.clone(), killed.clone());
        let mnt = layers.mnt.clone();
        std::thread::spawn(move || -> Result<(), String> {
            for (i, op) in ops.iter().enumerate() {
                started.store(i + 1, Ordering::SeqCst);
                if let Err(e) = op.run(&mnt) {
                    if killed.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    return Err(format!("op {i} {op:?} failed before the kill: {e}"));
                }
                done.store(i + 1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    // When to kill: at a random time, or a random moment into an op of a chosen kind.
    let target_big = rng.chance(1, 2);
    let big_delay = Duration::from_micros(rng.below(120_000));
    let small_delay = Duration::from_micros(rng.below(1500));
    let blind = Duration::from_micros(rng.below(400_000));
    let t0 = Instant::now();
    loop {
        let s = started.load(Ordering::SeqCst);
        let cur = s.checked_sub(1).and_then(|i| ops.get(i));
        if worker.is_finished() || t0.elapsed() > Duration::from_secs(20) {
            break;
        }
        if target_big {
            if cur.is_some_and(|o| o.is_big()) && done.load(Ordering::SeqCst) < s {
                std::thread::sleep(big_delay);
                break;
            }
        } else if t0.elapsed() >= blind {
            if cur.is_some_and(|o| !o.is_big()) {
                std::thread::sleep(small_delay);
            }
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    killed.store(true, Ordering::SeqCst);
    kill9(pid);
    st.kills += 1;
    let t = Instant::now();
    while !worker.is_finished() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "round {round}: worker stuck after the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Err(e) = worker.join().unwrap() {
        panic!("round {round}: {e}\n{}", mount.stderr());
    }
    let (s, d) = (started.load(Ordering::SeqCst), done.load(Ordering::SeqCst));
    st.ops_done += d;
    let in_flight = (s > d).then(|| &ops[d]);
    if let Some(op) = in_flight {
        *st.in_flight.entry(op.kind()).or_default() += 1;
    }
    lazy_umount(&layers.mnt);
    drop(mount);
    st.leftovers_cleaned += work_leftovers(&layers.work).len();

    let mount = layers.mount_with(&["--log-level", "info"]);
    let left = work_leftovers(&layers.work);
    let got = snapshot(&layers.mnt);
    let before = &materialize(&models[d]);
    let after = in_flight.map(|_| materialize(&models[d + 1]));
    let after = after.as_ref();
    let ctx = format!(
        "round {round}: killed with {d} ops done, in flight: {in_flight:?}\nlast ops: {:?}",
        &ops[d.saturating_sub(3)..d]
    );
    assert!(
        left.is_empty(),
        "{ctx}\nwork/work not emptied at remount: {left:?}"
    );
    let matched = if got == *before {
        before.clone()
    } else if after.is_some_and(|a| got == *a) {
        st.matched_after += 1;
        after.unwrap().clone()
    } else {
        panic!(
            "{ctx}\nmerged view after the crash is neither the state before nor after the \
             in-flight op.\nvs before:\n  {}\nvs after:\n  {}\ndaemon log:\n{}",
            describe_diff(before, &got).join("\n  "),
            after
                .map(|a| describe_diff(a, &got).join("\n  "))
                .unwrap_or_default(),
            mount.stderr()
        )
    };
    let stray = stray_upper_names(&layers.upper, &got);
    assert!(stray.is_empty(), "{ctx}\nstray names in upper: {stray:?}");
    let wd: Vec<String> = list_names(&layers.work);
    assert!(
        wd.iter().all(|n| n == "work" || n == "index"),
        "{ctx}\nwork dir holds {wd:?}"
    );
    mount.unmount();
    matched
}

/// Undoes the copy-ups of the big files offline so the next round copies them up again; every
/// fifth round starts from an empty upper.
fn reset_upper(fx: &Fixture, round: usize, m: &Model) -> Model {
    let upper = &fx.layers.upper;
    let mut m = m.clone();
    if round % 5 == 4 {
        for e in fs::read_dir(upper).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        return fx.lower_model.clone();
    }
    for b in &fx.bigs {
        if lstat_opt(&upper.join(b)).is_some() {
            fs::remove_file(upper.join(b)).unwrap();
        }
        m.insert(b.clone(), fx.lower_model[b].clone());
    }
    m
}

#[test]
fn kill9_during_copyup_rename_unlink_mkdir_rmdir_opaque() {
    let long = long_mode();
    let seed = seed("crash", 0xC0FF_5EED);
    let (kills, big_len, nbig) = if long {
        (200, 200 << 20, 3)
    } else {
        (30, 64 << 20, 2)
    };
    let t0 = Instant::now();
    let fx = build_fixture(big_len, nbig);
    let mut rng = Rng::new(seed);
    let mut st = Stats::default();
    let mut model = fx.lower_model.clone();
    for round in 0..kills {
        model = crash_round(&fx, &mut rng, round, &model, &mut st);
        model = reset_upper(&fx, round, &model);
    }
    eprintln!(
        "crash: {} kills, 0 partial files, 0 stray names ({} ops completed; killed mid-op: {:?}; \
         {} kills matched the post-op state; {} work-dir leftovers cleaned at remount) in {:.1?}",
        st.kills,
        st.ops_done,
        st.in_flight,
        st.matched_after,
        st.leftovers_cleaned,
        t0.elapsed()
    );
    assert!(
        st.in_flight.get("chmod-copyup").copied().unwrap_or(0)
            + st.in_flight.get("write-copyup").copied().unwrap_or(0)
            > 0,
        "no kill landed during a big copy-up; the test does not test what it claims"
    );
}
