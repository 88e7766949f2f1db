//! Shared setup for the cowfs benches: layer trees in a temp dir and an
//! `Overlay` on them, built the way `tests/core.rs` does, no FUSE mount.

use std::fs;
use std::path::{Path, PathBuf};

use cowfs::layer::LayerStack;
use cowfs::overlay::{Overlay, OverlayOptions};
use cowfs::workdir::WorkDir;
use tempfile::TempDir;

/// An upper dir, a work dir and `n` lower dirs (top first) in one temp dir.
/// The temp dir is removed when this is dropped.
pub struct Layers {
    _tmp: TempDir,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub lowers: Vec<PathBuf>,
}

impl Layers {
    pub fn new(n: usize) -> Layers {
        let tmp = tempfile::Builder::new()
            .prefix("cowfs-bench-")
            .tempdir()
            .expect("temp dir");
        let mk = |name: &str| {
            let p = tmp.path().join(name);
            fs::create_dir(&p).expect("mkdir layer");
            p
        };
        let (upper, work) = (mk("upper"), mk("work"));
        let lowers = (0..n).map(|i| mk(&format!("lower{i}"))).collect();
        Layers {
            _tmp: tmp,
            upper,
            work,
            lowers,
        }
    }

    /// A writable overlay on these layers.
    pub fn mount(&self) -> Overlay {
        let layers = LayerStack::open(Some(&self.upper), &self.lowers).expect("open layers");
        let work = WorkDir::prepare(&self.work).expect("prepare work dir");
        Overlay::new(layers, Some(work), OverlayOptions::default()).expect("new overlay")
    }
}

/// Creates an empty file, making its parent dirs.
pub fn touch(path: &Path) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir -p");
    fs::write(path, b"x").expect("write file");
}
