//! How owners are shown and stored: fuse-overlayfs's `uidmapping=` /
//! `gidmapping=` (stored ids shown as other ids, so one storage serves
//! several user namespaces without chowning), `squash_to_*`, and the
//! `override_stat` xattr that rootless container storage writes when it
//! cannot chown (`xattr_permissions=`).

use std::ffi::OsStr;

/// One `STORED:SHOWN:LEN` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdRange {
    stored: u32,
    shown: u32,
    len: u32,
}

/// A set of ranges; empty means ids are shown as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

/// The id shown for an id no range covers, as the kernel shows unmapped ids.
pub const OVERFLOW_ID: u32 = 65534;

impl IdMap {
    /// Parses `S:H:L[:S:H:L...]` (also with `,` between triples).
    pub fn parse(spec: &str) -> Result<IdMap, String> {
        let numbers: Vec<&str> = spec.split([':', ',']).filter(|s| !s.is_empty()).collect();
        if numbers.is_empty() || !numbers.len().is_multiple_of(3) {
            return Err(format!(
                "id mapping '{spec}' is not a list of ID:MAPPED-ID:LENGTH triples"
            ));
        }
        let mut ranges = Vec::new();
        for triple in numbers.chunks(3) {
            let parse = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| format!("id mapping '{spec}': '{s}' is not a number"))
            };
            let range = IdRange {
                stored: parse(triple[0])?,
                shown: parse(triple[1])?,
                len: parse(triple[2])?,
            };
            if range.len == 0
                || range.stored.checked_add(range.len - 1).is_none()
                || range.shown.checked_add(range.len - 1).is_none()
            {
                return Err(format!(
                    "id mapping '{spec}': bad range {}:{}:{}",
                    range.stored, range.shown, range.len
                ));
            }
            ranges.push(range);
        }
        Ok(IdMap { ranges })
    }

    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The id shown for a stored id.
    pub fn shown(&self, stored: u32) -> u32 {
        if self.ranges.is_empty() {
            return stored;
        }
        self.ranges
            .iter()
            .find(|r| stored >= r.stored && stored - r.stored < r.len)
            .map_or(OVERFLOW_ID, |r| r.shown + (stored - r.stored))
    }

    /// The id stored for an id a caller gave; `None` if no range covers it.
    pub fn stored(&self, shown: u32) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(shown);
        }
        self.ranges
            .iter()
            .find(|r| shown >= r.shown && shown - r.shown < r.len)
            .map(|r| r.stored + (shown - r.shown))
    }
}

/// Where ownership that could not be set for real is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrideXattr {
    /// `xattr_permissions=1`
    FuseOverlayfs,
    /// `xattr_permissions=2`
    Containers,
}

impl OverrideXattr {
    pub fn name(self) -> &'static OsStr {
        OsStr::new(match self {
            OverrideXattr::FuseOverlayfs => "user.fuseoverlayfs.override_stat",
            OverrideXattr::Containers => "user.containers.override_stat",
        })
    }
}

/// Owner and permission bits from an override xattr, `uid:gid:mode[:type]`
/// (mode in octal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverrideStat {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl OverrideStat {
    pub fn parse(value: &[u8]) -> Option<OverrideStat> {
        let text = std::str::from_utf8(value).ok()?;
        let mut fields = text.trim_end_matches('\0').split(':');
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
        Some(OverrideStat {
            uid,
            gid,
            mode: mode & 0o7777,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{}:0{:o}", self.uid, self.gid, self.mode & 0o7777).into_bytes()
    }
}

/// Everything that changes how owners are shown and stored.
#[derive(Clone, Debug, Default)]
pub struct Ownership {
    pub uids: IdMap,
    pub gids: IdMap,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    pub override_xattr: Option<OverrideXattr>,
}

impl Ownership {
    pub fn is_plain(&self) -> bool {
        self.uids.is_identity()
            && self.gids.is_identity()
            && self.squash_uid.is_none()
            && self.squash_gid.is_none()
            && self.override_xattr.is_none()
    }

    pub fn shown_uid(&self, stored: u32) -> u32 {
        self.squash_uid.unwrap_or_else(|| self.uids.shown(stored))
    }

    pub fn shown_gid(&self, stored: u32) -> u32 {
        self.squash_gid.unwrap_or_else(|| self.gids.shown(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_example_maps_both_ways() {
        let map = IdMap::parse("0:1000:1:1:110000:65536").unwrap();
        assert_eq!(map.shown(0), 1000);
        assert_eq!(map.shown(1), 110000);
        assert_eq!(map.shown(65536), 175535);
        assert_eq!(map.shown(70000), OVERFLOW_ID);
        assert_eq!(map.stored(1000), Some(0));
        assert_eq!(map.stored(110005), Some(6));
        assert_eq!(map.stored(5), None);
    }

    #[test]
    fn bad_mappings_are_refused() {
        assert!(IdMap::parse("0:1000").is_err());
        assert!(IdMap::parse("a:b:c").is_err());
        assert!(IdMap::parse("0:0:0").is_err());
        assert!(IdMap::parse("4294967295:0:2").is_err());
    }

    #[test]
    fn override_stat_round_trips() {
        let o = OverrideStat::parse(b"0:0:0755:dir").unwrap();
        assert_eq!(
            o,
            OverrideStat {
                uid: 0,
                gid: 0,
                mode: 0o755
            }
        );
        assert_eq!(OverrideStat::parse(&o.encode()), Some(o));
        assert_eq!(
            OverrideStat::parse(b"1000:100:4755"),
            Some(OverrideStat {
                uid: 1000,
                gid: 100,
                mode: 0o4755
            })
        );
        assert_eq!(OverrideStat::parse(b"x:0:0"), None);
    }

    #[test]
    fn squash_wins_over_mapping() {
        let own = Ownership {
            uids: IdMap::parse("0:1000:10").unwrap(),
            squash_uid: Some(0),
            ..Ownership::default()
        };
        assert_eq!(own.shown_uid(5), 0);
        assert_eq!(own.shown_gid(5), 5);
    }
}
