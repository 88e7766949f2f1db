//! cowfs's own FUSE wire layer: the kernel's ABI read and written as bytes
//! (`abi`), the replies (`reply`), and what a transport hands the dispatch
//! (`channel`). The transports (`/dev/fuse` reads in `dev`, FUSE over
//! io_uring in `uring`) feed one `Dispatch`.

pub mod abi;
pub mod channel;
pub mod reply;

pub use abi::FileAttr;
pub use channel::{Dispatch, InHeader, OUT_HEADER_SIZE, ReadSource, ReplyChannel};
