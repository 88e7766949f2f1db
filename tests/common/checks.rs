//! Assertion helpers shared by the test files: reading/appending, readdir and seek checks,
//! copy_file_range.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::sys::{dtype_for, readdir_raw};

// ---------------------------------------------------------------------------
// assertion helpers shared by the test files
// ---------------------------------------------------------------------------

pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn append(p: &Path, data: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", p.display()));
    f.write_all(data.as_bytes()).unwrap();
}

pub fn check_dirents(dir: &Path) -> Vec<String> {
    let ents = readdir_raw(dir);
    let mut seen = std::collections::BTreeSet::new();
    for e in &ents {
        assert!(
            seen.insert(e.name.clone()),
            "duplicate {} in {}",
            e.name,
            dir.display()
        );
        assert!(
            !e.name.starts_with(".wh."),
            "{} listed in {}",
            e.name,
            dir.display()
        );
        if e.name == ".." {
            continue;
        }
        let md = fs::symlink_metadata(dir.join(&e.name)).unwrap();
        assert_eq!(
            e.ino,
            md.ino(),
            "d_ino != st_ino for {}/{}",
            dir.display(),
            e.name
        );
        assert_eq!(
            e.dtype,
            dtype_for(&md),
            "d_type of {}/{}",
            dir.display(),
            e.name
        );
    }
    assert!(
        seen.contains(".") && seen.contains(".."),
        "dot entries in {}",
        dir.display()
    );
    seen.into_iter().filter(|n| n != "." && n != "..").collect()
}

pub fn check_seek(f: &fs::File, what: &str) {
    let fd = f.as_raw_fd();
    let mib = 1i64 << 20;
    let seek = |off: i64, wh: i32| unsafe { libc::lseek(fd, off, wh) };
    assert_eq!(seek(0, libc::SEEK_DATA), 0, "{what}: SEEK_DATA 0");
    let hole = seek(0, libc::SEEK_HOLE);
    assert!(
        (4096..mib).contains(&hole),
        "{what}: SEEK_HOLE from 0 = {hole}"
    );
    assert_eq!(
        seek(8192, libc::SEEK_DATA),
        mib,
        "{what}: SEEK_DATA from 8192"
    );
    assert_eq!(
        seek(mib, libc::SEEK_HOLE),
        mib + 4096,
        "{what}: SEEK_HOLE at EOF"
    );
    assert_eq!(
        seek(mib + 4096, libc::SEEK_DATA),
        -1,
        "{what}: SEEK_DATA past EOF"
    );
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENXIO)
    );
}

pub fn copy_range(
    src: &fs::File,
    dst: &fs::File,
    mut off_in: i64,
    mut off_out: i64,
    mut len: usize,
) {
    while len > 0 {
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        assert!(
            n > 0,
            "copy_file_range: {} ({n})",
            std::io::Error::last_os_error()
        );
        len -= n as usize;
    }
}
