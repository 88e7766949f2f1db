//! Running a mount: set up the overlay, mount it, detach into the background
//! as mount(8) expects (the command returns once the mount is live), and
//! unmount cleanly on SIGTERM, SIGINT or SIGHUP.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::MountPlan;
use crate::error::{SetupError, SetupResult};
use crate::fuse_adapter;
use crate::layer::LayerStack;
use crate::options::{MountOptions, OpenBy};
use crate::overlay::{Overlay, OverlayOptions};
use crate::privmount::LayerRoots;
use crate::stats_socket::StatsServer;
use crate::sys;
use crate::workdir::WorkDir;

pub struct RunSettings {
    pub foreground: bool,
    /// Request threads of the /dev/fuse transport (and of the io_uring
    /// transport, spread over its queues).
    pub threads: usize,
    pub pid_file: Option<PathBuf>,
}

/// Sets up, mounts and serves. Returns when the mount is gone (foreground)
/// or, in the parent of a daemon, once the mount is live.
pub fn run(plan: MountPlan, settings: RunSettings) -> SetupResult<()> {
    // Modes of new objects are computed per request (caller's umask, default ACLs).
    sys::clear_umask();
    let made_workdir = match &plan.workdir {
        Some(dir) if plan.workdir_is_default => {
            std::fs::create_dir(dir).map_err(|e| SetupError::io("creating work dir", dir, e))?;
            Some(dir.clone())
        }
        _ => None,
    };
    let result = set_up_and_serve(plan, settings);
    if result.is_err()
        && let Some(dir) = made_workdir
    {
        // Made for this mount, which never came to be: nothing of it stays.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn set_up_and_serve(plan: MountPlan, settings: RunSettings) -> SetupResult<()> {
    let fd_budget = sys::raise_fd_limit();
    let mut roots = LayerRoots::open(
        plan.upper.as_deref(),
        plan.workdir.as_deref(),
        &plan.lowers,
        plan.options.atime_mode(),
    );
    let layers = LayerStack::open_with(plan.upper.as_deref(), &plan.lowers, |id, path| {
        roots.take(id, path)
    })?;
    let work = match &plan.workdir {
        Some(dir) => {
            let root = roots
                .take_work(dir)
                .map_err(|e| SetupError::io("work dir", dir, e))?;
            Some(WorkDir::prepare_at(dir, root)?)
        }
        None => None,
    };
    let options = OverlayOptions {
        // Bounded by configuration, never by the size of the tree.
        fd_cache_capacity: plan.options.fd_cache.unwrap_or_else(|| {
            usize::try_from(fd_budget / 2)
                .unwrap_or(4096)
                .clamp(256, 16384)
        }),
        cache_ttl: plan
            .options
            .timeout
            .map(Duration::from_secs_f64)
            .unwrap_or(OverlayOptions::default().cache_ttl),
        no_sync: plan.options.no_sync,
        ownership: plan.options.ownership.clone(),
        metacopy: plan.options.metacopy,
        passthrough: plan.options.passthrough,
        passthrough_lower: plan.options.passthrough_lower,
        kernel_opens: open_by(&plan.options)? == OpenBy::Kernel,
        static_nlink: plan.options.static_nlink,
        noatime: plan.options.noatime,
        redirect_dir: plan.options.redirect_dir,
        userxattr: plan.options.userxattr,
    };
    let overlay = Arc::new(
        Overlay::new(layers, work, options)
            .map_err(|e| SetupError::step("setting up overlay", e))?,
    );

    if settings.foreground {
        let pid_file = PidFile::create(settings.pid_file.as_deref())?;
        let session = mount(&plan, overlay, transport_of(&plan, &settings)?)?;
        let session = pid_file.write_or_unmount(session)?;
        serve_then_exit(session, true);
    }

    // Fork before any thread exists; the child reports back through a pipe.
    let (report_read, report_write) =
        sys::pipe().map_err(|e| SetupError::step("making the daemon's report pipe", e))?;
    match sys::fork_single_threaded().map_err(|e| SetupError::step("starting the daemon", e))? {
        sys::Forked::Parent { .. } => {
            drop(report_write);
            let report = sys::read_to_end(report_read.as_fd())
                .map_err(|e| SetupError::step("reading the daemon's report", e))?;
            let report = String::from_utf8_lossy(&report);
            match report.strip_prefix("ok") {
                Some(_) => Ok(()),
                None if report.is_empty() => Err(SetupError::Daemon(
                    "the daemon exited before the mount was live".into(),
                )),
                None => Err(SetupError::Daemon(report.trim_end().to_owned())),
            }
        }
        sys::Forked::Child => {
            drop(report_read);
            sys::setsid();
            let session = match PidFile::create(settings.pid_file.as_deref()).and_then(|pid_file| {
                let session = mount(&plan, overlay, transport_of(&plan, &settings)?)?;
                pid_file.write_or_unmount(session)
            }) {
                Ok(session) => session,
                Err(e) => {
                    let _ = sys::write_all(report_write.as_fd(), e.one_line().as_bytes());
                    std::process::exit(1);
                }
            };
            let _ = sys::detach_stdio();
            let _ = sys::write_all(report_write.as_fd(), b"ok");
            drop(report_write);
            serve_then_exit(session, false)
        }
    }
}

/// The pid file. Made under a temporary name beside it before the mount, so
/// that a path that can't be written fails before anything is mounted; it
/// takes its name, with the pid in it, once the mount is live, so that it
/// still says the mount is live when it appears.
struct PidFile(Option<(PathBuf, PathBuf, std::fs::File)>);

impl PidFile {
    fn create(path: Option<&Path>) -> SetupResult<PidFile> {
        let Some(path) = path else {
            return Ok(PidFile(None));
        };
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".{}.tmp", std::process::id()));
        let temp = PathBuf::from(temp);
        let file = std::fs::File::create(&temp).map_err(|e| SetupError::io("pid file", path, e))?;
        Ok(PidFile(Some((path.to_path_buf(), temp, file))))
    }

    /// Writes the pid and gives the file its name; if that fails, the mount
    /// is taken down again.
    fn write_or_unmount(self, mut mounted: Mounted) -> SetupResult<Mounted> {
        let Some((path, temp, mut file)) = self.0 else {
            return Ok(mounted);
        };
        let written =
            writeln!(file, "{}", std::process::id()).and_then(|()| std::fs::rename(&temp, &path));
        match written {
            Ok(()) => Ok(mounted),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                mounted.unmount.unmount();
                Err(SetupError::io("pid file", path, e))
            }
        }
    }
}

/// A live mount and how to take it down.
pub struct Mounted {
    session: fuse_adapter::Session,
    unmount: Unmounter,
    overlay: Arc<Overlay>,
    /// Serves `cowfs stats` until the mount is gone (dropping it removes
    /// the socket).
    stats: Option<StatsServer>,
}

enum Unmounter {
    /// Mounted with mount(2); taken down with umount2(2).
    Syscall(PathBuf),
    /// Mounted through fusermount3 (no privilege); it unmounts too.
    Fusermount(fuse_adapter::FusermountUnmounter),
}

impl Unmounter {
    fn unmount(&mut self) {
        let result = match self {
            Unmounter::Syscall(path) => sys::unmount(path, true).map_err(std::io::Error::from),
            Unmounter::Fusermount(unmounter) => unmounter.unmount(),
        };
        if let Err(e) = result {
            tracing::error!(%e, "unmount failed");
        }
    }
}

/// Who opens files: `-o open=`; else the daemon where an option needs the
/// opens (`passthrough=on|all`, `strictatime`); else the `COWFS_OPEN`
/// environment variable (which lets a test suite run whole in either
/// mode); else the kernel.
fn open_by(options: &MountOptions) -> SetupResult<OpenBy> {
    match options.open {
        // Passthrough needs the opens: a backing file is named in an open's answer.
        Some(OpenBy::Kernel) if options.passthrough_asked => Err(SetupError::Invalid(format!(
            "options open=kernel and passthrough={} exclude each other: a file passes through \
             only where cowfs answers its open",
            if options.passthrough_lower {
                "all"
            } else {
                "on"
            }
        ))),
        // Every read must reach cowfs to change the access time.
        Some(OpenBy::Kernel) if options.strictatime => Err(SetupError::Invalid(
            "options open=kernel and strictatime exclude each other: reads the page cache \
             answers never reach cowfs to change access times"
                .into(),
        )),
        Some(by) => Ok(by),
        None if options.passthrough_asked || options.strictatime => Ok(OpenBy::Daemon),
        None => match std::env::var("COWFS_OPEN") {
            Ok(value) => {
                OpenBy::parse(&value).map_err(|e| SetupError::Invalid(format!("COWFS_OPEN: {e}")))
            }
            Err(_) => Ok(OpenBy::default()),
        },
    }
}

/// How requests are to reach the daemon: `-o io_uring=`, else the
/// `COWFS_IO_URING` environment variable, else auto.
fn transport_of(plan: &MountPlan, settings: &RunSettings) -> SetupResult<fuse_adapter::Transport> {
    let io_uring = match plan.options.io_uring {
        Some(mode) => mode,
        None => match std::env::var("COWFS_IO_URING") {
            Ok(value) => fuse_adapter::IoUring::parse(&value)
                .map_err(|e| SetupError::Invalid(format!("COWFS_IO_URING: {e}")))?,
            Err(_) => fuse_adapter::IoUring::Auto,
        },
    };
    let poll = plan.options.poll_us.map_or(
        fuse_adapter::PollWindow::DEFAULT,
        fuse_adapter::PollWindow::micros,
    );
    Ok(fuse_adapter::Transport {
        threads: settings.threads,
        io_uring,
        poll,
    })
}

/// Mounts the overlay and completes the FUSE handshake, so that the mount
/// answers requests as soon as this returns.
fn mount(
    plan: &MountPlan,
    overlay: Arc<Overlay>,
    transport: fuse_adapter::Transport,
) -> SetupResult<Mounted> {
    let read_only = plan.upper.is_none() || plan.options.read_only;
    let flags = sys::MountFlags {
        read_only,
        nodev: plan.options.nodev,
        nosuid: plan.options.nosuid,
        noexec: plan.options.noexec,
        noatime: plan.options.noatime,
    };
    let options = "default_permissions,allow_other";
    let (dev_fuse, mut unmount) =
        match sys::fuse_mount(&plan.mountpoint, "cowfs", "cowfs", flags, options) {
            Ok(dev_fuse) => (dev_fuse, Unmounter::Syscall(plan.mountpoint.clone())),
            // No privilege to mount: fusermount3 does it for us.
            Err(sys::Errno::PERM) => {
                let (dev_fuse, unmounter) = fuse_adapter::fusermount(&plan.mountpoint, flags)
                    .map_err(|e| {
                        SetupError::io("mounting through fusermount3 on", &plan.mountpoint, e)
                    })?;
                (dev_fuse, Unmounter::Fusermount(unmounter))
            }
            Err(e) => return Err(SetupError::io("mounting on", &plan.mountpoint, e)),
        };
    // The socket is there before the first request is answered: whoever
    // sees the mount live can ask for its figures.
    let stats = serve_stats(&plan.mountpoint, &overlay);
    match fuse_adapter::serve(overlay.clone(), dev_fuse, transport) {
        Ok(session) => {
            raise_read_ahead(&plan.mountpoint);
            Ok(Mounted {
                session,
                unmount,
                stats,
                overlay,
            })
        }
        Err(e) => {
            unmount.unmount();
            Err(SetupError::step("starting the FUSE session", e))
        }
    }
}

/// Starts serving the figures of the mount at `mountpoint` for `cowfs
/// stats`. A mount without them still works: a failure is logged.
fn serve_stats(mountpoint: &Path, overlay: &Arc<Overlay>) -> Option<StatsServer> {
    let dev = match cowfs_mount_dev(mountpoint) {
        Ok(Some(mount)) => mount.dev,
        Ok(None) => {
            tracing::warn!("no stats socket: the mount is not in the mount table");
            return None;
        }
        Err(e) => {
            tracing::warn!("no stats socket: {}", e.one_line());
            return None;
        }
    };
    let overlay = overlay.clone();
    match StatsServer::start(&dev, move || overlay.stats_snapshot()) {
        Ok(server) => server,
        Err(e) => {
            tracing::warn!("no stats socket: {}", e.one_line());
            None
        }
    }
}

/// Serves the mount until it is gone, finishes the work left, then exits
/// with every fd on the layers closed at once: `umount MNT && umount
/// LOWER_FS` must find the layers free as soon as the first umount returns.
fn serve_then_exit(mounted: Mounted, foreground: bool) -> ! {
    // Relative paths (the pid file) are behind us; the cwd would pin its fs
    // (mount(8) may start the daemon inside a layer).
    sys::leave_cwd();
    // Kept, never dropped: dropping the overlay frees its tables (slow for
    // a big tree) and only then closes its fds. The exit frees it all.
    let (result, _overlay) = serve(mounted);
    let code = match result {
        Ok(()) => 0,
        Err(e) if foreground => {
            eprintln!("cowfs: error: {}", e.one_line());
            1
        }
        Err(e) => {
            tracing::error!("{}", e.one_line());
            1
        }
    };
    sys::exit_releasing_fds(code)
}

/// Serves requests until the mount goes away (a signal unmounts it), then
/// does the daemon's last work. Hands the overlay back alive; the only
/// thread left (the trimmer) waits on its lock and touches no fd.
fn serve(mounted: Mounted) -> (SetupResult<()>, Arc<Overlay>) {
    let Mounted {
        session,
        unmount,
        overlay,
        stats,
    } = mounted;
    let helpers = match Helpers::start(&overlay, unmount) {
        Ok(helpers) => helpers,
        Err(e) => return (Err(e), overlay),
    };
    // Returns once every request thread has read ENODEV (the kernel has
    // taken the mount down) and finished the request it was serving.
    let result = session.run();
    if let Some(stats) = stats {
        stats.stop();
    }
    helpers.stop();
    finish_before_exit(&overlay);
    (
        result.map_err(|e| SetupError::step("serving the mount", e)),
        overlay,
    )
}

/// The one place for work the daemon must do after the mount is gone and
/// before it exits: no request runs any more, and the layers, the work dir
/// and the overlay's tables are all still there. Right after it returns,
/// every fd is closed (see [`serve_then_exit`]).
fn finish_before_exit(overlay: &Overlay) {
    // Normally each was settled right after its answer; these are the ones
    // whose settling failed or raced with the unmount.
    overlay.settle_all_copies();
}

/// The threads beside the request threads: one trims memory, one unmounts
/// on SIGTERM, SIGINT or SIGHUP.
struct Helpers {
    /// Set once the mount is gone; held while trimming.
    trim_stopped: Arc<parking_lot::Mutex<bool>>,
    trimmer: std::thread::Thread,
    /// Ends the signal thread's wait: its pipe must not be closed under it
    /// by the exit (signal-hook panics on a read that fails with EBADF).
    signals: signal_hook::iterator::Handle,
    signal_thread: std::thread::JoinHandle<()>,
}

impl Helpers {
    fn start(overlay: &Arc<Overlay>, mut unmount: Unmounter) -> SetupResult<Helpers> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let trim_stopped = Arc::new(parking_lot::Mutex::new(false));
        // Gives memory back once the kernel has forgotten many inodes.
        let trimmer = {
            let (stopped, overlay) = (trim_stopped.clone(), overlay.clone());
            std::thread::Builder::new()
                .name("cowfs-trim".into())
                .spawn(move || {
                    loop {
                        std::thread::park_timeout(Duration::from_millis(500));
                        let stopped = stopped.lock();
                        if *stopped {
                            return;
                        }
                        overlay.trim_memory();
                    }
                })
                .map_err(|e| SetupError::step("starting the trim thread", e))?
        };
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| SetupError::step("handling signals", e))?;
        let handle = signals.handle();
        let signal_thread = std::thread::Builder::new()
            .name("cowfs-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    tracing::info!(signal, "unmounting on signal");
                    unmount.unmount();
                }
            })
            .map_err(|e| SetupError::step("starting the signal thread", e))?;
        Ok(Helpers {
            trim_stopped,
            trimmer: trimmer.thread().clone(),
            signals: handle,
            signal_thread,
        })
    }

    /// Stops the trimmer without waiting for it to wake (a trim under way
    /// is waited out, and after that it touches nothing), and ends the
    /// signal thread, waiting for it (and for an unmount it may have begun
    /// on a signal), so that no thread waits on a pipe the exit closes.
    fn stop(self) {
        *self.trim_stopped.lock() = true;
        self.trimmer.unpark();
        self.signals.close();
        if self.signal_thread.join().is_err() {
            tracing::warn!("the signal thread panicked");
        }
    }
}

/// The absolute path of a mount point, found without stat'ing the mount
/// itself (a dead FUSE mount answers ENOTCONN).
fn mount_target(mountpoint: &Path) -> SetupResult<PathBuf> {
    let absolute = std::path::absolute(mountpoint)
        .map_err(|e| SetupError::io("mount point", mountpoint, e))?;
    let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Ok(absolute);
    };
    let parent =
        std::fs::canonicalize(parent).map_err(|e| SetupError::io("mount point", mountpoint, e))?;
    Ok(parent.join(name))
}

/// Whether a cowfs mount sits at `target`.
fn is_cowfs_mount(target: &Path) -> SetupResult<bool> {
    Ok(cowfs_mount_dev(target)?.is_some())
}

/// A cowfs mount as the mount table shows it.
pub struct CowfsMountEntry {
    /// Its device number, `major:minor`.
    pub dev: String,
    /// Who mounted it (the FUSE `user_id=` option).
    pub owner: u32,
}

/// The cowfs mount at `mountpoint` (the newest, if several are stacked
/// there); an error if there is none.
pub fn find_cowfs_mount(mountpoint: &Path) -> SetupResult<CowfsMountEntry> {
    let target = mount_target(mountpoint)?;
    cowfs_mount_dev(&target)?.ok_or_else(|| {
        SetupError::Invalid(format!("{} is not a cowfs mount", mountpoint.display()))
    })
}

/// The newest cowfs mount at `target`.
fn cowfs_mount_dev(target: &Path) -> SetupResult<Option<CowfsMountEntry>> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let mounts =
        std::fs::read_to_string(MOUNTINFO).map_err(|e| SetupError::io("reading", MOUNTINFO, e))?;
    let target = target.to_string_lossy();
    Ok(mounts.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mut after_separator = fields.iter().skip_while(|f| **f != "-").skip(1);
        let fstype = after_separator.next();
        let super_options = after_separator.nth(1);
        let here = fields.get(4).map(|p| unescape_mountinfo(p));
        if here.as_deref() != Some(&*target) || fstype.is_none_or(|t| *t != "fuse.cowfs") {
            return None;
        }
        let owner = super_options?
            .split(',')
            .find_map(|option| option.strip_prefix("user_id="))
            .and_then(|uid| uid.parse().ok())?;
        let dev = fields.get(2)?.to_string();
        Some(CowfsMountEntry { dev, owner })
    }))
}

/// How much the kernel reads ahead on the mount, in KiB. Its default for a
/// FUSE mount is 128 KiB, which splits a sequential read into 128 KiB
/// round trips (8 per MiB); 1 MiB is the most one FUSE read can carry.
const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's read-ahead (root only; without it reads still work,
/// in smaller pieces).
fn raise_read_ahead(mountpoint: &Path) {
    let raised = cowfs_mount_dev(mountpoint).ok().flatten().map(|mount| {
        let knob = format!("/sys/class/bdi/{}/read_ahead_kb", mount.dev);
        std::fs::write(&knob, READ_AHEAD_KB.to_string()).map_err(|e| (knob, e))
    });
    match raised {
        Some(Ok(())) => tracing::debug!(kib = READ_AHEAD_KB, "read-ahead raised"),
        Some(Err((knob, e))) => tracing::debug!(%knob, "read-ahead not raised: {e}"),
        None => tracing::debug!("read-ahead not raised: mount not found in mountinfo"),
    }
}

fn unmount_target(target: &Path, lazy: bool) -> SetupResult<()> {
    match sys::unmount(target, lazy) {
        Ok(()) => Ok(()),
        Err(sys::Errno::PERM) => {
            let mut command = std::process::Command::new("fusermount3");
            command.arg(if lazy { "-uz" } else { "-u" }).arg(target);
            let status = command
                .status()
                .map_err(|e| SetupError::step("running fusermount3", e))?;
            if status.success() {
                Ok(())
            } else {
                Err(SetupError::Invalid(format!(
                    "fusermount3 -u {} failed",
                    target.display()
                )))
            }
        }
        Err(e) => Err(SetupError::io("unmounting", target, e)),
    }
}

/// `cowfs umount`: unmounts a cowfs mount point (also one whose daemon died).
pub fn umount(mountpoint: &Path) -> SetupResult<()> {
    let target = mount_target(mountpoint)?;
    if !is_cowfs_mount(&target)? {
        return Err(SetupError::Invalid(format!(
            "{} is not a cowfs mount",
            mountpoint.display()
        )));
    }
    unmount_target(&target, false)
}

/// If the mount point holds a cowfs mount whose daemon died ("Transport
/// endpoint is not connected"), takes it away so the new mount can go there.
pub fn clear_dead_mount(mountpoint: &Path) -> SetupResult<()> {
    let dead =
        matches!(std::fs::metadata(mountpoint), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
    if !dead {
        return Ok(());
    }
    let target = mount_target(mountpoint)?;
    if is_cowfs_mount(&target)? {
        tracing::warn!(mountpoint = %target.display(), "removing the mount of a dead cowfs daemon");
        unmount_target(&target, true)?;
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
