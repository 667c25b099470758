//! `[state]`: where the agent keeps its cursor and how often it saves it.
//!
//! Owns the directory's name and default only; it must never create or read the
//! directory (`check` and `run` do, with an already-valid configuration).

use std::path::PathBuf;

use anyhow::Result;

use crate::config::check::Locator;
use crate::config::raw::RawState;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/journald-kafka";

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub directory: PathBuf,
    pub checkpoint_interval_ms: u64,
}

impl StateConfig {
    pub fn cursor_file(&self) -> PathBuf {
        self.directory.join("cursor")
    }
}

pub(super) fn state(raw: RawState, at: &Locator) -> Result<StateConfig> {
    Ok(StateConfig {
        directory: raw
            .directory
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        checkpoint_interval_ms: at.range(
            "state.checkpoint_interval_ms",
            raw.checkpoint_interval_ms,
            1000,
            10,
            3_600_000,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{MIN, err};

    #[test]
    fn checkpoint_interval_range() {
        let e = err(&format!("{MIN}[state]\ncheckpoint_interval_ms = 1\n"));
        assert!(e.contains("state.checkpoint_interval_ms (line 5)"), "{e}");
    }
}
