//! An error at a step of the whole-dir copy a rename without redirect makes (an injected EIO,
//! through the `test-hooks` feature's hook): the rename fails with that errno, the dir shows as
//! it was under its old name, nothing shows under the new one, no temp is left in the work dir,
//! and the same rename works once the fault is gone.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;

/// Steps of the copy, in order: an entry reached, the data of a file, a copy placed, a dir
/// marked opaque.
const STEPS: [&str; 4] = [
    "treecopy-entry",
    "copyup-data",
    "copyup-rename",
    "treecopy-seal",
];

#[test]
fn a_failed_step_of_a_whole_dir_copy_leaves_the_dir_as_it_was() {
    for step in STEPS {
        let l = Layers::new(2).with_deadline(Duration::from_secs(60));
        write_file(&l.lower(1).join("d/base"), "b");
        write_file(&l.lower(0).join("d/sub/f"), "f");
        write_file(&l.lower(0).join("d/sub/deeper/g"), "g");
        symlink("f", &l.lower(0).join("d/sub/link"));
        // This daemon's own fault file: other tests of this binary set theirs.
        let faults: PathBuf = l.root.join("faults");
        fs::write(&faults, "").unwrap();
        let m = CowfsMount::spawn(
            l.mount_command()
                .arg("--foreground")
                .args(["-o", "redirect_dir=off"])
                .env("COWFS_FAULT_FILE", &faults),
            &l.mnt,
            &l.root,
            Duration::from_secs(10),
        );
        append(&l.mnt.join("d/sub/f"), "+");
        let before = tree_snapshot(&l.mnt);
        fs::write(&faults, format!("{step} {}\n", libc::EIO)).unwrap();
        assert_errno(
            fs::rename(l.mnt.join("d"), l.mnt.join("e")),
            libc::EIO,
            step,
        );
        let d = diff_trees(&before, &tree_snapshot(&l.mnt), "before", "after");
        assert!(
            d.is_empty(),
            "{step}: merged view changed:\n{}",
            d.join("\n")
        );
        assert_enoent(&l.mnt.join("e"));
        assert!(lstat_opt(&l.upper.join("e")).is_none(), "{step}: upper/e");
        assert_eq!(
            list_names(&l.work.join("work")),
            Vec::<String>::new(),
            "{step}: temps left"
        );
        fs::write(&faults, "").unwrap();
        fs::rename(l.mnt.join("d"), l.mnt.join("e"))
            .unwrap_or_else(|e| panic!("{step}: retry: {e}"));
        assert_eq!(read(&l.mnt.join("e/sub/f")), "f+", "{step}");
        assert_eq!(read(&l.mnt.join("e/base")), "b", "{step}");
        assert_enoent(&l.mnt.join("d"));
        m.unmount();
    }
}
