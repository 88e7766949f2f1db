//! cowfs as mount(8)'s helper. For `mount -t fuse.cowfs` (or `-t cowfs`, and fstab lines of
//! those types) mount(8) runs `/sbin/mount.fuse.cowfs` (`/sbin/mount.cowfs`), which `make
//! install` makes a link to cowfs, as
//!
//! ```text
//! mount.fuse.cowfs SOURCE MOUNTPOINT [-s] [-f] [-n] [-v] [-o OPTIONS] [-t TYPE] [-N NAMESPACE]
//! ```
//!
//! and takes the helper's exit status as its own. This module turns that into the cowfs
//! command line that does the same mount.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The names mount(8) looks for in /sbin, which the helper links have.
pub const HELPER_NAMES: [&str; 2] = ["mount.fuse.cowfs", "mount.cowfs"];

/// mount(8)'s exit status for a command line it cannot use.
pub const EXIT_USAGE: u8 = 1;
/// mount(8)'s exit status for a mount that failed.
pub const EXIT_MOUNT_FAILED: u8 = 32;

#[derive(Debug, PartialEq, Eq)]
pub enum HelperCall {
    /// `mount -f`: pretend, mount nothing.
    Fake,
    /// The cowfs command line (program name first) that does the mount.
    Mount(Vec<OsString>),
}

/// Whether cowfs was started under one of the helper names.
pub fn is_helper_name(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|name| HELPER_NAMES.iter().any(|helper| name == *helper))
}

/// Reads mount(8)'s helper arguments (those after the program name).
pub fn parse(args: &[OsString]) -> Result<HelperCall, String> {
    let mut positionals = Vec::new();
    let mut options: Vec<OsString> = Vec::new();
    let mut fake = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let Some(flags) = text.strip_prefix('-').filter(|f| !f.is_empty()) else {
            positionals.push(arg.clone());
            continue;
        };
        // A value may follow its flag directly (`-oro`) or as the next argument.
        let mut value_of = |flag: char, rest: &str| -> Result<OsString, String> {
            if rest.is_empty() {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("-{flag} needs a value"))
            } else {
                Ok(OsString::from(rest))
            }
        };
        for (i, flag) in flags.char_indices() {
            let rest = &flags[i + flag.len_utf8()..];
            match flag {
                // Sloppy (unknown options are only warned about anyway), no mtab (cowfs
                // writes none), verbose: nothing to do.
                's' | 'n' | 'v' => {}
                'f' => fake = true,
                'o' => {
                    options.push(value_of(flag, rest)?);
                    break;
                }
                // The type is the one this helper is for.
                't' => {
                    value_of(flag, rest)?;
                    break;
                }
                'N' => {
                    return Err("mounting in another mount namespace (-N) is not supported".into());
                }
                other => return Err(format!("unknown mount helper flag -{other}")),
            }
        }
    }
    if fake {
        return Ok(HelperCall::Fake);
    }
    if positionals.len() != 2 {
        return Err(format!(
            "expected SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS], got {} paths",
            positionals.len()
        ));
    }
    let mut command = vec![OsString::from("cowfs"), OsString::from("mount")];
    for option in options {
        command.push("-o".into());
        command.push(option);
    }
    // SOURCE and MOUNTPOINT are never taken for flags, whatever their names.
    command.push("--".into());
    command.extend(positionals);
    Ok(HelperCall::Mount(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_names_are_recognised_by_file_name() {
        assert!(is_helper_name(OsStr::new("/sbin/mount.fuse.cowfs")));
        assert!(is_helper_name(OsStr::new("mount.cowfs")));
        assert!(!is_helper_name(OsStr::new("/usr/local/bin/cowfs")));
        assert!(!is_helper_name(OsStr::new("mount.fuse3")));
    }

    #[test]
    fn mount_arguments_become_a_cowfs_mount() {
        let call = parse(&args(&[
            "cowfs",
            "/mnt",
            "-n",
            "-o",
            "rw,lowerdir=/l,upperdir=/u,workdir=/w",
        ]))
        .unwrap();
        assert_eq!(
            call,
            HelperCall::Mount(args(&[
                "cowfs",
                "mount",
                "-o",
                "rw,lowerdir=/l,upperdir=/u,workdir=/w",
                "--",
                "cowfs",
                "/mnt"
            ]))
        );
        let joined = parse(&args(&["/a:/b", "/mnt", "-sv", "-oro", "-t", "fuse.cowfs"])).unwrap();
        assert_eq!(
            joined,
            HelperCall::Mount(args(&["cowfs", "mount", "-o", "ro", "--", "/a:/b", "/mnt"]))
        );
    }

    #[test]
    fn fake_mounts_nothing_and_bad_calls_are_errors() {
        assert_eq!(
            parse(&args(&["cowfs", "/mnt", "-f", "-o", "lowerdir=/l"])).unwrap(),
            HelperCall::Fake
        );
        assert!(parse(&args(&["/mnt"])).is_err());
        assert!(parse(&args(&["a", "/mnt", "-o"])).is_err());
        assert!(parse(&args(&["a", "/mnt", "-x"])).is_err());
        assert!(parse(&args(&["a", "/mnt", "-N", "/proc/1/ns/mnt"])).is_err());
    }
}
