//! The part of the filter the agent evaluates itself: exclusions, glob patterns, and the
//! journalctl meaning of units. libsystemd's matches cannot negate or glob, so these run on
//! every entry read, after libsystemd's matches.
//!
//! Owns the pattern matching and which fields name a unit. It must never drop an entry
//! itself: it only answers `keep`; the reader passes a dropped entry's cursor to the
//! watermark like any entry that needs no delivery.

use super::Entry;
use crate::config::{Filter, UnitsMode};

/// A compiled selection; `None` from [`Selection::new`] when libsystemd does everything.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    include_units: Option<Vec<Glob>>,
    include_identifiers: Option<Vec<Glob>>,
    exclude_units: Vec<Glob>,
    exclude_identifiers: Vec<Glob>,
    exclude_terms: Vec<(Vec<u8>, Glob)>,
    mode: UnitsMode,
}

impl Selection {
    pub(crate) fn new(f: &Filter) -> Option<Selection> {
        let globs = |v: &[String]| v.iter().map(|s| Glob::new(s)).collect::<Vec<_>>();
        let s = Selection {
            include_units: f.units_in_agent().then(|| globs(&f.units)),
            include_identifiers: f.identifiers_in_agent().then(|| globs(&f.identifiers)),
            exclude_units: globs(&f.exclude_units),
            exclude_identifiers: globs(&f.exclude_identifiers),
            exclude_terms: f
                .exclude_matches
                .iter()
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.as_bytes().to_vec(), Glob::new(v)))
                .collect(),
            mode: f.units_mode,
        };
        let idle = s.include_units.is_none()
            && s.include_identifiers.is_none()
            && s.exclude_units.is_empty()
            && s.exclude_identifiers.is_empty()
            && s.exclude_terms.is_empty();
        (!idle).then_some(s)
    }

    /// Whether the entry is to be shipped.
    pub(crate) fn keep(&self, e: &Entry) -> bool {
        if let Some(units) = &self.include_units {
            if !self.about_unit(e, units) {
                return false;
            }
        }
        if let Some(ids) = &self.include_identifiers {
            if !e
                .get(b"SYSLOG_IDENTIFIER")
                .is_some_and(|v| ids.iter().any(|g| g.matches(v)))
            {
                return false;
            }
        }
        if !self.exclude_units.is_empty() && self.about_unit(e, &self.exclude_units) {
            return false;
        }
        if !self.exclude_identifiers.is_empty()
            && e.get(b"SYSLOG_IDENTIFIER")
                .is_some_and(|v| self.exclude_identifiers.iter().any(|g| g.matches(v)))
        {
            return false;
        }
        !self.exclude_terms.iter().any(|(field, g)| {
            e.fields()
                .any(|(n, v)| n == field.as_slice() && g.matches(v))
        })
    }

    /// Whether the entry is by (or, as journalctl has it, about) one of `units`.
    fn about_unit(&self, e: &Entry, units: &[Glob]) -> bool {
        let is = |v: Option<&[u8]>| v.is_some_and(|v| units.iter().any(|g| g.matches(v)));
        if is(e.get(b"_SYSTEMD_UNIT")) {
            return true;
        }
        if self.mode == UnitsMode::Processes {
            return false;
        }
        // journalctl -u: systemd's own messages about the unit (from PID 1), messages of
        // privileged programs about it, its coredumps; then the user-unit equivalents.
        let pid1 = e.get(b"_PID") == Some(b"1".as_slice());
        let root = e.get(b"_UID") == Some(b"0".as_slice());
        (pid1 && is(e.get(b"UNIT")))
            || (root && (is(e.get(b"OBJECT_SYSTEMD_UNIT")) || is(e.get(b"COREDUMP_UNIT"))))
            || is(e.get(b"_SYSTEMD_USER_UNIT"))
            || is(e.get(b"USER_UNIT"))
            || is(e.get(b"OBJECT_SYSTEMD_USER_UNIT"))
            || is(e.get(b"COREDUMP_USER_UNIT"))
    }
}

/// What the filter does to the newest `n` entries of the source: (entries, left by
/// libsystemd's matches, kept in the end). For `check`, before a filter is enabled.
pub(crate) fn effect(
    cfg: &crate::config::JournalConfig,
    n: u64,
) -> anyhow::Result<(u64, u64, u64)> {
    // The window: from the n-th newest entry of the whole journal to its end.
    let mut all = super::source::open(cfg, false)?;
    all.seek_tail()?;
    let mut total = 0;
    let mut from = None;
    while total < n && all.previous()? {
        total += 1;
        from = Some(all.timestamp_usec()?);
    }
    let Some(from) = from else {
        return Ok((0, 0, 0));
    };
    let mut j = super::source::open(cfg, true)?;
    j.seek_realtime_usec(from)?;
    let selection = Selection::new(&cfg.filter);
    let (mut matched, mut kept) = (0, 0);
    let mut e = Entry::new();
    let mut boot = None;
    while j.next()? {
        matched += 1;
        let Some(sel) = &selection else {
            kept += 1;
            continue;
        };
        j.take(&mut e, &mut boot)?;
        if sel.keep(&e) {
            kept += 1;
        }
    }
    Ok((total, matched, kept))
}

/// An fnmatch-style pattern over bytes: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`; anything else is
/// literal. Written here rather than taken from a crate: journal values are bytes, not
/// paths or UTF-8, and this is the whole of it.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    pat: Vec<u8>,
    literal: bool,
}

impl Glob {
    pub(crate) fn new(s: &str) -> Glob {
        Glob {
            pat: s.as_bytes().to_vec(),
            literal: !crate::config::is_glob(s),
        }
    }

    pub(crate) fn matches(&self, v: &[u8]) -> bool {
        if self.literal {
            return self.pat == v;
        }
        let (p, mut pi, mut vi) = (&self.pat, 0usize, 0usize);
        // The last `*` seen and where in the value it was tried: backtrack to it.
        let mut star: Option<(usize, usize)> = None;
        while vi < v.len() {
            if pi < p.len() {
                match p[pi] {
                    b'*' => {
                        star = Some((pi, vi));
                        pi += 1;
                        continue;
                    }
                    b'?' => {
                        pi += 1;
                        vi += 1;
                        continue;
                    }
                    b'[' => {
                        if let Some((hit, next)) = class(p, pi, v[vi]) {
                            if hit {
                                pi = next;
                                vi += 1;
                                continue;
                            }
                        } else if v[vi] == b'[' {
                            // An unclosed '[' is literal.
                            pi += 1;
                            vi += 1;
                            continue;
                        }
                    }
                    c if c == v[vi] => {
                        pi += 1;
                        vi += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// A `[...]` class at `p[at]`: whether `c` is in it and where the pattern goes on, or
/// `None` when the class is not closed.
fn class(p: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            hit |= (p[i]..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
        first = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, v: &str) -> bool {
        Glob::new(p).matches(v.as_bytes())
    }

    #[test]
    fn globs_as_fnmatch() {
        assert!(g("nginx@*.service", "nginx@site-a.service"));
        assert!(!g("nginx@*.service", "nginx.service"));
        assert!(g("kube*", "kubelet"));
        assert!(g("kube*", "kube"));
        assert!(!g("kube*", "akube"));
        assert!(g("*", ""));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "ac"));
        assert!(g("sshd[0-9]", "sshd7"));
        assert!(!g("sshd[!0-9]", "sshd7"));
        assert!(g("x[]]y", "x]y"));
        assert!(g("a*b*c", "a--b--b--c"));
        assert!(!g("a*b*c", "a--b--b--"));
        assert!(g("[unclosed", "[unclosed"));
        assert!(g("plain.service", "plain.service"));
        assert!(!g("plain.service", "plain.servicex"));
    }

    fn entry(fields: &[(&str, &str)]) -> Entry {
        let mut e = Entry::new();
        for (k, v) in fields {
            e.push_field(k.as_bytes(), v.as_bytes());
        }
        e
    }

    fn filter(f: impl FnOnce(&mut Filter)) -> Selection {
        let mut filter = Filter::default();
        f(&mut filter);
        Selection::new(&filter).expect("a selection")
    }

    #[test]
    fn exclusions_and_patterns() {
        let s = filter(|f| {
            f.exclude_units = vec!["noisy*.service".into()];
            f.exclude_identifiers = vec!["CRON".into()];
            f.exclude_matches = vec!["PRIORITY=7".into(), "MESSAGE=health*".into()];
        });
        assert!(!s.keep(&entry(&[("_SYSTEMD_UNIT", "noisy-a.service")])));
        assert!(s.keep(&entry(&[("_SYSTEMD_UNIT", "quiet.service")])));
        assert!(!s.keep(&entry(&[("SYSLOG_IDENTIFIER", "CRON")])));
        assert!(!s.keep(&entry(&[("PRIORITY", "7")])));
        assert!(!s.keep(&entry(&[("MESSAGE", "health check ok")])));
        assert!(s.keep(&entry(&[("MESSAGE", "unhealthy")])));
        assert!(Selection::new(&Filter::default()).is_none());
    }

    #[test]
    fn units_as_journalctl_has_them() {
        let s = filter(|f| {
            f.units = vec!["app.service".into()];
            f.units_mode = UnitsMode::Journalctl;
        });
        assert!(s.keep(&entry(&[("_SYSTEMD_UNIT", "app.service")])));
        // systemd about the unit: only from PID 1.
        assert!(s.keep(&entry(&[("_PID", "1"), ("UNIT", "app.service")])));
        assert!(!s.keep(&entry(&[("_PID", "77"), ("UNIT", "app.service")])));
        assert!(s.keep(&entry(&[("_UID", "0"), ("COREDUMP_UNIT", "app.service")])));
        assert!(!s.keep(&entry(&[
            ("_UID", "1000"),
            ("COREDUMP_UNIT", "app.service")
        ])));
        assert!(s.keep(&entry(&[("_SYSTEMD_USER_UNIT", "app.service")])));
        assert!(!s.keep(&entry(&[("_SYSTEMD_UNIT", "other.service")])));
        // The default: the unit's own processes only.
        let p = filter(|f| f.units = vec!["app*".into()]);
        assert!(p.keep(&entry(&[("_SYSTEMD_UNIT", "app.service")])));
        assert!(!p.keep(&entry(&[("_PID", "1"), ("UNIT", "app.service")])));
    }
}
