//! The `-o` option grammar, as fuse-overlayfs and mount(8) pass it:
//! comma-separated `key[=value]` items, where a value may be quoted
//! (`context="a,b"`) and a lower dir list may escape colons as `\:`.

use std::path::PathBuf;

use crate::error::SetupError;
pub use crate::fuse_adapter::IoUring;
use crate::idmap::{IdMap, OverrideXattr, Ownership};
pub use crate::overlay::RedirectDir;

/// What the `-o` options ask for.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    pub lowerdir: Option<String>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub read_only: bool,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    pub noatime: bool,
    /// `strictatime`: every read changes the access time.
    pub strictatime: bool,
    /// `volatile` or `fsync=0`: skip syncs.
    pub no_sync: bool,
    /// `timeout=SECONDS`: how long the kernel may cache entries.
    pub timeout: Option<f64>,
    /// `metacopy=on`: attribute changes copy up metadata only.
    pub metacopy: bool,
    /// `fd_cache=N`: how many O_PATH fds cowfs keeps open for reuse.
    pub fd_cache: Option<usize>,
    /// `poll_us=N`: how many microseconds a request thread polls for the
    /// next request before it sleeps (`None`: cowfs's default; 0: never).
    pub poll_us: Option<u64>,
    /// `static_nlink`: merged dirs report a link count of 1.
    pub static_nlink: bool,
    /// `passthrough=off` keeps all file I/O in the daemon.
    pub passthrough: bool,
    /// `passthrough=all`: lower files open for reading pass through too.
    pub passthrough_lower: bool,
    /// `passthrough=on` or `all` was given: passthrough asked for, which
    /// needs `open=daemon`.
    pub passthrough_asked: bool,
    /// `open=kernel|daemon`: whether the kernel opens files on its own
    /// (`None`: not given; the `COWFS_OPEN` environment variable, else kernel).
    pub open: Option<OpenBy>,
    /// `redirect_dir=`: how a dir with lower content is renamed.
    pub redirect_dir: RedirectDir,
    /// `io_uring=auto|on|off`: how requests reach the daemon (`None`: not
    /// given; the `COWFS_IO_URING` environment variable, else auto).
    pub io_uring: Option<IoUring>,
    /// `userxattr`: overlay metadata goes to `user.overlay.*` even where
    /// `trusted.overlay.*` could be written (what the kernel's `userxattr` reads).
    pub userxattr: bool,
    /// uidmapping=, gidmapping=, squash_to_*, xattr_permissions=.
    pub ownership: Ownership,
    /// Items cowfs accepted without acting on them, or did not know.
    pub ignored: Vec<String>,
    pub unknown: Vec<String>,
}

/// Who opens and closes files (`open=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpenBy {
    /// Every open and close is a request: cowfs holds the real file open
    /// for the open file and can pass it through to the kernel.
    Daemon,
    /// The kernel opens and closes files without a request (FUSE's no-open
    /// mode): reads and writes name the inode, and cowfs does them on the
    /// real file the inode shows at that moment. No passthrough. The
    /// default: an open, a close and a read of cached pages then cost no
    /// round trip, as on the kernel's overlayfs.
    #[default]
    Kernel,
}

impl OpenBy {
    pub fn parse(value: &str) -> Result<OpenBy, String> {
        match value {
            "daemon" => Ok(OpenBy::Daemon),
            "kernel" => Ok(OpenBy::Kernel),
            other => Err(format!(
                "option 'open' must be kernel or daemon, not '{other}'"
            )),
        }
    }
}

/// The longest poll window `poll_us=` takes: past a millisecond, polling
/// would only burn CPU time (a caller's next request comes well within it).
const MAX_POLL_US: u64 = 1000;

/// Options accepted for compatibility that change nothing here.
const ACCEPTED: &[&str] = &[
    "rw",
    "dev",
    "suid",
    "exec",
    "nodiratime",
    "async",
    "sync",
    "dirsync",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "_netdev",
    "nofail",
    "noacl",
    "static_nlink",
    "squash_to_root",
    "max_idle_threads",
    "threaded",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "uidmapping",
    "gidmapping",
    "squash_to_uid",
    "squash_to_gid",
    "xattr_permissions",
    "allow_other",
    "allow_root",
    "default_permissions",
    "fsname",
    "subtype",
    "index",
    "metacopy",
    "xino",
    "plugins",
    "debug",
];

/// Splits an option string on commas outside double quotes.
pub fn split_options(spec: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    items.into_iter().filter(|item| !item.is_empty()).collect()
}

/// Parses every `-o` argument given; later items win.
pub fn parse(specs: &[String]) -> Result<MountOptions, SetupError> {
    parse_items(specs).map_err(SetupError::Invalid)
}

fn parse_items(specs: &[String]) -> Result<MountOptions, String> {
    let mut out = MountOptions {
        passthrough: true,
        ..MountOptions::default()
    };
    for item in specs.iter().flat_map(|s| split_options(s)) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (item.trim(), None),
        };
        let need = |v: Option<&str>| -> Result<String, String> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(format!("option '{key}' needs a value")),
            }
        };
        match key {
            "lowerdir" => out.lowerdir = Some(need(value)?),
            "upperdir" => out.upperdir = Some(PathBuf::from(need(value)?)),
            "workdir" => out.workdir = Some(PathBuf::from(need(value)?)),
            "ro" => out.read_only = true,
            "rw" => out.read_only = false,
            "nodev" => out.nodev = true,
            "nosuid" => out.nosuid = true,
            "noexec" => out.noexec = true,
            "noatime" => (out.noatime, out.strictatime) = (true, false),
            "strictatime" => (out.noatime, out.strictatime) = (false, true),
            "relatime" | "atime" => (out.noatime, out.strictatime) = (false, false),
            "dev" => out.nodev = false,
            "suid" => out.nosuid = false,
            "exec" => out.noexec = false,
            "volatile" => out.no_sync = true,
            "static_nlink" => out.static_nlink = true,
            "fd_cache" => {
                let v = need(value)?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("option 'fd_cache' needs a number of fds, not '{v}'"))?;
                if !(16..=1 << 20).contains(&n) {
                    return Err(format!("option 'fd_cache' out of range (16..1048576): {n}"));
                }
                out.fd_cache = Some(n);
            }
            "poll_us" => {
                let v = need(value)?;
                let n: u64 = v.parse().map_err(|_| {
                    format!("option 'poll_us' needs a number of microseconds, not '{v}'")
                })?;
                if n > MAX_POLL_US {
                    return Err(format!(
                        "option 'poll_us' out of range (0..{MAX_POLL_US}): {n}"
                    ));
                }
                out.poll_us = Some(n);
            }
            "passthrough" => {
                let value = need(value)?;
                out.passthrough_lower = value == "all";
                out.passthrough_asked = value == "all" || value == "on";
                out.passthrough = out.passthrough_lower
                    || on_off(key, &value).map_err(|_| {
                        format!("option 'passthrough' must be on, off or all, not '{value}'")
                    })?;
            }
            "redirect_dir" => {
                out.redirect_dir = match need(value)?.as_str() {
                    "on" => RedirectDir::On,
                    "off" | "follow" | "nofollow" => RedirectDir::Off,
                    "auto" => RedirectDir::Auto,
                    other => {
                        return Err(format!(
                            "option 'redirect_dir' must be on, off or auto, not '{other}'"
                        ));
                    }
                }
            }
            "userxattr" => out.userxattr = true,
            "open" => out.open = Some(OpenBy::parse(&need(value)?)?),
            "io_uring" => out.io_uring = Some(IoUring::parse(&need(value)?)?),
            "metacopy" => {
                out.metacopy = match need(value)?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => {
                        return Err(format!(
                            "option 'metacopy' must be on or off, not '{other}'"
                        ));
                    }
                }
            }
            "fsync" => out.no_sync = need(value)? == "0",
            "timeout" => {
                let v = need(value)?;
                let secs: f64 = v.trim_end_matches('s').parse().map_err(|_| {
                    format!("option 'timeout' needs a number of seconds, not '{v}'")
                })?;
                if !(0.0..=86_400.0).contains(&secs) {
                    return Err(format!("option 'timeout' out of range: {v}"));
                }
                out.timeout = Some(secs);
            }
            "uidmapping" => out.ownership.uids = IdMap::parse(&need(value)?)?,
            "gidmapping" => out.ownership.gids = IdMap::parse(&need(value)?)?,
            "squash_to_root" => {
                out.ownership.squash_uid.get_or_insert(0);
                out.ownership.squash_gid.get_or_insert(0);
            }
            "squash_to_uid" => out.ownership.squash_uid = Some(parse_id(key, &need(value)?)?),
            "squash_to_gid" => out.ownership.squash_gid = Some(parse_id(key, &need(value)?)?),
            "xattr_permissions" => {
                out.ownership.override_xattr = match need(value)?.as_str() {
                    "0" => None,
                    "1" => Some(OverrideXattr::FuseOverlayfs),
                    "2" => Some(OverrideXattr::Containers),
                    other => {
                        return Err(format!(
                            "option 'xattr_permissions' must be 0, 1 or 2, not '{other}'"
                        ));
                    }
                }
            }
            k if ACCEPTED.contains(&k) => out.ignored.push(item.clone()),
            _ => out.unknown.push(item.clone()),
        }
    }
    Ok(out)
}

impl MountOptions {
    /// When reads change access times; the last of the atime options wins.
    pub fn atime_mode(&self) -> crate::sys::AtimeMode {
        use crate::sys::AtimeMode;
        match (self.noatime, self.strictatime) {
            (true, _) => AtimeMode::NoAtime,
            (false, true) => AtimeMode::StrictAtime,
            (false, false) => AtimeMode::Relatime,
        }
    }
}

fn on_off(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "1" | "true" => Ok(true),
        "off" | "0" | "false" => Ok(false),
        other => Err(format!("option '{key}' must be on or off, not '{other}'")),
    }
}

fn parse_id(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("option '{key}' needs a numeric id, not '{value}'"))
}

/// Splits a lower dir list on `:`, where `\:` is a literal colon. Empty
/// entries are kept so the caller can reject them.
pub fn split_lowers(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                current.push(':');
                chars.next();
            }
            ':' => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_commas_stay_in_their_item() {
        assert_eq!(
            split_options(r#"lowerdir=/a:/b,context="x,y",,ro"#),
            vec!["lowerdir=/a:/b", r#"context="x,y""#, "ro"]
        );
    }

    #[test]
    fn podman_style_options_parse() {
        let o = parse(&["lowerdir=/l1:/l2,upperdir=/u,workdir=/w,,volatile".into()]).unwrap();
        assert_eq!(o.lowerdir.as_deref(), Some("/l1:/l2"));
        assert_eq!(o.upperdir, Some(PathBuf::from("/u")));
        assert_eq!(o.workdir, Some(PathBuf::from("/w")));
        assert!(o.no_sync);
        assert!(o.unknown.is_empty());
    }

    #[test]
    fn unknown_options_are_reported_not_fatal() {
        let o = parse(&["lowerdir=/a,frobnicate,nodev".into()]).unwrap();
        assert_eq!(o.unknown, vec!["frobnicate"]);
        assert!(o.nodev);
    }

    #[test]
    fn ownership_options_parse() {
        let o = parse(&[
            "lowerdir=/a,uidmapping=0:1000:1:1:110000:65536,squash_to_gid=7,xattr_permissions=2"
                .into(),
        ])
        .unwrap();
        assert_eq!(o.ownership.uids.shown(0), 1000);
        assert_eq!(o.ownership.squash_gid, Some(7));
        assert_eq!(o.ownership.override_xattr, Some(OverrideXattr::Containers));
        let root = parse(&["squash_to_root,squash_to_uid=5".into()]).unwrap();
        assert_eq!(root.ownership.squash_uid, Some(5), "squash_to_uid wins");
        assert!(parse(&["uidmapping=1:2".into()]).is_err());
        assert!(parse(&["xattr_permissions=3".into()]).is_err());
    }

    #[test]
    fn poll_us_is_bounded() {
        assert_eq!(parse(&["poll_us=0".into()]).unwrap().poll_us, Some(0));
        assert_eq!(parse(&["poll_us=250".into()]).unwrap().poll_us, Some(250));
        assert_eq!(parse(&[]).unwrap().poll_us, None);
        assert!(parse(&["poll_us=5000".into()]).is_err());
        assert!(parse(&["poll_us=soon".into()]).is_err());
    }

    #[test]
    fn open_names_who_opens_files() {
        assert_eq!(
            parse(&["open=kernel".into()]).unwrap().open,
            Some(OpenBy::Kernel)
        );
        assert_eq!(
            parse(&["open=daemon".into()]).unwrap().open,
            Some(OpenBy::Daemon)
        );
        assert_eq!(parse(&[]).unwrap().open, None);
        assert!(parse(&["open=sometimes".into()]).is_err());
        assert!(parse(&["open".into()]).is_err());
    }

    #[test]
    fn fd_cache_is_bounded() {
        assert_eq!(parse(&["fd_cache=512".into()]).unwrap().fd_cache, Some(512));
        assert!(parse(&["fd_cache=3".into()]).is_err());
        assert!(parse(&["fd_cache=lots".into()]).is_err());
    }

    #[test]
    fn last_atime_option_wins() {
        use crate::sys::AtimeMode;
        let mode = |o: &str| parse(&[o.into()]).unwrap().atime_mode();
        assert_eq!(mode("rw"), AtimeMode::Relatime);
        assert_eq!(mode("noatime"), AtimeMode::NoAtime);
        assert_eq!(mode("noatime,strictatime"), AtimeMode::StrictAtime);
        assert_eq!(mode("strictatime,relatime"), AtimeMode::Relatime);
    }

    #[test]
    fn redirect_dir_and_userxattr_parse() {
        let mode = |o: &str| parse(&[o.into()]).unwrap().redirect_dir;
        assert_eq!(mode("rw"), RedirectDir::Auto);
        assert_eq!(mode("redirect_dir=on"), RedirectDir::On);
        assert_eq!(mode("redirect_dir=off"), RedirectDir::Off);
        assert_eq!(mode("redirect_dir=nofollow"), RedirectDir::Off);
        assert_eq!(mode("redirect_dir=on,redirect_dir=auto"), RedirectDir::Auto);
        assert!(parse(&["redirect_dir=maybe".into()]).is_err());
        assert!(parse(&["redirect_dir".into()]).is_err());
        let o = parse(&["userxattr".into()]).unwrap();
        assert!(o.userxattr && o.ignored.is_empty() && o.unknown.is_empty());
        assert!(!parse(&["rw".into()]).unwrap().userxattr);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse(&["lowerdir=".into()]).is_err());
        assert!(parse(&["timeout=abc".into()]).is_err());
    }

    #[test]
    fn escaped_colons_and_empty_lowers() {
        assert_eq!(split_lowers(r"/a\:b:/c"), vec!["/a:b", "/c"]);
        assert_eq!(split_lowers("/a::/b"), vec!["/a", "", "/b"]);
        assert_eq!(split_lowers(":/a"), vec!["", "/a"]);
    }
}
