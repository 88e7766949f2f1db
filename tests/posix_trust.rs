//! POSIX and drop-in details from issue 11 ("Trust"): ENAMETOOLONG for names over 255 bytes,
//! fuse-overlayfs's `static_nlink` and its hidden xattr namespace, set-group-id clearing by ACL
//! changes, chmod and chown, access times by the mount's atime mode, and mtime/ctime after
//! writes through a shared mapping, and the modes of new objects (set-id bits, default ACLs).
//! Each compares with kernel overlayfs (or, for the drop-in details, fuse-overlayfs) on the
//! same layers.

use crate::common::*;
use crate::posix_support::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn errno_of_ret(ret: libc::c_int) -> i32 {
    if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

// ---------------------------------------------------------------------------
// ENAMETOOLONG
// ---------------------------------------------------------------------------

/// Every call given a 256-byte name, as "call = errno".
fn long_name_calls(mnt: &Path) -> Vec<String> {
    let long = "n".repeat(256);
    let p = |rel: &str| cstr(mnt.join(rel));
    let lp = p(&long);
    let in_dir = p(&format!("d/{long}"));
    let (f, d) = (p("f"), p("d"));
    let attr = CString::new("user.x").unwrap();
    let mut out = Vec::new();
    let mut log =
        |what: &str, ret: libc::c_int| out.push(format!("{what} = {}", errno_of_ret(ret)));
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        log("lstat", libc::lstat(lp.as_ptr(), &mut st));
        log("stat in subdir", libc::stat(in_dir.as_ptr(), &mut st));
        log("chmod", libc::chmod(lp.as_ptr(), 0o644));
        log("chown", libc::chown(lp.as_ptr(), 0, 0));
        log("lchown", libc::lchown(lp.as_ptr(), 0, 0));
        log("truncate", libc::truncate(lp.as_ptr(), 0));
        log("open", libc::open(lp.as_ptr(), libc::O_RDONLY));
        log(
            "open O_CREAT",
            libc::open(lp.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644),
        );
        log("mkdir", libc::mkdir(lp.as_ptr(), 0o755));
        log(
            "mknod fifo",
            libc::mknod(lp.as_ptr(), libc::S_IFIFO | 0o644, 0),
        );
        log("symlink", libc::symlink(f.as_ptr(), lp.as_ptr()));
        log("link to", libc::link(f.as_ptr(), lp.as_ptr()));
        log("link from", libc::link(lp.as_ptr(), p("g").as_ptr()));
        log("rename from", libc::rename(lp.as_ptr(), p("g").as_ptr()));
        log("rename to", libc::rename(f.as_ptr(), lp.as_ptr()));
        log("rename dir to", libc::rename(d.as_ptr(), in_dir.as_ptr()));
        log("unlink", libc::unlink(lp.as_ptr()));
        log("rmdir", libc::rmdir(lp.as_ptr()));
        log(
            "setxattr",
            libc::setxattr(lp.as_ptr(), attr.as_ptr(), b"1".as_ptr().cast(), 1, 0),
        );
        log(
            "getxattr",
            libc::getxattr(lp.as_ptr(), attr.as_ptr(), std::ptr::null_mut(), 0) as libc::c_int,
        );
    }
    out
}

#[test]
fn names_over_255_bytes_give_enametoolong_in_every_call() {
    let l = Layers::new(1);
    write_file(&l.lower(0).join("f"), "f");
    mkdir(&l.lower(0).join("d"));
    let k = kernel_twin(&l, "k");
    let want = long_name_calls(&k.mnt);
    k.unmount();
    let m = l.mount();
    let got = long_name_calls(&l.mnt);
    m.unmount();
    assert_eq!(got, want, "cowfs (left) vs kernel overlayfs (right)");
    let too_long = format!("= {}", libc::ENAMETOOLONG);
    for line in &got {
        assert!(line.ends_with(&too_long), "{line}");
    }
}

// ---------------------------------------------------------------------------
// fuse-overlayfs drop-in details
// ---------------------------------------------------------------------------

/// Guard for a fuse-overlayfs mount (the drop-in reference); unmounted on drop.
struct FuseOverlayfs {
    mnt: PathBuf,
}

impl FuseOverlayfs {
    fn mount(l: &Layers, tag: &str, extra: &str) -> FuseOverlayfs {
        let upper = l.fresh_dir(&format!("{tag}-upper"));
        let work = l.fresh_dir(&format!("{tag}-work"));
        let mnt = l.fresh_dir(&format!("{tag}-mnt"));
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            l.lowerdir_arg(),
            upper.display(),
            work.display()
        );
        if !extra.is_empty() {
            opts = format!("{opts},{extra}");
        }
        let out = Command::new("fuse-overlayfs")
            .args(["-o", &opts])
            .arg(&mnt)
            .output()
            .expect("run fuse-overlayfs (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "fuse-overlayfs -o {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        FuseOverlayfs { mnt }
    }
}

impl Drop for FuseOverlayfs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .output();
        if is_mounted(&self.mnt) {
            unsafe { libc::umount2(cstr(&self.mnt).as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Link counts of the root, a merged dir with three subdirs, a lower-only dir and a new dir.
fn dir_nlinks(mnt: &Path) -> Vec<(String, u64)> {
    fs::create_dir(mnt.join("new")).unwrap();
    fs::create_dir(mnt.join("new/sub")).unwrap();
    ["", "merged", "merged/a", "loweronly", "new"]
        .iter()
        .map(|d| (d.to_string(), fs::metadata(mnt.join(d)).unwrap().nlink()))
        .collect()
}

#[test]
fn static_nlink_reports_one_for_every_dir_as_fuse_overlayfs() {
    let l = Layers::new(2);
    for sub in ["a", "b", "c"] {
        mkdir(&l.lower(0).join("merged").join(sub));
    }
    mkdir(&l.lower(1).join("merged/d"));
    mkdir(&l.lower(1).join("loweronly/x"));
    let f = FuseOverlayfs::mount(&l, "fo", "static_nlink");
    let want = dir_nlinks(&f.mnt);
    drop(f);
    let m = l.mount_with(&["-o", "static_nlink"]);
    let got = dir_nlinks(&l.mnt);
    m.unmount();
    assert_eq!(got, want, "cowfs (left) vs fuse-overlayfs (right)");
    assert!(got.iter().all(|(_, n)| *n == 1), "{got:?}");
}

/// What the merged view shows of a lower file's xattrs, and which changes it allows.
fn xattr_view(mnt: &Path) -> Vec<String> {
    let f = mnt.join("f");
    let mut out = vec![format!("list {:?}", llistxattr(&f).unwrap())];
    for name in [
        "user.fuseoverlayfs.override_stat",
        "user.fuseoverlayfs.origin",
        "user.containers.override_stat",
        "user.plain",
    ] {
        out.push(format!(
            "get {name} = {:?}",
            lgetxattr(&f, name).map_err(|e| e.raw_os_error())
        ));
    }
    for name in [
        "user.fuseoverlayfs.new",
        "user.containers.new",
        "user.plain2",
    ] {
        let e = errno_of_result(lsetxattr(&f, name, b"1", 0));
        out.push(format!("set {name} = {e}"));
    }
    for name in ["user.fuseoverlayfs.override_stat", "user.plain"] {
        out.push(format!(
            "remove {name} = {}",
            errno_of_result(lremovexattr(&f, name))
        ));
    }
    out.push(format!("list after {:?}", llistxattr(&f).unwrap()));
    out
}

fn errno_of_result<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn fuse_overlayfs_xattr_namespace_hidden_as_fuse_overlayfs_does() {
    let l = Layers::new(1);
    let f = l.lower(0).join("f");
    write_file(&f, "data");
    set_xattr(&f, "user.fuseoverlayfs.override_stat", b"0:0:0644");
    set_xattr(&f, "user.fuseoverlayfs.origin", b"x");
    set_xattr(&f, "user.containers.override_stat", b"0:0:0644");
    set_xattr(&f, "user.plain", b"p");
    let fo = FuseOverlayfs::mount(&l, "fo", "");
    let want = xattr_view(&fo.mnt);
    drop(fo);
    let m = l.mount();
    let got = xattr_view(&l.mnt);
    m.unmount();
    assert_eq!(got, want, "cowfs (left) vs fuse-overlayfs (right)");
    assert!(!got[0].contains("fuseoverlayfs"), "{}", got[0]);
}

// ---------------------------------------------------------------------------
// set-group-id clearing
// ---------------------------------------------------------------------------

/// Runs `script` in `cwd` as uid/gid 1000 with no supplementary groups.
fn as_user(cwd: &Path, script: &str) -> String {
    use std::os::unix::process::CommandExt;
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(cwd)
        .uid(1000)
        .gid(1000)
        .output()
        .unwrap();
    format!(
        "[{script}] -> {} {}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn modes(mnt: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let m = fs::symlink_metadata(mnt.join(n)).unwrap();
            format!("{n} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid())
        })
        .collect()
}

/// Runs `steps` on a kernel overlayfs twin of `l`, then on a cowfs mount of it, checks that
/// both saw the same, and answers what cowfs saw.
fn same_as_kernel(l: &Layers, steps: impl Fn(&Path) -> Vec<String>) -> Vec<String> {
    let k = kernel_twin(l, "k");
    let want = steps(&k.mnt);
    k.unmount();
    let m = l.mount();
    let got = steps(&l.mnt);
    m.unmount();
    assert_eq!(got, want, "cowfs (left) vs kernel overlayfs (right)");
    got
}

#[test]
fn setgid_cleared_by_acl_chmod_and_chown_as_the_kernel_does() {
    let l = Layers::new(1);
    chmod(&l.root, 0o755); // uid 1000 must reach the mountpoints
    let lo = l.lower(0);
    chmod(lo, 0o777);
    // Owned by uid 1000, group 2000, which uid 1000 is not in.
    for (name, mode) in [
        ("acl", 0o2775),
        ("acl_nogx", 0o2765),
        ("chmod", 0o2775),
        ("chown", 0o6775),
        ("chown_nogx", 0o6765),
        ("dir", 0o2775),
    ] {
        let p = lo.join(name);
        if name == "dir" {
            mkdir(&p);
        } else {
            write_file(&p, "x");
        }
        lchown(&p, 1000, 2000);
        chmod(&p, mode);
    }
    let steps = [
        "setfacl -m u:1234:r acl",
        "setfacl -m u:1234:r acl_nogx",
        "setfacl -m u:1234:rx dir",
        "chmod 2770 chmod",
        "chgrp 1000 chown",
        "chgrp 1000 chown_nogx",
    ];
    let names = ["acl", "acl_nogx", "chmod", "chown", "chown_nogx", "dir"];
    let run = |mnt: &Path| {
        let mut out: Vec<String> = steps.iter().map(|s| as_user(mnt, s)).collect();
        out.extend(modes(mnt, &names));
        out
    };
    let got = same_as_kernel(&l, run);
    assert!(got.contains(&"acl 775 1000:2000".to_string()), "{got:?}");
}

/// Writes, truncates and chowns clear set-id bits and file capabilities as on kernel overlayfs:
/// a writer without CAP_FSETID (uid 1000) loses the set-user-id bit, and the set-group-id bit
/// where the group may execute; root's writes keep them; a chown clears them whoever makes it;
/// every write, truncate and chown drops `security.capability`. (Where the kernel opens files
/// itself, cowfs does this clearing: FUSE_HANDLE_KILLPRIV_V2.)
#[test]
fn set_id_bits_and_capabilities_cleared_by_writes_truncates_and_chowns() {
    let l = Layers::new(1);
    chmod(&l.root, 0o755); // uid 1000 must reach the mountpoints
    let lo = l.lower(0);
    chmod(lo, 0o777);
    let files = [
        ("write_suid", 0o4777),
        ("write_sgid", 0o2777),
        ("write_sgid_nogx", 0o2767),
        ("trunc_suid", 0o6777),
        ("root_write", 0o6777),
        ("chown", 0o6777),
        ("cap_write", 0o0777),
        ("cap_chown", 0o0777),
        ("cap_trunc", 0o0777),
    ];
    for (name, mode) in files {
        write_file(&lo.join(name), "data");
        lchown(&lo.join(name), 1000, 1000);
        chmod(&lo.join(name), mode);
    }
    for name in ["cap_write", "cap_chown", "cap_trunc"] {
        let out = Command::new("setcap")
            .args(["cap_net_raw+ep"])
            .arg(lo.join(name))
            .output()
            .expect("setcap (package libcap2-bin)");
        assert!(out.status.success(), "setcap: {out:?}");
    }
    let user_steps = [
        "echo more >> write_suid",
        "echo more >> write_sgid",
        "echo more >> write_sgid_nogx",
        "truncate -s 1 trunc_suid",
        "echo more >> cap_write",
        "truncate -s 1 cap_trunc",
    ];
    let run = |mnt: &Path| {
        let mut out: Vec<String> = user_steps.iter().map(|s| as_user(mnt, s)).collect();
        // Root (CAP_FSETID) writes; root chowns.
        let root = Command::new("sh")
            .args([
                "-c",
                "echo more >> root_write && chown 1000:1000 chown && chown 1000:1000 cap_chown",
            ])
            .current_dir(mnt)
            .output()
            .unwrap();
        out.push(format!("root: {:?}", root.status.code()));
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        out.extend(modes(mnt, &names));
        for name in ["cap_write", "cap_chown", "cap_trunc"] {
            let cap = lgetxattr(&mnt.join(name), "security.capability");
            out.push(format!("{name} capability: {}", cap.is_ok()));
        }
        out
    };
    let got = same_as_kernel(&l, run);
    assert!(
        got.contains(&"write_suid 777 1000:1000".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"root_write 6777 1000:1000".to_string()),
        "{got:?}"
    );
}

// ---------------------------------------------------------------------------
// access times
// ---------------------------------------------------------------------------

const DAY: i64 = 24 * 3600;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Prepares, through the mount, an upper file and an upper executable whose atimes are two days
/// old, reads and execs each (the upper file twice) (and a lower file and lower executable), and reports for each
/// whether its atime changed, and whether the lower file was copied up.
fn atime_steps(mnt: &Path, upper: &Path) -> Vec<String> {
    let old = now() - 2 * DAY;
    fs::write(mnt.join("up"), "upper data").unwrap();
    fs::copy("/usr/bin/true", mnt.join("up_exe")).unwrap();
    for name in ["up", "up_exe"] {
        set_times(&mnt.join(name), (old, 0), (old - DAY, 0)).unwrap();
    }
    // A new stat after each step: nothing cached may hide a change.
    let atime = |name: &str| fs::metadata(mnt.join(name)).unwrap().atime();
    let before: Vec<i64> = ["up", "up_exe", "low", "low_exe"]
        .iter()
        .map(|n| atime(n))
        .collect();
    for name in ["up", "low"] {
        let _ = fs::read(mnt.join(name)).unwrap();
    }
    for exe in ["up_exe", "low_exe"] {
        assert!(exec_when_closed(&mnt.join(exe)), "exec {exe}");
    }
    let mut out: Vec<String> = ["up", "up_exe", "low", "low_exe"]
        .iter()
        .zip(before)
        .map(|(n, b)| format!("{n} atime changed: {}", atime(n) != b))
        .collect();
    // Read again once its access time is after its change: relatime leaves it now.
    let read_once = atime("up");
    std::thread::sleep(Duration::from_millis(1100));
    let _ = fs::read(mnt.join("up")).unwrap();
    out.push(format!(
        "up reread atime changed: {}",
        atime("up") != read_once
    ));
    for n in ["low", "low_exe"] {
        out.push(format!("{n} copied up: {}", upper.join(n).exists()));
    }
    out
}

/// Runs `exe`, retrying ETXTBSY for a second: a test running in parallel may fork while this
/// one still has the copy open for writing, and its child holds that fd until it execs (the
/// classic race of writing an executable in a threaded process; the same on kernel overlayfs).
fn exec_when_closed(exe: &Path) -> bool {
    for _ in 0..20 {
        match Command::new(exe).status() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            done => return done.unwrap().success(),
        }
    }
    false
}

fn atime_fixture() -> Layers {
    let l = Layers::new(1);
    let lo = l.lower(0);
    write_file(&lo.join("low"), "lower data");
    fs::copy("/usr/bin/true", lo.join("low_exe")).unwrap();
    let old = now() - 2 * DAY;
    for name in ["low", "low_exe"] {
        set_times(&lo.join(name), (old, 0), (old - DAY, 0)).unwrap();
    }
    l
}

/// The atime steps on kernel overlayfs with `opt` and on cowfs with `-o opt`.
fn atime_both(opt: &str) -> Vec<String> {
    let l = atime_fixture();
    let upper = l.fresh_dir("k-upper");
    let work = l.fresh_dir("k-work");
    let kmnt = l.fresh_dir("k-mnt");
    let k = KernelOverlay::try_mount(&l.lowers, &upper, &work, &kmnt, opt).unwrap();
    let want = atime_steps(&k.mnt, &k.upper);
    k.unmount();
    let l = atime_fixture();
    let m = if opt.is_empty() {
        l.mount()
    } else {
        l.mount_with(&["-o", opt])
    };
    let got = atime_steps(&l.mnt, &l.upper);
    m.unmount();
    assert_eq!(
        got, want,
        "-o {opt:?}: cowfs (left) vs kernel overlayfs (right)"
    );
    got
}

#[test]
fn atime_relatime_default_updates_upper_files_only() {
    let got = atime_both("");
    assert!(
        got.contains(&"up reread atime changed: false".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"up atime changed: true".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"low atime changed: false".to_string()),
        "{got:?}"
    );
}

#[test]
fn atime_strictatime_updates_upper_files_on_every_read() {
    let got = atime_both("strictatime");
    assert!(
        got.contains(&"up reread atime changed: true".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"low atime changed: false".to_string()),
        "{got:?}"
    );
}

#[test]
fn atime_noatime_read_and_exec_change_nothing() {
    let got = atime_both("noatime");
    assert!(got.iter().all(|s| s.ends_with("false")), "{got:?}");
}

// ---------------------------------------------------------------------------
// mtime / ctime after writes through a shared mapping (xfstests generic/080)
// ---------------------------------------------------------------------------

/// (mtime, ctime) as `stat -c %Y` asks for them: statx for those two fields only, so cached
/// attributes answer unless the kernel knows they are stale.
fn cm_times(p: &Path) -> (i64, i64) {
    let c = cstr(p);
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let ret = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_MTIME | libc::STATX_CTIME,
            &mut stx,
        )
    };
    assert_eq!(ret, 0, "statx {}", p.display());
    (stx.stx_mtime.tv_sec, stx.stx_ctime.tv_sec)
}

/// Writes one byte at 0 through a shared mapping of `p`; `msync` before the checks if asked.
/// Returns (mtime, ctime) while still mapped (after msync) and after munmap and close.
fn mmap_write(p: &Path, msync: bool) -> ((i64, i64), (i64, i64)) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mapped = mmap_write_fd(&f, p, msync);
    drop(f);
    (mapped, cm_times(p))
}

/// `mmap_write` through an open file; returns (mtime, ctime) while still mapped.
fn mmap_write_fd(f: &fs::File, p: &Path, msync: bool) -> (i64, i64) {
    use std::os::fd::AsRawFd;
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let bytes = map.cast::<u8>();
    unsafe {
        // A read fault first, then the write fault (as generic/080's mread + mwrite).
        let first = std::ptr::read_volatile(bytes);
        std::ptr::write_volatile(bytes, first.wrapping_add(1));
        if msync {
            assert_eq!(libc::msync(map, 4096, libc::MS_SYNC), 0);
        }
    }
    let mapped = cm_times(p);
    unsafe { libc::munmap(map, 4096) };
    mapped
}

fn mmap_steps(mnt: &Path) -> Vec<String> {
    let p = mnt.join("mapped");
    fs::write(&p, vec![b'a'; 4096]).unwrap();
    fs::File::open(&p).unwrap().sync_all().unwrap();
    let t0 = cm_times(&p);
    std::thread::sleep(Duration::from_millis(1100));
    let (_, closed) = mmap_write(&p, false);
    std::thread::sleep(Duration::from_millis(1100));
    let (synced, closed2) = mmap_write(&p, true);
    // Made by open(O_CREAT) and sized by ftruncate: both answered with attributes.
    let q = mnt.join("sized");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&q)
        .unwrap();
    f.set_len(4096).unwrap();
    let sized = cm_times(&q);
    std::thread::sleep(Duration::from_millis(1100));
    mmap_write_fd(&f, &q, false);
    drop(f);
    let written = cm_times(&q);
    vec![
        format!(
            "created, sized, mapped: {}",
            written.0 > sized.0 && written.1 > sized.1
        ),
        format!(
            "no msync, after close: {}",
            closed.0 > t0.0 && closed.1 > t0.1
        ),
        format!(
            "after msync: {}",
            synced.0 > closed.0 && synced.1 > closed.1
        ),
        format!(
            "after msync and close: {}",
            closed2.0 > closed.0 && closed2.1 > closed.1
        ),
    ]
}

#[test]
fn shared_mmap_writes_update_mtime_and_ctime() {
    let l = Layers::new(1);
    let k = kernel_twin(&l, "k");
    let want = mmap_steps(&k.mnt);
    k.unmount();
    let m = l.mount();
    let got = mmap_steps(&l.mnt);
    m.unmount();
    assert_eq!(got, want, "cowfs (left) vs kernel overlayfs (right)");
    assert!(got.iter().all(|s| s.ends_with("true")), "{got:?}");
}

#[test]
fn shared_mmap_writes_update_mtime_without_passthrough() {
    let l = Layers::new(1);
    let m = l.mount_with(&["-o", "passthrough=off"]);
    let got = mmap_steps(&l.mnt);
    m.unmount();
    assert!(got.iter().all(|s| s.ends_with("true")), "{got:?}");
}

// ---------------------------------------------------------------------------
// modes of new objects
// ---------------------------------------------------------------------------

/// open(O_CREAT | O_EXCL, mode) of `path` under umask 022 in a child process, as root or as
/// uid/gid 1000 with no supplementary groups; answers the child's exit code (0: made).
fn create_as(path: &Path, mode: u32, user: bool) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let name = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: the child calls only async-signal-safe functions (umask, setgroups, setgid,
    // setuid, open, close, _exit) on memory prepared before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::umask(0o022);
            let dropped = !user
                || libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setgid(1000) == 0
                    && libc::setuid(1000) == 0;
            if !dropped {
                libc::_exit(100);
            }
            let fd = libc::open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                mode as libc::c_uint,
            );
            if fd < 0 {
                libc::_exit(101);
            }
            libc::close(fd);
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        libc::WEXITSTATUS(status)
    }
}

/// A new file keeps the set-id bits its creator asked for, as on kernel overlayfs (which
/// creates under the caller's ids): root's set-user-id file stays so (cowfs used to chown the
/// file it made, which cleared the bit), a user's too; in a set-group-id dir of a group the
/// user is not in, the bit is dropped (by the kernel, before the request), and a new dir
/// inherits the dir's group and bit.
#[test]
fn new_files_keep_the_set_id_bits_asked_for_as_the_kernel_does() {
    let l = Layers::new(1);
    chmod(&l.root, 0o755); // uid 1000 must reach the mountpoints
    let lo = l.lower(0);
    chmod(lo, 0o777);
    mkdir(&lo.join("d"));
    chmod(&lo.join("d"), 0o777);
    mkdir(&lo.join("g"));
    lchown(&lo.join("g"), 1000, 2000);
    chmod(&lo.join("g"), 0o2777);
    let run = |mnt: &Path| {
        let mut out = [
            create_as(&mnt.join("d/root_suid"), 0o4755, false),
            create_as(&mnt.join("d/root_sgid"), 0o2755, false),
            create_as(&mnt.join("d/user_suid"), 0o6755, true),
            create_as(&mnt.join("g/user_sgid"), 0o2755, true),
            create_as(&mnt.join("g/root_sgid"), 0o2755, false),
        ]
        .iter()
        .map(|code| format!("exit {code}"))
        .collect::<Vec<_>>();
        out.push(as_user(mnt, "mkdir g/sub"));
        out.extend(modes(
            mnt,
            &[
                "d/root_suid",
                "d/root_sgid",
                "d/user_suid",
                "g/user_sgid",
                "g/root_sgid",
                "g/sub",
            ],
        ));
        out
    };
    let got = same_as_kernel(&l, run);
    assert!(got.contains(&"d/root_suid 4755 0:0".to_string()), "{got:?}");
    assert!(got.contains(&"g/sub 2755 1000:2000".to_string()), "{got:?}");
}

/// Setting and removing a dir's default ACL changes what the next new entry gets at once
/// (cowfs keeps whether a dir has one): umask without one, the ACL's mask with one, for files
/// and dirs, as on kernel overlayfs.
#[test]
fn default_acl_changes_reach_the_next_new_entry() {
    let l = Layers::new(1);
    chmod(&l.root, 0o755); // uid 1000 must reach the mountpoints
    let lo = l.lower(0);
    chmod(lo, 0o777);
    mkdir(&lo.join("a"));
    lchown(&lo.join("a"), 1000, 1000);
    let script = "umask 022 && : > a/f1 && \
                  setfacl -d -m u::rwx,g::rwx,o::rwx a && : > a/f2 && \
                  setfacl -k a && : > a/f3 && \
                  setfacl -d -m u::rw,g::r,o::- a && mkdir a/sub && : > a/f4 && \
                  setfacl -k a && mkdir a/sub2";
    let run = |mnt: &Path| {
        let mut out = vec![as_user(mnt, script)];
        out.extend(modes(
            mnt,
            &["a/f1", "a/f2", "a/f3", "a/sub", "a/f4", "a/sub2"],
        ));
        out
    };
    let got = same_as_kernel(&l, run);
    for want in ["a/f1 644", "a/f2 666", "a/f3 644", "a/sub2 755"] {
        assert!(got.iter().any(|m| m.starts_with(want)), "{want}: {got:?}");
    }
}
