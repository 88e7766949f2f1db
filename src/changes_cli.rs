//! The `cowfs diff` and `cowfs export` commands: the checks on their
//! arguments, the change walk (`changes`), and the output: a list of
//! changed paths, or a layer archive (`export`) written to a temp file
//! that is renamed into place only once it is whole.
//!
//! Bad input (a lower that is missing, an upper with no work dir or that is
//! a mounted overlay, an upper written over other lowers) is found by the
//! walk, which runs to the end before anything is written.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use clap::Args;

use crate::changes;
use crate::changeset::{self, ChangeKind, Changeset};
use crate::cli::default_workdir;
use crate::error::{SetupError, SetupResult};
use crate::export::{self, Compression};
use crate::layer::LayerStack;
use crate::options;
use crate::sys;
use crate::workdir::OWN_ENTRIES;

#[derive(Args, Debug)]
pub struct LayerArgs {
    /// The lower dirs, top first, separated by `:` (`\:` for a colon in a name).
    #[arg(value_name = "LOWER[:LOWER...]")]
    pub lowers: OsString,
    /// The upper dir.
    #[arg(value_name = "UPPER")]
    pub upper: PathBuf,
    /// The upper's work dir [default: <dir of UPPER>/.<name of UPPER>.cowfs-work]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub layers: LayerArgs,
    /// One JSON object per path, with what changed.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub layers: LayerArgs,
    /// Write the layer here (made whole under a temporary name first) instead of to stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Compress the layer.
    #[arg(long, value_enum, default_value = "none")]
    pub compress: CompressArg,
}

/// `--compress`: the layer as it is, or compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Zstd,
}

impl From<CompressArg> for Compression {
    fn from(arg: CompressArg) -> Self {
        match arg {
            CompressArg::None => Compression::None,
            CompressArg::Gzip => Compression::Gzip,
            CompressArg::Zstd => Compression::Zstd,
        }
    }
}

/// The filesystem types a merged view is on, which are never an upper.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Opens the layers and walks the changes, checking the input on the way.
fn walk(args: &LayerArgs) -> SetupResult<(LayerStack, Option<OwnedFd>, Changeset)> {
    let spec = args.lowers.to_string_lossy();
    let mut lowers = Vec::new();
    for (i, lower) in options::split_lowers(&spec).iter().enumerate() {
        if lower.is_empty() {
            return Err(SetupError::Invalid(format!(
                "lower dir list '{spec}' has an empty entry (position {})",
                i + 1
            )));
        }
        lowers.push(PathBuf::from(lower));
    }
    if lowers.is_empty() {
        return Err(SetupError::Usage("no lower dirs given".into()));
    }
    let stack = LayerStack::open(Some(&args.upper), &lowers)?;
    let upper = stack.upper().map(|u| u.root());
    if let Some(fd) = upper {
        let fs_type =
            sys::filesystem_type(fd).map_err(|e| SetupError::io("upper dir", &args.upper, e))?;
        if fs_type == OVERLAYFS_SUPER_MAGIC || fs_type == FUSE_SUPER_MAGIC {
            return Err(SetupError::Invalid(format!(
                "upper dir {} is on a mounted overlay or FUSE filesystem: give the upper dir of a mount, not its merged view",
                args.upper.display()
            )));
        }
    }
    let workdir = match &args.workdir {
        Some(dir) => dir.clone(),
        None => default_workdir(&args.upper)?,
    };
    check_workdir(&workdir, &args.upper)?;
    let index = changes::open_index(&workdir)?;
    let changeset = changes::collect(&stack, index.as_ref().map(|fd| fd.as_fd()))?;
    Ok((stack, index, changeset))
}

/// An upper comes with its work dir, which holds only what an overlay
/// puts there: a dir without one is not an overlay's upper.
fn check_workdir(dir: &Path, upper: &Path) -> SetupResult<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        SetupError::Invalid(format!(
            "upper dir {}: no work dir at {} ({}); is it an overlay's upper? give --workdir",
            upper.display(),
            dir.display(),
            e
        ))
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| SetupError::io("work dir", dir, e))?;
        let name = entry.file_name();
        if !OWN_ENTRIES.iter().any(|own| name == *own) {
            return Err(SetupError::Invalid(format!(
                "work dir {} holds {:?}, which no overlay puts there: not the work dir of upper dir {}",
                dir.display(),
                name,
                upper.display()
            )));
        }
    }
    Ok(())
}

/// `cowfs diff`: the changed paths on stdout, sorted.
pub fn diff(args: DiffArgs) -> SetupResult<()> {
    let (_, _, changeset) = walk(&args.layers)?;
    let mut out = Vec::new();
    if args.json {
        out.extend_from_slice(b"[");
        for (i, change) in changeset.changes.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            out.extend_from_slice(b"{\"path\":");
            json_string(&mut out, &changeset::display_key(&change.path));
            out.extend_from_slice(b",\"kind\":\"");
            out.push(change.kind.letter() as u8);
            out.push(b'"');
            if change.kind == ChangeKind::Changed {
                let names: Vec<String> = change
                    .what
                    .names()
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect();
                out.extend_from_slice(format!(",\"changed\":[{}]", names.join(",")).as_bytes());
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"\n]\n");
    } else {
        for change in &changeset.changes {
            out.push(change.kind.letter() as u8);
            out.push(b' ');
            escape_line(&mut out, &changeset::display_key(&change.path));
            out.push(b'\n');
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| SetupError::step("writing to standard output", e))
}

/// `cowfs export`: the layer to `-o FILE` or stdout; its diff_id to stderr.
pub fn export(args: ExportArgs) -> SetupResult<()> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(SetupError::Invalid(
            "refusing to write a layer archive to a terminal: give -o FILE or redirect stdout"
                .into(),
        ));
    }
    let (stack, index, changeset) = walk(&args.layers)?;
    let written = match &args.output {
        None => {
            let stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let (mut out, written) = export::write_layer(
                &stack,
                index.as_ref(),
                &changeset.items,
                stdout,
                args.compress.into(),
                "standard output",
            )?;
            out.flush()
                .map_err(|e| SetupError::step("writing to standard output", e))?;
            written
        }
        Some(path) => write_file(path, |file| {
            let name = path.display().to_string();
            let buffered = std::io::BufWriter::with_capacity(1 << 20, file);
            let (out, written) = export::write_layer(
                &stack,
                index.as_ref(),
                &changeset.items,
                buffered,
                args.compress.into(),
                &name,
            )?;
            let file = out
                .into_inner()
                .map_err(|e| SetupError::io("writing", path, e.into_error()))?;
            Ok((file, written))
        })?,
    };
    eprintln!("{}", written.diff_id);
    Ok(())
}

/// Makes `path` whole or not at all: written under a temporary name in the
/// same dir, synced, then renamed over `path`; removed on any error.
fn write_file<T>(
    path: &Path,
    fill: impl FnOnce(std::fs::File) -> SetupResult<(std::fs::File, T)>,
) -> SetupResult<T> {
    let name = path
        .file_name()
        .ok_or_else(|| SetupError::Invalid(format!("output {} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| SetupError::io("creating", &temp, e))?;
    let result = fill(file).and_then(|(file, value)| {
        file.sync_all()
            .map_err(|e| SetupError::io("writing", &temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| SetupError::io("renaming into place", path, e))?;
        Ok(value)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// A path on one line: `\` and control bytes escaped (`\\`, `\n`, `\xNN`).
fn escape_line(out: &mut Vec<u8>, path: &[u8]) {
    for &b in path {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

/// A JSON string; bytes that are not UTF-8 are shown as U+FFFD.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_what_would_break_them() {
        let mut out = Vec::new();
        escape_line(&mut out, b"/a\nb\\c\x01d");
        assert_eq!(out, b"/a\\nb\\\\c\\x01d");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        json_string(&mut out, b"/a\"b\\c\n\x01\xff");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"/a\\\"b\\\\c\\n\\u0001\u{fffd}\""
        );
    }

    #[test]
    fn a_path_is_one_os_string_per_component() {
        let path = changeset::display_key(&["a".into(), "b c".into()]);
        assert_eq!(path, b"/a/b c");
        assert_eq!(changeset::display_key(&[]), b"/");
    }
}
