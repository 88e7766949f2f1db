//! cowfs as a drop-in for fuse-overlayfs (container storage's `mount_program`), through the real
//! binary in daemon mode: the `-o` grammar and options podman passes, the overlay behaviours
//! through that grammar, mount(8) / fstab with type `fuse.cowfs`, rootless mounts through
//! fusermount3 (and in a user namespace), and every way of tearing a mount down.
//!
//! Every test has a deadline (see `dropin_support::Fix`) and leaves nothing mounted or running.

use crate::dropin_support::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

fn no_warnings(out: &Out) {
    assert!(
        !out.stderr.contains("warning"),
        "unexpected warning: {}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// 1. the fuse-overlayfs grammar and options
// ---------------------------------------------------------------------------

#[test]
fn grammar_forms_podman_uses() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    let (m, o) = (lay.mnt.to_string_lossy().into_owned(), lay.opts());
    let (u, w) = (lay.u.display(), lay.w.display());
    let several = format!("lowerdir={} -o upperdir={u} -o workdir={w}", lay.lowers());
    let forms = [
        ("no subcommand", format!("-o {o} {m}")),
        ("mount subcommand", format!("mount -o {o} {m}")),
        ("several -o", format!("-o {several} {m}")),
        ("podman ,,volatile", format!("-o {o},,volatile {m}")),
        ("trailing comma", format!("-o {o}, {m}")),
        (
            "mount.fuse3 style: source first",
            format!("-o {o} cowfs {m}"),
        ),
    ];
    for (tag, args) in forms {
        // temp paths hold no spaces
        let args: Vec<&str> = args.split(' ').collect();
        let (d, out) = fx.mount(&args, &lay.mnt);
        no_warnings(&out);
        lay.check_rw(&tag.replace([' ', ',', ':', '.'], "_"));
        fx.unmount(d);
    }
}

#[test]
fn lowerdir_alone_and_ro_are_read_only() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    let m = lay.mnt.clone();
    let ro_checks = |what: &str| {
        lay.check_ro();
        let e = mount_entry(&m).unwrap();
        assert!(e.opts.contains(&"ro".into()), "{what}: mountinfo {e:?}");
        assert_errno(fs::write(m.join("new"), "x"), libc::EROFS, "create");
        assert_errno(
            OpenOptions::new().write(true).open(m.join("base")),
            libc::EROFS,
            "open O_WRONLY",
        );
        assert_errno(fs::create_dir(m.join("d2")), libc::EROFS, "mkdir");
        assert_errno(fs::remove_file(m.join("base")), libc::EROFS, "unlink");
        assert_errno(
            fs::rename(m.join("base"), m.join("b2")),
            libc::EROFS,
            "rename",
        );
    };
    let (d, out) = fx.mount(&lay.args(&format!("lowerdir={}", lay.lowers())), &m);
    no_warnings(&out);
    ro_checks("lowerdir only");
    fx.unmount(d);
    let (d, _) = fx.mount(&lay.args(&format!("{},ro", lay.opts())), &m);
    ro_checks("upperdir + ro");
    fx.unmount(d);
    assert!(
        list_names(&lay.u).is_empty(),
        "read-only mounts wrote to the upper"
    );
    let (d, _) = fx.mount(&lay.args(&format!("{},rw", lay.opts())), &m);
    let e = mount_entry(&m).unwrap();
    assert!(e.opts.contains(&"rw".into()), "rw: mountinfo {e:?}");
    lay.check_rw("rw");
    fx.unmount(d);
}

#[test]
fn symlinked_lowers_escaped_colon_and_relative_lowers() {
    let fx = Fix::new(DEADLINE);
    // podman: overlay/<id>/diff, with short links overlay/l/<ID> -> ../<id>/diff
    write_file(&fx.path("overlay/id1/diff/one"), "1");
    write_file(&fx.path("overlay/id2/diff/two"), "2");
    write_file(&fx.path("overlay/id2/diff/one"), "hidden");
    fx.dir("overlay/l");
    std::os::unix::fs::symlink("../id1/diff", fx.path("overlay/l/AAAA")).unwrap();
    std::os::unix::fs::symlink("../id2/diff", fx.path("overlay/l/BBBB")).unwrap();
    write_file(&fx.path("lay:er/colon"), "c");
    let (u, w, m) = (fx.dir("U"), fx.dir("W"), fx.dir("mnt"));
    let check = |n: &str| {
        assert_eq!(read(&m.join("one")), "1");
        assert_eq!(read(&m.join("two")), "2");
        assert_eq!(read(&m.join("colon")), "c");
        write_file(&m.join(n), n);
        assert_eq!(read(&u.join(n)), n);
    };
    let opts = format!(
        "lowerdir={}:{}:{},upperdir={},workdir={}",
        fx.s("overlay/l/AAAA"),
        fx.s("overlay/l/BBBB"),
        fx.s("lay:er").replace(':', r"\:"),
        u.display(),
        w.display()
    );
    let (d, out) = fx.mount(&["-o", &opts, &m.to_string_lossy()], &m);
    no_warnings(&out);
    check("abs");
    fx.unmount(d);
    // podman shortens long option strings with lower dirs relative to the storage dir
    let rel = format!(
        r"lowerdir=l/AAAA:l/BBBB:../lay\:er,upperdir={},workdir={}",
        u.display(),
        w.display()
    );
    let (d, _) = fx.mount_in(&["-o", &rel, &m.to_string_lossy()], &m, &fx.path("overlay"));
    check("rel");
    fx.unmount(d);
}

#[test]
fn selinux_context_with_quoted_comma_is_accepted() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    let opts = format!(
        r#"{},context="system_u:object_r:container_file_t:s0:c1,c2",nodev"#,
        lay.opts()
    );
    let (d, out) = fx.mount(&lay.args(&opts), &lay.mnt);
    no_warnings(&out);
    lay.check_rw("ctx");
    fx.unmount(d);
}

#[test]
fn uid_and_gid_mapping() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    write_file(&lay.b.join("r0"), "0");
    write_file(&lay.b.join("r1"), "1");
    lchown(&lay.b.join("r0"), 0, 0);
    lchown(&lay.b.join("r1"), 1, 1);
    let opts = format!(
        "{},uidmapping=0:1000:1:1:110000:65536,gidmapping=0:1000:1:1:110000:65536",
        lay.opts()
    );
    let (d, out) = fx.mount(&lay.args(&opts), &lay.mnt);
    no_warnings(&out);
    let ids = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(ids(&lay.mnt.join("r0")), (1000, 1000), "stored 0 shown");
    assert_eq!(ids(&lay.mnt.join("r1")), (110000, 110000), "stored 1 shown");
    lchown(&lay.mnt.join("r0"), 110005, 110005);
    assert_eq!(ids(&lay.mnt.join("r0")), (110005, 110005), "after chown");
    assert_eq!(ids(&lay.u.join("r0")), (6, 6), "chown 110005 stores 6");
    assert_eq!(read(&lay.mnt.join("r0")), "0");
    fx.unmount(d);
}

#[test]
fn squash_options() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    write_file(&lay.b.join("owned"), "o");
    lchown(&lay.b.join("owned"), 5, 6);
    // (option, shown ids of "owned" (stored 5:6), shown ids of "dir/a" (stored 0:0))
    for (extra, owned, root_owned) in [
        ("squash_to_root", (0, 0), (0, 0)),
        ("squash_to_uid=7,squash_to_gid=8", (7, 8), (7, 8)),
        ("squash_to_uid=7", (7, 6), (7, 0)),
    ] {
        let opts = format!("lowerdir={},{extra}", lay.lowers());
        let (d, out) = fx.mount(&lay.args(&opts), &lay.mnt);
        no_warnings(&out);
        for (f, want) in [("owned", owned), ("dir/a", root_owned), ("dir", root_owned)] {
            let md = fs::symlink_metadata(lay.mnt.join(f)).unwrap();
            assert_eq!((md.uid(), md.gid()), want, "{extra}: {f}");
        }
        fx.unmount(d);
    }
}

#[test]
fn xattr_permissions_2_keeps_owner_and_mode_in_override_stat() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    write_file(&lay.b.join("f"), "f");
    chmod(&lay.b.join("f"), 0o644);
    let (d, out) = fx.mount(
        &lay.args(&format!("{},xattr_permissions=2", lay.opts())),
        &lay.mnt,
    );
    no_warnings(&out);
    let (mf, uf) = (lay.mnt.join("f"), lay.u.join("f"));
    lchown(&mf, 5, 6);
    let ov = |p: &Path| {
        String::from_utf8(lgetxattr(p, "user.containers.override_stat").unwrap()).unwrap()
    };
    assert_eq!(ov(&uf), "5:6:0644", "override_stat after chown");
    chmod(&mf, 0o640);
    assert_eq!(ov(&uf), "5:6:0640", "override_stat after chmod");
    let md = fs::symlink_metadata(&mf).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (5, 6, 0o640));
    fx.unmount(d);
    // it persists: a new mount shows the same
    let (d, _) = fx.mount(
        &lay.args(&format!("{},xattr_permissions=2", lay.opts())),
        &lay.mnt,
    );
    let md = fs::symlink_metadata(&mf).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (5, 6, 0o640));
    fx.unmount(d);
}

#[test]
fn volatile_fsync_static_nlink_and_other_accepted_options() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    fs::create_dir_all(lay.b.join("d2/sub")).unwrap();
    fs::create_dir_all(lay.a.join("d2")).unwrap();
    let opts = format!(
        "{},volatile,fsync=0,noacl,static_nlink,timeout=5,threaded=1,max_idle_threads=4",
        lay.opts()
    );
    let (d, out) = fx.mount(&lay.args(&opts), &lay.mnt);
    no_warnings(&out);
    lay.check_rw("opts");
    for dir in ["", "dir", "d2"] {
        let n = fs::metadata(lay.mnt.join(dir)).unwrap().nlink();
        assert_eq!(n, 1, "static_nlink: nlink of merged dir '{dir}'");
    }
    let mut f = OpenOptions::new()
        .append(true)
        .open(lay.mnt.join("base"))
        .unwrap();
    f.write_all(b"+").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(read(&lay.u.join("base")), "from B+");
    fx.unmount(d);
}

#[test]
fn kernel_mount_flags_show_in_mountinfo() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    write_file(&lay.b.join("run.sh"), "#!/bin/sh\necho ran\n");
    chmod(&lay.b.join("run.sh"), 0o755);
    let opts = format!("{},nodev,nosuid,noexec,noatime", lay.opts());
    let (d, out) = fx.mount(&lay.args(&opts), &lay.mnt);
    no_warnings(&out);
    let e = mount_entry(&lay.mnt).unwrap();
    for flag in ["rw", "nodev", "nosuid", "noexec", "noatime"] {
        assert!(e.opts.iter().any(|o| o == flag), "{flag} missing: {e:?}");
    }
    let r = Command::new(lay.mnt.join("run.sh")).output();
    assert_errno(r, libc::EACCES, "exec on a noexec mount");
    fx.unmount(d);
    let (d, _) = fx.mount(&lay.args(&lay.opts()), &lay.mnt);
    let e = mount_entry(&lay.mnt).unwrap();
    for flag in ["nodev", "nosuid", "noexec", "ro"] {
        assert!(
            !e.opts.iter().any(|o| o == flag),
            "{flag} set by default: {e:?}"
        );
    }
    let r = Command::new(lay.mnt.join("run.sh")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "ran\n");
    fx.unmount(d);
}

#[test]
fn unknown_option_warns_and_mounts() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    let (d, out) = fx.mount(&lay.args(&format!("{},frob", lay.opts())), &lay.mnt);
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "cowfs: warning: unknown option 'frob' ignored"),
        "{}",
        out.describe()
    );
    lay.check_rw("frob");
    fx.unmount(d);
}

#[test]
fn version_exits_zero() {
    let fx = Fix::new(DEADLINE);
    let out = fx.cowfs(&["--version"]).expect_ok();
    assert!(out.stdout.starts_with("cowfs "), "{}", out.describe());
}

// ---------------------------------------------------------------------------
// 2. overlay behaviours through the -o grammar
// ---------------------------------------------------------------------------

const BULK: usize = 2000;

/// B (base) in kernel format, A (top) in OCI format, with a `.wh..wh.plnk` staging dir.
fn scenario_layers(a: &Path, b: &Path) {
    write_file(&b.join("etc/config"), "base config\n");
    write_file(&b.join("etc/passwd"), "root:x:0:0\n");
    chmod(&b.join("etc/passwd"), 0o600);
    lchown(&b.join("etc/passwd"), 0, 42);
    set_xattr(&b.join("etc/passwd"), "user.sec", b"1");
    write_file(&b.join("app/tool"), "#!/bin/sh\n");
    chmod(&b.join("app/tool"), 0o755);
    for i in 0..BULK {
        write_file(&b.join(format!("bulk/sub{}/f{i}", i % 10)), "bulk");
    }
    write_file(&b.join("docs/readme"), "docs");
    write_file(&b.join("shadowed"), "base");
    write_file(&b.join("oci_gone"), "x");
    write_file(&b.join("oci_dir/a"), "a");
    write_file(&b.join("oci_dir/b"), "b");
    write_file(&b.join("opq/old"), "old");
    write_file(&b.join("trunc"), "t".repeat(100));
    std::os::unix::fs::symlink("trunc", b.join("tlink")).unwrap();
    write_file(&b.join("rmdir_me/f"), "f");
    write_file(&b.join("hl"), "hard");
    write_file(&b.join("mv_src"), "move");
    write_file(&b.join("mv_dst"), "old dst");
    write_file(&b.join("del"), "delete me");
    write_file(&b.join("lowdir/x"), "x");
    write_file(&b.join("lowdir/sub/y"), "y");
    write_file(&a.join("shadowed"), "top");
    write_file(&a.join("etc/extra"), "extra");
    write_file(&a.join(".wh.oci_gone"), "");
    write_file(&a.join(".wh.docs"), "");
    write_file(&a.join("oci_dir/.wh.a"), "");
    write_file(&a.join("opq/.wh..wh..opq"), "");
    write_file(&a.join("opq/new"), "new");
    write_file(&a.join(".wh..wh.plnk/123-456"), "hard link staging");
    write_file(&a.join("sub/.wh..wh.plnk/1"), "nested staging");
}

#[test]
fn overlay_scenario_through_o_grammar() {
    let fx = Fix::new(Duration::from_secs(240));
    let (a, b, u, w, mnt) = (
        fx.dir("A"),
        fx.dir("B"),
        fx.dir("U"),
        fx.dir("W"),
        fx.dir("mnt"),
    );
    scenario_layers(&a, &b);
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={},,volatile",
        a.display(),
        b.display(),
        u.display(),
        w.display()
    );
    let args = ["-o", &opts, &mnt.to_string_lossy()];
    let (d, _) = fx.mount(&args, &mnt);
    let p = |s: &str| mnt.join(s);
    let hidden = |mnt: &Path| {
        for n in [
            ".wh.oci_gone",
            ".wh.docs",
            "oci_dir/.wh.a",
            "opq/.wh..wh..opq",
        ] {
            assert_enoent(&mnt.join(n));
        }
        assert_enoent(&mnt.join(".wh..wh.plnk"));
        assert_enoent(&mnt.join(".wh..wh.plnk/123-456"));
        assert_enoent(&mnt.join("sub/.wh..wh.plnk"));
        for dir in ["", "sub", "oci_dir", "opq"] {
            let names = list_names(&mnt.join(dir));
            assert!(
                !names.iter().any(|n| n.starts_with(".wh.")),
                "{dir}: {names:?}"
            );
        }
    };
    // reads through the layers, OCI whiteouts and opaque dir
    assert_eq!(read(&p("etc/config")), "base config\n");
    assert_eq!(read(&p("shadowed")), "top");
    assert_eq!(list_names(&p("etc")), names(&["config", "extra", "passwd"]));
    assert_enoent(&p("oci_gone"));
    assert_enoent(&p("docs"));
    assert_eq!(list_names(&p("oci_dir")), names(&["b"]));
    assert_eq!(list_names(&p("opq")), names(&["new"]));
    assert!(
        list_names(&p("sub")).is_empty(),
        "sub holds only the plnk dir"
    );
    hidden(&mnt);
    assert!(list_names(&u).is_empty(), "reads wrote to the upper");
    // copy-up of data (inode number stable), metadata and xattrs
    let ino = fs::metadata(p("etc/config")).unwrap().ino();
    let mut f = OpenOptions::new()
        .append(true)
        .open(p("etc/config"))
        .unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    assert_eq!(read(&u.join("etc/config")), "base config\nmore\n");
    assert_eq!(fs::metadata(p("etc/config")).unwrap().ino(), ino);
    set_xattr(&p("etc/passwd"), "user.new", b"2");
    let up = fs::symlink_metadata(u.join("etc/passwd")).unwrap();
    assert_eq!((up.mode() & 0o7777, up.uid(), up.gid()), (0o600, 0, 42));
    assert_eq!(lgetxattr(&u.join("etc/passwd"), "user.sec").unwrap(), b"1");
    assert_eq!(
        llistxattr(&p("etc/passwd")).unwrap(),
        names(&["user.new", "user.sec"])
    );
    chmod(&p("app/tool"), 0o700);
    lchown(&p("app/tool"), 5, 6);
    let t = fs::symlink_metadata(u.join("app/tool")).unwrap();
    assert_eq!((t.mode() & 0o7777, t.uid(), t.gid()), (0o700, 5, 6));
    // unlink leaves a 0/0 whiteout; rmdir + mkdir makes an opaque dir
    fs::remove_file(p("del")).unwrap();
    assert_enoent(&p("del"));
    assert_whiteout(&u.join("del"));
    fs::remove_file(p("rmdir_me/f")).unwrap();
    fs::remove_dir(p("rmdir_me")).unwrap();
    assert_whiteout(&u.join("rmdir_me"));
    fs::create_dir(p("rmdir_me")).unwrap();
    assert!(list_names(&p("rmdir_me")).is_empty());
    assert_eq!(
        lgetxattr(&u.join("rmdir_me"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    // rename of a file, and of a lower dir
    fs::rename(p("mv_src"), p("mv_dst")).unwrap();
    assert_eq!(read(&p("mv_dst")), "move");
    assert_enoent(&p("mv_src"));
    assert_whiteout(&u.join("mv_src"));
    fs::rename(p("lowdir"), p("lowdir2")).unwrap();
    assert_enoent(&p("lowdir"));
    assert_eq!(list_names(&p("lowdir2")), names(&["sub", "x"]));
    assert_eq!(read(&p("lowdir2/sub/y")), "y");
    assert_whiteout(&u.join("lowdir"));
    // hard link of a lower file
    fs::hard_link(p("hl"), p("hl2")).unwrap();
    let (h1, h2) = (
        fs::metadata(p("hl")).unwrap(),
        fs::metadata(p("hl2")).unwrap(),
    );
    assert_eq!((h1.ino(), h1.nlink(), h2.nlink()), (h2.ino(), 2, 2));
    // truncate through a symlink
    truncate_path(&p("tlink"), 7).unwrap();
    assert_eq!(read(&p("trunc")), "ttttttt");
    assert!(fs::symlink_metadata(p("tlink")).unwrap().is_symlink());
    // rm -rf of 2000 entries
    fs::remove_dir_all(p("bulk")).unwrap();
    assert_enoent(&p("bulk"));
    assert_whiteout(&u.join("bulk"));
    hidden(&mnt);
    let view = snapshot(&mnt);
    fx.unmount(d);

    // persistence across remount
    let (d, _) = fx.mount(&args, &mnt);
    let again = snapshot(&mnt);
    assert_eq!(view, again, "merged view changed across remount");
    hidden(&mnt);
    assert!(
        !fs::read_dir(&u).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".wh.")),
        "cowfs wrote an OCI whiteout into the upper as root"
    );
    fx.unmount(d);
}

// ---------------------------------------------------------------------------
// 3. mount(8): type fuse.cowfs, and an fstab line
// ---------------------------------------------------------------------------

#[test]
fn mount8_type_fuse_cowfs_and_fstab() {
    let fx = Fix::new(DEADLINE);
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "fuse3"]);
        run_in(&mut apt, Duration::from_secs(300), &fx.root).expect_ok();
    }
    let _installed = Installed::new("/usr/local/sbin/cowfs");
    let lay = Lay::new(&fx);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lay.a.display(),
        lay.u.display(),
        lay.w.display()
    );
    let check = |tag: &str| {
        let e = mount_entry(&lay.mnt).expect("mounted");
        assert_eq!(e.fstype, "fuse.cowfs", "{e:?}");
        assert_eq!(read(&lay.mnt.join("shadow")), "A");
        assert_eq!(list_names(&lay.mnt.join("dir")), names(&["a", "common"]));
        write_file(&lay.mnt.join(tag), tag);
        assert_eq!(read(&lay.u.join(tag)), tag);
    };

    let out = fx.run(
        Command::new("mount")
            .args(["-t", "fuse.cowfs", "cowfs"])
            .arg(&lay.mnt)
            .args(["-o", &opts]),
    );
    let out = out.expect_ok();
    no_warnings(&out);
    let d = find_daemon(&fx, &lay.mnt);
    check("via_mount_t");
    fx.run(Command::new("umount").arg(&lay.mnt)).expect_ok();
    d.expect_clean_exit("umount(8)");

    let fstab = fx.path("fstab");
    write_file(
        &fstab,
        format!("cowfs {} fuse.cowfs {opts} 0 0\n", lay.mnt.display()),
    );
    let out = fx.run(
        Command::new("mount")
            .arg("--fstab")
            .arg(&fstab)
            .arg(&lay.mnt),
    );
    let out = out.expect_ok();
    no_warnings(&out);
    let d = find_daemon(&fx, &lay.mnt);
    check("via_fstab");
    fx.run(Command::new(bin()).arg("umount").arg(&lay.mnt))
        .expect_ok();
    d.expect_clean_exit("cowfs umount");
}

// ---------------------------------------------------------------------------
// 4. rootless: through fusermount3, and in a user namespace
// ---------------------------------------------------------------------------

#[test]
fn rootless_mount_through_fusermount3() {
    let fx = Fix::new(DEADLINE);
    let user = ensure_user(&fx, "cowfs-rootless");
    let _fuse = DevFuseOpen::ensure();
    // a copy of the binary the user can surely execute
    let cowfs = fx.path("bin/cowfs");
    fx.dir("bin");
    fs::copy(bin(), &cowfs).unwrap();
    let (l, u, mnt) = (fx.dir("L"), fx.dir("U"), fx.dir("mnt"));
    small_lower(&l);
    fx.run(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(&fx.root),
    )
    .expect_ok();
    chmod(&fx.root, 0o755);
    let sh = |script: &str| fx.as_user(&user, script).expect_ok();
    let m = |rel: &str| q(&mnt.join(rel));
    let pid_file = fx.path("cowfs.pid");
    let mount = format!(
        "{} mount {} {} {} --pid-file {}",
        q(&cowfs),
        q(&l),
        q(&u),
        q(&mnt),
        q(&pid_file)
    );
    let mounted = || {
        let out = sh(&mount);
        no_warnings(&out);
        let e = mount_entry(&mnt).expect("mounted");
        assert_eq!(e.fstype, "fuse.cowfs", "{e:?}");
        CowfsMount::adopt(read(&pid_file).trim().parse().unwrap(), &mnt)
    };
    let d = mounted();
    assert_eq!(sh(&format!("cat {}", m("f"))).stdout, "lower\n");
    // write: copy-up, owned by the user
    sh(&format!("echo more >> {}", m("f")));
    assert_eq!(read(&u.join("f")), "lower\nmore\n");
    assert_eq!(fs::metadata(u.join("f")).unwrap().uid(), user.uid);
    // delete
    sh(&format!("rm {0} && test ! -e {0}", m("gone")));
    let kind = whiteout_kind(&u, "gone");
    eprintln!("NOTE: rootless whiteout format in the upper: {kind}");
    // what the kernel allows this user decides the format
    let probe = fx.as_user(&user, "mknod wh-probe c 0 0 && rm wh-probe");
    let want = if probe.ok() { "chardev" } else { "oci" };
    assert_eq!(
        kind,
        want,
        "whiteout format; mknod probe: {}",
        probe.describe()
    );
    // rmdir + mkdir: opaque through user.overlay.opaque
    let out = sh(&format!(
        "rm {0}/z && rmdir {0} && mkdir {0} && ls -A {0}",
        m("rd")
    ));
    assert_eq!(out.stdout, "", "recreated dir shows lower entries");
    assert_eq!(
        lgetxattr(&u.join("rd"), "user.overlay.opaque").unwrap(),
        b"y"
    );
    // rename of a lower dir: redirect_dir=auto is off rootless (the kernel's userxattr mount
    // never follows a redirect), so the dir is copied up whole, opaque, no redirect
    let ino_before = sh(&format!("stat -c %i {} {}/y", m("mvdir"), m("mvdir"))).stdout;
    let out = sh(&format!("mv {} {} && ls {1}", m("mvdir"), m("moved")));
    assert_eq!(out.stdout, "y\n");
    let moved = u.join("moved");
    assert!(
        lgetxattr(&moved, "user.overlay.redirect").is_err(),
        "user.overlay.redirect on upper/moved; upper xattrs {:?}",
        llistxattr(&moved).unwrap()
    );
    assert_eq!(lgetxattr(&moved, "user.overlay.opaque").unwrap(), b"y");
    assert_eq!(read(&moved.join("y")), "y", "moved/y copied up");
    // and it moves again, with what it holds (no ESTALE: the numbers the kernel knows stay)
    sh(&format!(
        "mv {0} {1} && mv {1}/y {1}/y2 && mv {1}/y2 {1}/y && mv {1} {0}",
        m("moved"),
        m("moved2")
    ));
    let ino_after = sh(&format!(
        "ls -A {0} >/dev/null && stat -c %i {0} {0}/y",
        m("moved")
    ))
    .stdout;
    assert_eq!(
        ino_after, ino_before,
        "st_ino of the moved dir and its file"
    );
    whiteout_kind(&u, "mvdir");
    let listing = format!("cd {} && find . | sort && cat f moved/y keep/k", q(&mnt));
    let before = sh(&listing).stdout;
    for gone in ["gone", "mvdir", "rd/z"] {
        assert!(!before.contains(&format!("./{gone}\n")), "{gone}: {before}");
    }
    sh(&format!("fusermount3 -u {}", q(&mnt)));
    d.expect_clean_exit("fusermount3 -u (as the user)");
    // remount: the same tree
    let d = mounted();
    assert_eq!(sh(&listing).stdout, before, "tree changed across remount");
    sh(&format!("fusermount3 -u {}", q(&mnt)));
    d.expect_clean_exit("fusermount3 -u (as the user), second mount");
    // the kernel's rootless format (userxattr) over the same layers: the same tree, no EPERM
    assert_eq!(
        kind, "chardev",
        "the kernel's overlay reads 0/0 whiteouts only (unprivileged mknod of them: Linux 5.8+)"
    );
    let (kwork, kmnt) = (fx.dir("kernel-work"), fx.dir("kernel-mnt"));
    let k = crate::common::KernelOverlay::mount_with(
        std::slice::from_ref(&l),
        &u,
        &kwork,
        &kmnt,
        "userxattr",
    );
    let klisting = format!("cd {} && find . | sort && cat f moved/y keep/k", q(&kmnt));
    let out = fx.run(Command::new("/bin/sh").arg("-c").arg(&klisting));
    assert_eq!(
        out.expect_ok().stdout,
        before,
        "kernel userxattr overlay's tree"
    );
    k.unmount();
}

#[test]
fn user_namespace_mount_with_unshare() {
    let fx = Fix::new(DEADLINE);
    let probe = fx.run(Command::new("unshare").args(["-r", "-m", "true"]));
    assert!(
        probe.ok(),
        "`unshare -r -m` does not work here (the tests need user namespaces): {}",
        probe.describe()
    );
    let (l, u, w, mnt) = (fx.dir("L"), fx.dir("U"), fx.dir("W"), fx.dir("mnt"));
    small_lower(&l);
    let m = |rel: &str| q(&mnt.join(rel));
    let script = format!(
        "set -e; {bin} -o lowerdir={l},upperdir={u},workdir={w} {mnt}; \
         awk -v m={mnt} '$5 == m {{ print $(NF-2) }}' /proc/self/mountinfo; cat {f}; echo more >> {f}; rm {gone}; \
         rm {rd}/z; rmdir {rd}; mkdir {rd}; mv {mvdir} {moved}; ls {moved}; {bin} umount {mnt}; \
         echo unmounted",
        bin = q(Path::new(bin())),
        l = q(&l),
        u = q(&u),
        w = q(&w),
        mnt = q(&mnt),
        f = m("f"),
        gone = m("gone"),
        rd = m("rd"),
        mvdir = m("mvdir"),
        moved = m("moved"),
    );
    let out = fx.run(Command::new("unshare").args(["-r", "-m", "/bin/sh", "-c", &script]));
    let out = out.expect_ok();
    assert_eq!(
        out.stdout,
        "fuse.cowfs\nlower\ny\nunmounted\n",
        "{}",
        out.describe()
    );
    assert!(!is_mounted(&mnt), "user-namespace mount visible outside");
    assert_eq!(read(&u.join("f")), "lower\nmore\n");
    eprintln!(
        "NOTE: whiteout format in a user namespace: {}",
        whiteout_kind(&u, "gone")
    );
    assert_eq!(
        lgetxattr(&u.join("rd"), "user.overlay.opaque").unwrap(),
        b"y"
    );
    // redirect_dir=auto is off here too: user.overlay.* xattrs
    assert!(lgetxattr(&u.join("moved"), "user.overlay.redirect").is_err());
    assert_eq!(
        lgetxattr(&u.join("moved"), "user.overlay.opaque").unwrap(),
        b"y"
    );
    // the daemon exits after `cowfs umount` inside the namespace
    let start = std::time::Instant::now();
    while !cowfs_pids(&fx.root.to_string_lossy()).is_empty() {
        assert!(start.elapsed() < EXIT_TIMEOUT, "daemon still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// 5. teardown
// ---------------------------------------------------------------------------

fn teardown_by(how: &str) {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    let (d, _) = fx.mount(&lay.args(&lay.opts()), &lay.mnt);
    lay.check_rw("before");
    let mnt = lay.mnt.to_string_lossy().into_owned();
    match how {
        "fusermount3 -u" => {
            fx.run(Command::new("fusermount3").args(["-u", &mnt]))
                .expect_ok();
        }
        "cowfs umount" => {
            fx.cowfs(&["umount", &mnt]).expect_ok();
        }
        "SIGTERM" => d.send_signal(libc::SIGTERM),
        "SIGINT" => d.send_signal(libc::SIGINT),
        _ => unreachable!(),
    }
    let st = d.expect_clean_exit(how);
    assert!(st.is_some(), "{how}: daemon exit status not observed");
    assert_eq!(read(&lay.u.join("new-before")), "before");
    assert!(
        list_names(&lay.mnt).is_empty(),
        "mount point not empty after {how}"
    );
    // and the same layers mount again
    let (d, _) = fx.mount(&lay.args(&lay.opts()), &lay.mnt);
    lay.check_rw("after");
    fx.unmount(d);
}

#[test]
fn teardown_fusermount3_u() {
    teardown_by("fusermount3 -u");
}

#[test]
fn teardown_cowfs_umount() {
    teardown_by("cowfs umount");
}

#[test]
fn teardown_sigterm() {
    teardown_by("SIGTERM");
}

#[test]
fn teardown_sigint() {
    teardown_by("SIGINT");
}

#[test]
fn remount_after_sigkill() {
    let fx = Fix::new(DEADLINE);
    let lay = Lay::new(&fx);
    let args = lay.args(&lay.opts());
    let (mut d, _) = fx.mount(&args, &lay.mnt);
    lay.check_rw("before");
    d.send_signal(libc::SIGKILL);
    let st = d.wait_exit(EXIT_TIMEOUT).expect("daemon survived SIGKILL");
    if let Some(st) = st {
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    }
    assert!(is_mounted(&lay.mnt), "the kernel keeps a dead FUSE mount");
    assert_errno(
        fs::metadata(&lay.mnt),
        libc::ENOTCONN,
        "stat of the dead mount",
    );
    // the next mount on the same upper, work dir and mount point
    let mut all = args.clone();
    all.push("--pid-file".into());
    all.push(fx.path("again.pid").into());
    let out = fx.cowfs(&all);
    if out.ok() {
        eprintln!("NOTE: cowfs cleared the stale mount itself");
        let at_mnt = mounts().into_iter().filter(|e| e.mnt == lay.mnt).count();
        assert_eq!(at_mnt, 1, "new mount stacked on the stale one");
    } else {
        assert!(
            out.stderr.contains("not connected"),
            "failure does not say why: {}",
            out.describe()
        );
        eprintln!(
            "NOTE: cowfs does not clear a stale mount: `{}` fails with {:?}; the user must run \
             `fusermount3 -u MNT` (or `umount -l MNT`) first",
            out.what,
            out.stderr.trim()
        );
        fx.run(Command::new("fusermount3").arg("-u").arg(&lay.mnt))
            .expect_ok();
        assert!(!is_mounted(&lay.mnt), "stale mount survived fusermount3 -u");
        fx.cowfs(&all).expect_ok();
    }
    let pid: i32 = read(&fx.path("again.pid")).trim().parse().unwrap();
    let d = CowfsMount::adopt(pid, &lay.mnt);
    assert_eq!(mount_entry(&lay.mnt).unwrap().fstype, "fuse.cowfs");
    assert_eq!(read(&lay.mnt.join("new-before")), "before", "data kept");
    lay.check_rw("after");
    fx.unmount(d);
    assert!(
        !is_mounted(&lay.mnt),
        "a (stale) mount is left at the mount point after unmounting"
    );
}
