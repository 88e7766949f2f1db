//! The on-disk format: kernel overlayfs xattrs and whiteouts, and the OCI
//! image conventions (`.wh.NAME`, `.wh..wh..opq`) read in layers.
//!
//! Pure functions only, so the rules can be tested without a filesystem.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::sys::{FileType, Stat};

/// The OCI whiteout prefix: `.wh.NAME` hides NAME in lower layers.
pub const OCI_WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The OCI opaque marker: a dir holding it hides the same dir in lower layers.
pub const OCI_OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The OCI hard-link staging dir; never part of the image's tree.
pub const OCI_HARDLINK_DIR: &str = ".wh..wh.plnk";

/// Which xattr namespace overlay metadata lives in: `trusted.` needs
/// CAP_SYS_ADMIN, `user.` is what the kernel uses with `userxattr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrNamespace {
    Trusted,
    User,
}

impl XattrNamespace {
    pub const fn prefix(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.",
            XattrNamespace::User => "user.overlay.",
        }
    }

    pub fn opaque(self) -> &'static OsStr {
        OsStr::new(match self {
            XattrNamespace::Trusted => "trusted.overlay.opaque",
            XattrNamespace::User => "user.overlay.opaque",
        })
    }

    pub fn origin(self) -> &'static OsStr {
        OsStr::new(match self {
            XattrNamespace::Trusted => "trusted.overlay.origin",
            XattrNamespace::User => "user.overlay.origin",
        })
    }

    pub fn redirect(self) -> &'static OsStr {
        OsStr::new(match self {
            XattrNamespace::Trusted => "trusted.overlay.redirect",
            XattrNamespace::User => "user.overlay.redirect",
        })
    }

    pub fn metacopy(self) -> &'static OsStr {
        OsStr::new(match self {
            XattrNamespace::Trusted => "trusted.overlay.metacopy",
            XattrNamespace::User => "user.overlay.metacopy",
        })
    }

    pub fn nlink(self) -> &'static OsStr {
        OsStr::new(match self {
            XattrNamespace::Trusted => "trusted.overlay.nlink",
            XattrNamespace::User => "user.overlay.nlink",
        })
    }

    pub fn impure(self) -> &'static OsStr {
        OsStr::new(match self {
            XattrNamespace::Trusted => "trusted.overlay.impure",
            XattrNamespace::User => "user.overlay.impure",
        })
    }
}

/// Both namespaces, in the order they are read.
/// File capabilities: cleared by a change of owner, so a copy-up sets
/// them last.
pub const CAPABILITY_XATTR: &str = "security.capability";

pub const READ_NAMESPACES: [XattrNamespace; 2] = [XattrNamespace::Trusted, XattrNamespace::User];

/// The value of the `opaque` xattr that marks a dir opaque.
pub const OPAQUE_YES: &[u8] = b"y";
/// The `opaque` value that marks a lower dir as holding xattr whiteouts.
pub const OPAQUE_XWHITEOUTS: u8 = b'x';

/// What the first byte of an `opaque` xattr says about a dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opacity {
    Transparent,
    Opaque,
    /// Not opaque, but entries may be xattr whiteouts (lower layers only).
    HasXattrWhiteouts,
}

pub fn opacity_from_xattr(first_byte: Option<u8>) -> Opacity {
    match first_byte {
        Some(b'y') => Opacity::Opaque,
        Some(OPAQUE_XWHITEOUTS) => Opacity::HasXattrWhiteouts,
        _ => Opacity::Transparent,
    }
}

/// The longest name a layer's filesystem can hold (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// fuse-overlayfs's own namespace (its origin, opaque and override_stat
/// records), which it hides from the merged view; a drop-in must too.
const FUSE_OVERLAYFS_PREFIX: &[u8] = b"user.fuseoverlayfs.";
/// The containers namespace: shown, but fuse-overlayfs refuses to let users
/// set it, since `user.containers.override_stat` can hold ownership.
const CONTAINERS_PREFIX: &[u8] = b"user.containers.";

/// Whether the merged view hides an xattr: overlay's private metadata, and
/// fuse-overlayfs's namespace as fuse-overlayfs hides it.
pub fn is_hidden_xattr(name: &OsStr) -> bool {
    is_private_xattr(name) || name.as_bytes().starts_with(FUSE_OVERLAYFS_PREFIX)
}

/// Whether users may not set an xattr through the mount.
pub fn is_protected_xattr(name: &OsStr) -> bool {
    is_hidden_xattr(name) || name.as_bytes().starts_with(CONTAINERS_PREFIX)
}

/// Whether an xattr name belongs to overlay's private metadata, which the
/// merged view never shows, users may not set and copy-up does not copy.
pub fn is_private_xattr(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    READ_NAMESPACES
        .iter()
        .any(|ns| bytes.starts_with(ns.prefix().as_bytes()))
}

/// A kernel whiteout: a character device with device number 0/0.
pub fn is_chardev_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// For a name like `.wh.foo`, the hidden name `foo`; `None` for other names
/// and for the OCI markers that are not whiteouts of an entry.
pub fn oci_whiteout_target(name: &OsStr) -> Option<&OsStr> {
    let bytes = name.as_bytes();
    let rest = bytes.strip_prefix(OCI_WHITEOUT_PREFIX)?;
    if rest.is_empty() || rest.starts_with(OCI_WHITEOUT_PREFIX) {
        return None;
    }
    Some(OsStr::from_bytes(rest))
}

/// Names that belong to the OCI whiteout conventions and so are never shown.
pub fn is_reserved_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX)
}

/// The OCI whiteout file name that hides `name`.
pub fn oci_whiteout_name(name: &OsStr) -> std::ffi::OsString {
    let mut out = Vec::with_capacity(name.len() + OCI_WHITEOUT_PREFIX.len());
    out.extend_from_slice(OCI_WHITEOUT_PREFIX);
    out.extend_from_slice(name.as_bytes());
    OsStr::from_bytes(&out).to_os_string()
}

/// Splits a NUL-separated xattr name list, dropping overlay-private names.
pub fn filter_xattr_list(list: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len());
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !is_hidden_xattr(OsStr::from_bytes(name)) {
            out.extend_from_slice(name);
            out.push(0);
        }
    }
    out
}

/// Iterates the names in a NUL-separated xattr list.
pub fn xattr_names(list: &[u8]) -> impl Iterator<Item = &OsStr> {
    list.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(OsStr::from_bytes)
}

/// The xattr names an object has (a NUL-separated list as listxattr gives
/// it), so that only the overlay xattrs it has are read.
#[derive(Clone, Debug, Default)]
pub struct XattrNameList(pub Vec<u8>);

impl XattrNameList {
    pub fn contains(&self, name: &OsStr) -> bool {
        xattr_names(&self.0).any(|n| n == name)
    }
}

/// Where a renamed dir's lower dirs are, as the `overlay.redirect` xattr
/// says: a path from the overlay root, or a new name in the same parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    Absolute(Vec<std::ffi::OsString>),
    Relative(std::ffi::OsString),
}

impl Redirect {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Redirect::Relative(name) => name.as_bytes().to_vec(),
            Redirect::Absolute(path) => {
                let mut out = Vec::new();
                for component in path {
                    out.push(b'/');
                    out.extend_from_slice(component.as_bytes());
                }
                out
            }
        }
    }

    /// `None` for values the kernel rejects as an invalid redirect.
    pub fn decode(value: &[u8]) -> Option<Redirect> {
        if value.is_empty() || value.contains(&0) {
            return None;
        }
        let Some(rest) = value.strip_prefix(b"/") else {
            if value.contains(&b'/') || value == b"." || value == b".." {
                return None;
            }
            return Some(Redirect::Relative(OsStr::from_bytes(value).to_os_string()));
        };
        let mut path = Vec::new();
        for component in rest.split(|&b| b == b'/') {
            if component.is_empty() || component == b"." || component == b".." {
                return None;
            }
            path.push(OsStr::from_bytes(component).to_os_string());
        }
        Some(Redirect::Absolute(path))
    }
}

/// The kernel's `struct ovl_fb` header: version, magic, len, flags, type,
/// then a 16-byte filesystem UUID; the file handle bytes follow.
const ORIGIN_HEADER: usize = 21;
const ORIGIN_VERSION: u8 = 0;
const ORIGIN_MAGIC: u8 = 0xfb;
/// `OVL_FH_FLAG_BIG_ENDIAN`: set when the handle was made on a big-endian host.
const ORIGIN_FLAG_BIG_ENDIAN: u8 = 1 << 0;
const ORIGIN_FLAGS_KNOWN: u8 = 0b111;

/// Where a copied-up object came from, as the `overlay.origin` xattr holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub uuid: [u8; 16],
    pub handle_type: u8,
    pub handle: Vec<u8>,
}

impl Origin {
    /// The xattr value, in the kernel's format.
    pub fn encode(&self) -> Vec<u8> {
        let len = ORIGIN_HEADER + self.handle.len();
        let flags = if cfg!(target_endian = "big") {
            ORIGIN_FLAG_BIG_ENDIAN
        } else {
            0
        };
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&[
            ORIGIN_VERSION,
            ORIGIN_MAGIC,
            len as u8,
            flags,
            self.handle_type,
        ]);
        out.extend_from_slice(&self.uuid);
        out.extend_from_slice(&self.handle);
        out
    }

    /// Reads an xattr value; `None` for the empty "origin unknown" value and
    /// for anything the kernel would reject, or made on a host of the other
    /// byte order.
    pub fn decode(value: &[u8]) -> Option<Origin> {
        if value.len() < ORIGIN_HEADER || value.len() > u8::MAX as usize {
            return None;
        }
        let [version, magic, len, flags, handle_type] =
            [value[0], value[1], value[2], value[3], value[4]];
        let ours = if cfg!(target_endian = "big") {
            ORIGIN_FLAG_BIG_ENDIAN
        } else {
            0
        };
        if version != ORIGIN_VERSION
            || magic != ORIGIN_MAGIC
            || usize::from(len) != value.len()
            || flags & !ORIGIN_FLAGS_KNOWN != 0
            || flags & ORIGIN_FLAG_BIG_ENDIAN != ours
        {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&value[5..ORIGIN_HEADER]);
        Some(Origin {
            uuid,
            handle_type,
            handle: value[ORIGIN_HEADER..].to_vec(),
        })
    }
}

/// The name of an index entry (`<workdir>/index/NAME`): the hex of the
/// origin value of the lower file it is the copy of.
pub fn index_name(origin: &[u8]) -> std::ffi::OsString {
    let mut out = String::with_capacity(origin.len() * 2);
    for b in origin {
        out.push_str(&format!("{b:02x}"));
    }
    std::ffi::OsString::from(out)
}

/// The origin value an index entry's name encodes; `None` for names that
/// are not lowercase hex.
pub fn origin_of_index_name(name: &OsStr) -> Option<Vec<u8>> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// An `overlay.nlink` value: the link count of an indexed file, relative
/// to the lower file's count (`L+N`) or to the upper inode's (`U-N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NlinkValue {
    LowerRelative(i64),
    UpperRelative(i64),
}

impl NlinkValue {
    pub fn decode(value: &[u8]) -> Option<NlinkValue> {
        let text = std::str::from_utf8(value).ok()?;
        let (base, delta) = text.split_at_checked(1)?;
        if !delta.starts_with(['+', '-']) {
            return None;
        }
        let delta: i64 = delta.parse().ok()?;
        match base {
            "L" => Some(NlinkValue::LowerRelative(delta)),
            "U" => Some(NlinkValue::UpperRelative(delta)),
            _ => None,
        }
    }

    /// The link count the merged view shows.
    pub fn count(self, lower_nlink: u64, upper_nlink: u64) -> Option<u64> {
        let (base, delta) = match self {
            NlinkValue::LowerRelative(d) => (lower_nlink, d),
            NlinkValue::UpperRelative(d) => (upper_nlink, d),
        };
        u64::try_from(i64::try_from(base).ok()?.checked_add(delta)?).ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redirects_round_trip_and_reject_what_the_kernel_rejects() {
        let abs = Redirect::Absolute(vec!["a".into(), "b c".into()]);
        assert_eq!(abs.encode(), b"/a/b c".to_vec());
        assert_eq!(Redirect::decode(b"/a/b c"), Some(abs));
        assert_eq!(
            Redirect::decode(b"name"),
            Some(Redirect::Relative("name".into()))
        );
        for bad in [
            &b""[..],
            b"a/b",
            b"/a//b",
            b"/a/",
            b"/",
            b"/a/../b",
            b"a\0b",
        ] {
            assert_eq!(Redirect::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn origins_round_trip_in_the_kernel_layout() {
        let origin = Origin {
            uuid: [7; 16],
            handle_type: 1,
            handle: vec![1, 2, 3, 4, 5, 6, 7, 8],
        };
        let value = origin.encode();
        assert_eq!(&value[..5], &[0, 0xfb, 29, 0, 1]);
        assert_eq!(value.len(), 29);
        assert_eq!(Origin::decode(&value), Some(origin));
        assert_eq!(Origin::decode(b""), None, "empty means origin unknown");
        let mut bad = value.clone();
        bad[1] = 0xfa;
        assert_eq!(Origin::decode(&bad), None);
        let mut short = value;
        short.pop();
        assert_eq!(Origin::decode(&short), None, "len must match");
    }

    use super::*;

    #[test]
    fn oci_whiteouts_name_their_target() {
        assert_eq!(
            oci_whiteout_target(OsStr::new(".wh.foo")),
            Some(OsStr::new("foo"))
        );
        assert_eq!(oci_whiteout_target(OsStr::new(".wh..wh..opq")), None);
        assert_eq!(oci_whiteout_target(OsStr::new(".wh..wh.plnk")), None);
        assert_eq!(oci_whiteout_target(OsStr::new(".wh.")), None);
        assert_eq!(oci_whiteout_target(OsStr::new("foo")), None);
        assert_eq!(oci_whiteout_target(OsStr::new("x.wh.foo")), None);
        assert_eq!(oci_whiteout_name(OsStr::new("bar")), OsStr::new(".wh.bar"));
    }

    #[test]
    fn private_xattrs_are_recognised_and_filtered() {
        assert!(is_private_xattr(OsStr::new("trusted.overlay.opaque")));
        assert!(is_private_xattr(OsStr::new("user.overlay.redirect")));
        assert!(!is_private_xattr(OsStr::new("user.overlayx")));
        assert!(!is_private_xattr(OsStr::new("security.selinux")));
        let list = b"user.a\0trusted.overlay.opaque\0security.capability\0user.overlay.origin\0";
        assert_eq!(
            filter_xattr_list(list),
            b"user.a\0security.capability\0".to_vec()
        );
        let fo = b"user.fuseoverlayfs.override_stat\0user.containers.override_stat\0";
        assert_eq!(
            filter_xattr_list(fo),
            b"user.containers.override_stat\0".to_vec()
        );
        assert!(is_protected_xattr(OsStr::new("user.containers.x")));
        assert!(!is_hidden_xattr(OsStr::new("user.containers.x")));
        assert!(!is_private_xattr(OsStr::new("user.fuseoverlayfs.origin")));
    }

    #[test]
    fn opacity_reads_only_the_first_byte() {
        assert_eq!(opacity_from_xattr(Some(b'y')), Opacity::Opaque);
        assert_eq!(opacity_from_xattr(Some(b'x')), Opacity::HasXattrWhiteouts);
        assert_eq!(opacity_from_xattr(Some(b'n')), Opacity::Transparent);
        assert_eq!(opacity_from_xattr(None), Opacity::Transparent);
    }
    #[test]
    fn index_names_are_the_hex_of_the_origin_both_ways() {
        let origin = [0x00, 0xfb, 0x1d, 0xab];
        let name = index_name(&origin);
        assert_eq!(name, std::ffi::OsString::from("00fb1dab"));
        assert_eq!(origin_of_index_name(&name), Some(origin.to_vec()));
        assert_eq!(origin_of_index_name(OsStr::new("0g")), None);
        assert_eq!(origin_of_index_name(OsStr::new("abc")), None);
        assert_eq!(origin_of_index_name(OsStr::new("AB")), None);
    }

    #[test]
    fn nlink_values_count_from_their_base() {
        assert_eq!(
            NlinkValue::decode(b"L+0"),
            Some(NlinkValue::LowerRelative(0))
        );
        assert_eq!(
            NlinkValue::decode(b"L-2"),
            Some(NlinkValue::LowerRelative(-2))
        );
        assert_eq!(
            NlinkValue::decode(b"U+1"),
            Some(NlinkValue::UpperRelative(1))
        );
        for bad in [&b""[..], b"L", b"L3", b"X+1", b"L+x"] {
            assert_eq!(NlinkValue::decode(bad), None, "{bad:?}");
        }
        assert_eq!(NlinkValue::LowerRelative(1).count(2, 9), Some(3));
        assert_eq!(NlinkValue::UpperRelative(-1).count(2, 9), Some(8));
        assert_eq!(NlinkValue::LowerRelative(-3).count(2, 9), None);
    }
}
