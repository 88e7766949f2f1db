//! [`CowfsMount`]: the guard of a cowfs daemon and its mount (the mount table is in
//! `mountinfo.rs`, kernel overlayfs and tmpfs guards in `kernel.rs`).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::layers::join_lowers;
use super::mountinfo::{dev_differs, is_mounted, mount_fstype, pid_alive, umount2};
use super::sys::{EXIT_TIMEOUT, MOUNT_TIMEOUT, cowfs_bin};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

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
        // A panic in any daemon thread (the panic hook logs it) is a bug,
        // also where the process still exited 0.
        let stderr = self.stderr();
        assert!(
            !stderr.contains("panicked at"),
            "cowfs daemon panicked before its exit after {how}; stderr:\n{stderr}"
        );
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

/// The transport every cowfs mount of this test run uses: scripts/test.sh runs the suite once
/// with `COWFS_IO_URING=off` and once with `COWFS_IO_URING=on` (the fuse module's enable_uring
/// set to match), and `cowfs stats` names it.
pub fn expected_transport() -> &'static str {
    match std::env::var("COWFS_IO_URING").as_deref() {
        Ok("on") => "io_uring",
        _ => "/dev/fuse read",
    }
}

/// Whether this run's mounts let the kernel open files without a request (cowfs's default,
/// `-o open=kernel`): scripts/test.sh runs the suite once more with `COWFS_OPEN=daemon`, which
/// every mount that does not say otherwise then takes.
pub fn kernel_opens() -> bool {
    std::env::var("COWFS_OPEN").as_deref() != Ok("daemon")
}
