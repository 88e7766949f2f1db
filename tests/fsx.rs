//! fsx-style data integrity: random reads, writes, truncates (grow and shrink), MAP_SHARED mmap
//! reads and writes, fsyncs and reopens on a file that starts in a lower layer, each checked
//! against an in-memory model (size after every op, the touched range, the whole file every 64
//! ops, and again after a remount). The seed is printed; `COWFS_SEED` replays it.
//!
//! ~5k ops per variant in CI; `COWFS_LONG=1`: 100k.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::reliability_support::*;

const MAX_LEN: u64 = 1 << 20;
const PAGE: u64 = 4096;

#[derive(Debug, Clone)]
enum Op {
    Read { off: u64, len: u64 },
    Write { off: u64, len: u64 },
    Truncate { len: u64 },
    MapRead { off: u64, len: u64 },
    MapWrite { off: u64, len: u64 },
    Fsync,
    Reopen,
    Chmod { mode: u32 },
}

struct Fsx {
    path: std::path::PathBuf,
    file: File,
    model: Vec<u8>,
    rng: Rng,
    log: VecDeque<(usize, Op)>,
    seed: u64,
    n: usize,
}

impl Fsx {
    fn fail(&self, msg: String) -> ! {
        let ops: Vec<String> = self
            .log
            .iter()
            .map(|(i, o)| format!("  #{i} {o:?}"))
            .collect();
        panic!(
            "fsx (seed {:#x}, op #{}): {msg}\nlast ops:\n{}",
            self.seed,
            self.n,
            ops.join("\n")
        );
    }

    fn check_range(&self, off: u64, len: u64, got: &[u8], how: &str) {
        let end = (off + len).min(self.model.len() as u64);
        let want = if off < end {
            &self.model[off as usize..end as usize]
        } else {
            &[][..]
        };
        if got != want {
            self.fail(format!(
                "{how} [{off}, +{len}) differs from the model: got {} bytes, want {}, first \
                 difference at +{:?}",
                got.len(),
                want.len(),
                first_diff(want, got)
            ));
        }
    }

    fn pread_all(&self, off: u64, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) => self.fail(format!("pread at {}: {e}", off + done as u64)),
            }
        }
        buf.truncate(done);
        buf
    }

    fn check_all(&self, what: &str) {
        let got = self.pread_all(0, MAX_LEN * 2);
        self.check_range(0, MAX_LEN * 2, &got, what);
    }

    fn gen_op(&mut self) -> Op {
        let size = self.model.len() as u64;
        let r = &mut self.rng;
        let span = |r: &mut Rng, max: u64| r.range(1, max);
        match r.below(100) {
            0..=24 => {
                let off = r.below(size + 1);
                Op::Read {
                    off,
                    len: span(r, 64 << 10),
                }
            }
            25..=49 => {
                let off = r.below(MAX_LEN);
                Op::Write {
                    off,
                    len: span(r, (64 << 10).min(MAX_LEN - off)),
                }
            }
            50..=59 => Op::Truncate {
                len: if r.chance(1, 3) {
                    r.below(size + 1)
                } else {
                    r.below(MAX_LEN + 1)
                },
            },
            60..=71 if size > 0 => {
                let off = r.below(size);
                Op::MapRead {
                    off,
                    len: span(r, (size - off).min(64 << 10)),
                }
            }
            72..=89 if size > 0 => {
                let off = r.below(size);
                Op::MapWrite {
                    off,
                    len: span(r, (size - off).min(64 << 10)),
                }
            }
            90..=93 => Op::Fsync,
            94..=97 => Op::Reopen,
            _ => Op::Chmod {
                mode: *r.pick(&[0o644, 0o600, 0o664]),
            },
        }
    }

    /// Maps the pages covering `[off, off+len)`; returns (base, map_len, delta of `off`).
    fn map(&self, off: u64, len: u64, write: bool) -> (*mut u8, usize, usize) {
        let start = off / PAGE * PAGE;
        let map_len = (off + len - start) as usize;
        let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                start as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            self.fail(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        (p.cast(), map_len, (off - start) as usize)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Read { off, len } => {
                let got = self.pread_all(off, len);
                self.check_range(off, len, &got, "read");
            }
            Op::Write { off, len } => {
                let data = self.rng.bytes(len as usize);
                if let Err(e) = self.file.write_all_at(&data, off) {
                    self.fail(format!("pwrite: {e}"));
                }
                let end = (off + len) as usize;
                if self.model.len() < end {
                    self.model.resize(end, 0);
                }
                self.model[off as usize..end].copy_from_slice(&data);
                let got = self.pread_all(off, len);
                self.check_range(off, len, &got, "read back after write");
            }
            Op::Truncate { len } => {
                if let Err(e) = self.file.set_len(len) {
                    self.fail(format!("ftruncate: {e}"));
                }
                self.model.resize(len as usize, 0);
                // the bytes around the new end (zeros past an old end must read as zeros)
                let from = len.saturating_sub(PAGE);
                let got = self.pread_all(from, 2 * PAGE);
                self.check_range(from, 2 * PAGE, &got, "read around the new end");
            }
            Op::MapRead { off, len } => {
                let (p, map_len, delta) = self.map(off, len, false);
                let got =
                    unsafe { std::slice::from_raw_parts(p.add(delta), len as usize) }.to_vec();
                unsafe { libc::munmap(p.cast(), map_len) };
                self.check_range(off, len, &got, "mmap read");
            }
            Op::MapWrite { off, len } => {
                let data = self.rng.bytes(len as usize);
                let (p, map_len, delta) = self.map(off, len, true);
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(delta), len as usize);
                    if self.rng.chance(1, 2) && libc::msync(p.cast(), map_len, libc::MS_SYNC) != 0 {
                        self.fail(format!("msync: {}", std::io::Error::last_os_error()));
                    }
                    libc::munmap(p.cast(), map_len);
                }
                self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
                let got = self.pread_all(off, len);
                self.check_range(off, len, &got, "read after mmap write");
            }
            Op::Fsync => {
                if let Err(e) = self.file.sync_all() {
                    self.fail(format!("fsync: {e}"));
                }
            }
            Op::Reopen => {
                self.file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.path)
                    .unwrap_or_else(|e| self.fail(format!("reopen: {e}")));
            }
            Op::Chmod { mode } => chmod(&self.path, mode),
        }
        let st = self
            .file
            .metadata()
            .unwrap_or_else(|e| self.fail(format!("fstat: {e}")));
        if st.len() != self.model.len() as u64 {
            self.fail(format!(
                "st_size {} after {op:?}, model {}",
                st.len(),
                self.model.len()
            ));
        }
    }
}

fn run_fsx(name: &str, fixed_seed: u64, mount_opts: &[&str]) {
    let seed = seed(name, fixed_seed);
    let ops = if long_mode() { 100_000 } else { 5_000 };
    let layers = Layers::new(1);
    let mut rng = Rng::new(seed);
    let init_len = rng.range(1, MAX_LEN / 2) as usize;
    let init = rng.bytes(init_len);
    write_file_mode(&layers.lower(0).join("dir/file"), &init, 0o644);
    let m = layers.mount_with(mount_opts);
    let path = layers.mnt.join("dir/file");
    let t0 = Instant::now();
    let model = with_deadline(
        name,
        Duration::from_secs(if long_mode() { 3600 } else { 300 }),
        move || {
            // reads of the lower file first (with metacopy=on after a metadata-only copy-up)
            let ro = File::open(&path).unwrap();
            let mut fsx = Fsx {
                path: path.clone(),
                file: ro,
                model: init,
                rng,
                log: VecDeque::new(),
                seed,
                n: 0,
            };
            fsx.check_all("lower file through the mount");
            fsx.apply(&Op::Chmod { mode: 0o640 });
            for _ in 0..20 {
                let size = fsx.model.len() as u64;
                let off = fsx.rng.below(size);
                fsx.apply(&Op::MapRead {
                    off,
                    len: (size - off).min(8192),
                });
                fsx.apply(&Op::Read { off, len: 8192 });
            }
            fsx.apply(&Op::Reopen);
            for i in 0..ops {
                fsx.n = i;
                let op = fsx.gen_op();
                fsx.log.push_back((i, op.clone()));
                if fsx.log.len() > 24 {
                    fsx.log.pop_front();
                }
                fsx.apply(&op);
                if i % 64 == 63 {
                    fsx.check_all("whole file");
                }
            }
            fsx.check_all("whole file at the end");
            fsx.model
        },
    );
    let elapsed = t0.elapsed();
    m.unmount();
    let up = fs::read(layers.upper.join("dir/file")).unwrap();
    assert!(
        up == model,
        "{name} (seed {seed:#x}): upper file differs from the model after unmount (first diff \
         at {:?}, lengths {} / {})",
        first_diff(&model, &up),
        up.len(),
        model.len()
    );
    let m = layers.mount();
    let got = fs::read(layers.mnt.join("dir/file")).unwrap();
    assert!(
        got == model,
        "{name} (seed {seed:#x}): merged file differs after remount"
    );
    m.unmount();
    assert_no_artifacts(&layers.upper);
    eprintln!(
        "{name}: {ops} ops in {elapsed:.1?}, final size {}, 0 mismatches",
        model.len()
    );
}

#[test]
fn fsx_on_a_copied_up_file() {
    run_fsx("fsx", 0xF5C0_0001, &[]);
}

#[test]
fn fsx_without_passthrough() {
    run_fsx(
        "fsx/passthrough=off",
        0xF5C0_0002,
        &["-o", "passthrough=off"],
    );
}

#[test]
fn fsx_with_opens_by_the_daemon() {
    // Passthrough of the copied-up file, whatever the run's default.
    run_fsx(
        "fsx/open=daemon",
        0xF5C0_0004,
        &["-o", "open=daemon,passthrough=on"],
    );
}

#[test]
fn fsx_metacopy() {
    run_fsx("fsx/metacopy=on", 0xF5C0_0003, &["-o", "metacopy=on"]);
}
