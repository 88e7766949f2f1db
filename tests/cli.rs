//! Bad-input tests for the `cowfs` command line.
//!
//! Every case runs the real binary and checks that it:
//! - finishes within a deadline (a child that hangs is killed, never waited on forever),
//! - exits non-zero with `cowfs: error: ...` on stderr (clap usage errors: exit 2 and a usage text),
//! - does not panic (`panicked` never appears on stderr),
//! - changes nothing on disk: the whole fixture tree is snapshotted before and after (inode, mode,
//!   owner, size, mtime, ctime, rdev, link target of every entry), so a work dir created and removed
//!   again still shows up as a changed parent directory,
//! - mounts nothing: the set of mounts under the fixture is the same before and after.
//!
//! The fixture unmounts anything still mounted under it when dropped (tmpfs made by a test, or a
//! FUSE mount left by a binary that wrongly accepted its input), so a failing case leaves no mount.

use crate::cli_support::*;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The harness itself: it must see changes and must not hang.
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_detects_created_and_removed_entries() {
    let fx = Fixture::standard();
    let run = fx.run_program(
        "sh",
        ["-c", "mkdir upper-dir/x && rmdir upper-dir/x"],
        DEADLINE,
    );
    assert_eq!(run.code(), Some(0), "{}", run.report(&[]));
    assert!(
        run.changes.iter().any(|c| c.contains("upper-dir")),
        "create+remove must show as a changed parent dir: {:?}",
        run.changes
    );
    let run = fx.run_program("mkdir", [".upper-dir.cowfs-work"], DEADLINE);
    assert!(
        run.changes.iter().any(|c| c.starts_with("created")),
        "{:?}",
        run.changes
    );
}

#[test]
fn harness_kills_a_hanging_child() {
    let fx = Fixture::empty();
    let run = fx.run_program("sleep", ["60"], Duration::from_millis(300));
    assert!(run.status.is_none());
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

/// The harness against the real binary: a valid mount shows as a new `fuse.cowfs` mount plus the
/// default work dir beside UPPER (nothing inside UPPER), and `cowfs umount` takes it away again.
/// The fixture would unmount it anyway if an assertion failed.
#[test]
fn harness_sees_a_valid_mount_and_its_umount() {
    let fx = Fixture::standard();
    let run = fx.run(["mount", &fx.lowers(), &fx.s("upper-dir"), &fx.s("mnt-dir")]);
    let mut p = Vec::new();
    if run.code() != Some(0) {
        p.push("valid mount did not exit 0".to_string());
    }
    let mounted = format!("new mount at {} (fstype fuse.cowfs)", fx.s("mnt-dir"));
    if !run.changes.contains(&mounted) {
        p.push(format!("expected `{mounted}` in the changes"));
    }
    let work = format!("created {} (dir)", fx.s(".upper-dir.cowfs-work"));
    if !run.changes.contains(&work) {
        p.push(format!("expected `{work}` in the changes"));
    }
    let upper = fx.s("upper-dir");
    if let Some(c) = run
        .changes
        .iter()
        .find(|c| c.contains(&format!("{upper}/")))
    {
        p.push(format!("something changed inside UPPER: {c}"));
    }
    run.fail_if(p);

    let run = fx.run(["umount", &fx.s("mnt-dir")]);
    let gone = format!("mount gone at {} (fstype fuse.cowfs)", fx.s("mnt-dir"));
    let mut p = Vec::new();
    if run.code() != Some(0) {
        p.push("cowfs umount of a live cowfs mount did not exit 0".to_string());
    }
    if !run.changes.contains(&gone) {
        p.push(format!("expected `{gone}` in the changes"));
    }
    run.fail_if(p);
}

/// The counterpart of the foreign-file cases: `work` and `index` (what cowfs and kernel
/// overlayfs leave in a work dir) are accepted.
#[test]
fn workdir_with_only_work_and_index_is_accepted() {
    let fx = Fixture::standard();
    fx.dir("work-dir/work");
    fx.dir("work-dir/index");
    let run = fx.run_with_workdir("work-dir");
    let mounted = format!("new mount at {} (fstype fuse.cowfs)", fx.s("mnt-dir"));
    if run.code() != Some(0) || !run.changes.contains(&mounted) {
        run.fail_if(vec![format!("expected exit 0 and `{mounted}`")]);
    }
    let run = fx.run(["umount", &fx.s("mnt-dir")]);
    if run.code() != Some(0) {
        run.fail_if(vec!["cowfs umount did not exit 0".to_string()]);
    }
}

/// A work dir a live mount holds is refused (after a short wait for a mount that may be going
/// away); the moment its mount is taken away, the next mount gets it, every time.
#[test]
fn workdir_of_a_live_mount_is_refused_and_free_right_after_its_umount() {
    let fx = Fixture::standard();
    fx.dir("work-dir");
    fx.dir("other-mnt");
    let first = fx.run_with_workdir("work-dir");
    if first.code() != Some(0) {
        first.fail_if(vec!["first mount did not exit 0".to_string()]);
    }
    let (lowers, upper, other, work) = (
        fx.lowers(),
        fx.s("upper-dir"),
        fx.s("other-mnt"),
        fx.s("work-dir"),
    );
    let second = fx.run(["mount", &lowers, &upper, &other, "--workdir", &work]);
    second.expect_cowfs_error(&["in use"]);
    for round in 0..5 {
        // umount(8): unmount(2) returns before the daemon has exited.
        let gone = fx.run_program("umount", [fx.s("mnt-dir")], Duration::from_secs(20));
        let again = fx.run_with_workdir("work-dir");
        if gone.code() != Some(0) || again.code() != Some(0) {
            again.fail_if(vec![format!(
                "round {round}: umount exit {:?}, mount right after it exit {:?}",
                gone.code(),
                again.code()
            )]);
        }
    }
    let run = fx.run(["umount", &fx.s("mnt-dir")]);
    if run.code() != Some(0) {
        run.fail_if(vec!["cowfs umount did not exit 0".to_string()]);
    }
}

// ---------------------------------------------------------------------------------------------
// Missing paths and files where directories are needed
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_lower() {
    let fx = Fixture::standard();
    let lowers = format!("{}:{}", fx.s("no-such-lower"), fx.s("lower-base"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn missing_bottom_lower() {
    let fx = Fixture::standard();
    let lowers = format!("{}:{}", fx.s("lower-top"), fx.s("no-such-lower"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn missing_lower_read_only() {
    let fx = Fixture::standard();
    fx.run(["mount", &fx.s("no-such-lower"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn missing_upper() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("no-such-upper"),
        &fx.s("mnt-dir"),
    ])
    .expect_cowfs_error(&["no-such-upper"]);
}

#[test]
fn missing_mountpoint() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("no-such-mnt"),
    ])
    .expect_cowfs_error(&["no-such-mnt"]);
}

#[test]
fn missing_mountpoint_read_only() {
    let fx = Fixture::standard();
    fx.run(["mount", &fx.lowers(), &fx.s("no-such-mnt")])
        .expect_cowfs_error(&["no-such-mnt"]);
}

#[test]
fn lower_is_a_file() {
    let fx = Fixture::standard();
    fx.file("lower-file");
    let lowers = format!("{}:{}", fx.s("lower-top"), fx.s("lower-file"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lower-file"]);
}

#[test]
fn upper_is_a_file() {
    let fx = Fixture::standard();
    fx.file("upper-file");
    fx.run(["mount", &fx.lowers(), &fx.s("upper-file"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["upper-file"]);
}

#[test]
fn mountpoint_is_a_file() {
    let fx = Fixture::standard();
    fx.file("mnt-file");
    fx.run(["mount", &fx.lowers(), &fx.s("upper-dir"), &fx.s("mnt-file")])
        .expect_cowfs_error(&["mnt-file"]);
}

#[test]
fn workdir_is_a_file() {
    let fx = Fixture::standard();
    fx.file("work-file");
    fx.run_with_workdir("work-file")
        .expect_cowfs_error(&["work-file"]);
}

#[test]
fn lower_name_component_longer_than_255_bytes() {
    let fx = Fixture::standard();
    let long = "a".repeat(256);
    let lowers = format!("{}:{}", fx.s(&long), fx.s("lower-base"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["too long", "255", "aaaaaaaaaaaaaaaa"]);
}

// ---------------------------------------------------------------------------------------------
// Empty lowers in the list
// ---------------------------------------------------------------------------------------------

fn empty_lower_case(lowers: impl Fn(&Fixture) -> String) {
    let fx = Fixture::standard();
    fx.run(["mount", &lowers(&fx), &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&[]);
}

#[test]
fn empty_lower_in_the_middle() {
    empty_lower_case(|fx| format!("{}::{}", fx.s("lower-top"), fx.s("lower-base")));
}

#[test]
fn empty_lower_leading() {
    empty_lower_case(|fx| format!(":{}", fx.s("lower-top")));
}

#[test]
fn empty_lower_trailing() {
    empty_lower_case(|fx| format!("{}:", fx.s("lower-top")));
}

#[test]
fn empty_lower_list() {
    empty_lower_case(|_| String::new());
}

// ---------------------------------------------------------------------------------------------
// Overlapping layers, mountpoint and work dir
// ---------------------------------------------------------------------------------------------

#[test]
fn upper_inside_a_lower() {
    let fx = Fixture::standard();
    fx.dir("lower-top/upper-in-lower");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("lower-top/upper-in-lower"),
        &fx.s("mnt-dir"),
    ])
    .expect_cowfs_error(&["upper-in-lower", "lower-top"]);
}

#[test]
fn upper_is_a_lower() {
    let fx = Fixture::standard();
    fx.run(["mount", &fx.lowers(), &fx.s("lower-base"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lower-base"]);
}

#[test]
fn lower_inside_upper() {
    let fx = Fixture::standard();
    fx.file("upper-dir/lower-in-upper/f.txt");
    let lowers = format!("{}:{}", fx.s("lower-top"), fx.s("upper-dir/lower-in-upper"));
    fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lower-in-upper", "upper-dir"]);
}

#[test]
fn upper_equals_mountpoint() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("upper-dir"),
    ])
    .expect_cowfs_error(&["upper-dir"]);
}

#[test]
fn mountpoint_inside_upper() {
    let fx = Fixture::standard();
    fx.dir("upper-dir/mnt-in-upper");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("upper-dir/mnt-in-upper"),
    ])
    .expect_cowfs_error(&["mnt-in-upper", "upper-dir"]);
}

#[test]
fn mountpoint_inside_a_lower() {
    let fx = Fixture::standard();
    fx.dir("lower-base/mnt-in-lower");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("lower-base/mnt-in-lower"),
    ])
    .expect_cowfs_error(&["mnt-in-lower", "lower-base"]);
}

#[test]
fn mountpoint_inside_a_lower_read_only() {
    let fx = Fixture::standard();
    fx.dir("lower-top/mnt-in-lower");
    fx.run(["mount", &fx.lowers(), &fx.s("lower-top/mnt-in-lower")])
        .expect_cowfs_error(&["mnt-in-lower", "lower-top"]);
}

#[test]
fn mountpoint_is_a_lower() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("lower-top"),
    ])
    .expect_cowfs_error(&["lower-top"]);
}

#[test]
fn workdir_inside_upper() {
    let fx = Fixture::standard();
    fx.run_with_workdir("upper-dir/work-in-upper")
        .expect_cowfs_error(&["work-in-upper", "upper-dir"]);
}

#[test]
fn existing_workdir_inside_upper() {
    let fx = Fixture::standard();
    fx.dir("upper-dir/work-in-upper");
    fx.run_with_workdir("upper-dir/work-in-upper")
        .expect_cowfs_error(&["work-in-upper", "upper-dir"]);
}

#[test]
fn upper_inside_workdir() {
    let fx = Fixture::standard();
    fx.dir("work-dir/upper-in-work");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("work-dir/upper-in-work"),
        &fx.s("mnt-dir"),
        "--workdir",
        &fx.s("work-dir"),
    ])
    .expect_cowfs_error(&["upper-in-work", "work-dir"]);
}

#[test]
fn workdir_on_another_filesystem() {
    let fx = Fixture::standard();
    let _tmpfs = fx.tmpfs("tmpfs-mnt");
    fx.dir("tmpfs-mnt/work-on-tmpfs");
    fx.run_with_workdir("tmpfs-mnt/work-on-tmpfs")
        .expect_cowfs_error(&["work-on-tmpfs", "filesystem", "device"]);
}

#[test]
fn missing_workdir_on_another_filesystem() {
    let fx = Fixture::standard();
    let _tmpfs = fx.tmpfs("tmpfs-mnt");
    fx.run_with_workdir("tmpfs-mnt/work-on-tmpfs")
        .expect_cowfs_error(&["work-on-tmpfs", "filesystem", "device"]);
}

#[test]
fn workdir_with_a_foreign_file() {
    let fx = Fixture::standard();
    fx.file("work-dir/foreign.txt");
    fx.run_with_workdir("work-dir")
        .expect_cowfs_error(&["foreign.txt", "work-dir"]);
}

#[test]
fn default_workdir_with_a_foreign_file() {
    let fx = Fixture::standard();
    fx.file(".upper-dir.cowfs-work/foreign.txt");
    fx.run(["mount", &fx.lowers(), &fx.s("upper-dir"), &fx.s("mnt-dir")])
        .expect_cowfs_error(&["foreign.txt", "cowfs-work"]);
}

// ---------------------------------------------------------------------------------------------
// The fuse-overlayfs compatible `-o` form
// ---------------------------------------------------------------------------------------------

#[test]
fn o_form_without_lowerdir() {
    let fx = Fixture::standard();
    fx.dir("work-dir");
    let opts = format!(
        "upperdir={},workdir={}",
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lowerdir"]);
}

#[test]
fn mount_o_form_without_lowerdir() {
    let fx = Fixture::standard();
    fx.dir("work-dir");
    let opts = format!(
        "upperdir={},workdir={}",
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["mount", "-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["lowerdir"]);
}

#[test]
fn o_form_missing_lower() {
    let fx = Fixture::standard();
    fx.dir("work-dir");
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        fx.s("lower-top"),
        fx.s("no-such-lower"),
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["no-such-lower"]);
}

#[test]
fn o_form_upper_inside_a_lower() {
    let fx = Fixture::standard();
    fx.dir("lower-base/upper-in-lower");
    fx.dir("lower-base/work-in-lower");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        fx.lowers(),
        fx.s("lower-base/upper-in-lower"),
        fx.s("lower-base/work-in-lower")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["upper-in-lower", "work-in-lower", "lower-base"]);
}

#[test]
fn o_form_workdir_with_a_foreign_file() {
    let fx = Fixture::standard();
    fx.file("work-dir/foreign.txt");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        fx.lowers(),
        fx.s("upper-dir"),
        fx.s("work-dir")
    );
    fx.run(["-o", &opts, &fx.s("mnt-dir")])
        .expect_cowfs_error(&["foreign.txt", "work-dir"]);
}

// ---------------------------------------------------------------------------------------------
// Flags and subcommands
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_subcommand() {
    let fx = Fixture::standard();
    fx.run(["frobnicate"]).expect_usage_error();
}

#[test]
fn unknown_flag_on_mount() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--frobnicate",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_usage_error();
}

#[test]
fn unknown_top_level_flag() {
    let fx = Fixture::standard();
    fx.run(["--frobnicate"]).expect_usage_error();
}

#[test]
fn too_many_mount_arguments() {
    let fx = Fixture::standard();
    fx.dir("extra-dir");
    fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
        &fx.s("extra-dir"),
    ])
    .expect_usage_error();
}

#[test]
fn mount_without_arguments() {
    let fx = Fixture::standard();
    fx.run(["mount"]).expect_rejected();
}

#[test]
fn no_arguments() {
    let fx = Fixture::standard();
    let run = fx.run(Vec::<&str>::new());
    // Printing help and exiting 2 (clap's arg_required_else_help) or an error are both fine.
    let mut p = run.basic_problems();
    if run.stderr.trim().is_empty() {
        p.push("nothing on stderr".to_string());
    }
    run.fail_if(p);
}

#[test]
fn threads_zero() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--threads",
        "0",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_rejected();
}

#[test]
fn threads_not_a_number() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--threads",
        "many",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_rejected();
}

#[test]
fn bad_log_level() {
    let fx = Fixture::standard();
    fx.run([
        "mount",
        "--log-level",
        "shouting",
        &fx.lowers(),
        &fx.s("upper-dir"),
        &fx.s("mnt-dir"),
    ])
    .expect_rejected();
}

// ---------------------------------------------------------------------------------------------
// umount
// ---------------------------------------------------------------------------------------------

#[test]
fn umount_of_a_plain_directory() {
    let fx = Fixture::standard();
    fx.run(["umount", &fx.s("mnt-dir")])
        .expect_cowfs_error(&["mnt-dir", "not"]);
}

#[test]
fn umount_of_a_missing_path() {
    let fx = Fixture::standard();
    fx.run(["umount", &fx.s("no-such-mnt")])
        .expect_cowfs_error(&["no-such-mnt"]);
}

#[test]
fn umount_of_a_foreign_mount_leaves_it_mounted() {
    let fx = Fixture::standard();
    let _tmpfs = fx.tmpfs("tmpfs-mnt");
    // Any unmount shows up as "mount gone" in the run's changes.
    fx.run(["umount", &fx.s("tmpfs-mnt")])
        .expect_cowfs_error(&["tmpfs-mnt", "not"]);
}

// ---------------------------------------------------------------------------------------------
// A setup error names its step and its path, on one line: `cowfs: error: <step> <path>: <cause>`
// ---------------------------------------------------------------------------------------------

/// Exit 1 and stderr exactly `cowfs: error: {message}` on one line.
fn expect_one_error_line(run: &Run, message: &str) {
    let mut p = Vec::new();
    if run.code() != Some(1) {
        p.push("expected exit status 1".to_string());
    }
    let want = format!("cowfs: error: {message}\n");
    if run.stderr != want {
        p.push(format!("expected stderr to be exactly {want:?}"));
    }
    run.fail_if(p);
}

#[test]
fn missing_lower_is_named_with_its_step_and_cause() {
    let fx = Fixture::standard();
    let lowers = format!("{}:{}", fx.s("lower-top"), fx.s("no-such-lower"));
    let run = fx.run(["mount", &lowers, &fx.s("upper-dir"), &fx.s("mnt-dir")]);
    run.expect_cowfs_error(&["no-such-lower"]);
    expect_one_error_line(
        &run,
        &format!(
            "lower dir {}: No such file or directory (os error 2)",
            fx.s("no-such-lower")
        ),
    );
}

#[test]
fn lower_that_is_a_file_is_named_on_one_line() {
    let fx = Fixture::standard();
    fx.file("lower-file");
    let run = fx.run(["mount", &fx.s("lower-file"), &fx.s("mnt-dir")]);
    run.expect_cowfs_error(&["lower-file"]);
    expect_one_error_line(
        &run,
        &format!("lower dir {} is not a directory", fx.s("lower-file")),
    );
}

/// The default work dir cannot be created beside an upper dir on a read-only filesystem: the
/// error says so, names the work dir, and nothing is left behind.
#[test]
fn work_dir_that_cannot_be_created_is_named_with_its_step() {
    let fx = Fixture::standard();
    let ro = fx.tmpfs("ro-fs");
    fx.dir("ro-fs/upper");
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&ro)
        .status()
        .expect("run mount");
    assert!(
        remount.success(),
        "cannot remount {} read-only",
        ro.display()
    );
    let run = fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("ro-fs/upper"),
        &fx.s("mnt-dir"),
    ]);
    run.expect_cowfs_error(&["cowfs-work"]);
    expect_one_error_line(
        &run,
        &format!(
            "creating work dir {}: Read-only file system (os error 30)",
            fx.s("ro-fs/.upper.cowfs-work")
        ),
    );
}

/// A pid file that cannot be written fails the mount before anything is mounted, names the pid
/// file, and leaves nothing behind: no mount, no default work dir (it was made for this mount).
#[test]
fn pid_file_in_a_missing_dir_is_named_with_its_step() {
    let fx = Fixture::standard();
    let pid_file = fx.s("no-such-dir/cowfs.pid");
    let run = fx.run([
        "mount",
        &fx.lowers(),
        &fx.s("mnt-dir"),
        "--pid-file",
        &pid_file,
    ]);
    run.expect_cowfs_error(&["pid file"]);
    expect_one_error_line(
        &run,
        &format!("pid file {pid_file}: No such file or directory (os error 2)"),
    );
}

#[test]
fn usage_error_is_one_line_then_the_usage_text() {
    let fx = Fixture::standard();
    let run = fx.run(["mount"]);
    run.expect_usage_error();
    let mut lines = run.stderr.lines();
    assert_eq!(
        (lines.next(), lines.next()),
        (Some("cowfs: error: no layers given"), Some("")),
        "{}",
        run.report(&[])
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("Usage: cowfs mount")),
        "{}",
        run.report(&[])
    );
}

// ---------------------------------------------------------------------------------------------
// Help and version
// ---------------------------------------------------------------------------------------------

#[test]
fn help_exits_zero() {
    let fx = Fixture::empty();
    let run = fx.run(["--help"]);
    let out = run.expect_success().to_string();
    for word in ["mount", "umount"] {
        assert!(
            out.contains(word),
            "--help does not mention `{word}`:{}",
            run.report(&[])
        );
    }
}

#[test]
fn mount_help_exits_zero_and_names_the_default_workdir() {
    let fx = Fixture::empty();
    let run = fx.run(["mount", "--help"]);
    let out = run.expect_success().to_string();
    assert!(
        out.contains(".cowfs-work"),
        "`cowfs mount --help` must say where the default work dir goes \
         (<dirname(UPPER)>/.<basename(UPPER)>.cowfs-work):{}",
        run.report(&[])
    );
    for flag in [
        "--workdir",
        "--foreground",
        "--threads",
        "--log-level",
        "--pid-file",
    ] {
        assert!(
            out.contains(flag),
            "`cowfs mount --help` lacks {flag}:{}",
            run.report(&[])
        );
    }
}

#[test]
fn umount_help_exits_zero() {
    let fx = Fixture::empty();
    fx.run(["umount", "--help"]).expect_success();
}

#[test]
fn version_exits_zero() {
    let fx = Fixture::empty();
    let run = fx.run(["--version"]);
    let out = run.expect_success().to_string();
    assert!(
        out.contains(env!("CARGO_PKG_VERSION")),
        "--version does not print {}:{}",
        env!("CARGO_PKG_VERSION"),
        run.report(&[])
    );
}
