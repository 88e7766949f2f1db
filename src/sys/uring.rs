//! FUSE over io_uring, the part that hands memory to the kernel: one
//! io_uring with 128-byte SQEs per queue thread, the ring entries' buffers,
//! and the two commands the kernel takes on `/dev/fuse`
//! (`IORING_OP_URING_CMD` with `FUSE_IO_URING_CMD_REGISTER` and
//! `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, Linux 6.14+, fs/fuse/dev_uring.c).
//!
//! How the kernel uses an entry (its `struct fuse_ring_ent`): REGISTER gives
//! it two user buffers through an iovec pair in `sqe->addr` (`sqe->len` must
//! be 2), a header buffer of at least `sizeof(struct fuse_uring_req_header)`
//! and a payload buffer of at least the ring's `max_payload_sz`. The command
//! stays with the kernel until a request is assigned to the entry: the
//! kernel then copies the request in (from task work that runs in the thread
//! owning the io_uring) and completes the command with res 0. The entry is
//! then ours: we read the request, write the answer into the same buffers
//! and give it back with COMMIT_AND_FETCH, which the kernel reads during
//! that submit and then holds until it has the next request for the entry.
//! So the kernel may write an entry's buffers only between a command's
//! submit and its CQE; this module lets safe code touch them only outside
//! that window, and never frees them inside it.
//!
//! The end: at umount or abort the kernel stops every queue; an entry
//! waiting for a request completes with -ENOTCONN (fuse_uring_entry_teardown
//! and, when the io_uring itself goes away, fuse_uring_cancel), and a
//! COMMIT_AND_FETCH after that is refused with -ENOTCONN (-ECONNABORTED
//! after an abort through fusectl). A request whose task died completes
//! with -ECANCELED. Every entry thus ends with exactly one error CQE.

use std::alloc::{self, Layout};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::Errno;

/// `FUSE_URING_IN_OUT_HEADER_SZ`: the `in_out` area of
/// `struct fuse_uring_req_header`. The kernel writes `struct
/// fuse_in_header` here; the answer puts `struct fuse_out_header` here.
pub const IN_OUT_SIZE: usize = 128;
/// `FUSE_URING_OP_IN_OUT_SZ`: the `op_in` area, the request's first argument
/// (the op's fixed struct, `in_args[0]`; untouched for ops whose first
/// argument is empty, such as LOOKUP).
pub const OP_IN_SIZE: usize = 128;
/// `struct fuse_uring_req_header` is `in_out[128]`, `op_in[128]`, then
/// `struct fuse_uring_ent_in_out` (32 bytes: `u64 flags; u64 commit_id;
/// u32 payload_sz; u32 padding; u64 reserved`): 288 bytes.
pub const REQ_HEADER_SIZE: usize = IN_OUT_SIZE + OP_IN_SIZE + 32;
const OP_IN_AT: usize = IN_OUT_SIZE;
const ENT_IN_OUT_AT: usize = IN_OUT_SIZE + OP_IN_SIZE;
/// `fuse_uring_ent_in_out.commit_id`: the request's `unique`, to be named
/// again in the COMMIT_AND_FETCH that answers it.
const COMMIT_ID_AT: usize = ENT_IN_OUT_AT + 8;
/// `fuse_uring_ent_in_out.payload_sz`: the bytes of the payload buffer in
/// use, written by the kernel with a request and by us with its answer.
const PAYLOAD_SZ_AT: usize = ENT_IN_OUT_AT + 16;

/// `enum fuse_uring_cmd` (include/uapi/linux/fuse.h), the SQE's `cmd_op`.
const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;
/// `IORING_ENTER_GETEVENTS`: io_uring_enter runs deferred task work and
/// reaps completions (the io-uring crate keeps its constants private).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// Where `len` sits in `struct io_uring_sqe` (after `opcode`, `flags`,
/// `ioprio`, `fd`, `off`, `addr`).
const SQE_LEN_AT: usize = 24;

/// The header buffer starts this far into its allocation; the iovec pair
/// that REGISTER names sits before it.
const HEADER_AT: usize = 64;

/// The io_uring of one queue thread and its ring entries. It lives and dies
/// on the thread that made it (the io_uring is single-issuer).
pub struct FuseRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    dev_fuse: Arc<OwnedFd>,
    qid: u16,
    payload_size: usize,
    entries: Vec<RingEntry>,
}

/// One ring entry's memory and who holds it.
struct RingEntry {
    /// The iovec pair for REGISTER, then the header buffer.
    head: RawBuffer,
    payload: RawBuffer,
    /// `Some` while a command of this entry is with the kernel (between its
    /// submit and its CQE): then neither buffer may be read, written or freed.
    with_kernel: Option<Command>,
    /// The last command sent, for a resubmit.
    last: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Register,
    CommitAndFetch { commit_id: u64 },
}

/// A CQE: entry `index` is back from the kernel. `Ok` means a request is in
/// it (read it with `request`); an error means the kernel is done with the
/// entry (see the module comment), unless the caller resubmits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub index: usize,
    pub result: Result<(), Errno>,
}

/// A request as the kernel left it in an entry's buffers.
pub struct RingRequest<'a> {
    /// `fuse_in_header` and what follows it in the 128-byte area.
    pub in_out: &'a [u8],
    /// The 128-byte `op_in` area.
    pub op_in: &'a [u8],
    /// The payload buffer, cut to `payload_sz`.
    pub payload: &'a [u8],
    /// The request's `unique` as the kernel will look it up on commit.
    pub commit_id: u64,
}

impl FuseRing {
    /// An io_uring for queue `qid` with `depth` entries whose payload
    /// buffers hold `payload_size` bytes (at least the kernel's
    /// max_payload_sz, or REGISTER is refused with EINVAL). Nothing is
    /// registered yet.
    pub fn new(
        dev_fuse: Arc<OwnedFd>,
        qid: u16,
        depth: usize,
        payload_size: usize,
    ) -> io::Result<FuseRing> {
        let slots = u32::try_from(depth.max(1)).map_err(|_| invalid("ring depth"))?;
        // Each entry has at most one command in flight and one CQE coming,
        // so neither queue can overflow at `depth` slots. Single issuer and
        // deferred task work: the kernel's copy of a request into an entry
        // (task work) runs only when this thread waits in io_uring_enter, so
        // it never interrupts what the thread is doing (a plain ring would
        // flag the thread and break its sleeps with EINTR).
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(slots)
            .build(slots)?;
        let page = rustix::param::page_size();
        let mut entries = Vec::with_capacity(depth);
        for _ in 0..depth {
            let head = RawBuffer::zeroed(HEADER_AT + REQ_HEADER_SIZE, 64)?;
            let payload = RawBuffer::zeroed(payload_size, page)?;
            let iovecs = [
                libc::iovec {
                    // SAFETY: HEADER_AT + REQ_HEADER_SIZE bytes were allocated.
                    iov_base: unsafe { head.ptr.as_ptr().add(HEADER_AT) }.cast(),
                    iov_len: REQ_HEADER_SIZE,
                },
                libc::iovec {
                    iov_base: payload.ptr.as_ptr().cast(),
                    iov_len: payload_size,
                },
            ];
            // SAFETY: the allocation is 64-aligned and its first 64 bytes are
            // room for two iovecs (32 bytes); nothing else refers to it yet.
            unsafe { head.ptr.as_ptr().cast::<[libc::iovec; 2]>().write(iovecs) };
            entries.push(RingEntry {
                head,
                payload,
                with_kernel: None,
                last: Command::Register,
            });
        }
        Ok(FuseRing {
            ring,
            dev_fuse,
            qid,
            payload_size,
            entries,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries the kernel holds now.
    pub fn with_kernel(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.with_kernel.is_some())
            .count()
    }

    /// Queues a REGISTER for every entry this side holds (submitted with
    /// the next `submit`).
    pub fn register_all(&mut self) -> io::Result<()> {
        for index in 0..self.entries.len() {
            if self.entries[index].with_kernel.is_none() {
                self.send(index, Command::Register)?;
            }
        }
        Ok(())
    }

    /// Sends entry `index`'s last command again (after a CQE of EAGAIN or
    /// EINTR, which left it undone).
    pub fn resubmit(&mut self, index: usize) -> io::Result<()> {
        let entry = self.entries.get(index).ok_or_else(|| invalid("entry"))?;
        if entry.with_kernel.is_some() {
            return Err(invalid("entry is with the kernel"));
        }
        let last = entry.last;
        self.send(index, last)
    }

    /// The request in entry `index`, if the entry is back from the kernel
    /// (its last CQE was a success).
    pub fn request(&self, index: usize) -> Option<RingRequest<'_>> {
        let entry = self.entries.get(index)?;
        if entry.with_kernel.is_some() {
            return None;
        }
        let header = entry.header();
        let payload_len = u32_at(header, PAYLOAD_SZ_AT) as usize;
        Some(RingRequest {
            in_out: &header[..IN_OUT_SIZE],
            op_in: &header[OP_IN_AT..OP_IN_AT + OP_IN_SIZE],
            payload: &entry.payload()[..payload_len.min(self.payload_size)],
            commit_id: u64_at(header, COMMIT_ID_AT),
        })
    }

    /// Answers the request in entry `index` and fetches the next:
    /// `write` puts `fuse_out_header` into the 128-byte `in_out` area and
    /// the reply body into the payload buffer, and returns the body's
    /// length; then COMMIT_AND_FETCH is queued for the next `submit`.
    pub fn commit_with(
        &mut self,
        index: usize,
        write: impl FnOnce(&mut [u8], &mut [u8]) -> usize,
    ) -> io::Result<()> {
        let payload_size = self.payload_size;
        let entry = self
            .entries
            .get_mut(index)
            .ok_or_else(|| invalid("entry"))?;
        if entry.with_kernel.is_some() {
            return Err(invalid("entry is with the kernel"));
        }
        let commit_id = u64_at(entry.header(), COMMIT_ID_AT);
        let (header, payload) = entry.buffers_mut();
        let body_len = write(&mut header[..IN_OUT_SIZE], payload).min(payload_size);
        let body_len = u32::try_from(body_len).map_err(|_| invalid("reply size"))?;
        header[PAYLOAD_SZ_AT..PAYLOAD_SZ_AT + 4].copy_from_slice(&body_len.to_ne_bytes());
        self.send(index, Command::CommitAndFetch { commit_id })
    }

    /// Hands the queued commands to the kernel without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map(drop),
            }
        }
    }

    /// Hands the queued commands to the kernel and waits for at least one
    /// CQE (a signal may end the wait early: the caller loops).
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            other => other.map(drop),
        }
    }

    /// Hands the queued commands to the kernel and has it run the deferred
    /// task work (which copies requests into entries) without waiting:
    /// whether a CQE is there now.
    pub fn poll_completions(&mut self) -> io::Result<bool> {
        let queued = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
        // SAFETY: io_uring_enter with no argument struct (`None`, size 0);
        // the SQEs it consumes were pushed through the safe queue API and
        // point at buffers this ring owns for as long as the kernel holds them.
        let entered = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, IORING_ENTER_GETEVENTS, None)
        };
        match entered {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        Ok(!self.ring.completion().is_empty())
    }

    /// The next CQE, if one is there; its entry is this side's again.
    pub fn next_completion(&mut self) -> Option<Completion> {
        loop {
            let cqe = self.ring.completion().next()?;
            let index = usize::try_from(cqe.user_data()).unwrap_or(usize::MAX);
            // Every SQE of this ring carries its entry's index.
            let Some(entry) = self.entries.get_mut(index) else {
                continue;
            };
            entry.with_kernel = None;
            let result = match cqe.result() {
                0.. => Ok(()),
                negative => Err(Errno::from_raw_os_error(-negative)),
            };
            return Some(Completion { index, result });
        }
    }

    /// Whether a CQE is waiting.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    fn send(&mut self, index: usize, command: Command) -> io::Result<()> {
        let entry = &self.entries[index];
        let (cmd_op, commit_id) = match command {
            Command::Register => (FUSE_IO_URING_CMD_REGISTER, 0),
            Command::CommitAndFetch { commit_id } => {
                (FUSE_IO_URING_CMD_COMMIT_AND_FETCH, commit_id)
            }
        };
        let iovecs = match command {
            Command::Register => Some(entry.head.ptr.as_ptr() as u64),
            Command::CommitAndFetch { .. } => None,
        };
        let sqe = fuse_command(
            self.dev_fuse.as_raw_fd(),
            cmd_op,
            self.qid,
            commit_id,
            iovecs,
        )
        .user_data(index as u64);
        // SAFETY: the SQE names memory the kernel may use until this
        // entry's CQE: for REGISTER the iovec pair and the two buffers it
        // describes, for COMMIT_AND_FETCH (which names no memory itself) the
        // buffers registered before. They stay allocated until then: the
        // entry is marked as with the kernel below, nothing here reads or
        // writes its buffers while so marked, and `Drop` leaks the buffers of
        // such entries instead of freeing them.
        let pushed = unsafe { self.ring.submission().push(&sqe) };
        if pushed.is_err() {
            // The SQ holds `depth` slots and each entry has at most one
            // command queued, so it is full only of commands not yet
            // submitted: submit them and retry.
            self.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        let entry = &mut self.entries[index];
        entry.with_kernel = Some(command);
        entry.last = command;
        Ok(())
    }
}

impl Drop for FuseRing {
    fn drop(&mut self) {
        // The kernel still holds the buffers of these entries (a thread that
        // ended early): they must never be reused, so they are leaked. The
        // io_uring (dropped after this) closes, which cancels the commands.
        for entry in self.entries.drain(..) {
            if entry.with_kernel.is_some() {
                entry.head.leak();
                entry.payload.leak();
            }
        }
    }
}

impl RingEntry {
    fn header(&self) -> &[u8] {
        debug_assert!(self.with_kernel.is_none());
        // SAFETY: the header buffer has HEADER_AT + REQ_HEADER_SIZE
        // initialized (zeroed, then kernel-written) bytes; callers hold the
        // entry while no command is with the kernel, so nothing writes them
        // while this borrow of `self` lives.
        unsafe {
            std::slice::from_raw_parts(self.head.ptr.as_ptr().add(HEADER_AT), REQ_HEADER_SIZE)
        }
    }

    fn payload(&self) -> &[u8] {
        debug_assert!(self.with_kernel.is_none());
        // SAFETY: as for `header`, with the payload buffer's size.
        unsafe { std::slice::from_raw_parts(self.payload.ptr.as_ptr(), self.payload.layout.size()) }
    }

    fn buffers_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        debug_assert!(self.with_kernel.is_none());
        // SAFETY: as for `header`; `&mut self` makes these the only borrows,
        // and the two buffers are separate allocations.
        unsafe {
            (
                std::slice::from_raw_parts_mut(
                    self.head.ptr.as_ptr().add(HEADER_AT),
                    REQ_HEADER_SIZE,
                ),
                std::slice::from_raw_parts_mut(
                    self.payload.ptr.as_ptr(),
                    self.payload.layout.size(),
                ),
            )
        }
    }
}

/// A zeroed heap block, held as a raw pointer: the kernel writes into it
/// behind Rust's back, so no reference to it is kept across a command.
struct RawBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl RawBuffer {
    fn zeroed(size: usize, align: usize) -> io::Result<RawBuffer> {
        let layout =
            Layout::from_size_align(size.max(1), align).map_err(|_| invalid("buffer size"))?;
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(RawBuffer { ptr, layout })
    }

    fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once; a
        // buffer the kernel may still use is leaked, never dropped.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A FUSE command SQE: `IORING_OP_URING_CMD` on `/dev/fuse`, with `struct
/// fuse_uring_cmd_req` (`u64 flags; u64 commit_id; u16 qid; u8
/// padding[6]`) at the start of the 80-byte command area, and for REGISTER
/// the address of the iovec pair in `addr` and 2 in `len`.
fn fuse_command(
    fd: i32,
    cmd_op: u32,
    qid: u16,
    commit_id: u64,
    iovecs: Option<u64>,
) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(fd), cmd_op)
        .cmd(cmd)
        .addr(iovecs)
        .build();
    match iovecs {
        Some(_) => with_len(sqe, 2),
        None => sqe,
    }
}

/// Sets `sqe->len`, which the io-uring crate's `UringCmd80` has no setter
/// for (it has one for `addr`), while the kernel refuses a REGISTER whose
/// `len` is not 2.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]` and is exactly the 128-byte
    // `struct io_uring_sqe` pair the crate copies verbatim into the kernel's
    // SQE array (transmute checks the size); every bit pattern is a valid
    // SQE, its fields being integers and unions of integers, so going to
    // bytes and back is sound.
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    bytes[SQE_LEN_AT..SQE_LEN_AT + 4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes) }
}

/// Whether this process can make an io_uring with 128-byte SQEs (it may be
/// off: `kernel.io_uring_disabled`, seccomp, a container's policy). To be
/// asked before accepting FUSE_OVER_IO_URING in the INIT reply.
pub fn probe_io_uring() -> io::Result<()> {
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1)
        .map(drop)
}

/// Makes the kernel give up io_uring on this connection, for when the INIT
/// reply accepted it but the rings could not all be set up: after that
/// reply every new request waits until each queue has an entry, and a
/// REGISTER the kernel refuses (here: a queue id past the last, EINVAL)
/// clears the connection's io_uring mode and lets those requests go to
/// `/dev/fuse`. No effect once the ring is in use. Returns the errno the
/// kernel refused with.
pub fn give_up_io_uring(dev_fuse: &OwnedFd) -> io::Result<Errno> {
    let mut ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(1)?;
    let sqe = fuse_command(
        dev_fuse.as_raw_fd(),
        FUSE_IO_URING_CMD_REGISTER,
        u16::MAX,
        0,
        None,
    );
    // SAFETY: this SQE names no memory (no iovecs: the kernel checks the
    // queue id first, and without `len` = 2 it would refuse the iovecs too).
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no completion for the refused REGISTER"))?;
    match cqe.result() {
        0.. => Err(io::Error::other(
            "the kernel took a REGISTER for a queue past its last",
        )),
        negative => Ok(Errno::from_raw_os_error(-negative)),
    }
}

/// The CPUs the kernel counts as possible (`/sys/devices/system/cpu/possible`,
/// e.g. "0-3,8-11"): the kernel makes one ring queue for each
/// (`num_possible_cpus()`) and uses the ring only once every queue has an
/// entry registered.
pub fn possible_cpus() -> io::Result<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim()).ok_or_else(|| invalid("cpu list"))
}

fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (first, last): (usize, usize) = match part.split_once('-') {
            Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if last < first || last - first > 1 << 16 {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus)
}

/// Pins the calling thread to `cpu` (a queue's threads run where its
/// requests come from; the kernel queues a request on the queue of the CPU
/// its caller runs on).
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return Err(invalid("cpu number"));
    }
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("io_uring: bad {what}"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(sqe: squeue::Entry128) -> [u8; 128] {
        // SAFETY: as in `with_len`.
        unsafe { std::mem::transmute(sqe) }
    }

    #[test]
    fn register_sqe_has_the_kernel_layout() {
        let sqe = fuse_command(7, FUSE_IO_URING_CMD_REGISTER, 3, 0, Some(0x1234_5678)).user_data(9);
        let b = bytes_of(sqe);
        assert_eq!(b[0], 46, "IORING_OP_URING_CMD");
        assert_eq!(u32_at(&b, 4), 7, "fd");
        assert_eq!(u32_at(&b, 8), FUSE_IO_URING_CMD_REGISTER, "cmd_op");
        assert_eq!(u64_at(&b, 16), 0x1234_5678, "addr");
        assert_eq!(u32_at(&b, 24), 2, "len");
        assert_eq!(u64_at(&b, 32), 9, "user_data");
        // The 80-byte command area starts at byte 48.
        assert_eq!(u64_at(&b, 48), 0, "flags");
        assert_eq!(u64_at(&b, 56), 0, "commit_id");
        assert_eq!(u16::from_ne_bytes([b[64], b[65]]), 3, "qid");
        assert!(b[66..].iter().all(|&x| x == 0));
    }

    #[test]
    fn commit_sqe_names_the_request_and_no_memory() {
        let b = bytes_of(fuse_command(
            5,
            FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
            1,
            77,
            None,
        ));
        assert_eq!(u32_at(&b, 8), FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
        assert_eq!(u64_at(&b, 16), 0, "addr");
        assert_eq!(u32_at(&b, 24), 0, "len");
        assert_eq!(u64_at(&b, 56), 77, "commit_id");
        assert_eq!(u16::from_ne_bytes([b[64], b[65]]), 1, "qid");
    }

    #[test]
    fn len_is_where_the_crate_puts_it_for_other_ops() {
        let sqe = opcode::Read::new(types::Fd(0), std::ptr::null_mut(), 0xabcd).build();
        let b = bytes_of(squeue::Entry128::from(sqe));
        assert_eq!(u32_at(&b, SQE_LEN_AT), 0xabcd);
    }

    #[test]
    fn cpu_lists_parse_like_sysfs_writes_them() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(
            parse_cpu_list("0-2,8,10-11"),
            Some(vec![0, 1, 2, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
