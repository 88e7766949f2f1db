//! `passthrough=all`: lower files open for reading pass through to the kernel too (reads at the
//! kernel's speed), at a price the default does not pay. By default (as in kernel overlayfs) a
//! file open for reading from a lower layer goes on showing the file after a copy-up, writes made
//! through other opens included; a passed-through lower file can't follow its copy-up, so while
//! one is open a write open of it is refused (ETXTBSY), and reads keep going to the lower file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{Layers, stats_of, write_file};

const SIZE: usize = 1 << 20;
/// Below 1 MiB a lower file is read through the daemon even with `passthrough=all`.
const SMALL: usize = 64 << 10;

fn reads_served(mnt: &Path) -> u64 {
    stats_of(mnt).requests.get("read").map_or(0, |op| op.count)
}

/// Writes "upper" at the start of `path` through a write open of its own.
fn write_start(path: &Path) {
    let mut writer = OpenOptions::new().write(true).open(path).unwrap();
    writer.write_all(b"upper").unwrap();
}

fn read_all_from(file: &mut File) -> Vec<u8> {
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut data = Vec::new();
    file.read_to_end(&mut data).unwrap();
    data
}

fn layers() -> Layers {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("data"), vec![b'l'; SIZE]);
    write_file(&l.lower(0).join("small"), vec![b's'; SMALL]);
    l
}

#[test]
fn by_default_a_lower_reader_sees_writes_made_after_the_copy_up() {
    let l = layers();
    let m = l.mount();
    let mut reader = File::open(m.mnt.join("data")).unwrap();
    assert_eq!(read_all_from(&mut reader), vec![b'l'; SIZE]);
    write_start(&m.mnt.join("data"));
    let seen = read_all_from(&mut reader);
    assert_eq!(&seen[..5], b"upper", "the reader kept the lower data");
    assert!(
        reads_served(&m.mnt) > 0,
        "lower reads went through the daemon"
    );
}

#[test]
fn with_passthrough_all_lower_reads_skip_the_daemon_and_writers_wait_for_readers() {
    let l = layers();
    let m = l.mount_with(&["-o", "passthrough=all"]);
    let mut reader = File::open(m.mnt.join("data")).unwrap();
    assert_eq!(read_all_from(&mut reader), vec![b'l'; SIZE]);
    assert_eq!(
        reads_served(&m.mnt),
        0,
        "a lower read went through the daemon"
    );

    // An attribute change copies the file up; the reader and new readers read the same data.
    fs::set_permissions(m.mnt.join("data"), fs::Permissions::from_mode(0o600)).unwrap();
    let mut second = File::open(m.mnt.join("data")).unwrap();
    assert_eq!(read_all_from(&mut second), vec![b'l'; SIZE]);
    assert_eq!(read_all_from(&mut reader), vec![b'l'; SIZE]);

    // The price: no write open while lower data is passed through.
    let refused = OpenOptions::new()
        .write(true)
        .open(m.mnt.join("data"))
        .unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::ETXTBSY), "{refused}");
    assert_eq!(fs::read(l.lower(0).join("data")).unwrap(), vec![b'l'; SIZE]);
    drop(reader);
    drop(second);

    // Once they are closed, writes land in the copy and readers see them.
    write_start(&m.mnt.join("data"));
    let mut after = File::open(m.mnt.join("data")).unwrap();
    let seen = read_all_from(&mut after);
    assert_eq!(&seen[..5], b"upper");
    assert_eq!(seen.len(), SIZE);
    assert_eq!(fs::read(l.lower(0).join("data")).unwrap(), vec![b'l'; SIZE]);
    drop(after);
    drop(m);
    assert_eq!(&fs::read(l.upper.join("data")).unwrap()[..5], b"upper");
}

#[test]
fn a_bad_passthrough_value_is_refused() {
    let l = layers();
    let out = l.try_mount_with(&["-o", "passthrough=some"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'passthrough' must be on, off or all"),
        "{stderr}"
    );
}
