//! Starting a FUSE session on a mount: a /dev/fuse fd cowfs mounted itself,
//! or a mount made through fusermount3.

use std::path::Path;
use std::sync::Arc;

use super::CowFs;
use crate::overlay::Overlay;

/// A FUSE session serving one mount.
pub struct Session {
    inner: fuser::Session<CowFs>,
}

/// Unmounts a mount made through fusermount3 (which alone may unmount it).
pub struct FusermountUnmounter {
    inner: fuser::SessionUnmounter,
}

impl FusermountUnmounter {
    pub fn unmount(&mut self) -> std::io::Result<()> {
        self.inner.unmount()
    }
}

impl Session {
    /// Serves requests until the mount is gone.
    pub fn run(self) -> std::io::Result<()> {
        self.inner.run()
    }

    /// What unmounts a mount made through fusermount3.
    pub fn fusermount_unmounter(&mut self) -> FusermountUnmounter {
        FusermountUnmounter {
            inner: self.inner.unmount_callable(),
        }
    }
}

/// Starts serving an already mounted `/dev/fuse` fd with `threads` threads.
pub fn serve(
    overlay: Arc<Overlay>,
    dev_fuse: std::os::fd::OwnedFd,
    threads: usize,
) -> std::io::Result<Session> {
    let mut config = fuser::Config::default();
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    let session = fuser::Session::from_fd(
        CowFs::new(overlay.clone()),
        dev_fuse,
        fuser::SessionACL::All,
        config,
    )?;
    tell_kernel_of_attr_changes(&overlay, &session);
    record_transport(&overlay, threads);
    Ok(Session { inner: session })
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
fn tell_kernel_of_attr_changes(overlay: &Overlay, session: &fuser::Session<CowFs>) {
    let notifier = session.notifier();
    overlay.on_attrs_changed(Box::new(move |ino| {
        // ENOENT: the kernel does not hold the inode, nothing to drop.
        let _ = notifier.inval_inode(fuser::INodeNo(ino), -1, 0);
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
    use fuser::MountOption;
    let mut config = fuser::Config::default();
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    config.acl = fuser::SessionACL::Owner;
    config.mount_options = vec![
        MountOption::FSName("cowfs".into()),
        MountOption::Subtype("cowfs".into()),
        MountOption::DefaultPermissions,
    ];
    for (on, option) in [
        (flags.read_only, MountOption::RO),
        (flags.nodev, MountOption::NoDev),
        (flags.nosuid, MountOption::NoSuid),
        (flags.noexec, MountOption::NoExec),
        (flags.noatime, MountOption::NoAtime),
    ] {
        if on {
            config.mount_options.push(option);
        }
    }
    let session = fuser::Session::new(CowFs::new(overlay.clone()), mountpoint, &config)?;
    tell_kernel_of_attr_changes(&overlay, &session);
    record_transport(&overlay, threads);
    Ok(Session { inner: session })
}
