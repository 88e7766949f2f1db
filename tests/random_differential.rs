//! Random differential test: seeded random operation sequences run through cowfs and through
//! kernel overlayfs (`redirect_dir=on`) on identical layer sets. Every operation must give the
//! same result (Ok or the same errno) on both, and after each sequence both merged views must be
//! the same tree.
//!
//! Sequence `i` uses seed `SEED + i`. The base seed is printed; `COWFS_SEED=N` replays from
//! sequence seed N (a failing sequence prints its own seed). `COWFS_LONG=1` runs many more and
//! longer sequences with a time-based seed. A failure is shrunk (drop one op at a time) before
//! being reported.

use crate::common::*;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Every lower entry gets this mtime; "now"-ish mtimes are normalised to a marker.
const FIXED: (i64, i64) = (1_234_567_890, 123);

// ---------------------------------------------------------------------------
// generator
// ---------------------------------------------------------------------------

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const DIRS: &[&str] = &["", "", "", "d1/", "wd/", "opq/", "n/", "d1/n/"];
const NAMES: &[&str] = &["f1", "f2", "x", "d1", "wd", "opq", "n", "hid", "sym"];
const TARGETS: &[&str] = &["f1", "x", "d1", "../f1", "nothing"];

#[derive(Clone)]
enum Op {
    Create(String, u8),
    WriteAt(String, u64, usize, u8),
    Append(String, usize, u8),
    Truncate(String, i64),
    Rename(String, String, bool),
    Link(String, String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Chmod(String, u32),
    SetXattr(String, &'static str, u8),
    Symlink(&'static str, String),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create(p, s) => write!(f, "create {p} (seed {s})"),
            Op::WriteAt(p, o, l, s) => write!(f, "write {p} off {o} len {l} (seed {s})"),
            Op::Append(p, l, s) => write!(f, "append {p} len {l} (seed {s})"),
            Op::Truncate(p, l) => write!(f, "truncate {p} {l}"),
            Op::Rename(a, b, nr) => {
                write!(
                    f,
                    "rename {a} -> {b}{}",
                    if *nr { " NOREPLACE" } else { "" }
                )
            }
            Op::Link(a, b) => write!(f, "link {a} -> {b}"),
            Op::Unlink(p) => write!(f, "unlink {p}"),
            Op::Mkdir(p) => write!(f, "mkdir {p}"),
            Op::Rmdir(p) => write!(f, "rmdir {p}"),
            Op::Chmod(p, m) => write!(f, "chmod {m:o} {p}"),
            Op::SetXattr(p, n, v) => write!(f, "setxattr {p} {n}=v{v}"),
            Op::Symlink(t, p) => write!(f, "symlink {p} -> {t}"),
        }
    }
}

fn path(r: &mut Rng) -> String {
    format!("{}{}", r.pick(DIRS), r.pick(NAMES))
}

fn gen_op(r: &mut Rng) -> Op {
    let p = path(r);
    let s = r.next() as u8;
    match r.below(14) {
        0 | 1 => Op::Create(p, s),
        2 => Op::WriteAt(
            p,
            r.pick(&[0, 3, 100, 4095, 70_000]),
            r.pick(&[1, 10, 5000]),
            s,
        ),
        3 => Op::Append(p, r.pick(&[1, 7, 4097]), s),
        4 => Op::Truncate(p, r.pick(&[0, 1, 5, 4096, 70_000])),
        5 | 6 => Op::Rename(p, path(r), r.below(3) == 0),
        7 => Op::Link(p, path(r)),
        8 => Op::Unlink(p),
        9 => Op::Mkdir(p),
        10 => Op::Rmdir(p),
        11 => Op::Chmod(p, r.pick(&[0o600, 0o644, 0o755, 0o700, 0o4755])),
        12 => Op::SetXattr(p, r.pick(&["user.a", "user.b"]), s % 4),
        _ => Op::Symlink(r.pick(TARGETS), p),
    }
}

// ---------------------------------------------------------------------------
// applying operations
// ---------------------------------------------------------------------------

type Res = Result<(), i32>;

fn res<T>(r: io::Result<T>) -> Res {
    r.map(|_| ()).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn apply(m: &Path, op: &Op) -> Res {
    let p = |s: &str| m.join(s);
    match op {
        Op::Create(f, s) => res((|| {
            let mut h = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(p(f))?;
            h.write_all(&pattern(20 + *s as usize % 50, *s))
        })()),
        Op::WriteAt(f, off, len, s) => res((|| {
            OpenOptions::new()
                .write(true)
                .open(p(f))?
                .write_all_at(&pattern(*len, *s), *off)
        })()),
        Op::Append(f, len, s) => res((|| {
            OpenOptions::new()
                .append(true)
                .open(p(f))?
                .write_all(&pattern(*len, *s))
        })()),
        Op::Truncate(f, len) => res(truncate_path(&p(f), *len)),
        Op::Rename(a, b, noreplace) => res(renameat2(
            &p(a),
            &p(b),
            if *noreplace {
                libc::RENAME_NOREPLACE
            } else {
                0
            },
        )),
        Op::Link(a, b) => res(fs::hard_link(p(a), p(b))),
        Op::Unlink(f) => res(fs::remove_file(p(f))),
        Op::Mkdir(d) => res(fs::create_dir(p(d))),
        Op::Rmdir(d) => res(fs::remove_dir(p(d))),
        Op::Chmod(f, mode) => res(fs::set_permissions(
            p(f),
            std::os::unix::fs::PermissionsExt::from_mode(*mode),
        )),
        Op::SetXattr(f, n, v) => res(lsetxattr(&p(f), n, format!("v{v}").as_bytes(), 0)),
        Op::Symlink(t, f) => res(std::os::unix::fs::symlink(t, p(f))),
    }
}

// ---------------------------------------------------------------------------
// fixture and mounts
// ---------------------------------------------------------------------------

fn set_all_times(root: &Path) {
    let mut paths = vec![".".to_string()];
    paths.extend(all_paths(root));
    for p in paths {
        set_times(&root.join(p), (FIXED.0 - 1000, 0), FIXED).unwrap();
    }
}

/// Two lowers: files, dirs, symlinks, a 0/0 whiteout and a trusted.overlay.opaque dir.
fn build_layers(l: &Layers) {
    let (top, bot) = (l.lower(0), l.lower(1));
    write_file(&bot.join("f1"), "f1 bottom");
    write_file(&bot.join("f2"), pattern(5000, 2));
    write_file_mode(&bot.join("x"), "x bottom", 0o600);
    set_xattr(&bot.join("x"), "user.a", b"bottom");
    write_file(&bot.join("d1/f1"), "d1/f1 bottom");
    write_file(&bot.join("d1/x"), "d1/x bottom");
    symlink("../f1", &bot.join("d1/sym"));
    write_file(&bot.join("wd/f1"), "wd/f1 bottom");
    write_file(&bot.join("wd/x"), "wd/x bottom");
    write_file(&bot.join("opq/f1"), "opq/f1 hidden");
    write_file(&bot.join("opq/x"), "opq/x hidden");
    write_file(&bot.join("hid"), "hidden");
    symlink("f1", &bot.join("sym"));

    write_file_mode(&top.join("x"), "x top", 0o640);
    write_file(&top.join("d1/f2"), "d1/f2 top");
    mkdir(&top.join("d1/n"));
    whiteout(&top.join("wd/f1"));
    opaque_xattr(&top.join("opq"));
    write_file(&top.join("opq/f2"), "opq/f2 top");
    whiteout(&top.join("hid"));
    for lw in &l.lowers {
        set_all_times(lw);
    }
}

/// Kernel overlayfs with `redirect_dir=on` (so it renames merged dirs like cowfs does).
struct Kernel {
    mnt: PathBuf,
}

impl Kernel {
    fn mount(l: &Layers) -> Kernel {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=on",
            l.lowerdir_arg(),
            l.upper.display(),
            l.work.display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&l.mnt)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount overlay -o {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Kernel { mnt: l.mnt.clone() }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.mnt).output();
        if !out.is_ok_and(|o| o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        }
    }
}

/// File mtimes: fixture/explicit times are kept, fresh ones become a marker. Directory mtimes
/// are ignored.
fn snapshot(m: &Path) -> Tree {
    let mut t = tree_snapshot_with(
        m,
        SnapOpts {
            mtime: true,
            ..Default::default()
        },
    );
    for e in t.values_mut() {
        if e.kind == Kind::Dir {
            e.mtime = None;
        } else if let Some(m) = e.mtime
            && m.0 > 1_500_000_000
        {
            e.mtime = Some((-1, -1));
        }
    }
    t
}

// ---------------------------------------------------------------------------
// running a sequence
// ---------------------------------------------------------------------------

struct Failure {
    /// index of the op whose results differ (None: trees differ at the end)
    at: Option<usize>,
    log: Vec<String>,
    detail: String,
}

/// Runs `ops` on fresh identical layer sets through cowfs and kernel overlayfs.
fn run(ops: &[Op]) -> Result<usize, Failure> {
    let c = Layers::new(2);
    let k = Layers::new(2);
    build_layers(&c);
    build_layers(&k);
    let cm = c.mount();
    let km = Kernel::mount(&k);
    let before = diff_trees(&snapshot(&c.mnt), &snapshot(&k.mnt), "cowfs", "kernel");
    assert!(
        before.is_empty(),
        "views differ before any op:\n{}",
        before.join("\n")
    );
    let mut log = Vec::new();
    let mut failure = None;
    let mut succeeded = 0;
    for (i, op) in ops.iter().enumerate() {
        let kr = apply(&k.mnt, op);
        if kr == Err(libc::EXDEV) && matches!(op, Op::Rename(..)) {
            // the kernel can't; don't try it on cowfs either
            log.push(format!("{i:3}: {op:?}  => kernel EXDEV, skipped"));
            continue;
        }
        let cr = apply(&c.mnt, op);
        log.push(format!("{i:3}: {op:?}  => kernel {kr:?}, cowfs {cr:?}"));
        succeeded += usize::from(kr.is_ok());
        if kr != cr {
            failure = Some(Failure {
                at: Some(i),
                log: log.clone(),
                detail: format!("op {i} ({op:?}): kernel {kr:?}, cowfs {cr:?}"),
            });
            break;
        }
    }
    if failure.is_none() {
        let d = diff_trees(&snapshot(&c.mnt), &snapshot(&k.mnt), "cowfs", "kernel");
        if !d.is_empty() {
            failure = Some(Failure {
                at: None,
                log,
                detail: format!("merged views differ:\n{}", d.join("\n")),
            });
        }
    }
    drop(km);
    cm.unmount();
    failure.map_or(Ok(succeeded), Err)
}

/// Drops one op at a time while the sequence still fails (any failure).
fn shrink(mut ops: Vec<Op>, mut fail: Failure) -> (Vec<Op>, Failure) {
    if let Some(at) = fail.at {
        ops.truncate(at + 1);
    }
    loop {
        let mut progressed = false;
        let mut i = 0;
        while i < ops.len() {
            let mut cand = ops.clone();
            cand.remove(i);
            match run(&cand) {
                Err(f) => {
                    if let Some(at) = f.at {
                        cand.truncate(at + 1);
                    }
                    ops = cand;
                    fail = f;
                    progressed = true;
                }
                Ok(_) => i += 1,
            }
        }
        if !progressed {
            return (ops, fail);
        }
    }
}

fn report(seed: u64, f: &Failure) -> String {
    format!(
        "seed {seed} (replay: COWFS_SEED={seed})\nops:\n{}\n{}",
        f.log.join("\n"),
        f.detail
    )
}

fn base_seed(long: bool) -> u64 {
    match std::env::var("COWFS_SEED") {
        Ok(v) => v.trim().parse().expect("COWFS_SEED: a decimal u64"),
        Err(_) if long => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        Err(_) => 20_240_601,
    }
}

#[test]
fn random_ops_match_kernel_overlayfs() {
    let long = std::env::var("COWFS_LONG").is_ok_and(|v| !v.is_empty() && v != "0");
    let (seqs, len) = if long { (300, 80) } else { (20, 40) };
    let base = base_seed(long);
    eprintln!("random_differential: base seed {base} (replay with COWFS_SEED={base})");
    let mut ok_ops = 0;
    for i in 0..seqs {
        let seed = base.wrapping_add(i);
        let mut r = Rng::new(seed);
        let ops: Vec<Op> = (0..len).map(|_| gen_op(&mut r)).collect();
        match run(&ops) {
            Ok(n) => ok_ops += n,
            Err(f) => {
                let first = report(seed, &f);
                eprintln!("FAILED:\n{first}\nshrinking...");
                let (min, mf) = shrink(ops, f);
                panic!(
                    "cowfs diverges from kernel overlayfs\n{first}\n\nminimal ({} ops): {min:#?}\n{}",
                    min.len(),
                    report(seed, &mf)
                );
            }
        }
    }
    eprintln!("random_differential: {seqs} sequences x {len} ops agree ({ok_ops} succeeded)");
    assert!(
        ok_ops >= seqs as usize * len / 6,
        "too few ops succeed: {ok_ops}"
    );
}
