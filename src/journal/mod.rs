//! The journal stage: opening the journal, applying matches, positioning at the saved
//! place and reading entries as raw bytes.
//!
//! A directory or file set may hold several writers (a central `systemd-journal-remote`
//! directory holds one per host), each with its own sequence-number space. libsystemd
//! merges a directory's files by time, so one read position passes over a writer whose
//! entries arrive older than what was already read (a late upload, a host's backlog).
//! Such sources are therefore read as one stream per writer, each in its own order, merged
//! here by time; the saved place holds one cursor per writer (`checkpoint::place`). The
//! local journal and namespaces have a single writer (journald) and are one stream.
//!
//! Owns the open journal, read by the agent's own file reader (`native`, the default) or by
//! libsystemd's sd-journal (the reference), behind one `handle::Handle`; neither is
//! thread-safe or non-blocking: it lives on one OS thread (the reader) and never crosses to
//! another. This module must never decide
//! what is safe to skip: it reports where it landed relative to the cursor and leaves the
//! policy to the caller, and it never drops a field (the data threshold is lifted).
//!
//! Where things are: the two readers behind one set of operations (`handle`, `native`), the
//! `Reader` and what it reports (`reader`), the writers of a source
//! sharing the open files (`per_writer`), one handle read in order (`stream`), the files a
//! source names and opening handles over them (`source`), the journal counted for metrics
//! and `status` (`measure`), places looked up without a reader (`lookup`), cursors and the
//! saved place's validity (`cursor`).

pub mod cursor;
mod entry;
mod handle;
mod header;
mod host;
mod lookup;
mod matches;
mod measure;
mod namespace;
mod native;
mod own;
mod per_writer;
mod reader;
pub(crate) mod retention;
mod select;
mod source;
mod stream;
mod watch;
mod writers;

pub(crate) use cursor::validate_place;
pub use entry::Entry;
pub(crate) use host::machine_id;
pub(crate) use lookup::start_cursor;
pub use lookup::{Located, locate};
pub use matches::{apply as apply_matches, shorthand_terms};
pub use measure::{Behind, behind};
pub(crate) use own::OwnEntries;
pub use per_writer::open_file_budget;
pub use reader::{Placed, Position, ReadStats, Reader};
pub(crate) use select::{Selection, effect as filter_effect};
pub use source::{file_count, unreadable_files};
