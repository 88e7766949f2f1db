//! The FUSE-over-io_uring transport: queue threads that take requests from
//! their rings and hand them to the same `Dispatch` as `/dev/fuse` reads.
//!
//! What the kernel (fs/fuse/dev_uring.c, Linux 6.14+) expects, and so what
//! this does:
//! - One queue per possible CPU (`num_possible_cpus()`); a request goes to
//!   the queue of the CPU its caller runs on. The ring is used only once
//!   every queue has an entry registered; until then, after an INIT reply
//!   that accepted FUSE_OVER_IO_URING, new requests wait. `start` therefore
//!   sets up every ring before it registers any entry, and if one cannot
//!   be set up it makes the kernel give up io_uring for the connection
//!   (requests then come through `/dev/fuse`).
//! - Forgets, interrupts and notifications still use `/dev/fuse`: its
//!   reader must keep running.
//! - A queue may have entries from several io_urings: each thread here has
//!   its own ring and registers its entries on its queue. The kernel hands
//!   a request to the entry that became free last, without knowing whose
//!   thread is busy, so a thread with several entries can sit on requests
//!   while it serves a slow one (an fsync): with one entry a thread
//!   (`depth` 1) and several threads a queue, a busy thread holds no free
//!   entry and the others take the requests; what none can take waits in
//!   the kernel's queue for the next commit.
//! - Threads are pinned to their queue's CPU (best effort: a CPU outside
//!   this process's cpuset is left unpinned); the kernel does not require
//!   it, but the request's data and its caller are there.
//! - At umount or abort every entry completes with an error (ENOTCONN,
//!   ECONNABORTED); a thread ends when all its entries have.

use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;

use super::poll::{PollWindow, Poller};
use super::wire::channel::{Dispatch, InHeader, OUT_HEADER_SIZE, ReadSource, ReplyChannel};
use crate::sys::Errno;
use crate::sys::uring::{self as sys_uring, Completion, FuseRing, IN_OUT_SIZE, OP_IN_SIZE};

/// How many rings, threads and entries, and how big an entry's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Must be the kernel's number of queues, the possible CPUs.
    pub queues: usize,
    pub threads_per_queue: usize,
    /// Entries per thread (each is a request in flight).
    pub depth: usize,
    /// Bytes of an entry's payload buffer: at least the kernel's
    /// `max_payload_sz` (see `payload_size`), or REGISTER is refused.
    pub max_payload: usize,
    /// How long a thread polls its ring before it waits in the kernel.
    pub poll: PollWindow,
}

impl RingConfig {
    /// One queue per possible CPU, two threads a queue with one entry each,
    /// payload buffers for the negotiated `max_write` and `max_pages`.
    pub fn for_this_machine(max_write: u32, max_pages: u16) -> std::io::Result<RingConfig> {
        Ok(RingConfig {
            queues: sys_uring::possible_cpus()?.len(),
            threads_per_queue: 2,
            depth: 1,
            max_payload: RingConfig::payload_size(max_write, max_pages),
            poll: PollWindow::DEFAULT,
        })
    }

    /// The kernel's `max_payload_sz` for a connection: the largest of
    /// FUSE_MIN_READ_BUFFER (8 KiB), `max_write` and `max_pages` pages
    /// (fuse_uring_create). It bounds both a request's payload and a reply.
    pub fn payload_size(max_write: u32, max_pages: u16) -> usize {
        const FUSE_MIN_READ_BUFFER: usize = 8192;
        let pages = usize::from(max_pages) * rustix::param::page_size();
        FUSE_MIN_READ_BUFFER.max(max_write as usize).max(pages)
    }
}

/// The running queue threads.
pub struct Rings {
    threads: Vec<JoinHandle<()>>,
}

/// What a queue thread tells `start`.
type Report = std::io::Result<()>;

impl Rings {
    /// Registers ring entries on every queue and starts serving them.
    /// Called after the INIT reply that accepted FUSE_OVER_IO_URING has been
    /// written to `/dev/fuse`. On an error no ring serves the connection and
    /// the kernel has been told to give up io_uring on it, so requests come
    /// through `/dev/fuse` (unless that too failed: then it is said in the
    /// error, and the connection is best aborted).
    pub fn start(
        dev_fuse: Arc<OwnedFd>,
        dispatch: Arc<dyn Dispatch>,
        config: RingConfig,
    ) -> std::io::Result<Rings> {
        match Rings::set_up(&dev_fuse, &dispatch, config) {
            Ok(rings) => Ok(rings),
            Err(error) => Err(give_up(&dev_fuse, error)),
        }
    }

    /// Whether rings could start here: this process can make an io_uring
    /// with 128-byte SQEs and the kernel's queue count can be read. To be
    /// asked before the INIT reply accepts FUSE_OVER_IO_URING: once it has,
    /// requests wait for the rings, and if no io_uring can be made at all,
    /// `start` cannot even tell the kernel to fall back.
    pub fn available() -> std::io::Result<()> {
        sys_uring::probe_io_uring()?;
        sys_uring::possible_cpus().map(drop)
    }

    /// How many queue threads serve the rings.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Waits until every queue thread has ended (they end when the kernel
    /// ends the connection: umount or abort).
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("an io_uring queue thread panicked");
            }
        }
    }

    fn set_up(
        dev_fuse: &Arc<OwnedFd>,
        dispatch: &Arc<dyn Dispatch>,
        config: RingConfig,
    ) -> std::io::Result<Rings> {
        check(config)?;
        let (report_tx, report_rx) = mpsc::channel::<Report>();
        let mut threads = Vec::new();
        let mut go_signals = Vec::new();
        let mut failure = None;
        'spawn: for qid in 0..config.queues {
            for n in 0..config.threads_per_queue {
                let (go_tx, go_rx) = mpsc::channel::<bool>();
                let queue = QueueThread {
                    qid,
                    dev_fuse: dev_fuse.clone(),
                    dispatch: dispatch.clone(),
                    config,
                };
                let report = report_tx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("cowfs-ring{qid}.{n}"))
                    .spawn(move || queue.run(&report, &go_rx));
                match spawned {
                    Ok(thread) => {
                        threads.push(thread);
                        go_signals.push(go_tx);
                    }
                    Err(e) => {
                        failure = Some(e);
                        break 'spawn;
                    }
                }
            }
        }
        // First every thread makes its ring and buffers; only if all could
        // does any register, so that a failure leaves no queue registered.
        for _ in 0..threads.len() {
            match report_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(std::io::Error::other("a queue thread died"))),
            }
        }
        let go = failure.is_none();
        for signal in &go_signals {
            let _ = signal.send(go);
        }
        if let Some(error) = failure {
            for thread in threads {
                let _ = thread.join();
            }
            return Err(error);
        }
        // Then each says whether the kernel took its entries.
        let mut refused = 0;
        let mut first_refusal = None;
        for _ in 0..threads.len() {
            if let Ok(Err(e)) = report_rx.recv() {
                refused += 1;
                first_refusal = first_refusal.or(Some(e));
            }
        }
        if refused == threads.len() {
            for thread in threads {
                let _ = thread.join();
            }
            return Err(
                first_refusal.unwrap_or_else(|| std::io::Error::other("no ring entry registered"))
            );
        }
        if let Some(e) = first_refusal {
            // The kernel cleared io_uring for the connection on the first
            // refused REGISTER; the threads it took entries from wait until
            // the end, and requests go to whichever transport it picked.
            tracing::warn!("io_uring: {refused} queue threads had their entries refused: {e}");
        }
        Ok(Rings { threads })
    }
}

fn check(config: RingConfig) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    if config.threads_per_queue == 0 || config.depth == 0 || config.max_payload == 0 {
        return Err(bad(format!(
            "io_uring: empty ring configuration {config:?}"
        )));
    }
    if config.queues > usize::from(u16::MAX) {
        return Err(bad(format!("io_uring: {} queues", config.queues)));
    }
    // With fewer queues than the kernel has, the ring would never be used
    // and requests would wait for it forever; so without the kernel's
    // count nothing is registered.
    let cpus = sys_uring::possible_cpus()?;
    if cpus.len() != config.queues {
        return Err(bad(format!(
            "io_uring: {} queues, but the kernel has one for each of {} possible CPUs",
            config.queues,
            cpus.len()
        )));
    }
    Ok(())
}

/// Tells the kernel to stop waiting for rings, and says how that went.
fn give_up(dev_fuse: &OwnedFd, error: std::io::Error) -> std::io::Error {
    match sys_uring::give_up_io_uring(dev_fuse) {
        Ok(errno) => {
            tracing::debug!("io_uring: REGISTER refused with {errno} to fall back to /dev/fuse");
            error
        }
        Err(again) => std::io::Error::other(format!(
            "{error}; and the kernel could not be made to fall back to /dev/fuse ({again})"
        )),
    }
}

/// One queue thread, before it starts.
struct QueueThread {
    qid: usize,
    dev_fuse: Arc<OwnedFd>,
    dispatch: Arc<dyn Dispatch>,
    config: RingConfig,
}

/// How often an entry's command may come back undone (EAGAIN, EINTR) in a
/// row before the thread gives the entry up.
const RETRIES: u32 = 100;

impl QueueThread {
    fn run(self, report: &mpsc::Sender<Report>, go: &mpsc::Receiver<bool>) {
        if let Err(e) = sys_uring::pin_to_cpu(self.qid) {
            tracing::debug!("io_uring queue {}: not pinned to its CPU: {e}", self.qid);
        }
        let qid = u16::try_from(self.qid).unwrap_or(u16::MAX);
        let made = FuseRing::new(
            self.dev_fuse.clone(),
            qid,
            self.config.depth,
            self.config.max_payload,
        );
        let mut ring = match made {
            Ok(ring) => {
                let _ = report.send(Ok(()));
                ring
            }
            Err(e) => {
                let _ = report.send(Err(e));
                return;
            }
        };
        if go.recv() != Ok(true) {
            return;
        }
        let replies: Vec<Arc<StagedReply>> = (0..ring.len())
            .map(|_| Arc::new(StagedReply::new(self.config.max_payload)))
            .collect();
        let mut server = Server {
            ring: &mut ring,
            dispatch: &*self.dispatch,
            replies: &replies,
            retries: vec![0; replies.len()],
            live: replies.len(),
            qid,
            poll: self.config.poll,
        };
        let registered = server.register();
        let refused = registered.is_err();
        let _ = report.send(registered);
        if !refused {
            server.serve();
        }
    }
}

/// A queue thread at work.
struct Server<'a> {
    ring: &'a mut FuseRing,
    dispatch: &'a dyn Dispatch,
    replies: &'a [Arc<StagedReply>],
    retries: Vec<u32>,
    /// Entries the kernel has not ended yet.
    live: usize,
    qid: u16,
    /// How long to poll for the next request before waiting in the kernel.
    poll: PollWindow,
}

impl Server<'_> {
    /// Registers every entry; an error if the kernel refused them all
    /// (refusals come back at once, a taken REGISTER only with a request).
    fn register(&mut self) -> std::io::Result<()> {
        self.ring.register_all()?;
        self.ring.submit()?;
        let mut first_refusal = None;
        while let Some(completion) = self.ring.next_completion() {
            if let Err(errno) = completion.result {
                first_refusal = first_refusal.or(Some(errno));
            }
            self.handle(completion);
        }
        match first_refusal {
            Some(errno) if self.live == 0 => Err(std::io::Error::other(format!(
                "io_uring queue {}: the kernel refused the ring entries: {errno}",
                self.qid
            ))),
            _ => Ok(()),
        }
    }

    fn serve(&mut self) {
        let mut poller = Poller::fixed(self.poll);
        while self.live > 0 {
            let answered = Instant::now();
            let ring = &mut *self.ring;
            // An error ends the poll; the wait below meets it again and
            // reports it.
            let polled = poller.poll(answered, || {
                ring.poll_completions()
                    .is_ok_and(|found| found)
                    .then_some(())
            });
            if polled.is_some() {
                self.dispatch.found_polling();
            } else if let Err(e) = self.ring.submit_and_wait() {
                // The entries the kernel holds stay allocated (FuseRing
                // leaks them); their requests end with the connection.
                tracing::error!(
                    "io_uring queue {}: waiting failed, the thread ends: {e}",
                    self.qid
                );
                return;
            }
            while let Some(completion) = self.ring.next_completion() {
                self.handle(completion);
            }
        }
        tracing::debug!("io_uring queue {}: all entries ended", self.qid);
    }

    fn handle(&mut self, completion: Completion) {
        let index = completion.index;
        match completion.result {
            Ok(()) => {
                self.retries[index] = 0;
                self.answer(index);
                // The caller waits for this answer: send it now unless the
                // next wait (which submits it) comes at once anyway.
                if self.ring.has_completions()
                    && let Err(e) = self.ring.submit()
                {
                    tracing::warn!("io_uring queue {}: submit: {e}", self.qid);
                }
            }
            Err(Errno::AGAIN | Errno::INTR) if self.retries[index] < RETRIES => {
                self.retries[index] += 1;
                if let Err(e) = self.ring.resubmit(index) {
                    tracing::warn!("io_uring queue {}: resubmit: {e}", self.qid);
                    self.live -= 1;
                }
            }
            Err(errno) => {
                self.live -= 1;
                let qid = self.qid;
                match errno {
                    // The connection ended (umount, abort, the thread's
                    // own end).
                    Errno::NOTCONN | Errno::CONNABORTED | Errno::CANCELED => {
                        tracing::debug!("io_uring queue {qid}: entry {index} ended: {errno}")
                    }
                    _ => tracing::warn!("io_uring queue {qid}: entry {index} ended: {errno}"),
                }
            }
        }
    }

    /// Serves the request in entry `index` and queues its commit.
    fn answer(&mut self, index: usize) {
        let reply = &self.replies[index];
        let Some(request) = self.ring.request(index) else {
            return;
        };
        let commit_id = request.commit_id;
        match split(&request) {
            Some((header, op_in, payload)) => {
                reply.expect(header.unique);
                let channel: Arc<dyn ReplyChannel> = reply.clone();
                let served = catch_unwind(AssertUnwindSafe(|| {
                    self.dispatch.dispatch(&header, op_in, payload, channel)
                }));
                if served.is_err() {
                    tracing::error!("io_uring queue {}: the dispatch panicked", self.qid);
                }
            }
            None => {
                tracing::warn!("io_uring queue {}: a request of bad layout", self.qid);
                reply.expect(commit_id);
            }
        }
        let committed = self.ring.commit_with(index, |in_out, payload| {
            reply.take_into(commit_id, in_out, payload)
        });
        if let Err(e) = committed {
            tracing::error!("io_uring queue {}: commit: {e}", self.qid);
        }
    }
}

/// The header, the op's fixed argument and the payload of a ring request.
/// The kernel put the op's first argument into `op_in` and the others into
/// the payload, and counted them all in the header's `len`; so what `len`
/// has beyond the header and the payload is the length of `op_in`'s struct.
/// Request extensions (`total_extlen`, the last argument) end the payload;
/// they are left out, as on `/dev/fuse`.
fn split<'a>(request: &sys_uring::RingRequest<'a>) -> Option<(InHeader, &'a [u8], &'a [u8])> {
    let header = InHeader::parse(request.in_out)?;
    let op_in_len = (header.len as usize).checked_sub(InHeader::SIZE + request.payload.len())?;
    if op_in_len > OP_IN_SIZE || header.unique != request.commit_id {
        return None;
    }
    let extensions = usize::from(header.total_extlen) * 8;
    let payload_len = request.payload.len().checked_sub(extensions)?;
    Some((
        header,
        &request.op_in[..op_in_len],
        &request.payload[..payload_len],
    ))
}

/// An entry's answer, staged while the dispatch runs (the payload buffer
/// still holds the request then) and copied into the entry after. One for
/// each entry, reused: its buffer is as big as a payload, so staging
/// allocates nothing.
struct StagedReply {
    staged: Mutex<Staged>,
}

struct Staged {
    /// The request an answer is awaited for; 0 between requests, so a late
    /// or second `send` is refused.
    unique: u64,
    answered: bool,
    error: i32,
    body: Vec<u8>,
    /// A read's answer, read into the payload buffer at commit.
    read: Option<ReadSource>,
}

impl StagedReply {
    fn new(max_payload: usize) -> StagedReply {
        StagedReply {
            staged: Mutex::new(Staged {
                unique: 0,
                answered: false,
                error: 0,
                body: Vec::with_capacity(max_payload),
                read: None,
            }),
        }
    }

    /// The staged answer to request `unique`, marked answered; refused for
    /// a request no entry waits for, or one answered already.
    fn answering(&self, unique: u64) -> std::io::Result<parking_lot::MutexGuard<'_, Staged>> {
        let mut staged = self.staged.lock();
        if staged.unique != unique || staged.answered || unique == 0 {
            return Err(std::io::Error::other(format!(
                "io_uring: no ring entry waits for an answer to request {unique}"
            )));
        }
        staged.answered = true;
        Ok(staged)
    }

    fn expect(&self, unique: u64) {
        let mut staged = self.staged.lock();
        staged.unique = unique;
        staged.answered = false;
        staged.error = 0;
        staged.body.clear();
        staged.read = None;
    }

    /// Writes the staged answer (EIO if there is none) into the entry's
    /// `in_out` area and payload buffer; returns the body's length. A
    /// staged read is made now, into the payload buffer.
    fn take_into(&self, unique: u64, in_out: &mut [u8], payload: &mut [u8]) -> usize {
        let mut staged = self.staged.lock();
        if !staged.answered || staged.unique != unique {
            tracing::error!("io_uring: request {unique} got no answer; EIO");
            staged.error = -libc::EIO;
            staged.body.clear();
            staged.read = None;
        }
        let mut body_len = staged.body.len();
        if let Some(read) = staged.read.take() {
            // Payload buffers are sized for the largest read the kernel asks
            // for; a bigger ask is cut to the buffer (a short read).
            match read.read_into(payload) {
                Ok(read) => body_len = read,
                Err(error) => {
                    staged.error = error;
                    body_len = 0;
                }
            }
        } else if body_len > payload.len() {
            staged.error = -libc::EIO;
            body_len = 0;
        } else {
            payload[..body_len].copy_from_slice(&staged.body[..body_len]);
        }
        let len = u32::try_from(OUT_HEADER_SIZE + body_len).unwrap_or(u32::MAX);
        in_out[..4].copy_from_slice(&len.to_ne_bytes());
        in_out[4..8].copy_from_slice(&staged.error.to_ne_bytes());
        in_out[8..16].copy_from_slice(&unique.to_ne_bytes());
        staged.unique = 0;
        staged.answered = false;
        staged.body.clear();
        body_len
    }
}

impl ReplyChannel for StagedReply {
    fn send(&self, unique: u64, error: i32, body: &[&[u8]]) -> std::io::Result<()> {
        let mut staged = self.answering(unique)?;
        let len: usize = body.iter().map(|piece| piece.len()).sum();
        if len > staged.body.capacity() {
            // Cannot happen with payload buffers sized for the negotiated
            // max_write and max_pages: the kernel asks for no more.
            debug_assert!(false, "a {len}-byte reply for a ring entry");
            staged.error = -libc::EIO;
            return Ok(());
        }
        staged.error = error;
        for piece in body {
            staged.body.extend_from_slice(piece);
        }
        Ok(())
    }

    /// Stages the read itself: it is made when the answer is committed,
    /// straight into the entry's payload buffer (which holds the request
    /// until the request has been served), so a read's data is copied once,
    /// from the file's pages into the buffer the kernel takes it from.
    fn send_read(&self, unique: u64, source: ReadSource) -> std::io::Result<()> {
        let mut staged = self.answering(unique)?;
        staged.error = 0;
        staged.read = Some(source);
        Ok(())
    }
}

// `in_out` holds `fuse_out_header` on commit.
const _: () = assert!(OUT_HEADER_SIZE <= IN_OUT_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_size_follows_the_kernel() {
        let page = rustix::param::page_size();
        assert_eq!(RingConfig::payload_size(0, 0), 8192);
        assert_eq!(
            RingConfig::payload_size(1 << 20, 256),
            (1 << 20).max(256 * page)
        );
        assert_eq!(RingConfig::payload_size(4096, 32), (32 * page).max(8192));
    }

    #[test]
    fn a_staged_reply_becomes_the_out_header_and_body() {
        let reply = StagedReply::new(64);
        reply.expect(42);
        reply.send(42, 0, &[b"ab", b"cd"]).expect("send");
        assert!(
            reply.send(42, 0, &[]).is_err(),
            "a second answer is refused"
        );
        let mut in_out = [0u8; IN_OUT_SIZE];
        let mut payload = [0u8; 64];
        assert_eq!(reply.take_into(42, &mut in_out, &mut payload), 4);
        assert_eq!(&payload[..4], b"abcd");
        assert_eq!(u32::from_ne_bytes(in_out[..4].try_into().unwrap()), 20);
        assert_eq!(i32::from_ne_bytes(in_out[4..8].try_into().unwrap()), 0);
        assert_eq!(u64::from_ne_bytes(in_out[8..16].try_into().unwrap()), 42);
        assert!(reply.send(42, 0, &[]).is_err(), "a late answer is refused");
    }

    #[test]
    fn a_staged_read_is_made_into_the_payload_buffer_at_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").expect("write");
        let source = |path: &std::path::Path, offset, size| ReadSource {
            file: Arc::new(OwnedFd::from(std::fs::File::open(path).expect("open"))),
            offset,
            size,
        };
        let reply = StagedReply::new(64);
        reply.expect(7);
        reply.send_read(7, source(&path, 3, 4)).expect("send_read");
        assert!(reply.send(7, 0, &[]).is_err(), "a second answer is refused");
        // Changed before the commit: the answer is what the file holds then.
        std::fs::write(&path, b"abcdefghij").expect("write");
        let mut in_out = [0u8; IN_OUT_SIZE];
        let mut payload = [0u8; 64];
        assert_eq!(reply.take_into(7, &mut in_out, &mut payload), 4);
        assert_eq!(&payload[..4], b"defg");
        assert_eq!(i32::from_ne_bytes(in_out[4..8].try_into().unwrap()), 0);
        assert_eq!(u32::from_ne_bytes(in_out[..4].try_into().unwrap()), 20);

        // A read cut to the payload buffer, and a failing read's errno.
        reply.expect(8);
        reply.send_read(8, source(&path, 0, 64)).expect("send_read");
        let mut small = [0u8; 3];
        assert_eq!(reply.take_into(8, &mut in_out, &mut small), 3);
        assert_eq!(&small, b"abc");
        reply.expect(9);
        reply
            .send_read(9, source(dir.path(), 0, 4))
            .expect("send_read");
        assert_eq!(reply.take_into(9, &mut in_out, &mut payload), 0);
        assert_eq!(
            i32::from_ne_bytes(in_out[4..8].try_into().unwrap()),
            -libc::EISDIR
        );
    }

    #[test]
    fn no_answer_is_eio() {
        let reply = StagedReply::new(64);
        reply.expect(7);
        let mut in_out = [0u8; IN_OUT_SIZE];
        let mut payload = [0u8; 64];
        assert_eq!(reply.take_into(7, &mut in_out, &mut payload), 0);
        assert_eq!(
            i32::from_ne_bytes(in_out[4..8].try_into().unwrap()),
            -libc::EIO
        );
    }

    /// A request's `in_out` area: `len`, `opcode`, `unique`, `total_extlen`.
    fn in_header(len: usize, opcode: u32, unique: u64, extlen: u16) -> [u8; IN_OUT_SIZE] {
        let mut in_out = [0u8; IN_OUT_SIZE];
        in_out[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        in_out[4..8].copy_from_slice(&opcode.to_ne_bytes());
        in_out[8..16].copy_from_slice(&unique.to_ne_bytes());
        in_out[36..38].copy_from_slice(&extlen.to_ne_bytes());
        in_out
    }

    #[test]
    fn op_in_is_what_len_has_beyond_header_and_payload() {
        let in_out = in_header(InHeader::SIZE + 16 + 5, 16, 9, 0);
        let op_in = [1u8; OP_IN_SIZE];
        let request = sys_uring::RingRequest {
            in_out: &in_out,
            op_in: &op_in,
            payload: b"hello",
            commit_id: 9,
        };
        let (header, op_in, payload) = split(&request).expect("split");
        assert_eq!((header.opcode, header.unique), (16, 9));
        assert_eq!(op_in.len(), 16);
        assert_eq!(payload, b"hello");
        let wrong = sys_uring::RingRequest {
            commit_id: 8,
            ..request
        };
        assert!(split(&wrong).is_none(), "unique and commit id differ");
    }

    #[test]
    fn request_extensions_are_left_out_of_the_payload() {
        let in_out = in_header(InHeader::SIZE + 16 + 13, 35, 9, 1);
        let op_in = [0u8; OP_IN_SIZE];
        let request = sys_uring::RingRequest {
            in_out: &in_out,
            op_in: &op_in,
            payload: b"name\0ext-8byt",
            commit_id: 9,
        };
        let (_, op_in, payload) = split(&request).expect("split");
        assert_eq!(op_in.len(), 16);
        assert_eq!(payload, b"name\0");
    }
}
