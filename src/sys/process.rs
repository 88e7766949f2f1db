//! The daemon as a process: fd limit, fork and session, stdio, umask,
//! pipes, and its exit.

use super::*;

pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The daemon's effective user and group ids, which objects it makes get
/// (read once: the daemon never changes them).
pub fn daemon_ids() -> (u32, u32) {
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    })
}

/// Raises the soft open-file limit to the hard one; cowfs budgets its fds
/// itself, this only gives the budget room.
pub fn raise_fd_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let target = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, target);
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
}

/// Who a fork returned to.
pub enum Forked {
    Parent { child: i32 },
    Child,
}

/// Forks the process. Refused (EBUSY) unless the process has one thread
/// only: a child of a threaded process may inherit a lock another thread
/// held, and deadlock on it.
pub fn fork_single_threaded() -> SysResult<Forked> {
    if thread_count()? != 1 {
        return Err(Errno::BUSY);
    }
    // SAFETY: the process has one thread (checked above; no thread is made
    // between the check and the fork, since this thread is the only one and
    // is here), so the child inherits no lock held by another thread, and it
    // goes on to run ordinary Rust code of this program.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

/// How many threads this process has (the entries of /proc/self/task).
fn thread_count() -> SysResult<usize> {
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    Ok(tasks.count())
}

/// Moves the cwd to `/`, so that it keeps no filesystem busy.
pub fn leave_cwd() {
    let _ = rustix::process::chdir("/");
}

pub fn setsid() {
    let _ = rustix::process::setsid();
}

/// Points stdin, stdout and stderr at /dev/null, so a parent waiting for our
/// stdio to close (podman does) sees it close.
pub fn detach_stdio() -> SysResult<()> {
    let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    Ok(())
}

/// Ends the process, first letting go of the cwd and of every fd but stdio
/// (layer files, the work dir lock, /dev/fuse, whose closing frees the
/// passthrough backing files the kernel holds). Whatever the process holds
/// keeps its filesystem busy, and exit(2) closes files only after tearing
/// down the address space, which takes a while for a big heap. For the very
/// end of a daemon whose other threads no longer use fds.
pub fn exit_releasing_fds(code: i32) -> ! {
    let _ = rustix::process::chdir("/");
    // SAFETY: the fds closed here are never used or closed again: the
    // caller has joined or stopped every other thread that uses fds, and
    // nothing runs after this call but process exit (std::process::exit
    // runs no destructors, so no OwnedFd is dropped). Kernels before 5.9
    // lack close_range (ENOSYS): exit(2) closes the fds then, only later.
    let _ = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    std::process::exit(code)
}

/// A pipe with both ends close-on-exec.
pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
}

pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> SysResult<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn read_to_end(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Clears the process umask, so objects get exactly the modes given.
pub fn clear_umask() {
    rustix::process::umask(Mode::empty());
}

/// Returns free heap memory to the system (glibc keeps it otherwise).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // the allocator's locks itself and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}
