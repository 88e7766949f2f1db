//! Unix sockets: who is at the other end, and waking a listener.

use super::*;

/// The effective uid of the process at the other end of a connected Unix
/// socket, as it was when it connected (SO_PEERCRED).
pub fn peer_uid(socket: BorrowedFd<'_>) -> SysResult<u32> {
    Ok(rustix::net::sockopt::socket_peercred(socket)?.uid.as_raw())
}

/// Shuts a listening socket down, which makes a thread blocked in accept(2)
/// on it return (EINVAL), so that it can be joined.
pub fn shut_down(socket: BorrowedFd<'_>) -> SysResult<()> {
    rustix::net::shutdown(socket, rustix::net::Shutdown::Both)
}
