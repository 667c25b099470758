//! The agent's own logs: to the journal when systemd started us, to stderr otherwise.
//!
//! Owns the tracing subscriber. It must never log per entry: the agent's logs land in the
//! journal it reads, so chatty logging would feed on itself.

use anyhow::Result;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::config::LogTarget;

/// SYSLOG_IDENTIFIER of the agent's own journal entries, which it does not ship.
pub const IDENTIFIER: &str = "journald-kafka";

pub fn init(level: &str, target: LogTarget) -> Result<()> {
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
