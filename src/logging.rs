//! The agent's own logs: to the journal when systemd started us, to stderr otherwise.
//!
//! Owns the tracing subscriber and the policy against log floods ([`RateLimit`]). It must
//! never log per entry: the agent's logs land in the journal it reads, so chatty logging
//! would feed on itself. Which entries are the agent's own is the journal input's rule
//! (`journal::OwnEntries`), judged by journald's trusted fields, never by [`IDENTIFIER`]
//! (any process can claim it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::config::LogTarget;

/// SYSLOG_IDENTIFIER of the agent's own journal entries: for people reading the journal,
/// never a reason to skip an entry.
pub(crate) const IDENTIFIER: &str = "journald-kafka";

pub(crate) fn init(level: &str, target: LogTarget) -> Result<()> {
    // librdkafka's own debug lines are very verbose; keep them one level quieter.
    let filter = EnvFilter::try_from_env("JOURNALD_KAFKA_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},librdkafka=warn")));
    let to_journal = match target {
        LogTarget::Journal => true,
        LogTarget::Stderr => false,
        // systemd sets JOURNAL_STREAM for services whose stderr is connected to the journal.
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    if to_journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                registry
                    .with(layer.with_syslog_identifier(IDENTIFIER.into()))
                    .try_init()?;
                return Ok(());
            }
            Err(e) => eprintln!("journald-kafka: cannot log to the journal ({e}); using stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour only on a terminal: log files and pipes get plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init()?;
    Ok(())
}

/// Keeps repeating messages (a broker that stays down is reported on every reconnect
/// attempt, often as two alternating errors) to one line per message per minute, with the
/// number of repeats in between.
#[derive(Default)]
pub(crate) struct RateLimit(Mutex<HashMap<String, (Instant, u64)>>);

impl RateLimit {
    /// Returns `Some(repeats suppressed since the last line)` when `msg` should be logged.
    pub(crate) fn admit(&self, msg: &str) -> Option<u64> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 64 {
            // Messages with ever-changing text: forget old ones rather than grow.
            g.clear();
        }
        match g.get_mut(msg) {
            Some((at, n)) if at.elapsed() < Duration::from_secs(60) => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let suppressed = *n;
                *at = Instant::now();
                *n = 0;
                Some(suppressed)
            }
            None => {
                g.insert(msg.to_string(), (Instant::now(), 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_errors_are_rate_limited() {
        let r = RateLimit::default();
        assert_eq!(r.admit("down"), Some(0));
        assert_eq!(r.admit("down"), None);
        assert_eq!(r.admit("down"), None);
        assert_eq!(r.admit("other"), Some(0));
        assert_eq!(
            r.admit("down"),
            None,
            "alternating messages are limited each on its own"
        );
        assert_eq!(r.admit("other"), None);
    }
}
