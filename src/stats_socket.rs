//! The Unix socket a mount's daemon serves its figures on, and the end of
//! it `cowfs stats` uses.
//!
//! Where it is: in `/run/cowfs/` for root's mounts and in
//! `$XDG_RUNTIME_DIR/cowfs/` (`/run/user/UID/cowfs/` when that is unset, or
//! when another user asks) for other users' mounts, a dir of mode 0700
//! owned by the mount's owner. The socket (mode 0600) is named by the
//! mount's device number, `MAJOR-MINOR.sock`: no other live mount has that
//! number, and `cowfs stats MOUNTPOINT` reads it, and the owner, from the
//! mount table. Nothing of it goes inside the mount.
//!
//! What it says: on each connection the daemon writes one line of JSON and
//! closes it, the mount's [`Snapshot`], or `{"error": ...}` to a peer that
//! is neither the mount's owner nor root (SO_PEERCRED; the dir's mode keeps
//! other users out already).
//!
//! A daemon killed before it could remove its socket leaves it behind: the
//! next daemon that gets the same device number puts its own socket over it
//! (bound under a temporary name, then renamed into place, so a socket under
//! its final name always listens or is stale), any daemon starting removes
//! sockets there that refuse connections, and `cowfs stats` on a stale one
//! says so instead of waiting.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{SetupError, SetupResult};
use crate::stats::Snapshot;
use crate::sys;

/// How long `cowfs stats` waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon waits for a reader to take its answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The dir holding the stats sockets of `owner`'s mounts.
pub fn socket_dir(owner: u32) -> PathBuf {
    if owner == 0 {
        return PathBuf::from("/run/cowfs");
    }
    let own_runtime_dir = (sys::euid() == owner)
        .then(|| std::env::var_os("XDG_RUNTIME_DIR"))
        .flatten()
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    own_runtime_dir
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{owner}")))
        .join("cowfs")
}

/// The stats socket of the mount numbered `dev` (`MAJOR:MINOR`, as the
/// mount table gives it) of `owner`.
pub fn socket_path(owner: u32, dev: &str) -> PathBuf {
    socket_dir(owner).join(format!("{}.sock", dev.replace(':', "-")))
}

/// The daemon's end: a thread answering on the socket until stopped (or
/// dropped), which removes the socket.
pub struct StatsServer {
    path: PathBuf,
    /// The socket's inode: it is removed only if it is still this one.
    ino: u64,
    listener: Arc<UnixListener>,
    stopped: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatsServer {
    /// Serves the figures `figures` gives for the mount numbered `dev`;
    /// `None` if the user has no runtime dir to put the socket in.
    pub fn start(
        dev: &str,
        figures: impl Fn() -> Snapshot + Send + 'static,
    ) -> SetupResult<Option<StatsServer>> {
        let owner = sys::euid();
        let path = socket_path(owner, dev);
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        if dir.parent().is_some_and(|runtime| !runtime.is_dir()) {
            tracing::info!(dir = %dir.display(), "no stats socket: no runtime dir to hold it");
            return Ok(None);
        }
        make_private_dir(&dir, owner)?;
        remove_stale_sockets(&dir);
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            dev.replace(':', "-"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&temp);
        let listener =
            UnixListener::bind(&temp).map_err(|e| SetupError::io("stats socket", &temp, e))?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::symlink_metadata(&temp))
            .and_then(|meta| std::fs::rename(&temp, &path).map(|()| meta.ino()));
        let ino = match placed {
            Ok(ino) => ino,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(SetupError::io("stats socket", &path, e));
            }
        };
        let listener = Arc::new(listener);
        let stopped = Arc::new(AtomicBool::new(false));
        let thread = {
            let (listener, stopped) = (listener.clone(), stopped.clone());
            std::thread::Builder::new()
                .name("cowfs-stats".into())
                .spawn(move || serve(&listener, &stopped, owner, figures))
        };
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(SetupError::step("starting the stats thread", e));
            }
        };
        tracing::debug!(path = %path.display(), "serving stats");
        Ok(Some(StatsServer {
            path,
            ino,
            listener,
            stopped,
            thread: Some(thread),
        }))
    }

    /// Stops answering and removes the socket.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // The mount's number may already be another mount's, whose daemon
        // may have put its own socket here: remove only ours.
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|meta| meta.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
        self.stopped.store(true, Ordering::Relaxed);
        match sys::shut_down(self.listener.as_fd()) {
            Ok(()) => {
                let _ = thread.join();
            }
            // Not woken: it waits in accept(2) and ends with the process.
            Err(e) => tracing::warn!(%e, "stats thread not stopped"),
        }
    }
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Makes `dir` (mode 0700, owned by `owner`) if it is missing, and checks
/// that an existing one is such a dir: the sockets in it must not be
/// reachable by other users.
fn make_private_dir(dir: &Path, owner: u32) -> SetupResult<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SetupError::io("making the stats dir", dir, e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| SetupError::io("stats dir", dir, e))?;
    if !meta.is_dir() || meta.uid() != owner || meta.mode() & 0o077 != 0 {
        return Err(SetupError::Invalid(format!(
            "stats dir {} is not a dir of uid {owner} closed to others (mode 0700)",
            dir.display()
        )));
    }
    Ok(())
}

/// Removes the sockets in `dir` that no daemon listens on any more.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "sock") {
            continue;
        }
        if let Err(e) = UnixStream::connect(&path)
            && e.kind() == std::io::ErrorKind::ConnectionRefused
        {
            tracing::debug!(path = %path.display(), "removing a stale stats socket");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Answers each connection until stopped.
fn serve(
    listener: &UnixListener,
    stopped: &AtomicBool,
    owner: u32,
    figures: impl Fn() -> Snapshot,
) {
    loop {
        let accepted = listener.accept();
        if stopped.load(Ordering::Relaxed) {
            return;
        }
        match accepted {
            Ok((stream, _)) => answer(stream, owner, &figures),
            Err(e) => {
                // Out of fds, most likely: wait rather than spin.
                tracing::debug!(%e, "stats socket accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(mut stream: UnixStream, owner: u32, figures: impl Fn() -> Snapshot) {
    let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
    let allowed = sys::peer_uid(stream.as_fd()).is_ok_and(|uid| uid == owner || uid == 0);
    let mut line = if allowed {
        figures().to_json()
    } else {
        Refusal {
            error: format!("only uid {owner} (the mount's owner) or root may read its figures"),
        }
        .to_json()
    };
    line.push('\n');
    let _ = stream.write_all(line.as_bytes());
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Refusal {
    error: String,
}

impl Refusal {
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `cowfs stats`: asks the daemon listening on `socket` for the figures
/// of `mountpoint`.
pub fn query(socket: &Path, mountpoint: &Path) -> SetupResult<Snapshot> {
    let mnt = mountpoint.display();
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SetupError::Invalid(format!(
            "no stats socket for {mnt} at {}: its daemon is gone, or did not make one (see its log)",
            socket.display()
        )),
        std::io::ErrorKind::ConnectionRefused => SetupError::Invalid(format!(
            "the stats socket {} of {mnt} is stale: its daemon is gone",
            socket.display()
        )),
        std::io::ErrorKind::PermissionDenied => SetupError::Invalid(format!(
            "stats socket {}: permission denied: only the owner of {mnt} or root may read its figures",
            socket.display()
        )),
        _ => SetupError::io("connecting to the stats socket", socket, e),
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| SetupError::io("stats socket", socket, e))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SetupError::Invalid(
                format!("the daemon of {mnt} did not answer within {ANSWER_TIMEOUT:?}"),
            ),
            _ => SetupError::io("reading the stats socket", socket, e),
        })?;
    if let Ok(refusal) = serde_json::from_str::<Refusal>(&text) {
        return Err(SetupError::Invalid(format!(
            "the daemon of {mnt} refused: {}",
            refusal.error
        )));
    }
    Snapshot::from_json(&text).map_err(|e| {
        SetupError::Invalid(format!(
            "the daemon of {mnt} sent figures this cowfs cannot read ({e}); is it another version?"
        ))
    })
}

/// `cowfs stats MOUNTPOINT [--json] [--watch SECONDS]`: prints the figures
/// of the mount whose socket is `socket` once, or every `watch` until the
/// reader goes away (a closed pipe ends it quietly).
pub fn print(
    socket: &Path,
    mountpoint: &Path,
    json: bool,
    watch: Option<Duration>,
) -> SetupResult<()> {
    let mut stdout = std::io::stdout().lock();
    loop {
        let snapshot = query(socket, mountpoint)?;
        let text = if json {
            snapshot.to_json() + "\n"
        } else {
            snapshot.to_text(&mountpoint.to_string_lossy())
        };
        let separator = if watch.is_some() && !json { "\n" } else { "" };
        let written = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.write_all(separator.as_bytes()))
            .and_then(|()| stdout.flush());
        if written.is_err() {
            return Ok(());
        }
        match watch {
            Some(interval) => std::thread::sleep(interval),
            None => return Ok(()),
        }
    }
}
