//! `make install` / `make uninstall`, the man page and the completions, and the mount(8) helper.
//!
//! The generated files of the tree (man/cowfs.1, completions/) must equal what the clap
//! definition gives today, the man page must render without a warning and document every
//! subcommand and every `-o` option the parser knows, `make install` must put every file in
//! place (and nothing else) and `make uninstall` take them all away, and `mount -t fuse.cowfs`
//! through the installed helper must mount and unmount a real overlay.
//!
//! make runs with `NO_BUILD=1 BIN=<the test binary>`: the cargo running these tests holds the
//! build lock, and the binary is built already.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use clap::CommandFactory;
use cowfs::manual::Artifact;

use crate::common::*;

fn tree() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output_text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        output_text(&out)
    );
    out
}

/// `make TARGET VARS...` in the source tree, installing the test binary.
fn make(target: &str, vars: &[String]) -> Output {
    run(Command::new("make")
        .arg("-C")
        .arg(tree())
        .arg("--no-print-directory")
        .arg(target)
        .arg("NO_BUILD=1")
        .arg(format!("BIN={}", cowfs_bin()))
        .args(vars))
}

/// Every file and symlink under `root`, as paths relative to it.
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(entry.path());
            } else {
                found.insert(entry.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    found
}

#[test]
fn generated_files_are_current() {
    for artifact in Artifact::ALL {
        let path = tree().join(artifact.path_in_tree());
        let in_tree = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            in_tree == artifact.render(),
            "{} is not what the clap definition and src/manual/ give today: run `make docs` and commit it",
            path.display()
        );
        assert_eq!(Artifact::from_name(artifact.name()), Some(artifact));
    }
    // `cowfs generate` takes exactly the artifacts' names.
    let cmd = cowfs::cli::Cli::command();
    let generate = cmd
        .find_subcommand("generate")
        .expect("a generate subcommand");
    let arg = generate
        .get_positionals()
        .next()
        .expect("generate's argument");
    let accepted: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    let names: Vec<String> = Artifact::ALL.iter().map(|a| a.name().to_owned()).collect();
    assert_eq!(accepted, names);
}

#[test]
fn cowfs_generate_prints_the_artifacts() {
    for artifact in Artifact::ALL {
        let out = run(Command::new(cowfs_bin()).args(["generate", artifact.name()]));
        assert!(
            out.stdout == artifact.render().as_bytes(),
            "cowfs generate {}",
            artifact.name()
        );
    }
    let out = Command::new(cowfs_bin())
        .args(["generate", "nroff"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
}

#[test]
fn man_page_renders_without_warnings() {
    let page = tree().join("man/cowfs.1");
    // A locale the machine lacks would make man and groff warn about it instead.
    let groff = run(Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(&page)
        .env("LC_ALL", "C.UTF-8"));
    assert!(
        groff.stderr.is_empty(),
        "groff warns: {}",
        output_text(&groff)
    );
    let man = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MAN_KEEP_FORMATTING")
        .env_remove("MANPAGER")
        .env("PAGER", "cat"));
    assert!(man.stderr.is_empty(), "man warns: {}", output_text(&man));
    let text = String::from_utf8_lossy(&man.stdout);
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "MOUNT OPTIONS",
        "LAYERS AND RESOLUTION",
        "ON-DISK FORMAT",
        "CONTAINER STORAGE",
        "MOUNT(8) AND FSTAB",
        "EXIT STATUS",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(
            text.lines().any(|line| line == heading),
            "the rendered page has no {heading} section"
        );
    }
}

/// The page's roff source as plain words: font changes, `\&` and `\c` gone, `\-` a hyphen.
fn plain_roff(roff: &str) -> String {
    let mut text = roff.to_owned();
    for (escape, plain) in [
        ("\\fB", ""),
        ("\\fI", ""),
        ("\\fR", ""),
        ("\\fP", ""),
        ("\\&", ""),
        ("\\c", ""),
        ("\\-", "-"),
        ("\\e", "\\"),
    ] {
        text = text.replace(escape, plain);
    }
    text
}

/// `word` stands alone in `text`: not part of a longer name.
fn has_word(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

/// Every key the `-o` parser of src/options.rs knows: its match arms and its ACCEPTED list.
fn option_keys() -> BTreeSet<String> {
    let source = fs::read_to_string(tree().join("src/options.rs")).expect("src/options.rs");
    let quoted = |line: &str| -> Vec<String> {
        line.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut keys = BTreeSet::new();
    let accepted = source
        .split_once("const ACCEPTED: &[&str] = &[")
        .and_then(|(_, rest)| rest.split_once("];"))
        .expect("the ACCEPTED list in src/options.rs")
        .0;
    keys.extend(quoted(accepted));
    let parser = source
        .split_once("fn parse_items(")
        .map(|(_, rest)| rest.split_once("\n}\n").map_or(rest, |(body, _)| body))
        .expect("parse_items in src/options.rs");
    // The arms of the match on the key (`"ro" => ...`, `"relatime" | "atime" => ...`) are the
    // lines indented as the `"lowerdir"` arm; deeper ones are matches on values.
    let indent = |line: &str| line.len() - line.trim_start().len();
    let arm_indent = parser
        .lines()
        .find(|line| line.trim_start().starts_with("\"lowerdir\" =>"))
        .map(indent)
        .expect("the lowerdir arm of parse_items");
    for line in parser.lines().filter(|line| indent(line) == arm_indent) {
        if let Some((pattern, _)) = line.split_once("=>")
            && pattern.split('|').all(|alt| alt.trim().starts_with('"'))
        {
            keys.extend(quoted(pattern));
        }
    }
    keys
}

#[test]
fn man_page_documents_every_subcommand_and_option() {
    let roff = fs::read_to_string(tree().join("man/cowfs.1")).expect("man/cowfs.1");
    let text = plain_roff(&roff);

    let cmd = cowfs::cli::Cli::command();
    let subcommands: Vec<&str> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name())
        .collect();
    assert!(subcommands.contains(&"mount"), "{subcommands:?}");
    for name in subcommands {
        assert!(
            text.contains(&format!("cowfs {name}")),
            "the man page never names `cowfs {name}`"
        );
    }

    let options_section = text
        .split_once(".SH \"MOUNT OPTIONS\"")
        .and_then(|(_, rest)| rest.split_once("\n.SH "))
        .expect("a MOUNT OPTIONS section")
        .0;
    let keys = option_keys();
    // The extraction found the parser's keys, not lines that happen to hold quotes.
    for sure in [
        "lowerdir", "upperdir", "workdir", "ro", "metacopy", "nofail",
    ] {
        assert!(keys.contains(sure), "{sure} not found in {keys:?}");
    }
    for key in &keys {
        let parsed = cowfs::options::parse(std::slice::from_ref(key));
        assert!(
            parsed.as_ref().map_or(true, |o| o.unknown.is_empty()),
            "'{key}' read from src/options.rs is not an option its parser knows"
        );
        assert!(
            has_word(options_section, key),
            "-o {key} is accepted by src/options.rs but not documented in MOUNT OPTIONS of the man page (src/manual/sections.roff)"
        );
    }
}

#[test]
fn make_install_puts_every_file_and_uninstall_removes_them() {
    let dest = tempfile::tempdir().unwrap();
    let destdir = format!("DESTDIR={}", dest.path().display());
    let vars = [destdir, "PREFIX=/usr/local".to_owned()];
    make("install", &vars);

    let expected: BTreeSet<PathBuf> = [
        "usr/local/bin/cowfs",
        "usr/local/share/man/man1/cowfs.1",
        "usr/local/share/bash-completion/completions/cowfs",
        "usr/local/share/zsh/site-functions/_cowfs",
        "usr/local/share/fish/vendor_completions.d/cowfs.fish",
        "sbin/mount.fuse.cowfs",
        "sbin/mount.cowfs",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(files_under(dest.path()), expected);

    let root = dest.path();
    let bin = root.join("usr/local/bin/cowfs");
    assert!(fs::read(&bin).unwrap() == fs::read(cowfs_bin()).unwrap());
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    for (installed, source) in [
        ("usr/local/share/man/man1/cowfs.1", "man/cowfs.1"),
        (
            "usr/local/share/bash-completion/completions/cowfs",
            "completions/cowfs.bash",
        ),
        (
            "usr/local/share/zsh/site-functions/_cowfs",
            "completions/_cowfs",
        ),
        (
            "usr/local/share/fish/vendor_completions.d/cowfs.fish",
            "completions/cowfs.fish",
        ),
    ] {
        let path = root.join(installed);
        assert!(
            fs::read(&path).unwrap() == fs::read(tree().join(source)).unwrap(),
            "{installed} is not {source}"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    // The helpers point where the binary is once installed, not into DESTDIR.
    for helper in ["sbin/mount.fuse.cowfs", "sbin/mount.cowfs"] {
        assert_eq!(
            fs::read_link(root.join(helper)).unwrap(),
            PathBuf::from("/usr/local/bin/cowfs")
        );
    }

    make("uninstall", &vars);
    assert_eq!(files_under(dest.path()), BTreeSet::new());
}

#[test]
fn a_private_prefix_keeps_the_helpers_under_it() {
    let dest = tempfile::tempdir().unwrap();
    let prefix = dest.path().join("prefix");
    let vars = [format!("PREFIX={}", prefix.display())];
    make("install", &vars);
    let helper = prefix.join("sbin/mount.fuse.cowfs");
    assert_eq!(fs::read_link(&helper).unwrap(), prefix.join("bin/cowfs"));
    make("uninstall", &vars);
    assert_eq!(files_under(dest.path()), BTreeSet::new());
}

/// mount(8) looks for its helpers in /sbin only. In a mount namespace of its own (so nothing
/// outside sees it) the test puts the installed helpers on /sbin and mounts through
/// `mount -t fuse.cowfs`, writes, and unmounts with umount(8). The Layers guard kills a daemon
/// left by a failed run, which ends the namespace and its mount with it.
#[test]
fn mount_t_fuse_cowfs_mounts_through_the_installed_helper() {
    let layers = Layers::new(1).with_deadline(Duration::from_secs(120));
    write_file(&layers.lower(0).join("from-lower"), "lower data\n");
    let prefix = layers.path("prefix");
    make("install", &[format!("PREFIX={}", prefix.display())]);

    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        layers.lower(0).display(),
        layers.upper.display(),
        layers.work.display()
    );
    let script = r#"
        set -eu
        mount --bind "$HELPERS" /sbin
        mount -n -t fuse.cowfs -o "$OPTIONS" cowfs "$MNT"
        awk -v mnt="$MNT" '$5 == mnt { sub(/.* - /, ""); print "type", $1 }' /proc/self/mountinfo
        cat "$MNT/from-lower"
        echo "through the helper" > "$MNT/new-file"
        umount "$MNT"
        awk -v mnt="$MNT" '$5 == mnt {print "still mounted"}' /proc/self/mountinfo
        mount -n -t cowfs "$LOWER" "$MNT"
        cat "$MNT/from-lower"
        umount "$MNT"
    "#;
    let out = run(Command::new("timeout")
        .args([
            "60",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(script)
        .env("HELPERS", prefix.join("sbin"))
        .env("OPTIONS", &options)
        .env("MNT", &layers.mnt)
        .env("LOWER", layers.lower(0)));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "type fuse.cowfs\nlower data\nlower data\n",
        "{}",
        output_text(&out)
    );
    assert_eq!(
        fs::read_to_string(layers.upper.join("new-file")).unwrap(),
        "through the helper\n"
    );
    // Each daemon exits once its mount is gone (umount(8) returns before that).
    for _ in 0..100 {
        if cowfs_pids(&layers.root.to_string_lossy()).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        cowfs_pids(&layers.root.to_string_lossy()),
        Vec::<i32>::new(),
        "a daemon outlived its umount"
    );
}

/// `make deb` (cargo-deb, not installed in CI) packages what `make install PREFIX=/usr` installs:
/// Cargo.toml's asset list names every generated file of the tree and both mount helpers.
#[test]
fn the_deb_assets_are_the_installed_files() {
    let manifest = fs::read_to_string(tree().join("Cargo.toml")).expect("Cargo.toml");
    let assets = manifest
        .split_once("[package.metadata.deb]")
        .and_then(|(_, deb)| deb.split_once("assets = ["))
        .and_then(|(_, rest)| rest.split_once("\n]"))
        .expect("the assets of [package.metadata.deb] in Cargo.toml")
        .0;
    let mut wanted: Vec<String> = Artifact::ALL
        .iter()
        .map(|a| format!("\"{}\"", a.path_in_tree()))
        .collect();
    wanted.push("\"target/release/cowfs\"".into());
    wanted.extend(
        cowfs::mount_helper::HELPER_NAMES
            .iter()
            .map(|helper| format!("\"usr/sbin/{helper}\"")),
    );
    for asset in wanted {
        assert!(
            assets.contains(&asset),
            "the Debian package (Cargo.toml [package.metadata.deb] assets) lacks {asset}"
        );
    }
}
