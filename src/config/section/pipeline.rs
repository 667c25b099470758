//! `[pipeline]`: the journal input's in-flight window, its shutdown deadline and its retry
//! backoff.
//!
//! Owns the settings only; the pipeline applies them. The byte window's default is a
//! measured one (#19): its reason sits beside it, to be changed only with new figures.

use anyhow::Result;

use super::MAX_TIMEOUT_MS;
use crate::config::check::Locator;
use crate::config::raw::RawPipeline;

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub max_in_flight_entries: usize,
    pub max_in_flight_bytes: usize,
    pub shutdown_timeout_ms: u64,
    pub retry_backoff_max_ms: u64,
}

pub(super) fn pipeline(raw: RawPipeline, at: &Locator) -> Result<PipelineConfig> {
    Ok(PipelineConfig {
        max_in_flight_entries: at.range(
            "pipeline.max_in_flight_entries",
            raw.max_in_flight_entries,
            50_000,
            1,
            10_000_000,
        )? as usize,
        max_in_flight_bytes: at.range(
            "pipeline.max_in_flight_bytes",
            raw.max_in_flight_bytes,
            // 4 MiB keeps the agent under 16 MiB of anonymous memory while it drains a
            // backlog, at the same rate and CPU per entry as 16 MiB (measured, #19).
            4 << 20,
            65_536,
            4 << 30,
        )? as usize,
        shutdown_timeout_ms: at.range(
            "pipeline.shutdown_timeout_ms",
            raw.shutdown_timeout_ms,
            10_000,
            0,
            MAX_TIMEOUT_MS,
        )?,
        retry_backoff_max_ms: at.range(
            "pipeline.retry_backoff_max_ms",
            raw.retry_backoff_max_ms,
            60_000,
            100,
            3_600_000,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{MIN, err};

    #[test]
    fn in_flight_entries_range() {
        let e = err(&format!("{MIN}[pipeline]\nmax_in_flight_entries = 0\n"));
        assert!(e.contains("pipeline.max_in_flight_entries (line 5)"), "{e}");
    }
}
