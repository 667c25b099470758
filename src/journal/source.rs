//! The files a source names and opening libsystemd handles over them: the whole source
//! (filters installed or not), which directories to watch, which files cannot be opened.
//!
//! Never positions a handle for reading: seeking and reading are the streams' business
//! (`stream`), sharing the descriptors among writers the reader's (`per_writer`).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use systemd::journal;

use super::handle::Handle;

use super::{host, matches, stream, writers};
use crate::config::{JournalConfig, ReaderKind, Source};

/// Opens the journal described by `cfg` with the configured reader, lifts the data
/// threshold and installs the filters unless `filtered` is false.
pub(super) fn open(cfg: &JournalConfig, filtered: bool) -> Result<Handle> {
    if cfg.reader == ReaderKind::Native {
        return open_native(cfg, filtered);
    }
    let mut j = match &cfg.source {
        Source::Local => journal::OpenOptions::default()
            .local_only(true)
            .open()
            .context("cannot open the local journal")?,
        Source::Namespace(ns) => super::namespace::open(ns)
            .with_context(|| format!("cannot open journal namespace {ns:?}"))?,
        Source::Directory(d) => {
            if !d.is_dir() {
                bail!(
                    "journal directory {} does not exist or is not a directory",
                    d.display()
                );
            }
            journal::OpenDirectoryOptions::default()
                .open_directory(
                    d.to_str()
                        .ok_or_else(|| anyhow!("journal directory {} is not UTF-8", d.display()))?,
                )
                .with_context(|| format!("cannot open journal directory {}", d.display()))?
        }
        Source::Files(files) => {
            let mut names = Vec::with_capacity(files.len());
            for f in files {
                std::fs::metadata(f)
                    .with_context(|| format!("cannot open journal file {}", f.display()))?;
                names.push(
                    f.to_str()
                        .ok_or_else(|| anyhow!("journal file {} is not UTF-8", f.display()))?,
                );
            }
            journal::OpenFilesOptions::default()
                .open_files(names)
                .context("cannot open the journal files")?
        }
    };
    // 0 lifts the 64 KiB default: fields are never cut short.
    j.set_data_threshold(0)
        .context("cannot lift the journal data threshold")?;
    // Asking for the fd makes libsystemd watch the files with inotify: deleted or rotated
    // files are then reported as INVALIDATE instead of failing reads with EBADMSG.
    j.fd().context("cannot watch the journal for changes")?;
    if filtered {
        matches::apply(&mut j, &cfg.filter)?;
    }
    Ok(Handle::Sd(j))
}

fn open_native(cfg: &JournalConfig, filtered: bool) -> Result<Handle> {
    let filter = filtered.then_some(&cfg.filter);
    let n = match &cfg.source {
        Source::Local | Source::Namespace(_) => {
            let sub = machine_subdir(cfg);
            super::native::NativeJournal::open_dirs(
                Box::new(move || {
                    // The roots are watched too: the machine's directory may appear later
                    // (journald's first flush to /var, a namespace started after the agent).
                    let mut dirs: Vec<PathBuf> = LOCAL_ROOTS
                        .iter()
                        .map(PathBuf::from)
                        .filter(|d| d.is_dir())
                        .collect();
                    let machine = machine_dirs(&sub);
                    let files = list_local(&machine)?;
                    dirs.extend(machine);
                    Ok((dirs, files))
                }),
                filter,
            )
            .with_context(|| format!("cannot open the {}", cfg.source))?
        }
        Source::Directory(_) | Source::Files(_) => {
            if let Source::Directory(d) = &cfg.source {
                if !d.is_dir() {
                    bail!(
                        "journal directory {} does not exist or is not a directory",
                        d.display()
                    );
                }
            }
            let files = source_files(cfg)?;
            super::native::NativeJournal::open_files(&files, filter)?
        }
    };
    Ok(Handle::Native(Box::new(n)))
}

/// Where journald keeps the local journal: persistent, then volatile.
const LOCAL_ROOTS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

/// The directory of this machine's journal (`<machine-id>`) or of one of its namespaces
/// (`<machine-id>.<namespace>`) under each root, as libsystemd picks them for a local-only
/// handle.
fn machine_subdir(cfg: &JournalConfig) -> String {
    let mid = host::machine_id().unwrap_or_default();
    match &cfg.source {
        Source::Namespace(ns) => format!("{}.{ns}", mid.trim()),
        _ => mid.trim().to_string(),
    }
}

/// The machine's directories (`sub` under each root) that exist now.
fn machine_dirs(sub: &str) -> Vec<PathBuf> {
    LOCAL_ROOTS
        .iter()
        .map(|base| PathBuf::from(base).join(sub))
        .filter(|d| d.is_dir())
        .collect()
}

/// The journal files directly in `dirs` (not in their subdirectories).
fn list_local(dirs: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        match writers::list(d) {
            Ok(files) => out.extend(
                files
                    .into_iter()
                    .filter(|p| p.parent() == Some(d.as_path())),
            ),
            // Removed between the check and the listing: nothing there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The directories a source read per writer watches.
pub(super) fn watched_dirs(cfg: &JournalConfig) -> Vec<PathBuf> {
    match &cfg.source {
        Source::Directory(d) => {
            let mut dirs = vec![d.clone()];
            dirs.extend(writers::subdirectories(d));
            dirs
        }
        Source::Files(files) => {
            let mut dirs: Vec<PathBuf> = files
                .iter()
                .map(|f| match f.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                })
                .collect();
            dirs.sort();
            dirs.dedup();
            dirs
        }
        Source::Local | Source::Namespace(_) => Vec::new(),
    }
}

/// The journal files of a source read per writer.
pub(super) fn source_files(cfg: &JournalConfig) -> Result<Vec<PathBuf>> {
    match &cfg.source {
        Source::Directory(d) => writers::list(d)
            .with_context(|| format!("cannot list journal directory {}", d.display())),
        Source::Files(f) => Ok(f.clone()),
        Source::Local | Source::Namespace(_) => Ok(Vec::new()),
    }
}

/// How many journal files a directory or files source names now (`None` for the local
/// journal and namespaces), for `check` to set against the open-file limit.
pub fn file_count(cfg: &JournalConfig) -> Option<usize> {
    match &cfg.source {
        Source::Directory(_) | Source::Files(_) => source_files(cfg).ok().map(|f| f.len()),
        Source::Local | Source::Namespace(_) => None,
    }
}

/// The journal files of the source that cannot be opened, with why: libsystemd leaves such
/// files out of a handle without a word, so what they held looks vacuumed. Opens every
/// file: for rare events (a gap, startup), not for every entry.
pub fn unreadable_files(cfg: &JournalConfig) -> Vec<(PathBuf, String)> {
    let files = match &cfg.source {
        Source::Directory(_) | Source::Files(_) => source_files(cfg).unwrap_or_default(),
        Source::Local | Source::Namespace(_) => {
            list_local(&machine_dirs(&machine_subdir(cfg))).unwrap_or_default()
        }
    };
    files
        .into_iter()
        .filter_map(|f| {
            let check =
                stream::open_files(std::slice::from_ref(&f), None, cfg.reader).and_then(|mut j| {
                    j.seek_head()?;
                    j.next()?;
                    Ok(())
                });
            check.err().map(|e| (f, format!("{e:#}")))
        })
        .collect()
}
