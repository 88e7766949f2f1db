//! `open=kernel`: the kernel opens and closes files without a request (FUSE's no-open mode), so
//! an open, a close and a read of cached pages cost no round trip. Reads and writes name the
//! inode; cowfs does them on the real file the inode shows at that moment. These tests check
//! that nothing a user can see is lost by it: a reader follows a copy-up, an open file outlives
//! its last name, O_TRUNC, O_APPEND, O_SYNC, shared mappings, fsync, copy_file_range, fallocate
//! and SEEK_HOLE do what they do on the kernel's overlayfs. (scripts/test.sh also runs the
//! whole suite once with `COWFS_OPEN=kernel`.)

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::common::{Layers, stats_of, write_file};

fn served(mnt: &Path, op: &str) -> u64 {
    stats_of(mnt).requests.get(op).map_or(0, |op| op.count)
}

fn read_all_from(file: &mut File) -> Vec<u8> {
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut data = Vec::new();
    file.read_to_end(&mut data).unwrap();
    data
}

fn layers(files: usize) -> Layers {
    let l = Layers::new(1);
    for i in 0..files {
        write_file(
            &l.lower(0).join(format!("f{i}")),
            format!("lower file {i}\n"),
        );
    }
    l
}

fn mount(l: &Layers) -> crate::common::CowfsMount {
    l.mount_with(&["-o", "open=kernel"])
}

#[test]
fn opens_and_closes_cost_no_request_and_cached_pages_stay() {
    let l = layers(100);
    let m = mount(&l);
    let read_all = || {
        for i in 0..100 {
            let data = fs::read(m.mnt.join(format!("f{i}"))).unwrap();
            assert_eq!(data, format!("lower file {i}\n").into_bytes());
        }
    };
    read_all();
    let reads = served(&m.mnt, "read");
    assert!(reads >= 100, "the first reads came to the daemon ({reads})");
    read_all();
    assert_eq!(
        served(&m.mnt, "read"),
        reads,
        "the second pass read cached pages"
    );
    for i in 0..20 {
        fs::write(m.mnt.join(format!("new{i}")), b"new data").unwrap();
        assert_eq!(
            fs::read(m.mnt.join(format!("new{i}"))).unwrap(),
            b"new data"
        );
    }
    let after = stats_of(&m.mnt);
    let count = |op: &str| after.requests.get(op).map_or(0, |op| op.count);
    // The first open is declined with ENOSYS, which the kernel remembers for the mount.
    assert_eq!(count("open"), 1, "requests: {:?}", after.requests.keys());
    assert_eq!(count("release"), 0);
    // So is the first create: new files are made by MKNOD, and opened by the kernel.
    assert_eq!(count("create"), 1);
    assert_eq!(count("mknod"), 20);
    assert_eq!(
        after.tables.open_handles, 0,
        "the daemon holds no open file"
    );
    assert_eq!(after.passthrough_files, 0);
}

#[test]
fn a_lower_reader_sees_writes_made_after_the_copy_up() {
    let l = layers(1);
    let m = mount(&l);
    let mut reader = File::open(m.mnt.join("f0")).unwrap();
    assert_eq!(read_all_from(&mut reader), b"lower file 0\n");
    let mut writer = OpenOptions::new()
        .write(true)
        .open(m.mnt.join("f0"))
        .unwrap();
    writer.write_all(b"UPPER").unwrap();
    assert_eq!(read_all_from(&mut reader), b"UPPER file 0\n");
    assert_eq!(fs::read(l.upper.join("f0")).unwrap(), b"UPPER file 0\n");
    assert_eq!(fs::read(l.lower(0).join("f0")).unwrap(), b"lower file 0\n");
}

#[test]
fn an_open_for_writing_alone_copies_nothing_up() {
    // The first write copies up (there is no open request to do it at); a write open that
    // writes nothing leaves the lower file where it is.
    let l = layers(1);
    let m = mount(&l);
    drop(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.mnt.join("f0"))
            .unwrap(),
    );
    assert!(!l.upper.join("f0").exists());
    let mut file = OpenOptions::new()
        .write(true)
        .open(m.mnt.join("f0"))
        .unwrap();
    file.write_all(b"X").unwrap();
    assert_eq!(fs::read(l.upper.join("f0")).unwrap(), b"Xower file 0\n");
}

#[test]
fn an_open_file_outlives_its_last_name() {
    let l = layers(2);
    let m = mount(&l);
    // A new file, unlinked while open: read, written, stat'ed and synced through the open.
    let path = m.mnt.join("scratch");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(b"before unlink").unwrap();
    fs::remove_file(&path).unwrap();
    assert!(!path.exists());
    assert_eq!(read_all_from(&mut file), b"before unlink");
    file.write_all(b", after").unwrap();
    file.sync_all().unwrap();
    assert_eq!(read_all_from(&mut file), b"before unlink, after");
    let st = file.metadata().unwrap();
    assert_eq!((st.nlink(), st.len()), (0, 20));
    file.set_len(6).unwrap();
    assert_eq!(read_all_from(&mut file), b"before");
    drop(file);
    assert!(
        fs::read_dir(&l.upper)
            .unwrap()
            .all(|e| e.unwrap().file_name() != "scratch"),
        "the unlinked file came back"
    );

    // A copied-up file replaced by a rename while open keeps its data for the open.
    let mut old = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.mnt.join("f0"))
        .unwrap();
    old.write_all(b"COPIED").unwrap();
    fs::write(m.mnt.join("replacement"), b"the new f0").unwrap();
    fs::rename(m.mnt.join("replacement"), m.mnt.join("f0")).unwrap();
    assert_eq!(read_all_from(&mut old), b"COPIEDfile 0\n");
    old.write_all(b"+").unwrap();
    assert_eq!(read_all_from(&mut old), b"COPIEDfile 0\n+");
    assert_eq!(fs::read(m.mnt.join("f0")).unwrap(), b"the new f0");

    // A lower file whited out while open for reading goes on reading the lower data.
    let mut lower = File::open(m.mnt.join("f1")).unwrap();
    fs::remove_file(m.mnt.join("f1")).unwrap();
    assert_eq!(read_all_from(&mut lower), b"lower file 1\n");
    assert!(!m.mnt.join("f1").exists());
}

#[test]
fn truncating_appending_and_synchronous_opens() {
    let l = layers(3);
    let m = mount(&l);
    // O_TRUNC of a lower file: the kernel truncates by SETATTR (no atomic O_TRUNC without opens).
    let mut trunc = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.mnt.join("f0"))
        .unwrap();
    assert_eq!(fs::metadata(m.mnt.join("f0")).unwrap().len(), 0);
    trunc.write_all(b"short").unwrap();
    drop(trunc);
    assert_eq!(fs::read(m.mnt.join("f0")).unwrap(), b"short");
    assert_eq!(fs::read(l.upper.join("f0")).unwrap(), b"short");

    let mut append = OpenOptions::new()
        .append(true)
        .open(m.mnt.join("f1"))
        .unwrap();
    append.write_all(b"one\n").unwrap();
    append.write_all(b"two\n").unwrap();
    drop(append);
    assert_eq!(
        fs::read(m.mnt.join("f1")).unwrap(),
        b"lower file 1\none\ntwo\n"
    );

    let mut sync = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open(m.mnt.join("f2"))
        .unwrap();
    sync.write_all(b"SYNC").unwrap();
    drop(sync);
    assert_eq!(fs::read(l.upper.join("f2")).unwrap(), b"SYNCr file 2\n");
}

#[test]
fn shared_mappings_copy_up_and_reach_the_upper_file() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("mapped"), vec![b'.'; 8192]);
    let m = mount(&l);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.mnt.join("mapped"))
        .unwrap();
    // SAFETY: a shared mapping of a file this test holds open, of its whole length, unmapped
    // below before the file is closed; nothing else maps it.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), ptr.cast::<u8>().add(4096), 6);
        assert_eq!(libc::msync(ptr, 8192, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(ptr, 8192), 0);
    }
    drop(file);
    let upper = fs::read(l.upper.join("mapped")).unwrap();
    assert_eq!(&upper[4096..4102], b"mapped");
    assert_eq!(upper.len(), 8192);
    assert_eq!(
        fs::read(l.lower(0).join("mapped")).unwrap(),
        vec![b'.'; 8192]
    );
}

#[test]
fn copy_file_range_fallocate_and_holes() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("source"), vec![b's'; 64 << 10]);
    let m = mount(&l);
    let source = File::open(m.mnt.join("source")).unwrap();
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.mnt.join("target"))
        .unwrap();
    let (mut off_in, mut off_out) = (0i64, 4096i64);
    // SAFETY: both fds are open files of this test; the offsets are locals.
    let copied = unsafe {
        libc::copy_file_range(
            source.as_raw_fd(),
            &mut off_in,
            target.as_raw_fd(),
            &mut off_out,
            8192,
            0,
        )
    };
    assert_eq!(copied, 8192);
    let data = fs::read(m.mnt.join("target")).unwrap();
    assert_eq!(data.len(), 4096 + 8192);
    assert!(data[..4096].iter().all(|&b| b == 0));
    assert!(data[4096..].iter().all(|&b| b == b's'));

    // SAFETY: an open file of this test.
    let allocated = unsafe { libc::fallocate(target.as_raw_fd(), 0, 0, 1 << 20) };
    assert_eq!(allocated, 0);
    assert_eq!(fs::metadata(m.mnt.join("target")).unwrap().len(), 1 << 20);

    let sparse = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.mnt.join("sparse"))
        .unwrap();
    sparse.set_len(1 << 20).unwrap();
    let mut sparse = sparse;
    sparse.seek(SeekFrom::Start(512 << 10)).unwrap();
    sparse.write_all(b"data").unwrap();
    let reader = File::open(m.mnt.join("sparse")).unwrap();
    // SAFETY: an open file of this test.
    let data_at = unsafe { libc::lseek(reader.as_raw_fd(), 0, libc::SEEK_DATA) };
    assert!(
        (0..=(512 << 10)).contains(&data_at) && data_at > 0,
        "SEEK_DATA found {data_at}"
    );
}

#[test]
fn open_kernel_refuses_what_needs_the_opens() {
    // Passthrough names backing files in open answers; strictatime needs every read.
    let l = layers(1);
    for other in ["passthrough=all", "passthrough=on", "strictatime"] {
        let out = std::process::Command::new(crate::common::cowfs_bin())
            .args(["mount", &l.lowerdir_arg()])
            .arg(&l.upper)
            .arg(&l.mnt)
            .arg("--workdir")
            .arg(&l.work)
            .args(["-o", &format!("open=kernel,{other}"), "--foreground"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{other}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("open=kernel") && err.contains(other), "{err}");
    }
    assert!(crate::common::mounts_under(&l.root).is_empty());
}
