//! POSIX semantics a userspace overlay usually lacks (issue 5), part 2: metadata-only and sparse
//! copy-up, POSIX ACLs, flock/fcntl locks, mmap coherence, O_APPEND, O_DIRECT and the nlink of
//! merged dirs. Every test runs the same steps on cowfs and on a kernel overlayfs twin
//! (redirect_dir=on, metacopy=on, index=on) sharing the same lowers, so the expectations are
//! checked against the kernel each time.

use crate::common::*;
use crate::posix_support::*;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

/// Runs `f(mountpoint, upper)` on a kernel twin, then on cowfs; returns (cowfs, kernel).
fn run_both<T>(l: &Layers, f: impl Fn(&Path, &Path) -> T) -> (T, T) {
    run_both_with(l, &[], f)
}

/// As `run_both`, with extra cowfs mount arguments.
fn run_both_with<T>(l: &Layers, cowfs_args: &[&str], f: impl Fn(&Path, &Path) -> T) -> (T, T) {
    let k = kernel_twin(l, "k");
    let kr = f(&k.mnt, &k.upper);
    k.unmount();
    let m = l.mount_with(cowfs_args);
    let cr = f(&l.mnt, &l.upper);
    m.unmount();
    (cr, kr)
}

fn errno(r: io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

// ---------------------------------------------------------------------------
// 4. copy-up
// ---------------------------------------------------------------------------

#[test]
fn chmod_chown_utimens_setxattr_copy_metadata_only() {
    let l = Layers::new(1);
    let data = pattern(MIB as usize, 3);
    for f in ["f1", "f2", "f3", "f4"] {
        write_file(&l.lower(0).join(f), &data);
    }
    let (c, k) = run_both_with(&l, &["-o", "metacopy=on"], |mnt, upper| {
        chmod(&mnt.join("f1"), 0o600);
        lchown(&mnt.join("f2"), 1234, 1234);
        set_times(&mnt.join("f3"), (1000, 0), (2000, 0)).unwrap();
        set_xattr(&mnt.join("f4"), "user.k", b"v");
        let (files, meta_bytes) = regular_file_bytes(upper);
        fs::File::options()
            .write(true)
            .open(mnt.join("f1"))
            .unwrap()
            .write_all_at(b"#", 100)
            .unwrap();
        let mut want = data.clone();
        want[100] = b'#';
        assert_eq!(fs::read(mnt.join("f1")).unwrap(), want, "f1 after write");
        for f in ["f2", "f3", "f4"] {
            assert_eq!(fs::read(mnt.join(f)).unwrap(), data, "{f}");
        }
        let md = |f: &str| fs::metadata(mnt.join(f)).unwrap();
        assert_eq!(md("f1").mode() & 0o7777, 0o600);
        assert_eq!((md("f2").uid(), md("f2").gid()), (1234, 1234));
        assert_eq!(md("f3").mtime(), 2000);
        assert_eq!(lgetxattr(&mnt.join("f4"), "user.k").unwrap(), b"v");
        (files, meta_bytes)
    });
    println!("upper after 4 metadata changes: cowfs {c:?}, kernel {k:?} (files, bytes)");
    assert!(k.1 < 64 * 1024, "kernel reference copied data: {k:?}");
    assert!(
        c.1 < 64 * 1024,
        "cowfs copied {} bytes of data for metadata changes",
        c.1
    );
}

#[test]
fn chown_r_of_200mib_lower_tree_copies_no_data() {
    let l = Layers::new(1);
    let data = pattern(4 * MIB as usize, 9);
    for i in 0..50 {
        write_file(&l.lower(0).join(format!("t/d{}/f{i}", i % 5)), &data);
    }
    let (c, k) = run_both_with(&l, &["-o", "metacopy=on"], |mnt, upper| {
        let out = Command::new("chown")
            .args(["-R", "1234:2345"])
            .arg(mnt.join("t"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let used = regular_file_bytes(upper);
        let f = mnt.join("t/d3/f8");
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 2345));
        append(&f, "tail");
        let mut want = data.clone();
        want.extend_from_slice(b"tail");
        assert_eq!(fs::read(&f).unwrap(), want, "data after first write");
        assert_eq!(fs::read(mnt.join("t/d0/f5")).unwrap(), data);
        used
    });
    println!("upper after chown -R of 200 MiB: cowfs {c:?}, kernel {k:?} (files, bytes)");
    assert!(k.1 < MIB, "kernel reference: {k:?}");
    assert!(c.1 < MIB, "cowfs wrote {} bytes for chown -R", c.1);
}

#[test]
fn sparse_1gib_lower_file_copy_up_keeps_holes() {
    let l = Layers::new(1);
    let gib = 1u64 << 30;
    let at = 512 * MIB;
    let blob = pattern(4096, 5);
    let f = fs::File::create(l.lower(0).join("sparse")).unwrap();
    f.set_len(gib).unwrap();
    f.write_all_at(&blob, at).unwrap();
    drop(f);
    let (c, k) = run_both(&l, |mnt, upper| {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(mnt.join("sparse"))
            .unwrap();
        f.write_all_at(b"Z", 0).unwrap();
        f.sync_all().unwrap();
        let used = fs::metadata(upper.join("sparse")).unwrap().blocks() * 512;
        let fd = f.as_raw_fd();
        let seek = |off: u64, wh: i32| unsafe { libc::lseek(fd, off as i64, wh) };
        let hole = seek(0, libc::SEEK_HOLE);
        let seeks = [
            seek(0, libc::SEEK_DATA),
            hole,
            seek(hole.max(1) as u64, libc::SEEK_DATA),
            seek(at, libc::SEEK_HOLE),
        ];
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, at).unwrap();
        assert_eq!(buf, blob, "data at 512 MiB");
        f.read_exact_at(&mut buf[..2], 0).unwrap();
        assert_eq!(&buf[..2], b"Z\0");
        assert_eq!(f.metadata().unwrap().len(), gib);
        (used, seeks)
    });
    println!(
        "sparse copy-up: cowfs {c:?}, kernel {k:?} (upper bytes, [DATA 0, HOLE 0, DATA, HOLE])"
    );
    // The kernel copies up in 1 MiB chunks and skips holes per chunk: 1 MiB + 4 KiB here.
    let at = at as i64;
    let seeks_ok = |s: &[i64]| {
        s[0] == 0
            && (1..at).contains(&s[1])
            && s[2] == at
            && (at + 4096..=at + MIB as i64).contains(&s[3])
    };
    assert!(k.0 < 2 * MIB && seeks_ok(&k.1), "kernel reference: {k:?}");
    assert!(c.0 < MIB, "cowfs upper file holds {} bytes", c.0);
    assert!(seeks_ok(&c.1), "cowfs SEEK_DATA/SEEK_HOLE: {:?}", c.1);
}

#[test]
fn o_trunc_and_truncate_to_zero_copy_no_data() {
    let l = Layers::new(1);
    let data = pattern(100 * MIB as usize, 1);
    write_file(&l.lower(0).join("a"), &data);
    write_file(&l.lower(0).join("b"), &data);
    drop(data);
    let (c, k) = run_both(&l, |mnt, upper| {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(mnt.join("a"))
            .unwrap();
        truncate_path(&mnt.join("b"), 0).unwrap();
        let used = regular_file_bytes(upper);
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(read(&mnt.join("a")), "new");
        assert_eq!(read(&mnt.join("b")), "");
        used
    });
    println!("upper right after O_TRUNC + truncate(0): cowfs {c:?}, kernel {k:?}");
    assert!(k.1 < 64 * 1024, "kernel reference: {k:?}");
    assert!(
        c.1 < 64 * 1024,
        "cowfs copied {} bytes before truncating",
        c.1
    );
}

// ---------------------------------------------------------------------------
// 5. ACLs, locks, mmap, O_APPEND, O_DIRECT, dir nlink
// ---------------------------------------------------------------------------

fn sh(cwd: &Path, script: &str, uid: u32) -> String {
    use std::os::unix::process::CommandExt;
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(cwd)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    format!(
        "[{script}] -> {}\n{}{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Lower `d` (0750) with access ACL u:1234:rx and default ACL u:1234:rwx,g:2345:rx; `d/f`
/// (0600) with u:1234:r; `d/g` (0600) without ACL. Runs `steps` (script, uid) on cowfs and the
/// kernel twin and asserts equal outputs.
fn acl_steps(steps: &[(&str, u32)]) -> Vec<String> {
    let l = Layers::new(1);
    chmod(&l.root, 0o755); // uid 1234 must reach the mountpoints
    let lo = l.lower(0);
    mkdir_mode(&lo.join("d"), 0o750);
    write_file_mode(&lo.join("d/f"), "secret", 0o600);
    write_file_mode(&lo.join("d/g"), "other", 0o600);
    for s in [
        "setfacl -m u:1234:rx d && setfacl -d -m u:1234:rwx,g:2345:rx d",
        "setfacl -m u:1234:r d/f",
    ] {
        assert!(sh(lo, s, 0).contains("-> 0"), "{s}");
    }
    let (c, k) = run_both(&l, |mnt, _| {
        steps
            .iter()
            .map(|(s, uid)| sh(mnt, s, *uid))
            .collect::<Vec<_>>()
    });
    assert_eq!(c, k, "cowfs (left) vs kernel (right)");
    c
}

const GETFACL: &str = "getfacl -n --omit-header";

#[test]
fn posix_acls_listed_set_and_kept_by_copy_up() {
    let c = acl_steps(&[
        (&format!("{GETFACL} d d/f d/g"), 0),
        ("setfacl -m u:1234:rw,g:2345:r d/g", 0), // copies d/g up
        ("chmod 0640 d/f", 0),                    // metadata copy-up keeps the ACL
        (&format!("{GETFACL} d d/f d/g"), 0),
        ("setfacl -b d/f && setfacl -k d", 0),
        (&format!("{GETFACL} d d/f"), 0),
    ]);
    assert!(c[0].contains("user:1234:r--") && c[0].contains("default:group:2345:r-x"));
    assert!(c[3].contains("user:1234:rw-") && c[3].contains("group:2345:r--"));
    assert!(
        c[5].matches("1234").count() == 1 && !c[5].contains("default"),
        "{}",
        c[5]
    );
}

#[test]
fn posix_acls_enforced_for_access() {
    let c = acl_steps(&[
        ("cat d/f", 1234), // granted by the ACL
        ("cat d/f", 999),
        ("cat d/g", 1234),
        ("setfacl -m u:1234:rw d/g", 0),
        ("echo more >> d/g && cat d/g", 1234),
        ("setfacl -x u:1234 d/f", 0),
        ("cat d/f", 1234),
    ]);
    let codes: Vec<&str> = c
        .iter()
        .map(|s| s.split("-> ").nth(1).unwrap().get(..1).unwrap())
        .collect();
    assert_eq!(codes, ["0", "1", "1", "0", "0", "0", "1"], "{c:?}");
}

#[test]
fn default_acl_inherited_by_new_entries() {
    let c = acl_steps(&[
        ("touch d/new && mkdir d/sub && touch d/sub/deep", 0),
        (&format!("{GETFACL} d/new d/sub d/sub/deep"), 0),
        (
            "mkdir e && setfacl -d -m u:777:rwx,o::- e && touch e/x && mkdir e/y",
            0,
        ),
        (&format!("{GETFACL} e/x e/y"), 0),
    ]);
    assert!(
        c[1].contains("mask::rw-") && c[1].contains("default:user:1234:rwx"),
        "{}",
        c[1]
    );
    assert!(
        c[3].contains("user:777:rwx") && c[3].contains("default:other::---"),
        "{}",
        c[3]
    );
}

/// Child process: F_SETLK write lock on `path`; exits 0 if refused with EAGAIN/EACCES while
/// F_GETLK names the parent, 1 if granted, 2 on any other outcome.
fn child_setlk(path: &std::ffi::CString, expect_conflict: bool) -> i32 {
    unsafe {
        let ppid = libc::getpid();
        let pid = libc::fork();
        if pid == 0 {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as _;
            fl.l_whence = libc::SEEK_SET as _;
            let r = libc::fcntl(fd, libc::F_SETLK, &fl);
            let e = *libc::__errno_location();
            let mut q: libc::flock = std::mem::zeroed();
            q.l_type = libc::F_WRLCK as _;
            let g = libc::fcntl(fd, libc::F_GETLK, &mut q);
            let code = match (r, expect_conflict) {
                (0, _) => 1,
                (_, true)
                    if (e == libc::EAGAIN || e == libc::EACCES)
                        && g == 0
                        && q.l_type == libc::F_WRLCK as libc::c_short
                        && q.l_pid == ppid =>
                {
                    0
                }
                _ => 2,
            };
            libc::_exit(code);
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        libc::WEXITSTATUS(st)
    }
}

#[test]
fn flock_and_fcntl_locks_conflict_across_copy_up() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("f"), "lock me");
    let (c, k) = run_both(&l, |mnt, _| {
        let p = mnt.join("f");
        let fl = |f: &fs::File, op| {
            errno(if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            })
        };
        let rw = || OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let ro = fs::File::open(&p).unwrap(); // before copy-up
        let mut log = vec![fl(&ro, libc::LOCK_EX | libc::LOCK_NB)];
        let w = rw(); // copies f up
        log.push(fl(&w, libc::LOCK_EX | libc::LOCK_NB));
        log.push(fl(&w, libc::LOCK_SH | libc::LOCK_NB));
        log.push(fl(&ro, libc::LOCK_UN));
        log.push(fl(&w, libc::LOCK_EX | libc::LOCK_NB));
        // OFD locks: per open file description, so two fds of one process conflict
        let ofd = |f: &fs::File, cmd, ty: i32| {
            let mut lk: libc::flock = unsafe { std::mem::zeroed() };
            lk.l_type = ty as _;
            lk.l_len = 10;
            let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut lk) };
            (
                if r < 0 {
                    errno(Err::<(), _>(io::Error::last_os_error()))
                } else {
                    0
                },
                lk.l_type as i32,
            )
        };
        let (a, b) = (rw(), rw());
        log.push(ofd(&a, libc::F_OFD_SETLK, libc::F_WRLCK).0);
        log.push(ofd(&b, libc::F_OFD_SETLK, libc::F_RDLCK).0);
        log.push(ofd(&b, libc::F_OFD_GETLK, libc::F_WRLCK).1);
        log.push(ofd(&a, libc::F_OFD_SETLK, libc::F_UNLCK).0);
        log.push(ofd(&b, libc::F_OFD_SETLK, libc::F_WRLCK).0);
        drop((a, b));
        // classic POSIX record locks against a child process
        let held = rw();
        let mut lk: libc::flock = unsafe { std::mem::zeroed() };
        lk.l_type = libc::F_WRLCK as _;
        assert_eq!(
            unsafe { libc::fcntl(held.as_raw_fd(), libc::F_SETLK, &lk) },
            0
        );
        let cp = cstr(&p);
        log.push(child_setlk(&cp, true));
        lk.l_type = libc::F_UNLCK as _;
        assert_eq!(
            unsafe { libc::fcntl(held.as_raw_fd(), libc::F_SETLK, &lk) },
            0
        );
        log.push(child_setlk(&cp, false));
        log
    });
    assert_eq!(c, k, "cowfs (left) vs kernel (right)");
    let (ea, wr) = (libc::EAGAIN, libc::F_WRLCK);
    assert_eq!(c, vec![0, ea, ea, 0, 0, 0, ea, wr, 0, 0, 0, 1]);
}

fn map_shared(f: &fs::File, len: usize) -> *mut u8 {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
    p as *mut u8
}

#[test]
fn mmap_shared_writes_coherent_with_read() {
    let l = Layers::new(1);
    let len = 65536;
    write_file(&l.lower(0).join("m"), pattern(len, 2));
    let (c, k) = run_both(&l, |mnt, _| {
        let ro_early = fs::File::open(mnt.join("m")).unwrap(); // opened before copy-up
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(mnt.join("m"))
            .unwrap();
        let p = map_shared(&f, len);
        let mut log = Vec::new();
        unsafe {
            std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), p, 6);
            std::ptr::copy_nonoverlapping(b"FAR".as_ptr(), p.add(40000), 3);
        }
        let ro_late = fs::File::open(mnt.join("m")).unwrap();
        for (name, g) in [
            ("early fd", &ro_early),
            ("late fd", &ro_late),
            ("rw fd", &f),
        ] {
            let mut b = [0u8; 6];
            g.read_exact_at(&mut b, 0).unwrap();
            let mut b2 = [0u8; 3];
            g.read_exact_at(&mut b2, 40000).unwrap();
            log.push(format!(
                "{name}: {:?} {:?}",
                String::from_utf8_lossy(&b),
                String::from_utf8_lossy(&b2)
            ));
        }
        f.write_all_at(b"WRITE", 100).unwrap();
        let seen = unsafe { std::slice::from_raw_parts(p.add(100), 5).to_vec() };
        log.push(format!(
            "map after write(): {:?}",
            String::from_utf8_lossy(&seen)
        ));
        unsafe { libc::munmap(p as *mut libc::c_void, len) };
        log
    });
    assert_eq!(c, k, "cowfs (left) vs kernel (right)");
    assert!(
        c.iter().take(3).all(|s| s.ends_with("\"MAPPED\" \"FAR\"")),
        "{c:?}"
    );
    assert_eq!(c[3], "map after write(): \"WRITE\"");
    let m = l.mount(); // persisted
    let d = fs::read(l.mnt.join("m")).unwrap();
    assert_eq!(
        (&d[..6], &d[100..105], &d[40000..40003]),
        (&b"MAPPED"[..], &b"WRITE"[..], &b"FAR"[..])
    );
    m.unmount();
}

#[test]
fn o_append_from_two_fds() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("log"), "L");
    let (c, k) = run_both(&l, |mnt, _| {
        let p = mnt.join("log");
        let app = || OpenOptions::new().append(true).open(&p).unwrap();
        let (a, b) = (app(), app());
        for (mut f, s) in [(&a, "a1"), (&b, "b1"), (&a, "a2"), (&b, "b2")] {
            f.write_all(s.as_bytes()).unwrap();
        }
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(b"X", 0)
            .unwrap();
        (&b).write_all(b"b3").unwrap();
        (read(&p), a.metadata().unwrap().len())
    });
    assert_eq!(c, k, "cowfs (left) vs kernel (right)");
    assert_eq!(c, ("Xa1b1a2b2b3".to_string(), 11));
}

/// O_DIRECT open + 4096-aligned pwrite/pread at 4096 of `name`; a summary that reads "ok" if
/// the I/O worked and buffered reads see it.
fn o_direct_io(mnt: &Path, name: &str, create: bool, head: &[u8]) -> String {
    let new = pattern(4096, 8);
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(libc::O_DIRECT)
        .open(mnt.join(name))
    {
        Err(e) => return format!("open {e}"),
        Ok(f) => f,
    };
    let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    let s = unsafe { std::slice::from_raw_parts_mut(buf, 4096) };
    s.copy_from_slice(&new);
    let w = unsafe { libc::pwrite(f.as_raw_fd(), buf as *const _, 4096, 4096) };
    let we = io::Error::last_os_error();
    s.fill(0);
    let r = unsafe { libc::pread(f.as_raw_fd(), buf as *mut _, 4096, 4096) };
    let re = io::Error::last_os_error();
    let same = s[..] == new[..];
    unsafe { std::alloc::dealloc(buf, layout) };
    drop(f);
    let all = fs::read(mnt.join(name)).unwrap();
    let buffered = all.len() == 8192 && all[4096..] == new[..] && all[..head.len()] == *head;
    if (w, r, same, buffered) == (4096, 4096, true, true) {
        "ok".into()
    } else {
        format!(
            "pwrite {w} ({we}), pread {r} ({re}), read back {same}, buffered read sees it {buffered}"
        )
    }
}

#[test]
fn o_direct_aligned_io_works_as_on_the_kernel() {
    let l = Layers::new(1);
    let data = pattern(8192, 4);
    write_file(&l.lower(0).join("d"), &data);
    let (c, k) = run_both(&l, |mnt, _| {
        vec![
            o_direct_io(mnt, "d", false, &data[..4096]),
            o_direct_io(mnt, "new", true, &[]),
        ]
    });
    println!("O_DIRECT: cowfs {c:?}, kernel {k:?}");
    assert_eq!(k, ["ok", "ok"], "kernel reference");
    assert_eq!(
        c,
        ["ok", "ok"],
        "cowfs O_DIRECT (lower file copied up, new file)"
    );
}

#[test]
fn dir_nlink_of_merged_lower_and_upper_dirs_matches_kernel() {
    let l = Layers::new(2);
    for s in ["m/s1", "m/s3", "lo/a", "lo/b", "lo/c"] {
        mkdir(&l.lower(1).join(s));
    }
    write_file(&l.lower(1).join("m/f"), "");
    for s in ["m/s1", "m/s2", "m/s1/t"] {
        mkdir(&l.lower(0).join(s));
    }
    mkdir(&l.upper.join("m/s4"));
    let dirs = [".", "m", "m/s1", "lo", "up", "m/s5"];
    let (c, k) = run_both(&l, |mnt, _| {
        fs::remove_dir(mnt.join("m/s3")).unwrap();
        for d in ["up/x", "up/y", "m/s5/z"] {
            fs::create_dir_all(mnt.join(d)).unwrap();
        }
        dirs.iter()
            .map(|d| {
                let subdirs = fs::read_dir(mnt.join(d))
                    .unwrap()
                    .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
                    .count() as u64;
                (fs::metadata(mnt.join(d)).unwrap().nlink(), 2 + subdirs)
            })
            .collect::<Vec<_>>()
    });
    println!("dir nlink (reported, 2 + subdirs) for {dirs:?}: cowfs {c:?}, kernel {k:?}");
    // The kernel reports 1 for merged dirs (".", "m", "m/s1") and the real count elsewhere.
    // cowfs must give the real count (2 + subdirs visible in the merged view, whiteouts and
    // new dirs included) wherever the kernel does; for merged dirs it may either match the
    // kernel's 1 or give the real count, nothing else.
    assert_eq!(
        k.iter().filter(|(n, _)| *n == 1).count(),
        3,
        "kernel reference: {k:?}"
    );
    for (i, d) in dirs.iter().enumerate() {
        if k[i].0 == 1 {
            assert!(
                c[i].0 == 1 || c[i].0 == c[i].1,
                "nlink of merged {d}: {:?}",
                c[i]
            );
        } else {
            assert_eq!(c[i].0, k[i].0, "nlink of {d}: cowfs vs kernel");
            assert_eq!(c[i].0, c[i].1, "nlink of {d} vs 2 + visible subdirs");
        }
    }
}

#[test]
fn copy_up_from_another_filesystem_copies_data_and_holes() {
    // Lower on tmpfs, upper on the temp dir's fs: copy_file_range between
    // two filesystems fails with EXDEV, and the copy must still be whole.
    let l = Layers::new(1);
    let _lower_fs = Tmpfs::mount(l.lower(0));
    let data = pattern(3 * MIB as usize + 123, 7);
    let f = l.lower(0).join("f");
    write_file(&f, &data);
    // A hole in the middle and at the end.
    let sparse = l.lower(0).join("sparse");
    {
        let file = fs::File::create(&sparse).unwrap();
        file.write_all_at(&data[..MIB as usize], 0).unwrap();
        file.write_all_at(&data[..4096], 4 * MIB).unwrap();
        file.set_len(8 * MIB).unwrap();
    }
    let want_sparse = fs::read(&sparse).unwrap();
    let (cowfs, kernel) = run_both(&l, |mnt, upper| {
        for name in ["f", "sparse"] {
            let file = OpenOptions::new().write(true).open(mnt.join(name)).unwrap();
            file.write_all_at(b"!", 1).unwrap();
        }
        (
            fs::read(upper.join("f")).unwrap(),
            fs::read(upper.join("sparse")).unwrap(),
        )
    });
    for (who, (f_copy, sparse_copy)) in [("cowfs", cowfs), ("kernel", kernel)] {
        let mut want_f = data.clone();
        want_f[1] = b'!';
        assert!(f_copy == want_f, "{who}: copied-up f differs");
        let mut want_s = want_sparse.clone();
        want_s[1] = b'!';
        assert!(
            sparse_copy == want_s,
            "{who}: copied-up sparse file differs"
        );
    }
}
