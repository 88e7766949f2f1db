//! Power cuts after copy-up: the upper and work dirs sit on a journaled ext4
//! (default options: delayed allocation, 5 s journal commit) or an xfs in a
//! loop-mounted image; the lower dir is on the normal disk. Changes are made
//! through a cowfs mount, and then the image file is copied while everything
//! is still mounted, without a sync: that copy is the disk as a power cut
//! leaves it. The copy is mounted (the journal or log is replayed) and seen
//! through kernel overlayfs over the same lower dir: every lower file must
//! show its old content or its new one, never an empty or partial one, and
//! an fsynced new file must be there in full.
//!
//! Kinds of round: the copy right after the changes; about 7 s later, when
//! ext4 has committed the renames of the copy-ups but (without a sync of the
//! data) not yet written their data, also with metacopy=on; and right after
//! an fsync of an unrelated file, which commits the renames at once, on ext4
//! and on xfs. `COWFS_LONG=1`: 5 rounds of each kind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::*;

const PER_KIND: usize = 6;
const SIZE: usize = 48 * 1024 + 123;
const SUFFIX: &[u8] = b"+appended";
const TRUNCATED: usize = 1000;
/// Longer than ext4's journal commit interval (5 s).
const AFTER_COMMIT: Duration = Duration::from_secs(7);

fn content(kind: &str, i: usize) -> Vec<u8> {
    pattern(SIZE, (kind.len() * 31 + i) as u8)
}

/// What each lower file may show after the cut: (path, allowed contents).
/// A renamed file or dir may show under either name, but under exactly one.
enum Expect {
    File(String, Vec<Vec<u8>>),
    Moved(String, String, Vec<u8>),
    Fsynced(String, Vec<u8>),
    /// A lower file chmod'ed, then opened read-only and fsynced: its new
    /// mode must have lasted, and its data.
    FsyncedMode(String, u32, Vec<u8>),
    /// The lower data, then what was appended; the appended bytes were
    /// never synced, so (as on any filesystem) they may read as zeros after
    /// the cut, but the lower data before them must be whole.
    Appended(String, Vec<u8>, &'static [u8]),
}

fn make_lower(lower: &Path) {
    for kind in ["c", "o", "u", "x", "a", "t", "r", "h", "l", "m"] {
        for i in 0..PER_KIND {
            write_file(&lower.join(format!("{kind}{i}")), content(kind, i));
        }
    }
    for i in 0..PER_KIND {
        // Two names of one lower file: copied up once, into the index.
        fs::hard_link(
            lower.join(format!("l{i}")),
            lower.join(format!("l{i}.twin")),
        )
        .unwrap();
        for j in 0..2 {
            write_file(
                &lower.join(format!("dir{i}/f{j}")),
                content("dir", i * 2 + j),
            );
        }
    }
}

/// The changes, made through the mount; what may show after a cut.
fn change(mnt: &Path) -> Vec<Expect> {
    let mut expect = Vec::new();
    let both = |old: Vec<u8>, new: Vec<u8>| vec![old, new];
    // First, so that in a cut right after the changes the fsyncs have not
    // committed the journal with the others in it.
    for i in 0..PER_KIND {
        let p = |kind: &str| mnt.join(format!("{kind}{i}"));
        let name = |kind: &str| format!("{kind}{i}");
        let data = content("new", i);
        let mut file = fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(p("new"))
            .unwrap();
        file.write_all(&data).unwrap();
        file.sync_all().unwrap();
        expect.push(Expect::Fsynced(name("new"), data));
    }
    for i in 0..PER_KIND {
        let p = |kind: &str| mnt.join(format!("{kind}{i}"));
        let name = |kind: &str| format!("{kind}{i}");
        chmod(&p("c"), 0o600);
        if i == 0 {
            fs::File::open(p("c")).unwrap().sync_all().unwrap();
            expect.push(Expect::FsyncedMode(name("c"), 0o600, content("c", i)));
        } else {
            expect.push(Expect::File(name("c"), vec![content("c", i)]));
        }
        lchown(&p("o"), 1234, 4321);
        expect.push(Expect::File(name("o"), vec![content("o", i)]));
        let file = fs::File::options().write(true).open(p("u")).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        drop(file);
        expect.push(Expect::File(name("u"), vec![content("u", i)]));
        set_xattr(&p("x"), "user.powercut", b"1");
        expect.push(Expect::File(name("x"), vec![content("x", i)]));
        let mut file = fs::File::options().append(true).open(p("a")).unwrap();
        file.write_all(SUFFIX).unwrap();
        drop(file);
        expect.push(Expect::Appended(name("a"), content("a", i), SUFFIX));
        fs::File::options()
            .write(true)
            .open(p("t"))
            .unwrap()
            .set_len(TRUNCATED as u64)
            .unwrap();
        let truncated = content("t", i)[..TRUNCATED].to_vec();
        expect.push(Expect::File(name("t"), both(content("t", i), truncated)));
        fs::rename(p("r"), mnt.join(format!("r{i}.moved"))).unwrap();
        expect.push(Expect::Moved(
            name("r"),
            format!("r{i}.moved"),
            content("r", i),
        ));
        fs::rename(p("dir"), mnt.join(format!("dir{i}.moved"))).unwrap();
        for j in 0..2 {
            expect.push(Expect::Moved(
                format!("dir{i}/f{j}"),
                format!("dir{i}.moved/f{j}"),
                content("dir", i * 2 + j),
            ));
        }
        chmod(&p("l"), 0o600);
        expect.push(Expect::File(name("l"), vec![content("l", i)]));
        expect.push(Expect::File(format!("l{i}.twin"), vec![content("l", i)]));
        // With metacopy=on: a metadata-only copy-up, then its data.
        chmod(&p("m"), 0o600);
        let mut file = fs::File::options().append(true).open(p("m")).unwrap();
        file.write_all(SUFFIX).unwrap();
        drop(file);
        expect.push(Expect::Appended(name("m"), content("m", i), SUFFIX));
        fs::hard_link(p("h"), mnt.join(format!("h{i}.link"))).unwrap();
        expect.push(Expect::File(name("h"), vec![content("h", i)]));
        expect.push(Expect::File(format!("h{i}.link"), vec![content("h", i)]));
    }
    expect
}

/// What a reader that trusts `st_size` gets (cp, mmap): a file whose size
/// is short reads short, even if a read until EOF would give more.
fn read_opt(p: &Path) -> Option<Vec<u8>> {
    match fs::symlink_metadata(p) {
        Ok(md) => {
            let mut data = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            data.truncate(md.len() as usize);
            Some(data)
        }
        Err(_) => None,
    }
}

fn describe(got: &Option<Vec<u8>>) -> String {
    match got {
        None => "missing".into(),
        Some(data) => format!("{} bytes", data.len()),
    }
}

/// The problems the merged view of the cut disk shows.
fn check(merged: &Path, expect: &[Expect]) -> Vec<String> {
    let mut bad = Vec::new();
    for e in expect {
        match e {
            Expect::File(name, allowed) => {
                let got = read_opt(&merged.join(name));
                // A hard link's new name may be lost; a lower name never.
                let may_miss = name.ends_with(".link");
                let ok = match &got {
                    None => may_miss,
                    Some(data) => allowed.contains(data),
                };
                if !ok {
                    bad.push(format!("{name}: {}", describe(&got)));
                }
            }
            Expect::Moved(old, new, data) => {
                let (a, b) = (read_opt(&merged.join(old)), read_opt(&merged.join(new)));
                let ok = match (&a, &b) {
                    (Some(x), None) | (None, Some(x)) => x == data,
                    _ => false,
                };
                if !ok {
                    bad.push(format!(
                        "{old} / {new}: {} / {}",
                        describe(&a),
                        describe(&b)
                    ));
                }
            }
            Expect::Appended(name, old, suffix) => {
                let got = read_opt(&merged.join(name));
                let ok = got.as_ref().is_some_and(|data| {
                    let (lower, tail) = data.split_at(data.len().min(old.len()));
                    lower == &old[..]
                        && tail.len() <= suffix.len()
                        && tail
                            .iter()
                            .zip(suffix.iter())
                            .all(|(got, want)| got == want || *got == 0)
                });
                if !ok {
                    bad.push(format!("{name} (appended): {}", describe(&got)));
                }
            }
            Expect::FsyncedMode(name, mode, data) => {
                let p = merged.join(name);
                let got = read_opt(&p);
                let got_mode = fs::symlink_metadata(&p).map(|m| m.mode() & 0o7777).ok();
                if got.as_ref() != Some(data) || got_mode != Some(*mode) {
                    bad.push(format!(
                        "{name} (fsynced chmod): {}, mode {:o}",
                        describe(&got),
                        got_mode.unwrap_or(0)
                    ));
                }
            }
            Expect::Fsynced(name, data) => {
                let got = read_opt(&merged.join(name));
                if got.as_ref() != Some(data) {
                    bad.push(format!("{name} (fsynced): {}", describe(&got)));
                }
            }
        }
    }
    bad
}

/// How a round ends before the cut.
#[derive(Clone, Copy, Debug)]
enum Before {
    /// A wait (none, or past the journal commit).
    Wait(Duration),
    /// An fsync of an unrelated new file: it commits the journal with every
    /// rename before it in it, but no other file's data.
    UnrelatedFsync,
}

/// One round on an upper of type `fstype`: changes, `before`, the cut and
/// the check. Returns the problems and how many files were checked.
/// With `keep_marks`, the daemon fails to settle every copy
/// made for an attribute change (an injected fault), so the cut finds them
/// all behind their metacopy marks, data not yet written back.
fn round_keeping_marks(
    fstype: &str,
    before: Before,
    options: &[&str],
    keep_marks: bool,
) -> (Vec<String>, usize) {
    let mut layers = Layers::new(1);
    make_lower(layers.lower(0));
    let img = layers.root.join("upper.img");
    // xfs wants at least 300 MiB.
    make_image(&img, if fstype == "xfs" { 320 } else { 64 }, fstype);
    let mut upperfs = LoopFs::mount(&img, &layers.root.join("upperfs"), "");
    layers.upper_on(&upperfs);
    // The fresh fs's own metadata is on disk before the cut, as it would be
    // on a disk that has been in use.
    syncfs(&upperfs.dir);

    let faults = layers.root.join("faults");
    // EIO for the settling; the writeback not started early, as on a busy
    // device, so the cut finds the copies' data still in memory.
    let keep = "copyup-settle 5\ncopyup-writeback-start 5\n";
    fs::write(&faults, if keep_marks { keep } else { "" }).unwrap();
    let mount = layers.mount_with_env(options, &[("COWFS_FAULT_FILE", &faults)]);
    let expect = change(&layers.mnt);
    match before {
        Before::Wait(wait) => std::thread::sleep(wait),
        Before::UnrelatedFsync => {
            let mut file = fs::File::create(layers.mnt.join("unrelated")).unwrap();
            file.write_all(b"unrelated").unwrap();
            file.sync_all().unwrap();
        }
    }
    let cut = layers.root.join("cut.img");
    fs::copy(&img, &cut).unwrap();
    mount.unmount();
    upperfs.unmount().unwrap();

    // The copy has the original's uuid, which xfs would refuse.
    let cut_options = if fstype == "xfs" { "nouuid" } else { "" };
    let mut cutfs = LoopFs::mount(&cut, &layers.root.join("cutfs"), cut_options);
    if keep_marks {
        let marked = expect
            .iter()
            .filter_map(|e| match e {
                Expect::File(name, _) => Some(cutfs.dir.join("upper").join(name)),
                _ => None,
            })
            .filter(|p| lgetxattr(p, "trusted.overlay.metacopy").is_ok())
            .count();
        assert!(
            marked > 0,
            "no copy behind a mark in the cut: the fault did not hold"
        );
    }
    let merged = layers.fresh_dir("merged");
    // metacopy=on: a copy made for an attribute change may still be behind
    // its metacopy mark at the cut (its data on its way); with metacopy on
    // the kernel reads every upper cowfs writes.
    let kernel = KernelOverlay::mount_with(
        &layers.lowers,
        &cutfs.dir.join("upper"),
        &cutfs.dir.join("work"),
        &merged,
        "metacopy=on",
    );
    let bad = check(&merged, &expect);
    kernel.unmount();
    cutfs.unmount().unwrap();
    (bad, expect.len())
}

/// Syncs one filesystem only: a sync(1) here would also write back what
/// the rounds running beside this one have not synced, and hide their losses.
fn syncfs(dir: &Path) {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(dir).unwrap();
    // SAFETY: syncfs takes an fd that stays open for the call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
}

fn rounds(fstype: &str, before: Before, options: &[&str]) {
    rounds_keeping_marks(fstype, before, options, false)
}

fn rounds_keeping_marks(fstype: &str, before: Before, options: &[&str], keep_marks: bool) {
    let n = if std::env::var_os("COWFS_LONG").is_some() {
        5
    } else {
        1
    };
    let mut failures = Vec::new();
    for r in 0..n {
        let (bad, checked) = round_keeping_marks(fstype, before, options, keep_marks);
        eprintln!(
            "round {r} ({fstype}, cut after {before:?}, {options:?}): {} of {checked} lower files lost",
            bad.len()
        );
        if !bad.is_empty() {
            failures.push(format!("round {r}: {} lost: {bad:?}", bad.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "lower files empty or partial after a power cut:\n{}",
        failures.join("\n")
    );
}

#[test]
fn power_cut_right_after_the_changes() {
    rounds("ext4", Before::Wait(Duration::ZERO), &[]);
}

#[test]
fn power_cut_after_the_journal_commit() {
    rounds("ext4", Before::Wait(AFTER_COMMIT), &[]);
}

/// Metadata-only copy-ups, and the data copied in later under the mark.
#[test]
fn power_cut_after_the_journal_commit_with_metacopy() {
    rounds("ext4", Before::Wait(AFTER_COMMIT), &["-o", "metacopy=on"]);
}

#[test]
fn power_cut_after_an_unrelated_fsync() {
    rounds("ext4", Before::UnrelatedFsync, &[]);
}

/// xfs writes its log when something forces it: the unrelated fsync does.
#[test]
fn power_cut_on_xfs_after_an_unrelated_fsync() {
    rounds("xfs", Before::UnrelatedFsync, &[]);
}

/// Copies for attribute changes all still behind their metacopy marks at
/// the cut (settling them fails): each must read its lower data in full,
/// with the size it had, on ext4 after the journal commit and on xfs.
#[cfg(feature = "test-hooks")]
#[test]
fn power_cut_with_copies_behind_their_marks() {
    rounds_keeping_marks("ext4", Before::Wait(AFTER_COMMIT), &[], true);
    rounds_keeping_marks("xfs", Before::UnrelatedFsync, &[], true);
}
