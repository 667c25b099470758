//! How long the journal keeps what it holds: the size limits journald (or
//! systemd-journal-remote) applies, the rate the journal is written at, and from both the
//! forecast of when entries not yet shipped start being deleted.
//!
//! Owns the reading of `journald.conf` (and its drop-ins, namespaces' `journald@NS.conf`,
//! `journal-remote.conf`) and the forecast arithmetic. It must never act on a forecast:
//! callers report it (metrics, `status`, readiness, `check`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{JournalConfig, Source};

/// journald's built-in caps for the defaults "10 % / 15 % of the file system".
const DEFAULT_CAP: u64 = 4 << 30;

/// The limits that apply to a journal source, as its writer applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The directory the journal files live in (for the file system's size and free space).
    pub(crate) dir: PathBuf,
    /// `SystemMaxUse=` (or `RuntimeMaxUse=`, `MaxUse=`) if set.
    pub(crate) max_use: Option<u64>,
    /// `SystemKeepFree=` (or `RuntimeKeepFree=`, `KeepFree=`) if set.
    pub(crate) keep_free: Option<u64>,
    /// `MaxRetentionSec=`, if set and not 0.
    pub(crate) max_retention: Option<Duration>,
    /// The files that were read, for messages.
    pub(crate) from: Vec<PathBuf>,
}

impl Limits {
    /// The limits of `cfg`'s source: journald's for the local journal and namespaces,
    /// journal-remote's for a directory; none for a file list (nothing deletes them).
    pub(crate) fn of(cfg: &JournalConfig) -> Option<Limits> {
        Self::of_under(cfg, Path::new("/"))
    }

    /// As [`Limits::of`] with the configuration files looked up under `root` (tests).
    pub(crate) fn of_under(cfg: &JournalConfig, root: &Path) -> Option<Limits> {
        let mid = super::host::machine_id_under(root).unwrap_or_default();
        let (name, sub) = match &cfg.source {
            Source::Files(_) => return None,
            Source::Directory(d) => {
                return Some(Limits::read(
                    d.clone(),
                    &conf_files(root, "journal-remote.conf"),
                    "",
                ));
            }
            Source::Local => ("journald.conf".to_string(), mid.trim().to_string()),
            Source::Namespace(ns) => (
                format!("journald@{ns}.conf"),
                format!("{}.{ns}", mid.trim()),
            ),
        };
        let persistent = root.join("var/log/journal").join(&sub);
        let files = conf_files(root, &name);
        let storage = last_setting(&files, "Storage").unwrap_or_default();
        let runtime = storage == "volatile" || (storage != "persistent" && !persistent.is_dir());
        if runtime {
            Some(Limits::read(
                root.join("run/log/journal").join(&sub),
                &files,
                "Runtime",
            ))
        } else {
            Some(Limits::read(persistent, &files, "System"))
        }
    }

    fn read(dir: PathBuf, files: &[PathBuf], prefix: &str) -> Limits {
        let size =
            |key: &str| last_setting(files, &format!("{prefix}{key}")).and_then(|v| parse_size(&v));
        Limits {
            dir,
            max_use: size("MaxUse"),
            keep_free: size("KeepFree"),
            max_retention: last_setting(files, "MaxRetentionSec")
                .and_then(|v| parse_timespan(&v))
                .filter(|d| !d.is_zero()),
            from: files.to_vec(),
        }
    }

    /// The bytes the journal may occupy now, given its `usage`: journald's rule, with the
    /// defaults (10 % and 15 % of the file system, each capped at 4 GiB) where unset.
    /// `None` when the file system cannot be asked.
    pub(crate) fn allowed(&self, usage: u64) -> Option<u64> {
        // The directory may not exist yet: its file system is its nearest existing ancestor's.
        let fs = self
            .dir
            .ancestors()
            .find_map(|d| rustix::fs::statvfs(d).ok())?;
        let size = fs.f_blocks.saturating_mul(fs.f_frsize);
        let avail = fs.f_bavail.saturating_mul(fs.f_frsize);
        Some(allowed(self.max_use, self.keep_free, size, avail, usage))
    }
}

/// journald's space rule: at most `max_use`, and stop growing when the file system's free
/// space would fall below `keep_free`.
fn allowed(
    max_use: Option<u64>,
    keep_free: Option<u64>,
    fs_size: u64,
    fs_avail: u64,
    usage: u64,
) -> u64 {
    let max_use = max_use.unwrap_or((fs_size / 10).min(DEFAULT_CAP));
    let keep_free = keep_free.unwrap_or((fs_size / 20 * 3).min(DEFAULT_CAP));
    max_use.min(usage + fs_avail.saturating_sub(keep_free))
}

/// The main file and its drop-ins in the order the writer reads them (later wins).
fn conf_files(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let main = root.join("etc/systemd").join(name);
    if main.is_file() {
        out.push(main);
    }
    let mut drops: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for dir in ["etc/systemd", "run/systemd", "usr/lib/systemd"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir).join(format!("{name}.d"))) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            // A drop-in in /etc masks one of the same name further down.
            if p.extension().is_some_and(|x| x == "conf")
                && !drops.iter().any(|(n, _)| *n == e.file_name())
            {
                drops.push((e.file_name(), p));
            }
        }
    }
    drops.sort();
    out.extend(drops.into_iter().map(|(_, p)| p));
    out
}

/// The last value of `key=` in `[Journal]`/`[Remote]` sections of `files`.
pub(crate) fn last_setting(files: &[PathBuf], key: &str) -> Option<String> {
    let mut found = None;
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines() {
            if let Some((k, v)) = l.trim().split_once('=') {
                if k.trim() == key {
                    found = Some(v.trim().to_string());
                }
            }
        }
    }
    found
}

/// The journal's effective `Storage=` ("auto" when unset).
pub(crate) fn storage(cfg: &JournalConfig) -> String {
    let name = match &cfg.source {
        Source::Namespace(ns) => format!("journald@{ns}.conf"),
        _ => "journald.conf".to_string(),
    };
    last_setting(&conf_files(Path::new("/"), &name), "Storage")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| "auto".into())
}

/// A size as systemd writes it: bytes, or with K, M, G, T, P, E (powers of 1024).
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().trim_end_matches(['B', 'b']) {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        "P" | "p" => 1 << 50,
        "E" | "e" => 1 << 60,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

/// A time span as systemd writes it ("1month", "2d 3h", "3600" seconds).
fn parse_timespan(v: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = v.trim();
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let n: f64 = rest[..split].parse().ok()?;
        rest = rest[split..].trim_start();
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == ' ')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = rest[unit_end..].trim_start();
        let secs = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "ms" | "msec" => 0.001,
            "us" | "usec" => 1e-6,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604_800.0,
            "M" | "month" | "months" => 2_629_800.0,
            "y" | "year" | "years" => 31_557_600.0,
            _ => return None,
        };
        total += n * secs;
    }
    Some(Duration::from_secs_f64(total))
}

/// One look at the journal: how much it occupies and how old its oldest entry is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) at_usec: u64,
    pub(crate) usage: u64,
    pub(crate) oldest_usec: u64,
}

/// Samples the whole source (filters ignored).
pub(crate) fn sample(cfg: &JournalConfig, now_usec: u64) -> anyhow::Result<Sample> {
    let g = super::measure::measure(cfg)?;
    Ok(Sample {
        at_usec: now_usec,
        usage: g
            .usage_bytes
            .ok_or_else(|| anyhow::anyhow!("the journal's disk usage is unknown"))?,
        oldest_usec: g.oldest_usec.unwrap_or(now_usec),
    })
}

/// The journal's write rate in bytes per second, from successive samples: what it grew by
/// plus what the writer deleted (the bytes of the entries that fell off the old end, at the
/// journal's mean bytes per second of span). Smoothed over about a minute.
#[derive(Debug, Default)]
pub(crate) struct WriteRate {
    last: Option<Sample>,
    rate: Option<f64>,
}

impl WriteRate {
    pub(crate) fn add(&mut self, s: Sample) -> Option<f64> {
        if let Some(prev) = self.last {
            let dt = s.at_usec.saturating_sub(prev.at_usec) as f64 / 1e6;
            if dt > 0.0 {
                let grown = s.usage.saturating_sub(prev.usage) as f64;
                let span = prev.at_usec.saturating_sub(prev.oldest_usec) as f64;
                let dropped_span = s.oldest_usec.saturating_sub(prev.oldest_usec) as f64;
                let deleted = if span > 0.0 {
                    prev.usage as f64 * (dropped_span / span).min(1.0)
                } else {
                    0.0
                };
                let now = (grown + deleted) / dt;
                let weight = (dt / 60.0).min(1.0);
                self.rate = Some(match self.rate {
                    Some(r) => r + (now - r) * weight,
                    None => now,
                });
            }
        }
        self.last = Some(s);
        self.rate
    }
}

/// Seconds until the writer deletes the oldest entry not yet shipped (the one after
/// `shipped_usec`), if writing goes on at `rate` bytes/s and nothing more is shipped.
/// `None`: no deletion is coming (nothing is written, no retention limit).
///
/// Space: the room left (`allowed - usage`) fills first, then the writer deletes from the
/// old end; the entries between the oldest and the shipped one are about
/// `usage × (shipped - oldest) / (now - oldest)` bytes. Whole files are deleted, each later
/// than its last entry would be, so this errs early, never late. Time: `MaxRetentionSec`
/// deletes what is older than it.
pub(crate) fn seconds_until_loss(
    limits: &Limits,
    allowed: Option<u64>,
    s: &Sample,
    shipped_usec: u64,
    rate: Option<f64>,
) -> Option<f64> {
    let by_space = match (allowed, rate) {
        (Some(allowed), Some(rate)) if rate > 0.0 => {
            let span = s.at_usec.saturating_sub(s.oldest_usec) as f64;
            let before = shipped_usec
                .clamp(s.oldest_usec, s.at_usec)
                .saturating_sub(s.oldest_usec) as f64;
            let behind = if span > 0.0 {
                s.usage as f64 * before / span
            } else {
                0.0
            };
            Some((allowed.saturating_sub(s.usage) as f64 + behind) / rate)
        }
        _ => None,
    };
    let by_time = limits.max_retention.map(|r| {
        let age = s.at_usec.saturating_sub(shipped_usec) as f64 / 1e6;
        (r.as_secs_f64() - age).max(0.0)
    });
    match (by_space, by_time) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_spans_as_systemd_writes_them() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("1.5M"), Some(3 << 19));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(
            parse_timespan("1month"),
            Some(Duration::from_secs(2_629_800))
        );
        assert_eq!(
            parse_timespan("2d 3h"),
            Some(Duration::from_secs(2 * 86400 + 3 * 3600))
        );
        assert_eq!(parse_timespan("3600"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn journald_space_rule_with_its_defaults() {
        let g = 1u64 << 30;
        // 100 GiB file system, plenty free: 10 % capped at 4 GiB.
        assert_eq!(allowed(None, None, 100 * g, 90 * g, g), 4 * g);
        // 10 GiB file system: 1 GiB.
        assert_eq!(allowed(None, None, 10 * g, 9 * g, 0), g);
        // Almost full: keep_free wins.
        assert_eq!(allowed(Some(4 * g), Some(g), 100 * g, g + 100, 500), 600);
    }

    #[test]
    fn forecast_fills_the_room_then_eats_the_backlog() {
        let limits = Limits {
            dir: PathBuf::new(),
            max_use: None,
            keep_free: None,
            max_retention: None,
            from: vec![],
        };
        let s = Sample {
            at_usec: 1_000_000_000,
            usage: 1000,
            oldest_usec: 0,
        };
        // Shipped up to the middle of the span: 500 bytes behind, 1000 bytes of room, 10 B/s.
        let t = seconds_until_loss(&limits, Some(2000), &s, 500_000_000, Some(10.0)).unwrap();
        assert!((t - 150.0).abs() < 1e-6, "{t}");
        // Nothing written: no space-driven loss.
        assert_eq!(
            seconds_until_loss(&limits, Some(2000), &s, 0, Some(0.0)),
            None
        );
        // Retention: entries older than an hour go, the shipped one is 1000 s old.
        let limits = Limits {
            max_retention: Some(Duration::from_secs(3600)),
            ..limits
        };
        let t = seconds_until_loss(&limits, None, &s, 0, None).unwrap();
        assert!((t - 2600.0).abs() < 1e-6, "{t}");
    }

    #[test]
    fn write_rate_counts_growth_and_deletion() {
        let mut r = WriteRate::default();
        let s = |at: u64, usage: u64, oldest: u64| Sample {
            at_usec: at * 1_000_000,
            usage,
            oldest_usec: oldest * 1_000_000,
        };
        assert_eq!(r.add(s(100, 1000, 0)), None);
        // Grew by 600 in 60 s: 10 B/s.
        assert_eq!(r.add(s(160, 1600, 0)), Some(10.0));
        // At its limit: no growth, but the oldest 16 s of a 160 s, 1600-byte span went
        // (160 bytes) in 16 s: still 10 B/s.
        let v = r.add(s(176, 1600, 16)).unwrap();
        assert!((v - 10.0).abs() < 1e-9, "{v}");
    }

    #[test]
    fn limits_from_journald_conf_and_drop_ins() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/systemd/journald.conf.d")).unwrap();
        std::fs::create_dir_all(r.join("var/log/journal/abc")).unwrap();
        std::fs::write(r.join("etc/machine-id"), "abc\n").unwrap();
        std::fs::write(
            r.join("etc/systemd/journald.conf"),
            "[Journal]\n#SystemMaxUse=\nSystemMaxUse=1G\nRuntimeMaxUse=10M\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/systemd/journald.conf.d/50-small.conf"),
            "[Journal]\nSystemMaxUse=64M\nMaxRetentionSec=1d\n",
        )
        .unwrap();
        let cfg = crate::config::parse("[kafka]\nbrokers = \"b:9092\"\ntopic = \"t\"\n")
            .unwrap()
            .journal;
        let l = Limits::of_under(&cfg, r).unwrap();
        assert_eq!(l.max_use, Some(64 << 20));
        assert_eq!(l.keep_free, None);
        assert_eq!(l.max_retention, Some(Duration::from_secs(86400)));
        assert_eq!(l.dir, r.join("var/log/journal/abc"));
        // Without /var/log/journal/<id>: the runtime journal and its limits.
        std::fs::remove_dir(r.join("var/log/journal/abc")).unwrap();
        let l = Limits::of_under(&cfg, r).unwrap();
        assert_eq!(l.max_use, Some(10 << 20));
        assert_eq!(l.dir, r.join("run/log/journal/abc"));
    }
}
