//! Which of an entry's fields go into its record, under which names, and how repeated
//! names become one key with an array of values.
//!
//! Owns the selection (`include_fields`, `exclude_fields`, added fields that override the
//! entry's), the opt-in name profile (lowercase, no leading underscore) and the grouping of
//! repeated names through a small hash table. It must never reorder: a name's values keep
//! the entry's order, and names keep the order in which they first appear.

use super::Encoder;
use crate::journal::Entry;

impl Encoder {
    fn selected(&self, name: &[u8]) -> bool {
        !self.selecting
            || (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
                && !self.exclude.iter().any(|p| p.matches(name))
                && !(self.add_override && self.add_fields.iter().any(|(k, _)| k == name))
    }

    /// A field's name as the profile writes it; `buf` holds a changed name.
    pub(super) fn name<'a>(&self, raw: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
        if !self.lowercase && !self.strip {
            return raw;
        }
        let mut n = raw;
        if self.strip && n.len() > 1 && n[0] == b'_' && n[1] != b'_' {
            n = &n[1..];
        }
        if !self.lowercase {
            return n;
        }
        buf.clear();
        buf.extend(n.iter().map(u8::to_ascii_lowercase));
        buf
    }

    /// Whether the added field `name` goes into this entry's record: always when it
    /// overrides, else only when the entry has no field of that name (the entry's wins).
    pub(super) fn adds(&self, e: &Entry, name: &[u8]) -> bool {
        self.add_override
            || !self
                .groups
                .iter()
                .any(|g| e.field(g.first as usize).0 == name)
    }

    /// Groups repeated fields, keeping the order in which names first appear. Names are
    /// compared by a hash first: a 17-field entry would otherwise cost ~140 name
    /// comparisons, one of the encoder's largest costs in the profile.
    pub(super) fn group(&mut self, e: &Entry) {
        self.slots = [0; GROUP_SLOTS];
        self.groups.clear();
        self.group_of.clear();
        self.has_boot_field = false;
        for i in 0..e.len() {
            let name = e.field(i).0;
            if name == b"_BOOT_ID" {
                self.has_boot_field = true;
            }
            if !self.selected(name) {
                self.group_of.push(NO_GROUP);
                continue;
            }
            let hash = name_hash(name);
            let found = self.find_group(e, name, hash);
            match found {
                Some(g) => {
                    self.groups[g].count += 1;
                    self.group_of.push(g as u32);
                }
                None => {
                    self.remember_group(hash);
                    self.group_of.push(self.groups.len() as u32);
                    self.groups.push(Group {
                        first: i as u32,
                        hash,
                        count: 1,
                    });
                }
            }
        }
    }

    /// The group already holding `name`: a small open-addressing table over the hash (a
    /// linear search of the groups was a fifth of the encoder's time at ~20 fields, #19).
    fn find_group(&self, e: &Entry, name: &[u8], hash: u64) -> Option<usize> {
        let is = |g: &Group| g.hash == hash && e.field(g.first as usize).0 == name;
        let mut at = (hash >> 57) as usize % GROUP_SLOTS;
        loop {
            let g = self.slots[at];
            if g == 0 {
                break;
            }
            if is(&self.groups[usize::from(g - 1)]) {
                return Some(usize::from(g - 1));
            }
            at = (at + 1) % GROUP_SLOTS;
        }
        // Groups past what the table holds (an unusual entry) are searched the slow way.
        let tabled = GROUP_SLOTS / 2;
        self.groups
            .iter()
            .skip(tabled)
            .position(is)
            .map(|i| i + tabled)
    }

    /// Enters the next group (index `groups.len()`) in the table, while it has room (at
    /// most half full, so a search always meets an empty slot).
    fn remember_group(&mut self, hash: u64) {
        let index = self.groups.len();
        if index >= GROUP_SLOTS / 2 {
            return;
        }
        let mut at = (hash >> 57) as usize % GROUP_SLOTS;
        while self.slots[at] != 0 {
            at = (at + 1) % GROUP_SLOTS;
        }
        self.slots[at] = index as u8 + 1;
    }
}

/// Size of the group table: entries have ~20 distinct names, rarely more than 64.
pub(super) const GROUP_SLOTS: usize = 128;

/// `group_of` for a field no group takes.
pub(super) const NO_GROUP: u32 = u32::MAX;

/// The fields of one name: where it first appears and how many times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    pub(super) first: u32,
    hash: u64,
    pub(super) count: u32,
}

/// A hash of a field name from its length and its first and last eight bytes: a few
/// instructions whatever the name (a byte-by-byte hash was a visible share of the
/// encoder's time, #19). Names that share a hash are compared byte by byte, so a weak hash
/// costs time, never correctness.
fn name_hash(name: &[u8]) -> u64 {
    let len = name.len();
    let (head, tail) = if len >= 8 {
        (
            u64::from_le_bytes(name[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(name[len - 8..].try_into().expect("8 bytes")),
        )
    } else {
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(name);
        (u64::from_le_bytes(b), 0)
    };
    head.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ tail.rotate_left(31).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ len as u64
}

#[cfg(test)]
mod tests {
    use crate::format::encode::tests::{decode, encoder, entry};
    use rmpv::Value;

    #[test]
    fn name_profile_is_opt_in() {
        let e = entry(&[
            (b"MESSAGE", b"hi"),
            (b"_HOSTNAME", b"web-1"),
            (b"PRIORITY", b"4"),
        ]);
        let names = |extra: &str| {
            let mut out = Vec::new();
            encoder(extra).encode(&e, &mut out);
            decode(&out).into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        };
        let plain = names("");
        assert!(
            plain.contains(&"_HOSTNAME".to_string())
                && !plain.contains(&"PRIORITY_NAME".to_string())
        );
        let p = names(
            "[encoding]\nlowercase_names = true\nstrip_underscore = true\npriority_name = true\n",
        );
        for want in [
            "__CURSOR",
            "__REALTIME_TIMESTAMP",
            "message",
            "hostname",
            "priority",
            "priority_name",
            "boot_id",
        ] {
            assert!(p.contains(&want.to_string()), "{want} in {p:?}");
        }
        let mut out = Vec::new();
        encoder("[encoding]\npriority_name = true\n").encode(&e, &mut out);
        let m = decode(&out);
        assert!(m.contains(&("PRIORITY_NAME".to_string(), Value::from("warning"))));
    }

    #[test]
    fn include_and_exclude() {
        let mut enc = encoder(
            "[encoding]\ninclude_fields = [\"MESSAGE\", \"_SYSTEMD_*\"]\nexclude_fields = [\"_SYSTEMD_CGROUP\"]\n",
        );
        let e = entry(&[
            (b"MESSAGE", b"m"),
            (b"PRIORITY", b"6"),
            (b"_SYSTEMD_UNIT", b"u"),
            (b"_SYSTEMD_CGROUP", b"c"),
        ]);
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let names: Vec<_> = decode(&out)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !k.starts_with("__"))
            .collect();
        assert_eq!(names, ["_BOOT_ID", "MESSAGE", "_SYSTEMD_UNIT"]);
    }

    #[test]
    fn many_distinct_names_and_their_repeats_group_like_few() {
        let names: Vec<String> = (0..150).map(|i| format!("FIELD_{i}")).collect();
        let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
        for n in &names {
            fields.push((n.as_bytes(), b"first"));
        }
        for n in names.iter().rev() {
            fields.push((n.as_bytes(), b"second"));
        }
        let e = entry(&fields);
        let mut out = Vec::new();
        encoder("").encode(&e, &mut out);
        let map = decode(&out);
        for n in &names {
            let v = &map.iter().find(|(k, _)| k == n).unwrap().1;
            let values: Vec<&str> = v
                .as_array()
                .unwrap_or_else(|| panic!("{n} repeated: {v}"))
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert_eq!(values, ["first", "second"], "{n}");
        }
        assert_eq!(
            map.iter().filter(|(k, _)| k.starts_with("FIELD_")).count(),
            150
        );
    }
}
