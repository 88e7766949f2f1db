//! cowfs: a copy-on-write union filesystem on FUSE, in the kernel
//! overlayfs on-disk format.
//!
//! The core reads like the concept: `layer` (the stack and inode numbers),
//! `format` (whiteouts, opaque dirs, overlay xattrs), `inode` (the table the
//! kernel's inodes live in), `lookup` (resolving a name top-down), `dirmerge`
//! (merged listings), `listing` (their offsets and the kept ones),
//! `dirstream` (which listing a read gets), `copyup`, `namespace` (changes to names), `attr`,
//! `fileio` (I/O on open files; `inodeio` where the kernel opens files
//! itself), and `fuse_adapter`, the thin edge that speaks FUSE. `sys` holds
//! every system call wrapper and is the one module allowed unchecked code.

#![deny(unsafe_code)]

pub mod absent;
pub mod attr;
pub mod changes;
pub mod changes_cli;
pub mod changeset;
pub mod cli;
pub mod compare;
pub mod copyup;
pub mod daemon;
pub mod dirmerge;
pub mod dirstream;
pub mod error;
pub mod export;
pub mod fdcache;
pub mod fileio;
pub mod format;
pub mod fuse_adapter;
pub mod handles;
pub mod idmap;
pub mod index;
pub mod inode;
pub mod inodeio;
pub mod layer;
pub mod layerview;
pub mod linkgroups;
pub mod listing;
pub mod lookup;
pub mod manual;
pub mod mount_helper;
pub mod namespace;
pub mod options;
pub mod origin;
pub mod overlay;
pub mod privmount;
pub mod redirect;
pub mod rename;
pub mod stats;
pub mod stats_socket;
// The one module of unchecked code: each use says why it is sound.
#[allow(unsafe_code)]
pub mod sys;
pub mod treecopy;
pub mod unsettled;
pub mod workdir;
