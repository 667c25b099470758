//! One open journal, read by libsystemd or by the native reader: the operations the streams,
//! lookups and measurements use, answered the same way by both.
//!
//! Owns the choice between the two readers and nothing else: where to seek, what a landing
//! means and what to skip stay with the callers (`stream`, `lookup`), so both readers are
//! driven by the same rules.

use std::time::Duration;

use anyhow::{Context, Result};
use systemd::journal::{Journal, JournalWaitResult};

use super::Entry;
use super::measure::Gauges;
use super::native::NativeJournal;
use super::reader::ReadStats;

pub(super) enum Handle {
    Sd(Journal),
    Native(Box<NativeJournal>),
}

impl Handle {
    pub(super) fn seek_head(&mut self) -> Result<()> {
        match self {
            Handle::Sd(j) => j.seek_head()?,
            Handle::Native(n) => n.seek_head(),
        }
        Ok(())
    }

    pub(super) fn seek_tail(&mut self) -> Result<()> {
        match self {
            Handle::Sd(j) => j.seek_tail()?,
            Handle::Native(n) => n.seek_tail(),
        }
        Ok(())
    }

    pub(super) fn seek_realtime_usec(&mut self, usec: u64) -> Result<()> {
        match self {
            Handle::Sd(j) => j.seek_realtime_usec(usec)?,
            Handle::Native(n) => n.seek_realtime(usec),
        }
        Ok(())
    }

    pub(super) fn seek_cursor(&mut self, c: &str) -> Result<()> {
        match self {
            Handle::Sd(j) => j.seek_cursor(c)?,
            Handle::Native(n) => n.seek_cursor(c)?,
        }
        Ok(())
    }

    /// Steps onto the next entry; false at the end. A libsystemd error is returned (the
    /// caller counts and retries); the native reader skips what it cannot read itself.
    pub(super) fn next(&mut self) -> Result<bool> {
        Ok(match self {
            Handle::Sd(j) => j.next()? > 0,
            Handle::Native(n) => n.next(),
        })
    }

    /// Right after a seek: steps back onto the entry before; false if there is none.
    pub(super) fn previous(&mut self) -> Result<bool> {
        Ok(match self {
            Handle::Sd(j) => j.previous()? > 0,
            Handle::Native(n) => n.previous(),
        })
    }

    pub(super) fn test_cursor(&self, c: &str) -> Result<bool> {
        match self {
            Handle::Sd(j) => Ok(j.test_cursor(c)?),
            Handle::Native(n) => n.test_cursor(c),
        }
    }

    pub(super) fn cursor(&self) -> Result<String> {
        match self {
            Handle::Sd(j) => Ok(j.cursor()?),
            Handle::Native(n) => n.cursor(),
        }
    }

    pub(super) fn timestamp_usec(&self) -> Result<u64> {
        match self {
            Handle::Sd(j) => Ok(j.timestamp_usec()?),
            Handle::Native(n) => n
                .realtime()
                .ok_or_else(|| anyhow::anyhow!("the journal does not stand on an entry")),
        }
    }

    /// Reads the entry stood on into `entry`. Returns why some of its fields could not be
    /// read, if so: the rest is in `entry`.
    pub(super) fn take(
        &mut self,
        entry: &mut Entry,
        boot: &mut Option<(systemd::id128::Id128, String)>,
    ) -> Result<Option<String>> {
        let j = match self {
            Handle::Native(n) => return n.take(entry),
            Handle::Sd(j) => j,
        };
        entry.clear();
        entry.cursor = j.cursor().context("sd_journal_get_cursor")?;
        entry.realtime_usec = j.timestamp_usec().context("sd_journal_get_realtime_usec")?;
        let (mono, id) = j
            .monotonic_timestamp()
            .context("sd_journal_get_monotonic_usec")?;
        entry.monotonic_usec = mono;
        // Consecutive entries share the boot; formatting 16 bytes as hex for every entry
        // showed up in profiles.
        match boot {
            Some((b, text)) if *b == id => entry.boot_id.push_str(text),
            _ => {
                let text = id.to_string();
                entry.boot_id.push_str(&text);
                *boot = Some((id, text));
            }
        }
        j.restart_data();
        loop {
            match j.enumerate_data() {
                Ok(Some(f)) => {
                    if let Err(e) = entry.push_journal_field(&f) {
                        return Ok(Some(format!(
                            "fields after the first {} are left out: {e}",
                            entry.len()
                        )));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    let read = entry.len();
                    return Ok(Some(format!(
                        "fields after the first {read} cannot be read: {e}"
                    )));
                }
            }
        }
    }

    /// What the native reader stepped over since the last call (libsystemd's skips are
    /// counted by the caller, from its errors).
    pub(super) fn take_skipped(&mut self) -> ReadStats {
        match self {
            Handle::Sd(_) => ReadStats::default(),
            Handle::Native(n) => {
                let s = std::mem::take(&mut n.skipped);
                ReadStats {
                    corrupt_fields: s.corrupt_fields,
                    unreadable_entries: s.unreadable_entries,
                }
            }
        }
    }

    pub(super) fn wait(&mut self, timeout: Duration) -> Result<JournalWaitResult> {
        match self {
            Handle::Sd(j) => Ok(j.wait(Some(timeout))?),
            Handle::Native(n) => Ok(if n.wait(timeout)? {
                JournalWaitResult::Append
            } else {
                JournalWaitResult::Nop
            }),
        }
    }

    pub(super) fn gauges(&mut self) -> Gauges {
        match self {
            Handle::Sd(j) => Gauges {
                usage_bytes: j.usage().ok(),
                oldest_usec: j.cutoff_realtime_usec().ok().flatten().map(|(o, _)| o),
            },
            Handle::Native(n) => Gauges {
                usage_bytes: Some(super::measure::usage_of(&n.paths())),
                oldest_usec: n.oldest_usec(),
            },
        }
    }

    pub(super) fn usage(&mut self) -> Result<u64> {
        match self {
            Handle::Sd(j) => Ok(j.usage()?),
            Handle::Native(n) => Ok(super::measure::usage_of(&n.paths())),
        }
    }
}
