//! Mount guards: [`CowfsMount`] (a cowfs daemon) and [`KernelOverlay`] (kernel overlayfs), plus
//! the one mountinfo parser ([`mounts`], [`mount_entry`], [`mounts_under`], [`is_mounted`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::layers::join_lowers;
use super::sys::{EXIT_TIMEOUT, MOUNT_TIMEOUT, check, cowfs_bin, cstr};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// mount detection
// ---------------------------------------------------------------------------

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mnt: PathBuf,
    /// per-mount options (`rw,nosuid,nodev,...`)
    pub opts: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

/// Undoes mountinfo's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount in /proc/self/mountinfo, in its order (a later one is on top of an earlier one
/// at the same place).
pub fn mounts() -> Vec<MountEntry> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut out = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < sep + 4 || sep < 6 {
            continue;
        }
        out.push(MountEntry {
            mnt: PathBuf::from(unescape_mountinfo(f[4])),
            opts: f[5].split(',').map(str::to_string).collect(),
            fstype: f[sep + 1].to_string(),
            source: unescape_mountinfo(f[sep + 2]),
            super_opts: f[sep + 3].to_string(),
        });
    }
    out
}

/// The topmost mount exactly at `mnt`.
pub fn mount_entry(mnt: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.mnt == mnt)
}

/// (mount point, fstype) of every mount at or under `root`.
pub fn mounts_under(root: &Path) -> BTreeSet<(PathBuf, String)> {
    mounts()
        .into_iter()
        .filter(|m| m.mnt.starts_with(root))
        .map(|m| (m.mnt, m.fstype))
        .collect()
}

/// fstype of whatever is mounted exactly at `mnt` (topmost), per /proc/self/mountinfo.
pub fn mount_fstype(mnt: &Path) -> Option<String> {
    mount_entry(mnt).map(|m| m.fstype)
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_fstype(mnt).is_some()
}

fn st_dev(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.dev())
}

/// mountpoint's st_dev differs from its parent's.
fn dev_differs(mnt: &Path) -> bool {
    match (st_dev(mnt), mnt.parent().and_then(st_dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

pub fn umount2(mnt: &Path, flags: i32) -> io::Result<()> {
    check(unsafe { libc::umount2(cstr(mnt).as_ptr(), flags) })
}

pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => {
            // state is the field after the ")" closing comm
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
    }
}

/// Pids of cowfs processes (by executable name) with `needle` in some argument.
pub fn cowfs_pids(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy().into_owned();
        let exe = exe.trim_end_matches(" (deleted)");
        if !exe.rsplit('/').next().unwrap_or("").starts_with("cowfs") {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .any(|a| a == needle || a.contains(&format!("{needle}/")))
            && pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// Kills (-9) every cowfs process naming `root` (or a path under it) in its argv, detaches every
/// mount at or under `root` (deepest first), and reaps the killed daemons: the last line of
/// defence of a fixture, also when a FUSE request hangs.
pub fn cleanup_under(root: &Path) {
    let needle = root.to_string_lossy().into_owned();
    let pids = cowfs_pids(&needle);
    for &pid in &pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for _ in 0..20 {
        let mut under: Vec<PathBuf> = mounts_under(root).into_iter().map(|(m, _)| m).collect();
        if under.is_empty() {
            break;
        }
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in &under {
            let _ = umount2(m, libc::MNT_DETACH);
        }
    }
    for pid in pids {
        let _ = wait_pid_exit(pid, Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------
// CowfsMount guard
// ---------------------------------------------------------------------------

enum Proc {
    /// `--foreground` daemon: our own child.
    Child(Child),
    /// daemon mode: detached pid (our child only if we are its subreaper).
    Daemon(i32),
    Gone,
}

pub struct CowfsMount {
    pub mnt: PathBuf,
    proc_: Proc,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    /// How long `unmount`, `signal` and `cli_umount` wait for the daemon to exit.
    exit_timeout: Duration,
}

/// How long the daemon may take to exit after an unmount or a signal (see
/// [`CowfsMount::with_exit_timeout`]).
pub const DAEMON_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn log_paths(log_dir: &Path) -> (PathBuf, PathBuf) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    (
        log_dir.join(format!("cowfs-{n}.stdout")),
        log_dir.join(format!("cowfs-{n}.stderr")),
    )
}

/// `COWFS_TEST_REFERENCE=kernel`: `Layers::mount*` mount kernel overlayfs instead of cowfs, to
/// check the tests' own expectations against the reference. (cowfs-only features such as OCI
/// whiteouts, user.overlay.opaque or the fuse.cowfs fstype then fail, as expected.)
pub fn reference_mode() -> bool {
    std::env::var("COWFS_TEST_REFERENCE").is_ok_and(|v| v == "kernel")
}

impl CowfsMount {
    /// Reference mode only: a kernel overlayfs mount behind the same guard.
    pub fn kernel_reference(
        lowers: &[PathBuf],
        rw: Option<(&Path, &Path)>,
        mnt: &Path,
    ) -> CowfsMount {
        let mut opts = format!("lowerdir={}", join_lowers(lowers));
        if let Some((u, w)) = rw {
            opts += &format!(",upperdir={},workdir={}", u.display(), w.display());
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount overlay {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        CowfsMount {
            mnt: mnt.to_path_buf(),
            proc_: Proc::Gone,
            stdout_path: PathBuf::from("/dev/null"),
            stderr_path: PathBuf::from("/dev/null"),
            exit_timeout: DAEMON_EXIT_TIMEOUT,
        }
    }

    /// Spawns `cowfs ARGS` (which must include `--foreground`) and waits until `mnt` is a
    /// mountpoint. Logs go to files in `log_dir`.
    pub fn foreground(args: &[OsString], mnt: &Path, log_dir: &Path) -> CowfsMount {
        CowfsMount::spawn(
            Command::new(cowfs_bin())
                .args(args)
                .env("RUST_BACKTRACE", "1"),
            mnt,
            log_dir,
            MOUNT_TIMEOUT,
        )
    }

    /// Spawns `cmd`, a `cowfs mount --foreground` or a program that runs one (strace, a given
    /// environment), as our child, and waits up to `timeout` until `mnt` is a mountpoint; panics
    /// (and tears down) if the child exits first or the mount does not appear in time. stdin is
    /// closed; stdout and stderr go to files in `log_dir` (see [`CowfsMount::stderr`]).
    pub fn spawn(cmd: &mut Command, mnt: &Path, log_dir: &Path, timeout: Duration) -> CowfsMount {
        let (out, err) = log_paths(log_dir);
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let mut m = CowfsMount {
            mnt: mnt.to_path_buf(),
            proc_: Proc::Child(child),
            stdout_path: out,
            stderr_path: err,
            exit_timeout: DAEMON_EXIT_TIMEOUT,
        };
        m.wait_mounted(&what, timeout);
        m
    }

    /// How long `unmount`, `signal` and `cli_umount` wait for the daemon to exit (default
    /// [`DAEMON_EXIT_TIMEOUT`]); longer for a daemon slowed down by strace.
    pub fn with_exit_timeout(mut self, timeout: Duration) -> CowfsMount {
        self.exit_timeout = timeout;
        self
    }

    /// The daemon is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        match &mut self.proc_ {
            Proc::Child(c) => c.try_wait().unwrap().is_none(),
            Proc::Daemon(pid) => pid_alive(*pid),
            Proc::Gone => false,
        }
    }

    /// Daemon mode: runs `cowfs ARGS` (without --foreground, with `--pid-file PIDFILE` among
    /// ARGS) in `cwd`, requires it to exit 0 with the mount already live, then reads the pid.
    pub fn daemon(
        args: &[OsString],
        cwd: &Path,
        mnt: &Path,
        pid_file: &Path,
        log_dir: &Path,
    ) -> CowfsMount {
        CowfsMount::start_daemon(
            Command::new(cowfs_bin()).args(args).current_dir(cwd),
            mnt,
            pid_file,
            log_dir,
            MOUNT_TIMEOUT,
        )
        .0
    }

    /// Daemon mode for any command that starts a cowfs daemon and returns (`cowfs ... --pid-file
    /// PIDFILE`, `mount -t fuse.cowfs`, a script): runs `cmd` (stdin closed, stdout and stderr to
    /// files in `log_dir`, see [`CowfsMount::stdout`] / [`CowfsMount::stderr`]), requires it to
    /// exit 0 within `timeout` with the mount already live and usable and a pid in `pid_file`.
    /// Returns the guard and the command's exit status. This process becomes a child subreaper,
    /// so the daemon is re-parented to it and its exit status can be checked.
    pub fn start_daemon(
        cmd: &mut Command,
        mnt: &Path,
        pid_file: &Path,
        log_dir: &Path,
        timeout: Duration,
    ) -> (CowfsMount, ExitStatus) {
        become_subreaper();
        let (out, err) = log_paths(log_dir);
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
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
                let _ = umount2(mnt, libc::MNT_DETACH);
                panic!(
                    "`{what}` did not return within {timeout:?}; stderr:\n{}",
                    fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let pid = fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let mounted = is_mounted(mnt);
        let m = CowfsMount {
            mnt: mnt.to_path_buf(),
            proc_: match pid {
                Some(p) => Proc::Daemon(p),
                None => Proc::Gone,
            },
            stdout_path: out,
            stderr_path: err,
            exit_timeout: DAEMON_EXIT_TIMEOUT,
        };
        if !status.success() || pid.is_none() || !mounted {
            let msg = format!(
                "`{what}` -> {status}; pid file {}: {:?}; mounted when it returned: {mounted}\n--- stdout ---\n{}--- stderr ---\n{}",
                pid_file.display(),
                fs::read_to_string(pid_file),
                m.stdout(),
                m.stderr()
            );
            drop(m);
            panic!("{msg}");
        }
        // the mount must be usable (st_dev differs) right away
        assert!(
            dev_differs(mnt),
            "mount at {} listed but st_dev equals parent's",
            mnt.display()
        );
        (m, status)
    }

    /// A guard for a cowfs daemon someone else started (`mount(8)`, a script run as another
    /// user): `pid` serving `mnt`. We can reap it only if we are its subreaper.
    pub fn adopt(pid: i32, mnt: &Path) -> CowfsMount {
        CowfsMount {
            mnt: mnt.to_path_buf(),
            proc_: Proc::Daemon(pid),
            stdout_path: PathBuf::from("/dev/null"),
            stderr_path: PathBuf::from("/dev/null"),
            exit_timeout: DAEMON_EXIT_TIMEOUT,
        }
    }

    fn wait_mounted(&mut self, what: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Proc::Child(c) = &mut self.proc_
                && let Some(st) = c.try_wait().unwrap()
            {
                self.proc_ = Proc::Gone;
                let _ = umount2(&self.mnt, libc::MNT_DETACH);
                panic!(
                    "{what} exited ({st}) before mounting; stderr:\n{}",
                    self.stderr()
                );
            }
            // check mountinfo first: stat on a half-initialised FUSE mount could block
            if is_mounted(&self.mnt) && dev_differs(&self.mnt) {
                return;
            }
            if start.elapsed() > timeout {
                let msg = format!(
                    "{what} did not mount {} within {timeout:?}; stderr:\n{}",
                    self.mnt.display(),
                    self.stderr()
                );
                self.teardown();
                panic!("{msg}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<i32> {
        match &self.proc_ {
            Proc::Child(c) => Some(c.id() as i32),
            Proc::Daemon(p) => Some(*p),
            Proc::Gone => None,
        }
    }

    /// Waits up to `timeout` for the daemon to exit. `Some(Some(status))` if we could reap it,
    /// `Some(None)` if it is gone but not our child, `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            match &mut self.proc_ {
                Proc::Gone => return Some(None),
                Proc::Child(c) => {
                    if let Some(st) = c.try_wait().unwrap() {
                        self.proc_ = Proc::Gone;
                        return Some(Some(st));
                    }
                }
                Proc::Daemon(pid) => {
                    let r = wait_pid_exit(*pid, Duration::ZERO);
                    if r.is_some() {
                        self.proc_ = Proc::Gone;
                        return r;
                    }
                }
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the daemon (see [`CowfsMount::signal`] to also wait for a clean exit).
    pub fn send_signal(&self, sig: i32) {
        let pid = self.pid().expect("daemon pid");
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid} with {sig}");
    }

    fn kill9(&mut self) {
        match &mut self.proc_ {
            Proc::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Proc::Daemon(pid) => {
                let pid = *pid;
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let mut st = 0;
                unsafe { libc::waitpid(pid, &mut st, 0) };
            }
            Proc::Gone => {}
        }
        self.proc_ = Proc::Gone;
    }

    fn teardown(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = umount2(&self.mnt, libc::MNT_DETACH);
        }
        if self.wait_exit(EXIT_TIMEOUT).is_none() {
            self.kill9();
        }
        // a killed daemon may leave the mount behind
        while mount_fstype(&self.mnt).is_some_and(|t| t.starts_with("fuse")) {
            if umount2(&self.mnt, libc::MNT_DETACH).is_err() {
                break;
            }
        }
    }

    /// Waits for the daemon after an unmount (`how`, done by the caller or by one of the methods
    /// here): it must exit 0 within the exit timeout and leave no mount. Returns its exit status
    /// if we could observe it (always for --foreground children; for daemons via
    /// PR_SET_CHILD_SUBREAPER).
    #[track_caller]
    pub fn expect_clean_exit(mut self, how: &str) -> Option<ExitStatus> {
        let timeout = self.exit_timeout;
        let r = self.wait_exit(timeout);
        let status = match r {
            None => {
                let msg = format!(
                    "cowfs daemon did not exit within {timeout:?} after {how}; stderr:\n{}",
                    self.stderr()
                );
                self.teardown();
                panic!("{msg}");
            }
            Some(Some(st)) => {
                assert!(
                    st.success(),
                    "cowfs daemon exited with {st} after {how}; stderr:\n{}",
                    self.stderr()
                );
                Some(st)
            }
            Some(None) => None,
        };
        assert!(
            !is_mounted(&self.mnt),
            "{} still mounted after {how}",
            self.mnt.display()
        );
        status
    }

    /// Unmounts with umount2(2), waits for the daemon and asserts it exited with status 0.
    pub fn unmount(mut self) -> Option<ExitStatus> {
        let mut tries = 0;
        loop {
            match umount2(&self.mnt, 0) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    let msg = format!(
                        "umount {}: {e}; stderr:\n{}",
                        self.mnt.display(),
                        self.stderr()
                    );
                    self.teardown();
                    panic!("{msg}");
                }
            }
        }
        self.expect_clean_exit("umount2")
    }

    /// Sends `sig` to the daemon; it must unmount and exit 0.
    pub fn signal(self, sig: i32) -> Option<ExitStatus> {
        self.send_signal(sig);
        self.expect_clean_exit(&format!("signal {sig}"))
    }

    /// Unmounts with `cowfs umount MNT` run in `cwd` with the given mountpoint argument;
    /// asserts the command and the daemon exit 0.
    pub fn cli_umount(mut self, cwd: &Path, mnt_arg: &str) -> Option<ExitStatus> {
        let out = Command::new(cowfs_bin())
            .args(["umount", mnt_arg])
            .current_dir(cwd)
            .output()
            .expect("run cowfs umount");
        if !out.status.success() {
            let msg = format!(
                "`cowfs umount {mnt_arg}` -> {}; stderr: {}\ndaemon stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.stderr()
            );
            self.teardown();
            panic!("{msg}");
        }
        self.expect_clean_exit("cowfs umount")
    }
}

impl Drop for CowfsMount {
    fn drop(&mut self) {
        let live = !matches!(self.proc_, Proc::Gone) || is_mounted(&self.mnt);
        if std::thread::panicking() && live {
            eprintln!(
                "---- cowfs daemon stderr ({}) ----\n{}",
                self.stderr_path.display(),
                tail(&self.stderr(), 6000)
            );
        }
        self.teardown();
    }
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        s
    } else {
        let mut i = s.len() - n;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        &s[i..]
    }
}

/// Waits up to `timeout` for process `pid` to exit: `Some(Some(status))` when reaped (it is our
/// child, or re-parented to us as its subreaper), `Some(None)` when gone but not ours to reap,
/// `None` if still running at the deadline.
pub fn wait_pid_exit(pid: i32, timeout: Duration) -> Option<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    loop {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(Some(ExitStatus::from_raw(status)));
        }
        if r < 0 && !pid_alive(pid) {
            return Some(None);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn become_subreaper() {
    // So a daemonised cowfs is re-parented to us and can be reaped / its status checked.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

// ---------------------------------------------------------------------------
// KernelOverlay guard
// ---------------------------------------------------------------------------

/// Guard for a kernel overlayfs mount (the reference implementation), with extra mount options
/// if wanted; lazily unmounted on drop.
pub struct KernelOverlay {
    pub mnt: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The options given besides the layers.
    pub opts: String,
    mounted: bool,
}

/// Kernel overlayfs options that read everything cowfs writes (redirects, metacopy, the index
/// with a matching workdir).
pub const KERNEL_FULL_OPTS: &str = "redirect_dir=on,metacopy=on,index=on,nfs_export=off";
/// Fallback if the kernel refuses `KERNEL_FULL_OPTS`.
pub const KERNEL_NO_INDEX_OPTS: &str = "redirect_dir=on,metacopy=on";

impl KernelOverlay {
    /// Mounts with the kernel's default options.
    pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> KernelOverlay {
        KernelOverlay::try_mount(lowers, upper, work, mnt, "").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts with `extra` options besides the layers (comma-separated; may be empty).
    pub fn mount_with(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        extra: &str,
    ) -> KernelOverlay {
        KernelOverlay::try_mount(lowers, upper, work, mnt, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts with `extra` options besides the layers; the mount's error if it fails.
    pub fn try_mount(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        extra: &str,
    ) -> Result<KernelOverlay, String> {
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            join_lowers(lowers),
            upper.display(),
            work.display()
        );
        if !extra.is_empty() {
            opts = format!("{opts},{extra}");
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .expect("run mount");
        if !out.status.success() {
            return Err(format!(
                "mount -t overlay -o {opts} {}: {}{}",
                mnt.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(KernelOverlay {
            mnt: mnt.to_path_buf(),
            upper: upper.to_path_buf(),
            work: work.to_path_buf(),
            opts: extra.to_string(),
            mounted: true,
        })
    }

    /// Mounts with `KERNEL_FULL_OPTS`, or without index if the kernel refuses (noted on stderr).
    pub fn mount_ref(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> KernelOverlay {
        match KernelOverlay::try_mount(lowers, upper, work, mnt, KERNEL_FULL_OPTS) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("NOTE: kernel refused {KERNEL_FULL_OPTS} ({e}); retrying without index");
                KernelOverlay::try_mount(lowers, upper, work, mnt, KERNEL_NO_INDEX_OPTS)
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        }
    }

    pub fn unmount(mut self) {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(
            out.status.success(),
            "umount {}: {}",
            self.mnt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        }
    }
}

/// Guard for a tmpfs mounted at a dir (created); lazily unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// A 64 MiB tmpfs.
    pub fn mount(dir: &Path) -> Tmpfs {
        Tmpfs::mount_sized(dir, "64m")
    }

    pub fn mount_sized(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unsafe { libc::umount2(cstr(&self.dir).as_ptr(), libc::MNT_DETACH) };
    }
}
