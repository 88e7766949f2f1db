//! Starting a FUSE session on a mount: a /dev/fuse fd cowfs mounted itself,
//! or one fusermount3 mounted for a user without the privilege to.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::CowFs;
use super::dev::{self, DevChannel, Negotiated};
use super::poll::PollWindow;
use super::uring::{RingConfig, Rings};
use super::wire::Dispatch;
use super::wire::abi;
use crate::overlay::Overlay;

/// Whether requests come through FUSE over io_uring (`-o io_uring=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoUring {
    /// When the kernel offers it (the fuse module's `enable_uring`).
    #[default]
    Auto,
    /// Always: the mount fails where the kernel does not offer it.
    On,
    /// Never: requests are read from /dev/fuse.
    Off,
}

impl IoUring {
    pub fn parse(value: &str) -> Result<IoUring, String> {
        match value {
            "auto" => Ok(IoUring::Auto),
            "on" | "1" | "true" => Ok(IoUring::On),
            "off" | "0" | "false" => Ok(IoUring::Off),
            other => Err(format!(
                "option 'io_uring' must be auto, on or off, not '{other}'"
            )),
        }
    }
}

/// How requests reach the daemon.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    /// Request threads: reading /dev/fuse, or serving io_uring queues (spread
    /// over the queues, one queue per CPU).
    pub threads: usize,
    pub io_uring: IoUring,
    /// How long a request thread polls for the next request after an
    /// answer before it sleeps (`-o poll_us=`).
    pub poll: PollWindow,
}

/// A FUSE session serving one mount.
pub struct Session {
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    rings: Option<Rings>,
}

/// Unmounts a mount made through fusermount3 (which alone may unmount it).
pub struct FusermountUnmounter {
    mountpoint: PathBuf,
}

impl FusermountUnmounter {
    pub fn unmount(&mut self) -> std::io::Result<()> {
        let status = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "-q", "--"])
            .arg(&self.mountpoint)
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "fusermount3 -u exited with {status}"
            )))
        }
    }
}

impl Session {
    /// Serves requests until the mount is gone.
    pub fn run(self) -> std::io::Result<()> {
        if let Some(rings) = self.rings {
            rings.join();
        }
        let mut result = Ok(());
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(std::io::Error::other("a request thread panicked")),
            }
        }
        result
    }
}

/// Completes the FUSE handshake on an already mounted `/dev/fuse` fd and
/// starts the request threads of `transport` on it.
pub fn serve(
    overlay: Arc<Overlay>,
    dev_fuse: OwnedFd,
    transport: Transport,
) -> std::io::Result<Session> {
    let fs = CowFs::new(overlay.clone());
    let negotiated = dev::handshake(&dev_fuse, |offered| {
        let mut answer = fs.init_flags(offered);
        if wants_rings(transport.io_uring, offered) {
            answer.flags |= abi::init::OVER_IO_URING;
        }
        answer
    })?;
    tracing::info!(
        passthrough = fs.backings.is_enabled(),
        minor = negotiated.minor,
        flags = format_args!("{:#x}", negotiated.flags),
        max_write = negotiated.max_write,
        max_pages = negotiated.max_pages,
        io_uring_offered = negotiated.io_uring_offered(),
        "FUSE session started"
    );
    let dev_fuse = Arc::new(dev_fuse);
    let _ = fs.dev.set(dev_fuse.clone());
    tell_kernel_of_attr_changes(&overlay, &dev_fuse);
    let fs: Arc<dyn Dispatch> = Arc::new(fs);
    let rings = start_rings(&dev_fuse, &fs, &negotiated, transport)?;
    let (device_threads, device_poll) = match &rings {
        // Forgets and interrupts still come through /dev/fuse: no caller
        // waits on them, nothing to poll for.
        Some(_) => (1, PollWindow::OFF),
        None => (transport.threads, transport.poll),
    };
    let threads = dev::spawn_device_threads(&dev_fuse, fs, device_threads, device_poll)?;
    record_transport(&overlay, threads.len(), rings.as_ref(), transport.poll);
    Ok(Session { threads, rings })
}

/// Whether the INIT reply takes FUSE over io_uring. In auto mode only where
/// rings can start: once the reply has taken it, every request waits for
/// the rings, and a process that can make no io_uring (io_uring_disabled,
/// seccomp) could not even have the kernel fall back to /dev/fuse. With
/// `on`, a failure to start fails the mount (see `start_rings`).
fn wants_rings(mode: IoUring, offered: u64) -> bool {
    match mode {
        IoUring::Off => false,
        IoUring::On => true,
        IoUring::Auto if offered & abi::init::OVER_IO_URING == 0 => false,
        IoUring::Auto => match Rings::available() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%e, "no io_uring ring can start here; reading /dev/fuse");
                false
            }
        },
    }
}

/// Starts the io_uring queues when the kernel took FUSE over io_uring;
/// with `io_uring=on`, a kernel that did not offer it fails the mount.
fn start_rings(
    dev_fuse: &Arc<OwnedFd>,
    fs: &Arc<dyn Dispatch>,
    negotiated: &Negotiated,
    transport: Transport,
) -> std::io::Result<Option<Rings>> {
    let taken = negotiated.flags & abi::init::OVER_IO_URING != 0;
    if !taken {
        if transport.io_uring == IoUring::On {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "io_uring=on, but the kernel does not offer FUSE over io_uring \
                 (/sys/module/fuse/parameters/enable_uring is N, or the kernel is older than 6.14)",
            ));
        }
        return Ok(None);
    }
    let mut config = RingConfig::for_this_machine(negotiated.max_write, negotiated.max_pages)?;
    config.threads_per_queue = transport.threads.div_ceil(config.queues.max(1)).max(1);
    config.poll = transport.poll;
    match Rings::start(dev_fuse.clone(), fs.clone(), config) {
        Ok(rings) => Ok(Some(rings)),
        Err(e) if transport.io_uring == IoUring::Auto => {
            tracing::warn!(%e, "FUSE over io_uring could not start; reading /dev/fuse");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Says in the mount's figures how requests reach it: through io_uring
/// queues, or read by each request thread from its own clone of the
/// /dev/fuse fd.
fn record_transport(
    overlay: &Overlay,
    device_threads: usize,
    rings: Option<&Rings>,
    poll: PollWindow,
) {
    let (kind, threads) = match rings {
        Some(rings) => ("io_uring", rings.threads()),
        None => ("/dev/fuse read", device_threads),
    };
    overlay.stats().set_transport(crate::stats::Transport {
        kind: kind.into(),
        threads: u32::try_from(threads.max(1)).unwrap_or(u32::MAX),
        poll_us: u64::try_from(poll.as_micros()).unwrap_or(u64::MAX),
    });
}

/// Attribute changes the kernel did not ask for reach it as inode
/// invalidations (attributes only: offset -1 leaves the page cache alone, so
/// nothing waits on pages a request in flight may hold).
fn tell_kernel_of_attr_changes(overlay: &Overlay, dev_fuse: &Arc<OwnedFd>) {
    let channel = DevChannel::new(dev_fuse.clone());
    overlay.on_attrs_changed(Box::new(move |ino| {
        // ENOENT: the kernel does not hold the inode, nothing to drop.
        let _ = channel.invalidate_attrs(ino);
    }));
}

/// Has fusermount3 mount `/dev/fuse` at `mountpoint` (for users without
/// the privilege to mount) and hand over the fd; fusermount3 also unmounts.
pub fn fusermount(
    mountpoint: &Path,
    flags: crate::sys::MountFlags,
) -> std::io::Result<(OwnedFd, FusermountUnmounter)> {
    let mut options = vec!["fsname=cowfs", "subtype=cowfs", "default_permissions"];
    for (on, option) in [
        (flags.read_only, "ro"),
        (flags.nodev, "nodev"),
        (flags.nosuid, "nosuid"),
        (flags.noexec, "noexec"),
        (flags.noatime, "noatime"),
    ] {
        if on {
            options.push(option);
        }
    }
    let (ours, theirs) = crate::sys::fusermount_sockets()?;
    let mut child = std::process::Command::new("fusermount3")
        .arg("-o")
        .arg(options.join(","))
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .spawn()?;
    drop(theirs);
    let received = crate::sys::receive_fd(ours.as_fd());
    let status = child.wait()?;
    match received? {
        Some(fd) => Ok((
            fd,
            FusermountUnmounter {
                mountpoint: mountpoint.to_path_buf(),
            },
        )),
        None => Err(std::io::Error::other(format!(
            "fusermount3 sent no /dev/fuse fd ({status})"
        ))),
    }
}
