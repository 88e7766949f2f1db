//! The command line, and the checks that turn it into a mount plan before
//! anything on disk is touched.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::error::{SetupError, SetupResult};
use crate::options::{self, MountOptions};
use crate::workdir::OWN_ENTRIES;

#[derive(Parser, Debug)]
#[command(
    name = "cowfs",
    version,
    about = "A copy-on-write union filesystem (overlay) on FUSE",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// fuse-overlayfs style: cowfs -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT
    #[command(flatten)]
    pub mount: MountArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount layers: LOWER[:LOWER...] [UPPER] MOUNTPOINT (leftmost lower is the top one).
    ///
    /// Without UPPER the mount is read-only. Without --workdir the work dir is
    /// <dir of UPPER>/.<name of UPPER>.cowfs-work, beside the upper dir on the
    /// same filesystem; nothing of cowfs's own goes inside UPPER.
    Mount(MountArgs),
    /// Unmount a cowfs mount.
    Umount { mountpoint: PathBuf },
    /// List what an upper dir changes over its lowers, one `A|C|D PATH` a line (no mount).
    Diff(crate::changes_cli::DiffArgs),
    /// Write an upper dir's changes as an OCI image layer (tar), to stdout or -o FILE.
    Export(crate::changes_cli::ExportArgs),
    /// Print the man page (man) or a shell's completion script (bash, zsh, fish) on stdout.
    ///
    /// `make install` installs the copies kept in the source tree (man/, completions/), which
    /// `make docs` writes with this command.
    Generate {
        #[arg(value_parser = ["man", "bash", "zsh", "fish"])]
        artifact: String,
    },
    /// Show the live figures of a cowfs mount: requests per operation, copy-ups, whiteouts, table sizes.
    ///
    /// Requests per FUSE operation (count, total time, median and 99th percentile), copy-ups
    /// (count, bytes copied and cloned, time), whiteouts and opaque dirs made, the inode table,
    /// open handles, passthrough files, fd cache hits and misses, kept listings, and the
    /// transport. The daemon serves them on a Unix socket only the mount's owner and root may
    /// use: /run/cowfs/MAJOR-MINOR.sock for root's mounts, $XDG_RUNTIME_DIR/cowfs/ (else
    /// /run/user/UID/cowfs/) for other users'. Fails on a dir that is not a cowfs mount and on
    /// a mount whose daemon is gone.
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    pub mountpoint: PathBuf,
    /// One JSON object (a line) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print again every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    pub watch: Option<std::time::Duration>,
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !(0.01..=86400.0).contains(&seconds) {
        return Err("give 0.01 to 86400 seconds".into());
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[derive(Args, Debug, Default)]
pub struct MountArgs {
    /// LOWER[:LOWER...] [UPPER] MOUNTPOINT, or just MOUNTPOINT with -o lowerdir=...
    #[arg(value_name = "PATHS")]
    pub paths: Vec<OsString>,
    /// Work dir on the upper's filesystem [default: <dir of UPPER>/.<name of UPPER>.cowfs-work]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Mount options: lowerdir=, upperdir=, workdir=, ro, nodev, nosuid, volatile, timeout=,
    /// passthrough=on|off|all, io_uring=auto|on|off, open=daemon|kernel, ... (see cowfs(1))
    #[arg(short = 'o', value_name = "OPT[,OPT...]", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Stay attached instead of running as a background daemon.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Threads serving requests [default: 2 per CPU, at least 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Log level (overrides RUST_LOG).
    #[arg(long, value_name = "LEVEL", value_parser = ["off", "error", "warn", "info", "debug", "trace"])]
    pub log_level: Option<String>,
    /// Write logs to this file (a daemon has no stderr).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Write the daemon's pid here once the mount is live.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

pub const MOUNT_USAGE: &str = "Usage: cowfs mount LOWER[:LOWER...] [UPPER] MOUNTPOINT [OPTIONS]\n       cowfs -o lowerdir=LOWER[:LOWER...][,upperdir=UPPER,workdir=WORK] MOUNTPOINT";

/// A checked mount: every path exists, is a dir, and the layers do not
/// overlap one another or the mount point.
#[derive(Debug)]
pub struct MountPlan {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    /// The work dir is cowfs's default and may need creating.
    pub workdir_is_default: bool,
    pub mountpoint: PathBuf,
    pub options: MountOptions,
}

fn existing_dir(what: &'static str, path: &Path) -> SetupResult<PathBuf> {
    for component in path.components() {
        if component.as_os_str().len() > 255 {
            return Err(SetupError::Invalid(format!(
                "{what} {}: a path component is longer than 255 bytes",
                path.display()
            )));
        }
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| SetupError::io(what, path, e))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| SetupError::io(what, path, e))?;
    if !meta.is_dir() {
        return Err(SetupError::NotADirectory {
            what,
            path: path.to_owned(),
        });
    }
    Ok(canonical)
}

/// `inner` is `outer` or below it.
fn within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

/// Where the work dir goes when none is given: beside the upper dir.
pub fn default_workdir(upper: &Path) -> SetupResult<PathBuf> {
    let name = upper.file_name().ok_or_else(|| {
        SetupError::Invalid(format!(
            "upper dir {} has no parent to hold a work dir; give --workdir",
            upper.display()
        ))
    })?;
    let parent = upper.parent().ok_or_else(|| {
        SetupError::Invalid(format!(
            "upper dir {} has no parent; give --workdir",
            upper.display()
        ))
    })?;
    let mut dir_name = OsString::from(".");
    dir_name.push(name);
    dir_name.push(".cowfs-work");
    Ok(parent.join(dir_name))
}

impl MountArgs {
    /// Checks the arguments. Touches nothing on disk.
    pub fn plan(&self) -> SetupResult<MountPlan> {
        let mut options = options::parse(&self.options)?;
        let mut paths: Vec<&OsString> = self.paths.iter().collect();
        let (lower_spec, upper, mountpoint) = if let Some(lowerdir) = options.lowerdir.clone() {
            // fuse-overlayfs / mount.fuse3 form: an optional source, then the mount point.
            if paths.is_empty() || paths.len() > 2 {
                return Err(SetupError::Usage(
                    "with -o lowerdir=..., give exactly one MOUNTPOINT (optionally after a SOURCE)"
                        .into(),
                ));
            }
            let mountpoint = PathBuf::from(paths.pop().cloned().unwrap_or_default());
            (lowerdir, options.upperdir.clone(), mountpoint)
        } else {
            if options.upperdir.is_some() || options.workdir.is_some() {
                return Err(SetupError::Invalid(
                    "-o upperdir=/workdir= given without lowerdir=".into(),
                ));
            }
            match paths.as_slice() {
                [lowers, mountpoint] => (
                    lowers.to_string_lossy().into_owned(),
                    None,
                    PathBuf::from(mountpoint),
                ),
                [lowers, upper, mountpoint] => (
                    lowers.to_string_lossy().into_owned(),
                    Some(PathBuf::from(upper)),
                    PathBuf::from(mountpoint),
                ),
                [] => return Err(SetupError::Usage("no layers given".into())),
                _ => {
                    return Err(SetupError::Usage(format!(
                        "expected LOWER[:LOWER...] [UPPER] MOUNTPOINT, got {} paths",
                        paths.len()
                    )));
                }
            }
        };
        if options.lowerdir.is_some() && self.workdir.is_some() {
            options.workdir = self.workdir.clone();
        }
        let workdir_arg = self.workdir.clone().or(options.workdir.clone());

        let mut lowers = Vec::new();
        for (i, lower) in options::split_lowers(&lower_spec).iter().enumerate() {
            if lower.is_empty() {
                return Err(SetupError::Invalid(format!(
                    "lower dir list '{lower_spec}' has an empty entry (position {})",
                    i + 1
                )));
            }
            lowers.push(existing_dir("lower dir", Path::new(lower))?);
        }
        if lowers.len() > 500 {
            return Err(SetupError::Invalid(format!(
                "too many lower dirs ({}), at most 500",
                lowers.len()
            )));
        }
        let mountpoint = existing_dir("mount point", &mountpoint)?;
        let upper = match upper {
            Some(upper) => Some(existing_dir("upper dir", &upper)?),
            None => None,
        };

        let mut seen = HashSet::new();
        for lower in &lowers {
            if !seen.insert(lower.clone()) {
                return Err(SetupError::Invalid(format!(
                    "lower dir {} is given twice",
                    lower.display()
                )));
            }
            if within(&mountpoint, lower) || within(lower, &mountpoint) {
                return Err(SetupError::Invalid(format!(
                    "mount point {} and lower dir {} overlap",
                    mountpoint.display(),
                    lower.display()
                )));
            }
        }

        let mut workdir = None;
        let mut workdir_is_default = false;
        if let Some(upper) = &upper {
            for lower in &lowers {
                if within(upper, lower) {
                    return Err(SetupError::Invalid(format!(
                        "upper dir {} is inside lower dir {}",
                        upper.display(),
                        lower.display()
                    )));
                }
                if within(lower, upper) {
                    return Err(SetupError::Invalid(format!(
                        "lower dir {} is inside upper dir {}",
                        lower.display(),
                        upper.display()
                    )));
                }
            }
            if within(&mountpoint, upper) || within(upper, &mountpoint) {
                return Err(SetupError::Invalid(format!(
                    "mount point {} and upper dir {} overlap",
                    mountpoint.display(),
                    upper.display()
                )));
            }
            let upper_dev = std::fs::metadata(upper)
                .map_err(|e| SetupError::io("upper dir", upper, e))?
                .dev();
            let (dir, is_default) = match &workdir_arg {
                Some(dir) => (existing_dir("work dir", dir)?, false),
                None => {
                    let dir = default_workdir(upper)?;
                    let parent = dir.parent().unwrap_or(Path::new("/"));
                    let parent_dev = std::fs::metadata(parent)
                        .map_err(|e| SetupError::io("work dir's parent", parent, e))?
                        .dev();
                    if parent_dev != upper_dev {
                        return Err(SetupError::Invalid(format!(
                            "upper dir {} is the root of its filesystem, so no work dir fits beside it; give --workdir",
                            upper.display()
                        )));
                    }
                    match std::fs::symlink_metadata(&dir) {
                        Ok(meta) if !meta.is_dir() => {
                            return Err(SetupError::NotADirectory {
                                what: "work dir",
                                path: dir,
                            });
                        }
                        Ok(_) => (dir, false),
                        Err(_) => (dir, true),
                    }
                }
            };
            if within(&dir, upper) {
                return Err(SetupError::Invalid(format!(
                    "work dir {} is inside upper dir {}",
                    dir.display(),
                    upper.display()
                )));
            }
            if within(upper, &dir) {
                return Err(SetupError::Invalid(format!(
                    "upper dir {} is inside work dir {}",
                    upper.display(),
                    dir.display()
                )));
            }
            for lower in &lowers {
                if within(&dir, lower) || within(lower, &dir) {
                    return Err(SetupError::Invalid(format!(
                        "work dir {} and lower dir {} overlap",
                        dir.display(),
                        lower.display()
                    )));
                }
            }
            if within(&dir, &mountpoint) || within(&mountpoint, &dir) {
                return Err(SetupError::Invalid(format!(
                    "work dir {} and mount point {} overlap",
                    dir.display(),
                    mountpoint.display()
                )));
            }
            if !is_default {
                let work_dev = std::fs::metadata(&dir)
                    .map_err(|e| SetupError::io("work dir", &dir, e))?
                    .dev();
                if work_dev != upper_dev {
                    return Err(SetupError::Invalid(format!(
                        "work dir {} is not on the same filesystem as upper dir {}",
                        dir.display(),
                        upper.display()
                    )));
                }
                check_workdir_contents(&dir)?;
            }
            workdir = Some(dir);
            workdir_is_default = is_default;
        } else if workdir_arg.is_some() {
            return Err(SetupError::Invalid("a work dir needs an upper dir".into()));
        }

        Ok(MountPlan {
            lowers,
            upper,
            workdir,
            workdir_is_default,
            mountpoint,
            options,
        })
    }
}

/// A work dir may hold only what cowfs or kernel overlayfs put there.
fn check_workdir_contents(dir: &Path) -> SetupResult<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| SetupError::io("work dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SetupError::io("work dir", dir, e))?;
        let name = entry.file_name();
        if !OWN_ENTRIES.iter().any(|own| name == *own) {
            return Err(SetupError::Invalid(format!(
                "work dir {} is not empty: it holds {:?}, which is not cowfs's",
                dir.display(),
                name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_workdir_sits_beside_upper() {
        assert_eq!(
            default_workdir(Path::new("/ctr/upper")).unwrap(),
            PathBuf::from("/ctr/.upper.cowfs-work")
        );
        assert!(default_workdir(Path::new("/")).is_err());
    }
}
