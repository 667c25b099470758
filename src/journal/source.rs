//! The files a source names and opening libsystemd handles over them: the whole source
//! (filters installed or not), which directories to watch, which files cannot be opened.
//!
//! Never positions a handle for reading: seeking and reading are the streams' business
//! (`stream`), sharing the descriptors among writers the reader's (`per_writer`).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use systemd::journal::{self, Journal};

use super::{host, matches, stream, writers};
use crate::config::{JournalConfig, Source};

/// Opens the journal described by `cfg`, lifts the data threshold and installs the filters
/// unless `filtered` is false.
pub fn open(cfg: &JournalConfig, filtered: bool) -> Result<Journal> {
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
    Ok(j)
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
            let mid = host::machine_id().unwrap_or_default();
            let sub = match &cfg.source {
                Source::Namespace(ns) => format!("{}.{ns}", mid.trim()),
                _ => mid.trim().to_string(),
            };
            ["/var/log/journal", "/run/log/journal"]
                .iter()
                .flat_map(|base| writers::list(&PathBuf::from(base).join(&sub)).unwrap_or_default())
                .filter(|p| {
                    p.parent()
                        .and_then(|d| d.file_name())
                        .is_some_and(|d| d == sub.as_str())
                })
                .collect()
        }
    };
    files
        .into_iter()
        .filter_map(|f| {
            let check = stream::open_files(std::slice::from_ref(&f), None).and_then(|mut j| {
                j.seek_head()?;
                j.next()?;
                Ok(())
            });
            check.err().map(|e| (f, format!("{e:#}")))
        })
        .collect()
}
