//! `journald-kafka check` (everything `run` needs, tried without shipping) and
//! `journald-kafka cursor show`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::say;
use crate::checkpoint::{FileStore, place, read_cursor_file};
use crate::config::{self, Config, ReaderKind};
use crate::journal::{self, Located, cursor};
use crate::kafka;
use crate::pipeline;

/// The `ok`/`FAIL` lines of `check`, and whether any failed: the exit code.
struct Report {
    ok: bool,
}

impl Report {
    fn line(&mut self, what: &str, r: Result<String>) {
        match r {
            Ok(s) => say!("ok    {what}: {s}"),
            Err(e) => {
                self.ok = false;
                say!("FAIL  {what}: {e:#}");
            }
        }
    }
}

pub(super) fn check(
    cfg: &Config,
    path: &std::path::Path,
    min_journal_hours: f64,
) -> Result<ExitCode> {
    let mut report = Report { ok: true };
    report.line("config", Ok("valid".into()));
    for w in exposed_secrets(cfg, path) {
        say!("warn  secrets: {w}");
    }
    for w in quiet_loss_risks(cfg, min_journal_hours) {
        say!("warn  journal: {w}");
    }
    let cursor = check_cursor_and_state(cfg, &mut report);
    if cfg.journal.enabled {
        check_open_files(cfg);
        report.line("journal", pipeline::describe_start(cfg, cursor.as_deref()));
    } else {
        say!("      journal: off (journal.enabled = false)");
    }
    if let Some(f) = &cfg.forward {
        report.line("forward", crate::forward::check(f));
    }
    check_filters(cfg, &mut report);
    let probe_topic = check_kafka(cfg, &mut report);
    show_producer(cfg, probe_topic);
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The saved cursor and the state directory it lives in; the cursor, when it could be
/// read, for the journal's start.
fn check_cursor_and_state(cfg: &Config, report: &mut Report) -> Option<String> {
    let cursor_path = cfg.state.cursor_file();
    let cursor = read_cursor_file(&cursor_path, crate::journal::validate_place);
    report.line(
        "cursor",
        cursor
            .as_ref()
            .map(|c| match c {
                Some(c) => match place::positions(c).count() {
                    1 => format!("{} holds {c}", cursor_path.display()),
                    n => format!(
                        "{} holds {n} cursors, one per writer; the last moved: {}",
                        cursor_path.display(),
                        place::newest(c).unwrap_or_default()
                    ),
                },
                None => format!(
                    "{} does not exist yet; starting at journal.start",
                    cursor_path.display()
                ),
            })
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    );
    let state_dir = &cfg.state.directory;
    report.line(
        "state directory",
        if state_dir.exists() {
            FileStore::new(state_dir, crate::journal::validate_place)
                .prepare()
                .map(|()| format!("{} is writable", state_dir.display()))
        } else {
            Ok(format!("{} will be created", state_dir.display()))
        },
    );
    cursor.ok().flatten()
}

/// A directory or files source against the open-file limit (a warning, never a failure).
fn check_open_files(cfg: &Config) {
    let Some(files) = crate::journal::file_count(&cfg.journal) else {
        return;
    };
    // `run` raises the soft limit to the hard one; under the packaged unit both are
    // its LimitNOFILE=.
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    let budget = crate::journal::open_file_budget(hard);
    let text = format!(
        "the source has {files} journal files; the reader holds at most {budget} of them open at once (half the limit), caught-up hosts none; the hard limit is {}",
        if hard == u64::MAX {
            "unlimited".to_string()
        } else {
            hard.to_string()
        }
    );
    if hard < 256 {
        say!(
            "warn  open files: {text}: raise LimitNOFILE= (few writers can be read at once, and Kafka connections need descriptors too)"
        );
    } else {
        say!("ok    open files: {text}");
    }
}

/// The filters in words, and what they would do to the newest entries.
fn check_filters(cfg: &Config, report: &mut Report) {
    let f = &cfg.journal.filter;
    if f.is_empty() {
        return;
    }
    let mut terms = f.matches.clone();
    terms.extend(journal::shorthand_terms(f));
    let mut said = Vec::new();
    if !terms.is_empty() {
        said.push(format!("journal matches {}", terms.join(" ")));
    }
    for (what, list) in [
        (
            "units",
            if f.units_in_agent() {
                &f.units[..]
            } else {
                &[][..]
            },
        ),
        (
            "identifiers",
            if f.identifiers_in_agent() {
                &f.identifiers[..]
            } else {
                &[][..]
            },
        ),
        ("excluded units", &f.exclude_units[..]),
        ("excluded identifiers", &f.exclude_identifiers[..]),
        ("excluded when", &f.exclude_matches[..]),
    ] {
        if !list.is_empty() {
            said.push(format!("{what} {}", list.join(" ")));
        }
    }
    if f.units_mode == config::UnitsMode::Journalctl {
        said.push("units as journalctl -u has them".into());
    }
    report.line("filters", Ok(said.join("; ")));
    const WINDOW: u64 = 10_000;
    report.line(
        "filter effect",
        journal::filter_effect(&cfg.journal, WINDOW).map(|(total, matched, kept)| {
            format!(
                "of the newest {total} entries, {kept} would be shipped ({} left out by the journal matches, {} by the agent's exclusions and patterns)",
                total.saturating_sub(matched),
                matched.saturating_sub(kept)
            )
        }),
    );
}

/// The brokers and a topic reached with a producer, and the exactly-once store; returns
/// the topic probed, which the records line names too.
fn check_kafka<'a>(cfg: &'a Config, report: &mut Report) -> &'a str {
    let probe_topic = cfg
        .kafka
        .fixed_topic()
        .or(cfg.kafka.topic_fallback.as_deref())
        .unwrap_or("journal");
    let kafka_result = kafka::probe_brokers(
        &cfg.kafka,
        &cfg.pipeline,
        probe_topic,
        Duration::from_millis(cfg.kafka.connect_timeout_ms.min(10_000)),
    )
    .map(|parts| {
        format!(
            "brokers {} reachable; topic {probe_topic:?} has {parts} partition(s)",
            cfg.kafka.brokers
        )
    })
    .map_err(|e| explain_plaintext_to_tls(cfg, e));
    report.line("kafka", kafka_result);
    if cfg.delivery.mode == config::Mode::ExactlyOnce {
        report.line(
            "delivery",
            kafka::transaction::check(cfg).map(|s| format!("exactly-once: {s}")),
        );
    }
    probe_topic
}

/// The producer's settings (secrets masked) and what the records will look like.
fn show_producer(cfg: &Config, probe_topic: &str) {
    let props = kafka::producer_config(
        &cfg.kafka,
        &cfg.pipeline,
        crate::config::properties::Producer::Journal,
    );
    let mut shown: Vec<String> = props
        .config_map()
        .iter()
        .map(|(k, v)| {
            if crate::config::is_secret_name(k) {
                format!("{k}=***")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    shown.sort();
    say!("      producer: {}", shown.join(" "));
    say!(
        "      records: {:?} encoding, topic {}, key {}, max {} bytes per record",
        cfg.encoding.format,
        cfg.kafka
            .fixed_topic()
            .map(str::to_string)
            .unwrap_or_else(|| format!("from template (fallback {probe_topic:?})")),
        if cfg.kafka.key_fields.is_empty() {
            "none".to_string()
        } else {
            cfg.kafka.key_fields.join(&cfg.kafka.key_separator)
        },
        cfg.encoding.max_record_bytes
    );
}

/// Setups that lose entries without an error anywhere: said by `check`, never fatal.
fn quiet_loss_risks(cfg: &Config, min_journal_hours: f64) -> Vec<String> {
    use crate::journal::retention::{self, Limits};
    let mut out = Vec::new();
    if matches!(
        cfg.journal.source,
        config::Source::Local | config::Source::Namespace(_)
    ) {
        match retention::storage(&cfg.journal).as_str() {
            s @ ("volatile" | "none") => out.push(format!(
                "journald has Storage={s}: entries not yet shipped are lost at every reboot (set Storage=persistent)"
            )),
            "persistent" => {}
            _ if !std::path::Path::new("/var/log/journal").is_dir() => out.push(
                "journal storage is volatile (Storage=auto and no /var/log/journal): entries not yet shipped are lost at every reboot (mkdir /var/log/journal, or set Storage=persistent)".into(),
            ),
            _ => {}
        }
    }
    // How long the journal keeps entries at the rate it was written so far: an outage
    // longer than that loses entries.
    if let Some(limits) = Limits::of(&cfg.journal) {
        let now = crate::metrics::unix_now_usec();
        if let Ok(s) = retention::sample(&cfg.journal, now) {
            let span = now.saturating_sub(s.oldest_usec) as f64 / 1e6;
            let allowed = limits.allowed(s.usage);
            // A short span is the finding itself (a journal that keeps seconds, or less), not noise.
            if let (Some(allowed), true) = (allowed, s.usage > 0 && span > 0.0) {
                let hours = span * allowed as f64 / s.usage as f64 / 3600.0;
                let retention = limits.max_retention.map(|r| r.as_secs_f64() / 3600.0);
                let hours = retention.map_or(hours, |r| hours.min(r));
                let line = format!(
                    "the journal keeps about {hours:.1} hours at the rate it was written so far ({} MiB used of {} MiB allowed{}, from {})",
                    s.usage >> 20,
                    allowed >> 20,
                    retention.map_or(String::new(), |r| format!(", MaxRetentionSec {r:.1} h")),
                    if limits.from.is_empty() {
                        "defaults: 10% of the file system, at most 4 GiB".to_string()
                    } else {
                        limits
                            .from
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                if hours < min_journal_hours {
                    out.push(format!(
                        "{line}: a broker outage longer than that loses entries (raise SystemMaxUse=, or see --min-journal-hours)"
                    ));
                } else {
                    say!("ok    retention: {line}");
                }
            }
        }
    }
    // The native reader guards its mappings (journal::native::map): only libsystemd's dies.
    if let Some(v) = systemd_version().filter(|_| cfg.journal.reader == ReaderKind::Libsystemd) {
        if v < 255 {
            out.push(format!(
                "systemd {v} truncates the journal files it archives (systemd#24320, fixed in 255): with journal.reader = \"libsystemd\" a reader can get SIGBUS; the agent then dies and systemd restarts it from its cursor (nothing is lost; docs/reliability.md). The native reader (the default) guards its mappings and reads a cut file through pread"
            ));
        }
    }
    // The packaged unit runs as journald-kafka with SupplementaryGroups=systemd-journal; a
    // hand-made unit or a manual run as another user may not read other users' entries.
    let me = real_uid();
    if me != Some(0) && !in_group("systemd-journal") && !in_group("adm") {
        out.push(
            "this user is in neither systemd-journal nor adm: it reads only its own journal entries, the rest are skipped without an error".into(),
        );
    }
    out
}

/// The installed systemd's version, from `journalctl --version` ("systemd 252 (...)").
fn systemd_version() -> Option<u32> {
    let out = std::process::Command::new("journalctl")
        .arg("--version")
        .output()
        .ok()?;
    parse_systemd_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_systemd_version(text: &str) -> Option<u32> {
    text.lines()
        .next()?
        .strip_prefix("systemd ")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The real uid, from /proc (no libc call needed for one number).
fn real_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether this process has `group` among its groups.
fn in_group(group: &str) -> bool {
    let Ok(groups) = std::fs::read_to_string("/etc/group") else {
        return false;
    };
    let Some(gid) = groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(group)).then(|| f.nth(1)).flatten()
    }) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|g| g.split_whitespace().any(|x| x == gid))
        })
        .unwrap_or(false)
}

/// Files holding a secret that other users may read.
fn exposed_secrets(cfg: &Config, path: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let readable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
    };
    let mut out = Vec::new();
    let in_config: Vec<&str> = cfg
        .kafka
        .properties
        .keys()
        .map(String::as_str)
        .filter(|k| crate::config::is_secret_name(k))
        .collect();
    if !in_config.is_empty() && readable(path) {
        out.push(format!(
            "{} holds {} and is readable by every user: chmod 640 it (owner root, group of the agent), or move the password to kafka.sasl_password_file / kafka.sasl_password_credential",
            path.display(),
            in_config.join(", ")
        ));
    }
    for (key, file) in cfg.secret_files() {
        if readable(&file) {
            out.push(format!(
                "{key}: {} is readable by every user: chmod 600 (or 640) it",
                file.display()
            ));
        }
    }
    out
}

/// A plaintext client at a TLS listener gets no answer at all, so librdkafka cannot say
/// why; ask the listener ourselves.
fn explain_plaintext_to_tls(cfg: &Config, e: anyhow::Error) -> anyhow::Error {
    let protocol = cfg
        .kafka
        .properties
        .get("security.protocol")
        .map(|p| p.to_ascii_lowercase())
        .unwrap_or_else(|| "plaintext".into());
    if protocol.ends_with("ssl") || format!("{e:#}").contains("mismatch") {
        return e;
    }
    let first = cfg
        .kafka
        .brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .trim();
    if kafka::speaks_tls(first, Duration::from_secs(2)) {
        return e.context(format!(
            "{}: {first} answers with TLS but security.protocol is {protocol:?} (use \"ssl\" or \"sasl_ssl\")",
            kafka::Cause::ProtocolMismatch
        ));
    }
    e
}

pub(super) fn cursor_show(cfg: &Config) -> Result<ExitCode> {
    let path = cfg.state.cursor_file();
    let Some(c) = read_cursor_file(&path, crate::journal::validate_place)? else {
        say!(
            "no cursor: {} does not exist (the agent has not confirmed any entry yet)",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    say!("file:      {}", path.display());
    if let Ok(m) = std::fs::metadata(&path).and_then(|m| m.modified()) {
        if let Ok(age) = m.elapsed() {
            say!("written:   {}s ago", age.as_secs());
        }
    }
    let positions: Vec<&str> = place::positions(&c).collect();
    if positions.len() > 1 {
        say!(
            "writers:   {} (one cursor per sequence-number space, the last moved last)",
            positions.len()
        );
    }
    let mut gone = false;
    for c in positions {
        say!("cursor:    {c}");
        if let Ok(info) = cursor::parse(c) {
            say!(
                "seqnum:    {} (sequence space {})",
                info.seqnum,
                info.seqnum_id
            );
            say!("boot:      {}", info.boot_id);
            let when = jiff::Timestamp::from_microsecond(info.realtime_usec as i64).map_or_else(
                |_| format!("{} µs since the epoch", info.realtime_usec),
                |t| t.to_string(),
            );
            say!("time:      {when} (of the entry the cursor names)");
        }
        match journal::locate(&cfg.journal, c) {
            Ok(Located::Exists) => say!("journal:   the entry is still in the journal"),
            Ok(Located::Missing { gap, .. }) => {
                say!(
                    "journal:   the entry is GONE from the journal ({} entries after it are gone too)",
                    gap.map_or("unknown number of".to_string(), |g| g.to_string())
                );
                gone = true;
            }
            Err(e) => say!("journal:   cannot check: {e:#}"),
        }
    }
    if gone {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_settings_and_versions_are_read() {
        assert_eq!(
            parse_systemd_version("systemd 252 (252.39-1~deb12u2)\n+PAM"),
            Some(252)
        );
        assert_eq!(parse_systemd_version("systemd 256.7\n"), Some(256));
        assert_eq!(parse_systemd_version("garbage"), None);
    }
}
