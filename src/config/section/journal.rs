//! `[journal]`: which journal the agent reads, where it starts, what it does when its
//! saved place is gone, and which entries the filters select.
//!
//! Owns the filter's configured form only; how a filter is applied (libsystemd matches
//! for what they can express, the agent for globs, exclusions and journalctl's meaning of
//! units) is `journal::select`'s. Deriving this section must never open the journal: a
//! directory that does not exist is for `check` and `run` to report.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Result, bail};
use toml::Spanned;

use crate::config::check::{Locator, check_match_term, parse_priority, parse_rfc3339};
use crate::config::raw::RawJournal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The local machine's journal (system and user journals, no remote ones).
    Local,
    Directory(PathBuf),
    Files(Vec<PathBuf>),
    Namespace(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local => write!(f, "local journal"),
            Source::Directory(d) => write!(f, "journal directory {}", d.display()),
            Source::Files(files) => write!(f, "{} journal file(s)", files.len()),
            Source::Namespace(ns) => write!(f, "journal namespace {ns:?}"),
        }
    }
}

/// Where to begin when there is no saved cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Head,
    Tail,
    /// Microseconds since the Unix epoch.
    Since(u64),
}

/// Which code reads the journal files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    /// libsystemd's sd-journal: the reference the test suite compares the native reader
    /// with, and the way back should a journal ever read differently.
    Libsystemd,
    /// The agent's own file reader (`journal::native`), the default: the same entries,
    /// fields, order and cursors at about a third of libsystemd's CPU.
    Native,
}

/// What to do when the saved cursor no longer exists in the journal (it was vacuumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorLost {
    /// Report the gap loudly and continue at the oldest entry after it.
    Resume,
    /// Refuse to start until an operator decides.
    Refuse,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JournalConfig {
    /// The journal input runs (false: only `[forward]` does).
    pub enabled: bool,
    pub source: Source,
    pub start: Start,
    pub cursor_lost: CursorLost,
    pub filter: Filter,
    /// Skip the agent's own log entries so it never ships (and logs about) itself.
    pub exclude_own_entries: bool,
    pub reader: ReaderKind,
}

/// Entry filters. What libsystemd can express (exact names, priorities, `matches`) it
/// evaluates as journal matches; patterns, exclusions and the journalctl meaning of units
/// are evaluated by the agent (`journal::select`), because libsystemd matches cannot negate
/// or glob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Unit names or glob patterns (`nginx@*.service`); a name without a type gets
    /// `.service`, as `journalctl -u` does.
    pub units: Vec<String>,
    pub identifiers: Vec<String>,
    pub max_priority: Option<u8>,
    /// journalctl-style terms: `FIELD=value` or `+` (OR between groups).
    pub matches: Vec<String>,
    pub exclude_units: Vec<String>,
    pub exclude_identifiers: Vec<String>,
    /// `FIELD=value` terms (the value may be a glob): an entry matching any is excluded.
    pub exclude_matches: Vec<String>,
    pub units_mode: UnitsMode,
}

/// Which entries a unit name selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnitsMode {
    /// Entries the unit's processes wrote (`_SYSTEMD_UNIT`).
    #[default]
    Processes,
    /// As `journalctl -u`: also what systemd and coredumps say about the unit (`UNIT`,
    /// `OBJECT_SYSTEMD_UNIT`, `COREDUMP_UNIT`) and the user-unit equivalents.
    Journalctl,
}

/// Whether a name is a glob pattern (fnmatch: `*`, `?`, `[...]`).
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
            && self.identifiers.is_empty()
            && self.max_priority.is_none()
            && self.matches.is_empty()
            && self.exclude_units.is_empty()
            && self.exclude_identifiers.is_empty()
            && self.exclude_matches.is_empty()
    }

    /// The units are selected by the agent, not by libsystemd.
    pub fn units_in_agent(&self) -> bool {
        !self.units.is_empty()
            && (self.units_mode == UnitsMode::Journalctl || self.units.iter().any(|u| is_glob(u)))
    }

    /// The identifiers are selected by the agent, not by libsystemd.
    pub fn identifiers_in_agent(&self) -> bool {
        self.identifiers.iter().any(|i| is_glob(i))
    }

    /// libsystemd matches are in use: entries they leave out never reach the agent, so
    /// sequence-number jumps are not gaps and filtered stretches must be passed at idle.
    pub fn uses_journal_matches(&self) -> bool {
        !self.matches.is_empty()
            || self.max_priority.is_some()
            || (!self.units.is_empty() && !self.units_in_agent())
            || (!self.identifiers.is_empty() && !self.identifiers_in_agent())
    }
}

pub(super) fn journal(raw: RawJournal, at: &Locator) -> Result<JournalConfig> {
    let source = source(raw.directory, raw.files, raw.namespace, at)?;
    let start = start(raw.start, raw.since, at)?;
    let cursor_lost = at.choice(
        "journal.cursor_lost",
        raw.cursor_lost,
        CursorLost::Resume,
        &[
            ("resume", CursorLost::Resume),
            ("refuse", CursorLost::Refuse),
        ],
    )?;
    let max_priority = raw
        .priority
        .map(|p| at.with("journal.priority", p, |p| parse_priority(&p)))
        .transpose()?;

    let not_empty = |what: &'static str| {
        move |s: String| {
            if s.is_empty() {
                Err(format!("{what} must not be empty"))
            } else {
                Ok(s)
            }
        }
    };
    // A struct's fields are evaluated in the order written, so this is the order the keys
    // are checked in: a file with several mistakes is refused for the same one every time.
    let filter = Filter {
        max_priority,
        units: each(at, "journal.units", raw.units, unit_name)?,
        identifiers: each(
            at,
            "journal.identifiers",
            raw.identifiers,
            not_empty("identifiers"),
        )?,
        exclude_units: each(at, "journal.exclude_units", raw.exclude_units, unit_name)?,
        exclude_identifiers: each(
            at,
            "journal.exclude_identifiers",
            raw.exclude_identifiers,
            not_empty("identifiers"),
        )?,
        exclude_matches: each(at, "journal.exclude_matches", raw.exclude_matches, |m| {
            if m == "+" {
                return Err("exclusions are ORed already: any term that matches excludes the entry; \"+\" has no meaning here".into());
            }
            check_match_term(&m).map(|()| m)
        })?,
        units_mode: at.choice(
            "journal.units_mode",
            raw.units_mode,
            UnitsMode::Processes,
            &[
                ("processes", UnitsMode::Processes),
                ("journalctl", UnitsMode::Journalctl),
            ],
        )?,
        matches: matches(raw.matches, at)?,
    };

    Ok(JournalConfig {
        enabled: raw.enabled.unwrap_or(true),
        source,
        start,
        cursor_lost,
        filter,
        exclude_own_entries: raw.exclude_own_entries.unwrap_or(true),
        reader: at.choice(
            "journal.reader",
            raw.reader,
            ReaderKind::Native,
            &[
                ("libsystemd", ReaderKind::Libsystemd),
                ("native", ReaderKind::Native),
            ],
        )?,
    })
}

/// At most one of journal.directory, journal.files and journal.namespace; none is the
/// local journal.
fn source(
    directory: Option<Spanned<PathBuf>>,
    files: Option<Spanned<Vec<PathBuf>>>,
    namespace: Option<Spanned<String>>,
    at: &Locator,
) -> Result<Source> {
    let mut sources = Vec::new();
    if let Some(d) = directory {
        if d.get_ref().as_os_str().is_empty() {
            return at.err("journal.directory", d.span(), "must not be empty");
        }
        sources.push((
            "journal.directory",
            d.span(),
            Source::Directory(d.into_inner()),
        ));
    }
    if let Some(f) = files {
        if f.get_ref().is_empty() {
            return at.err("journal.files", f.span(), "must list at least one file");
        }
        sources.push(("journal.files", f.span(), Source::Files(f.into_inner())));
    }
    if let Some(ns) = namespace {
        let valid = !ns.get_ref().is_empty()
            && ns
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid {
            return at.err(
                "journal.namespace",
                ns.span(),
                "must be a non-empty name of letters, digits, '_', '-' or '.'",
            );
        }
        sources.push((
            "journal.namespace",
            ns.span(),
            Source::Namespace(ns.into_inner()),
        ));
    }
    if sources.len() > 1 {
        let (key, span, _) = &sources[1];
        return at.err(
            key,
            span.clone(),
            format!(
                "conflicts with {}: give at most one of journal.directory, journal.files, journal.namespace",
                sources[0].0
            ),
        );
    }
    Ok(sources.pop().map(|s| s.2).unwrap_or(Source::Local))
}

/// journal.start, and journal.since, which only goes with start = "since" (and implies
/// it when start is not given).
fn start(
    start: Option<Spanned<String>>,
    since: Option<Spanned<String>>,
    at: &Locator,
) -> Result<Start> {
    let parse_since = |t: Spanned<String>| {
        at.with("journal.since", t, |t| {
            parse_rfc3339(&t)
                .map_err(|e| format!("{e} (expected RFC 3339, e.g. \"2026-01-01T00:00:00Z\")"))
        })
    };
    #[derive(Clone, Copy)]
    enum Named {
        Head,
        Tail,
        Since,
    }
    let start_span = start.as_ref().map(|s| s.span());
    let named = at.choice(
        "journal.start",
        start,
        // `since` alone is unambiguous: accept it without start = "since".
        if since.is_some() {
            Named::Since
        } else {
            Named::Head
        },
        &[
            ("head", Named::Head),
            ("tail", Named::Tail),
            ("since", Named::Since),
        ],
    )?;
    match (named, since) {
        (Named::Head, None) => Ok(Start::Head),
        (Named::Tail, None) => Ok(Start::Tail),
        (Named::Since, Some(t)) => Ok(Start::Since(parse_since(t)?)),
        (Named::Since, None) => at.err(
            "journal.start",
            start_span.unwrap_or_default(),
            "\"since\" needs journal.since = \"<RFC 3339 time>\"",
        ),
        (Named::Head | Named::Tail, Some(t)) => at.err(
            "journal.since",
            t.span(),
            "only allowed with start = \"since\"",
        ),
    }
}

/// Every value of a list key through `rule`; the first refused one is the error.
fn each<T>(
    at: &Locator,
    key: &str,
    list: Vec<Spanned<String>>,
    rule: impl Fn(String) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    list.into_iter().map(|v| at.with(key, v, &rule)).collect()
}

/// journal.matches: journalctl-style terms, `+` only between two groups.
fn matches(list: Vec<Spanned<String>>, at: &Locator) -> Result<Vec<String>> {
    let matches = each(at, "journal.matches", list, |m| {
        check_match_term(&m).map(|()| m)
    })?;
    if let (Some(first), Some(last)) = (matches.first(), matches.last()) {
        if first == "+" || last == "+" {
            bail!("journal.matches: \"+\" joins two groups of terms and cannot be first or last");
        }
    }
    Ok(matches)
}

/// A unit name or pattern as `journalctl -u` takes it: a plain name without a unit type
/// gets `.service`; a pattern is kept as written.
fn unit_name(u: String) -> Result<String, String> {
    const TYPES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".device",
        ".mount",
        ".automount",
        ".swap",
        ".timer",
        ".path",
        ".slice",
        ".scope",
    ];
    if u.is_empty() {
        return Err("unit names must not be empty".into());
    }
    if u.contains(['/', '\n']) {
        return Err(format!("{u:?} is not a unit name"));
    }
    if is_glob(&u) || TYPES.iter().any(|t| u.ends_with(t)) {
        Ok(u)
    } else {
        Ok(format!("{u}.service"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::{MIN, err};

    #[test]
    fn conflicting_sources() {
        let e = err(&format!(
            "{MIN}[journal]\ndirectory = \"/a\"\nnamespace = \"x\"\n"
        ));
        assert!(
            e.contains("journal.namespace (line 6)") && e.contains("conflicts"),
            "{e}"
        );
    }

    #[test]
    fn start_positions() {
        let c = parse(&format!("{MIN}[journal]\nstart = \"tail\"\n")).unwrap();
        assert_eq!(c.journal.start, Start::Tail);
        let c = parse(&format!(
            "{MIN}[journal]\nstart = \"since\"\nsince = \"2026-01-01T00:00:00Z\"\n"
        ))
        .unwrap();
        assert_eq!(c.journal.start, Start::Since(1_767_225_600_000_000));
        let e = err(&format!("{MIN}[journal]\nstart = \"since\"\n"));
        assert!(e.contains("journal.start (line 5)"), "{e}");
        let e = err(&format!(
            "{MIN}[journal]\nstart = \"since\"\nsince = \"yesterday\"\n"
        ));
        assert!(
            e.contains("journal.since (line 6)") && e.contains("RFC 3339"),
            "{e}"
        );
        let e = err(&format!("{MIN}[journal]\nstart = \"middle\"\n"));
        assert!(
            e.contains("journal.start (line 5)") && e.contains("middle"),
            "{e}"
        );
    }

    #[test]
    fn filters() {
        let c = parse(&format!(
            "{MIN}[journal]\nunits = [\"a.service\"]\nidentifiers = [\"sshd\"]\npriority = \"warning\"\nmatches = [\"_TRANSPORT=kernel\", \"+\", \"FOO=bar=baz\"]\n"
        ))
        .unwrap();
        let f = &c.journal.filter;
        assert_eq!(f.units, vec!["a.service"]);
        assert_eq!(f.max_priority, Some(4));
        assert_eq!(f.matches.len(), 3);
        let e = err(&format!("{MIN}[journal]\npriority = 9\n"));
        assert!(e.contains("journal.priority (line 5)"), "{e}");
        let e = err(&format!("{MIN}[journal]\nmatches = [\"lower=x\"]\n"));
        assert!(
            e.contains("journal.matches (line 5)") && e.contains("lower"),
            "{e}"
        );
        let e = err(&format!("{MIN}[journal]\nmatches = [\"NOEQUALS\"]\n"));
        assert!(e.contains("neither"), "{e}");
        let e = err(&format!("{MIN}[journal]\nmatches = [\"+\", \"A=b\"]\n"));
        assert!(e.contains("cannot be first or last"), "{e}");
    }

    #[test]
    fn cursor_lost_choices() {
        let e = err(&format!("{MIN}[journal]\ncursor_lost = \"skip\"\n"));
        assert!(e.contains("journal.cursor_lost (line 5)"), "{e}");
    }
}
