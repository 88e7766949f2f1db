//! `cowfs stats` of a mount, as the tests read it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cowfs::stats::Snapshot;

use super::sys::cowfs_bin;

/// Runs `cowfs ARGS`; a `cowfs stats` that does not return within 20 s fails the test (it
/// must never hang, whatever state the socket is in).
pub fn cowfs_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(cowfs_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cowfs");
    let start = Instant::now();
    while child.try_wait().expect("wait cowfs").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("cowfs {args:?} did not return within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("cowfs output")
}

pub fn stats_of(mnt: &Path) -> Snapshot {
    let out = cowfs_bounded(&["stats", mnt.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "cowfs stats --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    Snapshot::from_json(text.trim()).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}
