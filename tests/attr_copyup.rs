//! Copy-ups for attribute changes (chmod, chown, utimes, setxattr) of lower
//! files with data: answered before the copy's data is on disk, behind the
//! kernel's metacopy mark, which comes off once the data is there (right
//! after the answer). What must hold: the mark never outlives the settling
//! while the mount runs, none is left at unmount, the merged view is the
//! same all along, and kernel overlayfs without metacopy reads the upper as
//! cowfs showed it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

const MARK: &str = "trusted.overlay.metacopy";
const FILES: usize = 60;

fn has_mark(p: &Path) -> bool {
    lgetxattr(p, MARK).is_ok()
}

fn file_name(i: usize) -> String {
    format!("d/f{i:03}")
}

fn content(i: usize) -> Vec<u8> {
    pattern(1000 + 97 * i, i as u8)
}

/// Lower files of several sizes; each gets one kind of attribute change.
fn lower_files(l: &Layers) {
    for i in 0..FILES {
        write_file_mode(&l.lower(0).join(file_name(i)), content(i), 0o644);
    }
}

fn change(mnt: &Path, i: usize) {
    let p = mnt.join(file_name(i));
    match i % 4 {
        0 => fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap(),
        1 => lchown(&p, 1234, 4321),
        2 => {
            let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64);
            fs::File::open(&p).unwrap().set_modified(t).unwrap();
        }
        _ => set_xattr(&p, "user.changed", b"yes"),
    }
}

/// What the change of file `i` shows, checked on any view of the tree.
fn check_changed(view: &Path, i: usize, what: &str) {
    let p = view.join(file_name(i));
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{what}: {p:?}: {e}"));
    assert_eq!(
        fs::read(&p).unwrap(),
        content(i),
        "{what}: content of {p:?}"
    );
    assert_eq!(md.len(), content(i).len() as u64, "{what}: size of {p:?}");
    match i % 4 {
        0 => assert_eq!(md.mode() & 0o7777, 0o600, "{what}: mode of {p:?}"),
        1 => assert_eq!((md.uid(), md.gid()), (1234, 4321), "{what}: owner of {p:?}"),
        2 => assert_eq!(md.mtime(), 1_000_000 + i as i64, "{what}: mtime of {p:?}"),
        _ => assert_eq!(
            lgetxattr(&p, "user.changed").unwrap(),
            b"yes",
            "{what}: xattr of {p:?}"
        ),
    }
}

fn marked_uppers(l: &Layers) -> Vec<String> {
    (0..FILES)
        .map(file_name)
        .filter(|name| has_mark(&l.upper.join(name)))
        .collect()
}

#[test]
fn attribute_copy_ups_are_settled_while_mounted_and_read_by_the_kernel() {
    let l = Layers::new(1);
    lower_files(&l);
    let m = l.mount();
    for i in 0..FILES {
        change(&l.mnt, i);
        check_changed(&l.mnt, i, "right after the change");
    }
    // Each copy is settled right after its answer: the marks go while the
    // mount runs, not only at unmount.
    let give_up = Instant::now() + Duration::from_secs(10);
    while !marked_uppers(&l).is_empty() && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        marked_uppers(&l),
        Vec::<String>::new(),
        "marks left while mounted"
    );
    for i in 0..FILES {
        check_changed(&l.mnt, i, "merged view, settled");
        assert_eq!(
            fs::read(l.upper.join(file_name(i))).unwrap(),
            content(i),
            "upper data"
        );
    }
    drop(m);
    assert_eq!(
        marked_uppers(&l),
        Vec::<String>::new(),
        "marks left at unmount"
    );

    // Kernel overlayfs, metacopy off (its default): it refuses marked files.
    let kernel = l.kernel_mount("kernel");
    for i in 0..FILES {
        check_changed(&kernel.mnt, i, "kernel overlayfs over the upper");
    }
    kernel.unmount();
    let again = l.mount();
    for i in 0..FILES {
        check_changed(&l.mnt, i, "after remount");
    }
    drop(again);
}

/// A write after an attribute change (append, truncate, O_TRUNC) goes to
/// the copy, also while its data may still be on its way: the mark never
/// makes a write land in the lower file's data or get lost.
#[test]
fn writes_right_after_an_attribute_change_land_in_the_copy() {
    let l = Layers::new(1);
    lower_files(&l);
    let m = l.mount();
    for i in 0..FILES {
        let p = l.mnt.join(file_name(i));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let mut want = content(i);
        match i % 3 {
            0 => {
                append(&p, "tail");
                want.extend_from_slice(b"tail");
            }
            1 => {
                let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
                f.set_len(10).unwrap();
                want.truncate(10);
            }
            _ => {
                fs::write(&p, b"new").unwrap();
                want = b"new".to_vec();
            }
        }
        assert_eq!(fs::read(&p).unwrap(), want, "merged {p:?}");
        assert_eq!(
            fs::read(l.upper.join(file_name(i))).unwrap(),
            want,
            "upper of {p:?}"
        );
        assert!(
            !has_mark(&l.upper.join(file_name(i))),
            "{p:?} still marked after a write"
        );
        assert_eq!(
            fs::read(l.lower(0).join(file_name(i))).unwrap(),
            content(i),
            "lower of {p:?}"
        );
    }
    drop(m);
}
