//! A cowfs daemon a test started itself (for runs the shared harness can't
//! express: extra environment, strace): unmounted and reaped on drop, also
//! when the test fails.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    pub mnt: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `mnt` is a mount (its device differs from its parent's).
pub fn wait_mounted(mnt: &Path, timeout: Duration) -> bool {
    let parent_dev = fs::metadata(mnt.parent().unwrap_or(Path::new("/"))).map(|m| m.dev());
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let (Ok(m), Ok(p)) = (fs::metadata(mnt), &parent_dev)
            && m.dev() != *p
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
