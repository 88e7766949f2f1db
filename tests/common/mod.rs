//! Shared harness for the cowfs integration tests.
//!
//! * [`Layers`]: a fixture of lower dirs, upper, work dir and mountpoint inside a `TempDir`.
//! * [`CowfsMount`]: guard around a running cowfs daemon; unmounts and reaps it on drop.
//! * [`KernelOverlay`]: guard around a kernel overlayfs mount (the reference implementation).
//! * [`Tmpfs`]: a tmpfs mounted for the length of a test.
//! * [`LoopFs`]: a loop-mounted ext4 image, for layers on a filesystem of their own.
//! * [`tree_snapshot`] / [`assert_trees_eq`]: compare whole trees, never following symlinks.
//!
//! Only `std`, `libc` and `tempfile` are used.
#![allow(dead_code)]

mod checks;
mod kernel;
mod layers;
mod loopfs;
mod mount;
mod mountinfo;
mod snapshot;
mod stats;
mod sys;

// Each test crate uses only part of the harness.
#[allow(unused_imports)]
pub use checks::*;
#[allow(unused_imports)]
pub use kernel::*;
#[allow(unused_imports)]
pub use layers::*;
#[allow(unused_imports)]
pub use loopfs::*;
#[allow(unused_imports)]
pub use mount::*;
#[allow(unused_imports)]
pub use mountinfo::*;
#[allow(unused_imports)]
pub use snapshot::*;
#[allow(unused_imports)]
pub use stats::*;
#[allow(unused_imports)]
pub use sys::*;
