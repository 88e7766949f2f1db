//! Starting a FUSE session on a mount: a /dev/fuse fd cowfs mounted itself,
//! or one fusermount3 mounted for a user without the privilege to.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::CowFs;
use super::dev::{self, DevChannel};
use crate::overlay::Overlay;

/// A FUSE session serving one mount.
pub struct Session {
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    mountpoint: Option<PathBuf>,
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

    /// What unmounts a mount made through fusermount3.
    pub fn fusermount_unmounter(&mut self) -> FusermountUnmounter {
        FusermountUnmounter {
            mountpoint: self.mountpoint.clone().unwrap_or_default(),
        }
    }
}

/// Completes the FUSE handshake on an already mounted `/dev/fuse` fd and
/// starts `threads` request threads on it.
pub fn serve(overlay: Arc<Overlay>, dev_fuse: OwnedFd, threads: usize) -> std::io::Result<Session> {
    let fs = CowFs::new(overlay.clone());
    let negotiated = dev::handshake(&dev_fuse, |offered| fs.init_flags(offered))?;
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
    let fs = Arc::new(fs);
    let threads = dev::spawn_device_threads(&dev_fuse, fs, threads)?;
    record_transport(&overlay, threads.len());
    Ok(Session {
        threads,
        mountpoint: None,
    })
}

/// Says in the mount's figures how requests reach it: each request thread
/// reads them from its own clone of the /dev/fuse fd.
fn record_transport(overlay: &Overlay, threads: usize) {
    overlay.stats().set_transport(crate::stats::Transport {
        kind: "/dev/fuse read".into(),
        threads: u32::try_from(threads.max(1)).unwrap_or(u32::MAX),
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

/// Mounts through fusermount3 (for users without the privilege to mount)
/// and starts serving.
pub fn serve_through_fusermount(
    overlay: Arc<Overlay>,
    mountpoint: &Path,
    flags: crate::sys::MountFlags,
    threads: usize,
) -> std::io::Result<Session> {
    let dev_fuse = fusermount(mountpoint, flags)?;
    let mut session = serve(overlay, dev_fuse, threads)?;
    session.mountpoint = Some(mountpoint.to_path_buf());
    Ok(session)
}

/// Has fusermount3 mount `/dev/fuse` at `mountpoint` and hand over the fd.
fn fusermount(mountpoint: &Path, flags: crate::sys::MountFlags) -> std::io::Result<OwnedFd> {
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
        Some(fd) => Ok(fd),
        None => Err(std::io::Error::other(format!(
            "fusermount3 sent no /dev/fuse fd ({status})"
        ))),
    }
}
