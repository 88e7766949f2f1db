//! Harness for tests/dropin.rs: cowfs run the way container storage and mount(8) run a FUSE
//! mount program (daemon mode, `-o` options), with nothing left behind.
//!
//! * [`Fix`]: the common [`Layers`] fixture, bare, with a watchdog. When the deadline passes,
//!   the watchdog kills (-9) every cowfs process whose argv names the temp dir and detaches
//!   every mount under it, so a hung FUSE request fails instead of hanging the test. Dropping a
//!   `Fix` does the same cleanup.
//! * [`Fix::run`]: every command runs under a timeout; output goes to files (a daemon may keep
//!   inherited pipes open).
//! * [`Fix::mount`]: a detached cowfs daemon behind the common guard [`CowfsMount`] (this
//!   process is a child subreaper, so the daemon is re-parented to it and its exit status can be
//!   observed).
//!
//! Mountinfo parsing and the libc wrappers come from tests/common.
#![allow(dead_code)]

mod system;
pub use system::*;

pub use crate::common::{
    CowfsMount, DAEMON_EXIT_TIMEOUT as EXIT_TIMEOUT, assert_enoent, assert_errno, assert_whiteout,
    chmod, is_mounted, is_whiteout, lchown, lgetxattr, list_names, llistxattr, mount_entry, mounts,
    names, read, set_xattr, truncate_path, write_file,
};
pub use crate::common::{Layers, cowfs_pids};

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cowfs")
}

// ---------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------

/// What a finished command did.
#[derive(Debug)]
pub struct Out {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless the command exited 0.
    #[track_caller]
    pub fn expect_ok(self) -> Out {
        assert!(self.ok(), "{}", self.describe());
        self
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` -> {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (stdin /dev/null, output to files in `log_dir`); kills it and panics if it is
/// still running after `timeout`.
pub fn run_in(cmd: &mut Command, timeout: Duration, log_dir: &Path) -> Out {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let (out_p, err_p) = (
        log_dir.join(format!(".log-{n}.out")),
        log_dir.join(format!(".log-{n}.err")),
    );
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_p).unwrap())
        .stderr(fs::File::create(&err_p).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{what}` still running after {timeout:?}; killed. stderr:\n{}",
                fs::read_to_string(&err_p).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Out {
        what,
        status,
        stdout: fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: fs::read_to_string(&err_p).unwrap_or_default(),
    };
    let _ = fs::remove_file(out_p);
    let _ = fs::remove_file(err_p);
    out
}

// ---------------------------------------------------------------------------
// processes
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// mounts
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// the fixture
// ---------------------------------------------------------------------------

/// The common [`Layers`] fixture, bare (the tests lay out their own dirs) in /tmp, with a
/// watchdog; dropping it kills the daemons naming its dir and detaches its mounts.
pub struct Fix(Layers);

impl std::ops::Deref for Fix {
    type Target = Layers;
    fn deref(&self) -> &Layers {
        &self.0
    }
}

impl Fix {
    /// A fresh temp dir (in /tmp) and a watchdog that tears everything down after `deadline`.
    pub fn new(deadline: Duration) -> Fix {
        crate::common::become_subreaper();
        Fix(Layers::bare("cowfs-dropin-", Path::new("/tmp")).with_deadline(deadline))
    }

    pub fn run(&self, cmd: &mut Command) -> Out {
        run_in(cmd, CMD_TIMEOUT, &self.root)
    }

    /// `cowfs ARGS`, waited for (at most CMD_TIMEOUT).
    pub fn cowfs<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        self.run(Command::new(bin()).args(args).env_remove("RUST_LOG"))
    }

    /// Runs `cowfs ARGS --pid-file ...` (daemon mode), requires exit 0 with `mnt` already
    /// mounted as fuse.cowfs, returns the daemon's guard and the front process's output.
    #[track_caller]
    pub fn mount<S: AsRef<OsStr>>(&self, args: &[S], mnt: &Path) -> (CowfsMount, Out) {
        self.mount_in(args, mnt, &self.root)
    }

    /// [`Fix::mount`] with the working directory `cwd` (for relative paths).
    #[track_caller]
    pub fn mount_in<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        mnt: &Path,
        cwd: &Path,
    ) -> (CowfsMount, Out) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid_file = self.path(&format!(".pid-{n}"));
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--pid-file")
            .arg(&pid_file)
            .current_dir(cwd)
            .env_remove("RUST_LOG");
        let what = format!("{cmd:?}");
        let (d, status) =
            CowfsMount::start_daemon(&mut cmd, mnt, &pid_file, &self.root, CMD_TIMEOUT);
        let out = Out {
            what,
            status,
            stdout: d.stdout(),
            stderr: d.stderr(),
        };
        let entry = mount_entry(mnt).unwrap_or_else(|| {
            panic!(
                "{} not mounted after cowfs returned 0; {}",
                mnt.display(),
                out.describe()
            )
        });
        assert_eq!(entry.fstype, "fuse.cowfs", "fstype of {}", mnt.display());
        (d, out)
    }

    /// umount2(2) (retried while busy), then the daemon must exit 0 and leave no mount.
    #[track_caller]
    pub fn unmount(&self, d: CowfsMount) {
        d.unmount();
    }
}

// ---------------------------------------------------------------------------
// the merged view as a map
// ---------------------------------------------------------------------------

/// path -> "kind mode uid:gid size/target/content" for every entry under `root`, not following
/// symlinks.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
        for name in list_names(dir) {
            let p = dir.join(&name);
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let detail = if ft.is_file() {
                let data = fs::read(&p).unwrap();
                let h = data.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ *b as u64).wrapping_mul(0x100000001b3)
                });
                format!("file {} {h:x}", data.len())
            } else if ft.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                "dir".into()
            } else {
                format!("other {:o} {:x}", m.mode() & 0o170000, m.rdev())
            };
            out.insert(
                r.clone(),
                format!("{detail} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
            );
            if ft.is_dir() {
                walk(&p, &r, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

// ---------------------------------------------------------------------------
// a standard two-layer fixture
// ---------------------------------------------------------------------------

/// `A` (top) over `B`, upper `U`, work dir `W`, mount point `mnt`.
pub struct Lay {
    pub a: PathBuf,
    pub b: PathBuf,
    pub u: PathBuf,
    pub w: PathBuf,
    pub mnt: PathBuf,
}

impl Lay {
    /// B: base, shadow, dir/{b,common}; A: shadow, dir/{a,common}.
    pub fn new(fx: &Fix) -> Lay {
        let lay = Lay {
            a: fx.dir("A"),
            b: fx.dir("B"),
            u: fx.dir("U"),
            w: fx.dir("W"),
            mnt: fx.dir("mnt"),
        };
        write_file(&lay.b.join("base"), "from B");
        write_file(&lay.b.join("shadow"), "B");
        write_file(&lay.b.join("dir/b"), "b");
        write_file(&lay.b.join("dir/common"), "B");
        write_file(&lay.a.join("shadow"), "A");
        write_file(&lay.a.join("dir/a"), "a");
        write_file(&lay.a.join("dir/common"), "A");
        lay
    }

    pub fn lowers(&self) -> String {
        format!("{}:{}", self.a.display(), self.b.display())
    }

    /// `lowerdir=A:B,upperdir=U,workdir=W`
    pub fn opts(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lowers(),
            self.u.display(),
            self.w.display()
        )
    }

    /// `cowfs -o OPTS MNT`
    pub fn args(&self, opts: &str) -> Vec<OsString> {
        vec!["-o".into(), opts.into(), self.mnt.clone().into()]
    }

    /// The merged view is A over B, and a new file lands in U.
    #[track_caller]
    pub fn check_rw(&self, tag: &str) {
        self.check_ro();
        let name = format!("new-{tag}");
        write_file(&self.mnt.join(&name), tag);
        assert_eq!(read(&self.u.join(&name)), tag, "{name} in upper");
    }

    #[track_caller]
    pub fn check_ro(&self) {
        let m = &self.mnt;
        assert_eq!(read(&m.join("base")), "from B");
        assert_eq!(read(&m.join("shadow")), "A");
        assert_eq!(read(&m.join("dir/common")), "A");
        assert_eq!(list_names(&m.join("dir")), names(&["a", "b", "common"]));
    }
}
