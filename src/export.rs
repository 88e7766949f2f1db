//! `cowfs export`: the items of a change walk as an OCI image layer, a tar
//! archive in the image-spec layer format: `.wh.NAME` for a deleted entry,
//! `DIR/.wh..wh..opq` for a dir whose lower entries are hidden, hard links
//! as tar links, owners, modes and times in the header, xattrs (file
//! capabilities included) as `SCHILY.xattr.*` PAX records, names and
//! values the ustar header cannot hold as PAX records too. The layer's
//! diff_id is the sha256 of the uncompressed archive.
//!
//! The `tar` crate writes the headers and the archive's end; `flate2` and
//! `zstd` compress; `sha2` hashes.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::changeset::{Item, Object, Place};
use crate::error::{SetupError, SetupResult};
use crate::format;
use crate::layer::LayerStack;
use crate::layerview;
use crate::sys::{self, FileType, OFlags};

/// How the archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What writing a layer gave: the diff_id and the archive's sizes.
pub struct Written {
    /// `sha256:<hex>` of the uncompressed archive.
    pub diff_id: String,
    pub uncompressed_bytes: u64,
}

/// Writes `items` as a layer to `out`, compressed as asked. Errors name the
/// object on disk being read, or `out_name` for a failed write.
pub fn write_layer<W: Write>(
    stack: &LayerStack,
    index: Option<&OwnedFd>,
    items: &[Item],
    out: W,
    compression: Compression,
    out_name: &str,
) -> SetupResult<(W, Written)> {
    let write_err = |e: io::Error| SetupError::Invalid(format!("writing {out_name}: {e}"));
    let compressed = Compressor::new(out, compression).map_err(write_err)?;
    let mut builder = tar::Builder::new(Digesting::new(compressed));
    let source = Source { stack, index };
    for item in items {
        append(&mut builder, &source, item).map_err(|e| match e {
            Failure::Read(path, e) => SetupError::io("reading", path, e),
            Failure::Write(e) => write_err(e),
        })?;
    }
    let digesting = builder.into_inner().map_err(write_err)?;
    let (compressed, written) = digesting.finish();
    let out = compressed.finish().map_err(write_err)?;
    Ok((out, written))
}

enum Failure {
    /// Reading a layer object failed: its path on disk.
    Read(PathBuf, io::Error),
    Write(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Write(e)
    }
}

/// Where the objects of the items are read from.
struct Source<'a> {
    stack: &'a LayerStack,
    index: Option<&'a OwnedFd>,
}

impl Source<'_> {
    fn on_disk(&self, place: &Place) -> PathBuf {
        match place {
            Place::Layer { layer, path } => {
                let mut out = self.stack.get(*layer).path.clone();
                out.extend(path);
                out
            }
            Place::Index(name) => PathBuf::from("index").join(name),
        }
    }

    fn open(&self, place: &Place) -> Result<OwnedFd, Failure> {
        let opened = match place {
            Place::Layer { layer, path } => layerview::open_in_layer(self.stack, *layer, path),
            Place::Index(name) => match self.index {
                Some(index) => sys::open_path(index.as_fd(), name),
                None => Err(sys::Errno::NOENT),
            },
        };
        opened.map_err(|e| Failure::Read(self.on_disk(place), e.into()))
    }
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    source: &Source<'_>,
    item: &Item,
) -> Result<(), Failure> {
    match item {
        Item::Opaque(dir) => {
            let mut path = dir.clone();
            path.push(OsString::from(format::OCI_OPAQUE_MARKER));
            append_marker(builder, &path)
        }
        Item::Whiteout(path) => {
            let mut marker = path.clone();
            if let Some(last) = marker.last_mut() {
                *last = format::oci_whiteout_name(last);
            }
            append_marker(builder, &marker)
        }
        Item::Link { path, target } => {
            let mut header = new_header();
            let mut pax = Pax::default();
            set_name(&mut header, &mut pax, &entry_name(path, false));
            set_link_name(&mut header, &mut pax, &entry_name(target, false));
            header.set_entry_type(EntryType::Link);
            header.set_mode(0o644);
            header.set_size(0);
            pax.append(builder)?;
            header.set_cksum();
            builder.append(&header, io::empty())?;
            Ok(())
        }
        Item::Object { path, object } => append_object(builder, source, path, object),
    }
}

/// An empty regular file that is a whiteout or the opaque marker.
fn append_marker<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &[OsString],
) -> Result<(), Failure> {
    let mut header = new_header();
    let mut pax = Pax::default();
    set_name(&mut header, &mut pax, &entry_name(path, false));
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(0);
    header.set_mtime(0);
    pax.append(builder)?;
    header.set_cksum();
    builder.append(&header, io::empty())?;
    Ok(())
}

fn append_object<W: Write>(
    builder: &mut tar::Builder<W>,
    source: &Source<'_>,
    path: &[OsString],
    object: &Object,
) -> Result<(), Failure> {
    let st = &object.stat;
    let kind = sys::file_type(st);
    if kind == FileType::Socket {
        // A layer cannot hold a socket; it is made by whoever listens.
        return Ok(());
    }
    let meta = source.open(&object.meta)?;
    let read_err = |e: sys::Errno| Failure::Read(source.on_disk(&object.meta), e.into());
    let mut header = new_header();
    let mut pax = Pax::default();
    set_name(
        &mut header,
        &mut pax,
        &entry_name(path, kind == FileType::Directory),
    );
    header.set_mode(st.st_mode & 0o7777);
    set_number(&mut header, &mut pax, "uid", u64::from(st.st_uid));
    set_number(&mut header, &mut pax, "gid", u64::from(st.st_gid));
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    if st.st_mtime >= 0 && st.st_mtime_nsec != 0 {
        pax.add(
            "mtime",
            format!("{}.{:09}", st.st_mtime, st.st_mtime_nsec).into_bytes(),
        );
    }
    for (name, value) in layerview::visible_xattrs(meta.as_fd()).map_err(read_err)? {
        let key = format!("SCHILY.xattr.{}", name.to_string_lossy());
        pax.add(&key, value);
    }
    header.set_size(0);
    let mut data: Option<ExactReader> = None;
    match kind {
        FileType::RegularFile => {
            header.set_entry_type(EntryType::Regular);
            let size = st.st_size as u64;
            set_size(&mut header, &mut pax, size);
            let file = if object.data == object.meta {
                sys::reopen(meta.as_fd(), OFlags::RDONLY).map_err(read_err)?
            } else {
                let data_fd = source.open(&object.data)?;
                sys::reopen(data_fd.as_fd(), OFlags::RDONLY)
                    .map_err(|e| Failure::Read(source.on_disk(&object.data), e.into()))?
            };
            data = Some(ExactReader {
                fd: file,
                offset: 0,
                left: size,
                read_error: None,
            });
        }
        FileType::Directory => header.set_entry_type(EntryType::Directory),
        FileType::Symlink => {
            header.set_entry_type(EntryType::Symlink);
            let target = sys::readlink(meta.as_fd()).map_err(read_err)?;
            set_link_name(&mut header, &mut pax, &target);
        }
        FileType::CharacterDevice | FileType::BlockDevice => {
            header.set_entry_type(if kind == FileType::CharacterDevice {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let rdev = st.st_rdev;
            header.set_device_major(rustix::fs::major(rdev))?;
            header.set_device_minor(rustix::fs::minor(rdev))?;
        }
        FileType::Fifo => header.set_entry_type(EntryType::Fifo),
        _ => return Ok(()),
    }
    pax.append(builder)?;
    header.set_cksum();
    match data {
        Some(mut reader) => {
            builder
                .append(&header, &mut reader)
                .map_err(|e| match reader.read_error.take() {
                    Some(read) => Failure::Read(source.on_disk(&object.data), read),
                    None => Failure::Write(e),
                })
        }
        None => Ok(builder.append(&header, io::empty())?),
    }
}

/// A ustar header with every numeric field set (device numbers 0, as GNU
/// tar writes them, so that readers find numbers there).
fn new_header() -> Header {
    let mut header = Header::new_ustar();
    // Cannot fail on a ustar header.
    let _ = header.set_device_major(0);
    let _ = header.set_device_minor(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// The PAX records of one entry.
#[derive(Default)]
struct Pax {
    records: Vec<(String, Vec<u8>)>,
}

impl Pax {
    fn add(&mut self, key: &str, value: Vec<u8>) {
        self.records.push((key.to_string(), value));
    }

    fn append<W: Write>(&self, builder: &mut tar::Builder<W>) -> io::Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        builder.append_pax_extensions(self.records.iter().map(|(k, v)| (k.as_str(), &v[..])))
    }
}

/// The bytes of an entry's name: components joined by `/`, a dir's with a
/// `/` at the end, the root as `./`.
fn entry_name(path: &[OsString], dir: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, component) in path.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(component.as_bytes());
    }
    if out.is_empty() {
        out.extend_from_slice(b".");
    }
    if dir {
        out.push(b'/');
    }
    out
}

/// The name in the ustar fields when it fits (split into prefix and name at
/// a `/` if need be), else in a PAX `path` record.
fn set_name(header: &mut Header, pax: &mut Pax, name: &[u8]) {
    let Some(ustar) = header.as_ustar_mut() else {
        return;
    };
    if name.len() <= ustar.name.len() {
        ustar.name[..name.len()].copy_from_slice(name);
        return;
    }
    // The last `/` that leaves at most 100 bytes after it and at most 155
    // before it (a dir's own trailing `/` stays in the name part).
    let searchable = &name[..name.len() - 1];
    let split = searchable
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| i)
        .find(|&i| name.len() - i - 1 <= ustar.name.len() && i <= ustar.prefix.len() && i > 0);
    if let Some(i) = split {
        ustar.prefix[..i].copy_from_slice(&name[..i]);
        let rest = &name[i + 1..];
        ustar.name[..rest.len()].copy_from_slice(rest);
        return;
    }
    let cut = ustar.name.len();
    ustar.name.copy_from_slice(&name[..cut]);
    pax.add("path", name.to_vec());
}

fn set_link_name(header: &mut Header, pax: &mut Pax, target: &[u8]) {
    let old = header.as_old_mut();
    if target.len() <= old.linkname.len() {
        old.linkname[..target.len()].copy_from_slice(target);
    } else {
        let cut = old.linkname.len();
        old.linkname.copy_from_slice(&target[..cut]);
        pax.add("linkpath", target.to_vec());
    }
}

/// uid/gid: a PAX record too when the octal field cannot hold the value.
fn set_number(header: &mut Header, pax: &mut Pax, key: &str, value: u64) {
    const OCTAL_7: u64 = 0o7777777;
    if value > OCTAL_7 {
        pax.add(key, value.to_string().into_bytes());
    }
    match key {
        "uid" => header.set_uid(value.min(OCTAL_7)),
        _ => header.set_gid(value.min(OCTAL_7)),
    }
}

fn set_size(header: &mut Header, pax: &mut Pax, size: u64) {
    const OCTAL_11: u64 = 0o77777777777;
    if size > OCTAL_11 {
        pax.add("size", size.to_string().into_bytes());
    }
    header.set_size(size);
}

/// Reads exactly the size the header says: a file that shrank meanwhile
/// fails the export instead of making a broken archive.
struct ExactReader {
    fd: OwnedFd,
    offset: u64,
    left: u64,
    read_error: Option<io::Error>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match sys::pread(self.fd.as_fd(), &mut buf[..want], self.offset) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while read");
                self.read_error = Some(io::Error::new(e.kind(), e.to_string()));
                return Err(e);
            }
            Ok(n) => n,
            Err(e) => {
                self.read_error = Some(e.into());
                return Err(io::Error::from(e));
            }
        };
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Passes the uncompressed archive on while hashing it.
struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Digesting<W> {
    fn new(inner: W) -> Self {
        Digesting {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, Written) {
        let digest = self.hasher.finalize();
        let mut hex = String::with_capacity(64);
        for b in digest.iter() {
            hex.push_str(&format!("{b:02x}"));
        }
        let written = Written {
            diff_id: format!("sha256:{hex}"),
            uncompressed_bytes: self.bytes,
        };
        (self.inner, written)
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Compressor<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    fn new(out: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::Plain(out),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(mut out) => {
                out.flush()?;
                Ok(out)
            }
            Compressor::Gzip(encoder) => encoder.finish(),
            Compressor::Zstd(encoder) => encoder.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(out) => out.write(buf),
            Compressor::Gzip(encoder) => encoder.write(buf),
            Compressor::Zstd(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(out) => out.flush(),
            Compressor::Gzip(encoder) => encoder.flush(),
            Compressor::Zstd(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(header: &Header) -> Vec<u8> {
        header.path_bytes().into_owned()
    }

    #[test]
    fn names_fit_the_ustar_fields_or_go_to_pax() {
        let mut header = new_header();
        let mut pax = Pax::default();
        set_name(&mut header, &mut pax, b"usr/bin/");
        assert_eq!(name_of(&header), b"usr/bin/");
        assert!(pax.records.is_empty());

        let long_dir = "d".repeat(120);
        let name = format!("{long_dir}/file");
        let mut header = new_header();
        let mut pax = Pax::default();
        set_name(&mut header, &mut pax, name.as_bytes());
        assert_eq!(name_of(&header), name.as_bytes(), "prefix and name");
        assert!(pax.records.is_empty());

        let name = "x".repeat(300);
        let mut header = new_header();
        let mut pax = Pax::default();
        set_name(&mut header, &mut pax, name.as_bytes());
        assert_eq!(pax.records, vec![("path".to_string(), name.into_bytes())]);
    }

    #[test]
    fn entry_names_mark_dirs_and_the_root() {
        assert_eq!(entry_name(&[], true), b"./");
        assert_eq!(entry_name(&["a".into(), "b".into()], false), b"a/b");
        assert_eq!(entry_name(&["a".into()], true), b"a/");
    }
}
