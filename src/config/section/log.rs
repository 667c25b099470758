//! `[log]`: the agent's own log level and where its log goes.
//!
//! Owns the choice only; `logging` sets the subscriber up from it.

use anyhow::Result;

use crate::config::check::Locator;
use crate::config::raw::RawLog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The journal when started by systemd (JOURNAL_STREAM is set), stderr otherwise.
    Auto,
    Journal,
    Stderr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub target: LogTarget,
}

pub(super) fn log(raw: RawLog, at: &Locator) -> Result<LogConfig> {
    let level = at.choice(
        "log.level",
        raw.level,
        "info",
        &[
            ("error", "error"),
            ("warn", "warn"),
            ("info", "info"),
            ("debug", "debug"),
            ("trace", "trace"),
        ],
    )?;
    let target = at.choice(
        "log.target",
        raw.target,
        LogTarget::Auto,
        &[
            ("auto", LogTarget::Auto),
            ("journal", LogTarget::Journal),
            ("stderr", LogTarget::Stderr),
        ],
    )?;
    Ok(LogConfig {
        level: level.to_string(),
        target,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{MIN, err};

    #[test]
    fn level_and_target_choices() {
        let e = err(&format!("{MIN}[log]\nlevel = \"loud\"\n"));
        assert!(e.contains("log.level (line 5)"), "{e}");
        let e = err(&format!("{MIN}[log]\ntarget = \"file\"\n"));
        assert!(e.contains("log.target (line 5)"), "{e}");
    }
}
