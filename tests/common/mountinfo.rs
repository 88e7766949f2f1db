//! The mount table, one parser for it ([`mounts`], [`mount_entry`], [`mounts_under`],
//! [`is_mounted`]), and the cleanup of what a test left mounted or running.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::mount::wait_pid_exit;
use super::sys::{check, cstr};

// ---------------------------------------------------------------------------
// mount detection
// ---------------------------------------------------------------------------

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mnt: PathBuf,
    /// per-mount options (`rw,nosuid,nodev,...`)
    pub opts: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

/// Undoes mountinfo's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount in /proc/self/mountinfo, in its order (a later one is on top of an earlier one
/// at the same place).
pub fn mounts() -> Vec<MountEntry> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut out = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < sep + 4 || sep < 6 {
            continue;
        }
        out.push(MountEntry {
            mnt: PathBuf::from(unescape_mountinfo(f[4])),
            opts: f[5].split(',').map(str::to_string).collect(),
            fstype: f[sep + 1].to_string(),
            source: unescape_mountinfo(f[sep + 2]),
            super_opts: f[sep + 3].to_string(),
        });
    }
    out
}

/// The topmost mount exactly at `mnt`.
pub fn mount_entry(mnt: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.mnt == mnt)
}

/// (mount point, fstype) of every mount at or under `root`.
pub fn mounts_under(root: &Path) -> BTreeSet<(PathBuf, String)> {
    mounts()
        .into_iter()
        .filter(|m| m.mnt.starts_with(root))
        .map(|m| (m.mnt, m.fstype))
        .collect()
}

/// fstype of whatever is mounted exactly at `mnt` (topmost), per /proc/self/mountinfo.
pub fn mount_fstype(mnt: &Path) -> Option<String> {
    mount_entry(mnt).map(|m| m.fstype)
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_fstype(mnt).is_some()
}

fn st_dev(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.dev())
}

/// mountpoint's st_dev differs from its parent's.
pub(super) fn dev_differs(mnt: &Path) -> bool {
    match (st_dev(mnt), mnt.parent().and_then(st_dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

pub fn umount2(mnt: &Path, flags: i32) -> io::Result<()> {
    check(unsafe { libc::umount2(cstr(mnt).as_ptr(), flags) })
}

pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => {
            // state is the field after the ")" closing comm
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
    }
}

/// Pids of cowfs processes (by executable name) with `needle` in some argument.
pub fn cowfs_pids(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy().into_owned();
        let exe = exe.trim_end_matches(" (deleted)");
        if !exe.rsplit('/').next().unwrap_or("").starts_with("cowfs") {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .any(|a| a == needle || a.contains(&format!("{needle}/")))
            && pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// Kills (-9) every cowfs process naming `root` (or a path under it) in its argv, detaches every
/// mount at or under `root` (deepest first), and reaps the killed daemons: the last line of
/// defence of a fixture, also when a FUSE request hangs.
pub fn cleanup_under(root: &Path) {
    let needle = root.to_string_lossy().into_owned();
    let pids = cowfs_pids(&needle);
    for &pid in &pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for _ in 0..20 {
        let mut under: Vec<PathBuf> = mounts_under(root).into_iter().map(|(m, _)| m).collect();
        if under.is_empty() {
            break;
        }
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in &under {
            let _ = umount2(m, libc::MNT_DETACH);
        }
    }
    for pid in pids {
        let _ = wait_pid_exit(pid, Duration::from_secs(5));
    }
}
