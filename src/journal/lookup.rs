//! Places looked up without a reader, filters ignored: whether a saved cursor's entry is
//! still in the journal (`locate`, for `cursor show`) and the configured start as a place
//! to save before anything is shipped (`start_cursor`).
//!
//! Opens one writer's files at a time and never keeps a handle: these answer a question
//! and return.

use std::path::PathBuf;

use anyhow::Result;

use super::handle::Handle;
use super::source::{open, source_files};
use super::stream::{self, before_in, locate_in, newest_in};
use super::writers::Writers;
use crate::checkpoint::place;
use crate::config::{JournalConfig, Source, Start};

/// A writer's space and files; `(None, None)` is the whole single-writer source.
type WriterFiles = (Option<String>, Option<Vec<PathBuf>>);

/// The writers of the source, each with its files (`None`: the whole single-writer source).
/// Opens nothing: handles are opened one writer at a time by [`unfiltered`], so that a
/// directory of thousands of hosts never holds more than one writer's files at once here.
fn writer_files(cfg: &JournalConfig) -> Result<Vec<WriterFiles>> {
    match &cfg.source {
        Source::Local | Source::Namespace(_) => Ok(vec![(None, None)]),
        Source::Directory(_) | Source::Files(_) => Ok(Writers::default()
            .group(source_files(cfg)?)
            .into_iter()
            .map(|(space, files)| (Some(space), Some(files)))
            .collect()),
    }
}

/// An unfiltered handle over one writer's files, or over the whole source.
fn unfiltered(cfg: &JournalConfig, files: Option<&[PathBuf]>) -> Result<Handle> {
    match files {
        None => open(cfg, false),
        Some(f) => stream::open_files(f, None, cfg.reader),
    }
}

/// Whether a cursor's entry is still in the (unfiltered) journal.
pub enum Located {
    Exists,
    Missing {
        gap: Option<u64>,
        first: Option<String>,
    },
}

/// Looks the cursor up without filters (among its writer's files, for a source read per
/// writer): only then does "not found" mean "gone".
pub fn locate(cfg: &JournalConfig, c: &str) -> Result<Located> {
    let stream = place::stream_of(c);
    for (space, files) in writer_files(cfg)? {
        if space.as_deref().is_none_or(|s| s == stream) {
            return locate_in(unfiltered(cfg, files.as_deref())?, c);
        }
    }
    // No file of the cursor's writer is left.
    Ok(Located::Missing {
        gap: None,
        first: None,
    })
}

/// The configured start as a place to resume after, so that it can be saved before
/// anything is shipped: a restart must not seek to "the tail" again (it has moved) or it
/// would pass over what was written in between. `None` where the start needs no cursor:
/// `head`, or a journal with nothing before the start. Writers without an entry before the
/// start are left out: everything they hold is to be shipped.
pub(crate) fn start_cursor(cfg: &JournalConfig) -> Result<Option<String>> {
    if cfg.start == Start::Head {
        return Ok(None);
    }
    let mut positions = Vec::new();
    for (_, files) in writer_files(cfg)? {
        let j = unfiltered(cfg, files.as_deref())?;
        let p = match cfg.start {
            Start::Head => None,
            Start::Tail => newest_in(j)?,
            Start::Since(usec) => before_in(j, usec)?,
        };
        positions.extend(p);
    }
    Ok((!positions.is_empty()).then(|| place::join(positions.iter().map(String::as_str))))
}
