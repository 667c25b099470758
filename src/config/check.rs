//! The rules every key is checked with: one range helper, one choice helper, and the name
//! rules shared by several keys (journal field names, topic names, match terms, priorities,
//! times). Errors name the key and its line.

use std::fmt;
use std::ops::Range;

use anyhow::{Result, bail};
use toml::Spanned;

/// Kafka's own limit for topic names.
const MAX_TOPIC_LEN: usize = 249;

/// Turns byte offsets into "line N" for messages about values that parsed but are wrong.
pub(super) struct Locator<'a> {
    pub(super) text: &'a str,
}

impl Locator<'_> {
    pub(super) fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn err<T>(
        &self,
        key: &str,
        span: Range<usize>,
        msg: impl fmt::Display,
    ) -> Result<T> {
        bail!("{key} (line {}): {msg}", self.line(span))
    }

    /// A number within `lo..=hi`, or `default` when the key is absent.
    pub(super) fn range(
        &self,
        key: &str,
        v: Option<Spanned<u64>>,
        default: u64,
        lo: u64,
        hi: u64,
    ) -> Result<u64> {
        match v {
            None => Ok(default),
            Some(v) if (lo..=hi).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => self.err(key, v.span(), format!("must be between {lo} and {hi}")),
        }
    }

    /// One of the named `choices`, or `default` when the key is absent.
    pub(super) fn choice<T: Copy>(
        &self,
        key: &str,
        v: Option<Spanned<String>>,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T> {
        let Some(v) = v else {
            return Ok(default);
        };
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == v.get_ref()) {
            return Ok(*t);
        }
        let mut names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        names.dedup();
        let expected = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.err(
            key,
            v.span(),
            format!("unknown value {:?}: expected {expected}", v.get_ref()),
        )
    }

    /// A value that must pass `rule`.
    pub(super) fn with<T, U>(
        &self,
        key: &str,
        v: Spanned<T>,
        rule: impl FnOnce(T) -> std::result::Result<U, String>,
    ) -> Result<U> {
        let span = v.span();
        rule(v.into_inner()).or_else(|e| self.err(key, span, e))
    }
}

/// A journal field name: uppercase letters, digits and '_', not starting with a digit.
/// libsystemd refuses anything else in a match, so refuse it here with a better message.
pub(crate) fn is_valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

pub(super) fn check_match_term(term: &str) -> std::result::Result<(), String> {
    if term == "+" {
        return Ok(());
    }
    let Some((name, _value)) = term.split_once('=') else {
        return Err(format!("{term:?} is neither \"FIELD=value\" nor \"+\""));
    };
    if !is_valid_field_name(name) {
        return Err(format!(
            "{name:?} in {term:?} is not a journal field name (uppercase letters, digits, '_')"
        ));
    }
    Ok(())
}

/// A priority given on the command line: a number 0-7 or a name.
pub(crate) fn parse_priority_text(s: &str) -> std::result::Result<u8, String> {
    match s.parse::<i64>() {
        Ok(n) => parse_priority(&toml::Value::Integer(n)),
        Err(_) => parse_priority(&toml::Value::String(s.to_string())),
    }
}

pub(super) fn parse_priority(v: &toml::Value) -> std::result::Result<u8, String> {
    const NAMES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    match v {
        toml::Value::Integer(n) if (0..=7).contains(n) => Ok(*n as u8),
        toml::Value::String(s) => NAMES
            .iter()
            .position(|n| n == s)
            .map(|p| p as u8)
            .ok_or_else(|| format!("unknown priority {s:?}: expected 0-7 or one of {NAMES:?}")),
        other => Err(format!(
            "expected 0-7 or a name such as \"warning\", found {other}"
        )),
    }
}

/// Appends `bytes` to a topic name a template is making from data (an entry's field, a
/// Forward tag or field): each byte a topic name cannot hold becomes '_'.
pub(crate) fn push_topic_part(out: &mut String, bytes: &[u8]) {
    out.extend(bytes.iter().map(|&b| {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            b as char
        } else {
            '_'
        }
    }));
}

/// Whether a topic name a template made from data may be used: 1-249 characters (after
/// [`push_topic_part`]), not "." or "..", not a Kafka-internal name (`__consumer_offsets`,
/// `__transaction_state`) and not one of the agent's own topics (`reserved`: the cursor,
/// dead-letter and progress topics, `DeliveryConfig::reserved_topics`): whoever writes the
/// data must not choose those (a record keyed like a host's place in the cursor topic
/// would wedge that host's exactly-once restore). Otherwise the record goes to the
/// fallback, counted in `topics_invalid`.
pub(crate) fn made_topic_usable(name: &str, reserved: &[String]) -> bool {
    !(name.is_empty()
        || name.len() > MAX_TOPIC_LEN
        || name == "."
        || name == ".."
        || name.starts_with("__")
        || reserved.iter().any(|r| r == name))
}

/// Kafka topic names: 1-249 of `[a-zA-Z0-9._-]`, not "." or "..".
pub(crate) fn check_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOPIC_LEN || name == "." || name == ".." {
        return Err(format!(
            "{name:?} is not a valid Kafka topic name (1-{MAX_TOPIC_LEN} characters)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(format!(
            "{name:?} is not a valid Kafka topic name: {c:?} is not allowed (only letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

/// Parses an RFC 3339 timestamp into microseconds since the Unix epoch.
pub(crate) fn parse_rfc3339(s: &str) -> std::result::Result<u64, String> {
    // jiff also takes ISO 8601 forms that RFC 3339 lacks (a bracketed zone, no seconds);
    // the shape test keeps the documented format the only one accepted.
    let b = s.as_bytes();
    let shaped = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':'
        && !s.contains('[');
    if !shaped {
        return Err(format!("{s:?} is not an RFC 3339 time"));
    }
    let t: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))?;
    u64::try_from(t.as_microsecond()).map_err(|_| format!("{s:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.5+01:00"),
            Ok(1_709_204_400_500_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29t11:00:00.500000z"),
            parse_rfc3339("2024-02-29T12:00:00.5+01:00")
        );
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01",
            "2024-01-01T00:00:00Z[Europe/Paris]",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn choices_and_ranges_name_key_and_line() {
        let text = "a = 1\nmode = \"x\"\nn = 7\n";
        let at = Locator { text };
        let v: toml::Table = toml::from_str(text).unwrap();
        let _ = v;
        #[derive(serde::Deserialize)]
        struct T {
            mode: Spanned<String>,
            n: Spanned<u64>,
        }
        let t: T = toml::from_str(text).unwrap();
        let e = at
            .choice("s.mode", Some(t.mode), 0, &[("a", 1), ("b", 2), ("c", 3)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "s.mode (line 2): unknown value \"x\": expected \"a\", \"b\" or \"c\""
        );
        let e = at.range("s.n", Some(t.n), 1, 1, 5).unwrap_err().to_string();
        assert_eq!(e, "s.n (line 3): must be between 1 and 5");
        assert_eq!(at.range("s.n", None, 4, 1, 5).unwrap(), 4);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1_500_000));
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00+01:00"),
            Ok(951_865_200_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123456-00:30"),
            Ok(1_709_209_800_123_456)
        );
        assert!(parse_rfc3339("2024-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("2024-01-01T00:00:00").is_err());
        assert!(parse_rfc3339("2024-01-01").is_err());
    }
}
