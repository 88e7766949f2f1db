//! Host-level helpers for tests/dropin.rs: an unprivileged user, /dev/fuse access, a binary
//! installed into the system for mount(8), finding daemons started by someone else.

use super::*;
use std::os::unix::fs::MetadataExt;

pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user `name`, created with `useradd -M -s /usr/sbin/nologin` if missing.
pub fn ensure_user(fx: &Fix, name: &str) -> User {
    let id = |flag: &str| fx.run(Command::new("id").args([flag, name]));
    if !id("-u").ok() {
        let out = fx.run(Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", name]));
        // a concurrent useradd may have won
        assert!(out.ok() || id("-u").ok(), "{}", out.describe());
    }
    let num = |flag: &str| -> u32 { id(flag).expect_ok().stdout.trim().parse().unwrap() };
    User {
        name: name.to_string(),
        uid: num("-u"),
        gid: num("-g"),
    }
}

/// Makes /dev/fuse usable by everyone for the guard's lifetime; restores the mode after.
pub struct DevFuseOpen {
    restore: Option<u32>,
}

impl DevFuseOpen {
    pub fn ensure() -> DevFuseOpen {
        let mode = fs::metadata("/dev/fuse").expect("/dev/fuse").mode() & 0o7777;
        if mode & 0o006 == 0o006 {
            return DevFuseOpen { restore: None };
        }
        chmod(Path::new("/dev/fuse"), 0o666);
        DevFuseOpen {
            restore: Some(mode),
        }
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        if let Some(mode) = self.restore {
            chmod(Path::new("/dev/fuse"), mode);
        }
    }
}

/// `'path'` for a shell script (temp paths hold no single quotes).
pub fn q(p: &Path) -> String {
    let s = p.to_string_lossy();
    assert!(!s.contains('\''), "quote in {s}");
    format!("'{s}'")
}

impl Fix {
    /// `sh -c SCRIPT` as `user` (cwd: the temp dir).
    pub fn as_user(&self, user: &User, script: &str) -> Out {
        use std::os::unix::process::CommandExt;
        self.run(
            Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .uid(user.uid)
                .gid(user.gid)
                .current_dir(&self.root)
                .env("HOME", &self.root)
                .env("USER", &user.name)
                .env_remove("RUST_LOG"),
        )
    }
}

/// The lower layer of the rootless tests: f, gone, rd/z, mvdir/y, keep/k.
pub fn small_lower(l: &Path) {
    write_file(&l.join("f"), "lower\n");
    write_file(&l.join("gone"), "g");
    write_file(&l.join("rd/z"), "z");
    write_file(&l.join("mvdir/y"), "y");
    write_file(&l.join("keep/k"), "k");
}

/// How a deletion was recorded in `dir` for `name`: "chardev" (0/0), "oci" (`.wh.NAME`).
#[track_caller]
pub fn whiteout_kind(dir: &Path, name: &str) -> &'static str {
    if fs::symlink_metadata(dir.join(name)).is_ok_and(|m| is_whiteout(&m)) {
        "chardev"
    } else if dir.join(format!(".wh.{name}")).exists() {
        "oci"
    } else {
        panic!(
            "no whiteout for {name} in {}: {:?}",
            dir.display(),
            list_names(dir)
        )
    }
}

/// The built binary installed at a path for the length of a test; whatever was there before
/// is put back (or the file removed if there was nothing).
pub struct Installed {
    path: PathBuf,
    before: Option<Vec<u8>>,
}

impl Installed {
    pub fn new(path: &str) -> Installed {
        let path = PathBuf::from(path);
        let before = fs::read(&path).ok();
        let tmp = path.with_extension("dropin-tmp");
        fs::copy(bin(), &tmp).unwrap();
        chmod(&tmp, 0o755);
        fs::rename(&tmp, &path).unwrap(); // rename: the old one may be running
        Installed { path, before }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        match &self.before {
            None => {
                let _ = fs::remove_file(&self.path);
            }
            Some(data) => {
                let tmp = self.path.with_extension("dropin-tmp");
                if fs::write(&tmp, data).is_ok() {
                    chmod(&tmp, 0o755);
                    let _ = fs::rename(&tmp, &self.path);
                }
            }
        }
    }
}

/// The one cowfs daemon whose argv names `fx`'s dir.
pub fn find_daemon(fx: &Fix, mnt: &Path) -> CowfsMount {
    let pids = cowfs_pids(&fx.root.to_string_lossy());
    assert_eq!(
        pids.len(),
        1,
        "cowfs daemons for {}: {pids:?}",
        fx.root.display()
    );
    let argv = fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap_or_default();
    eprintln!(
        "daemon argv: {:?}",
        String::from_utf8_lossy(&argv).replace('\0', " ")
    );
    CowfsMount::adopt(pids[0], mnt)
}
