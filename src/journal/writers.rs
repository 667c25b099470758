//! The writers of a directory or file set: which journal files belong to which
//! sequence-number space.
//!
//! A journal file's header names one sequence-number space, which every cursor into the
//! file carries as its `s=` part; a writer keeps its space across rotations (the new file
//! takes the old one's as template). `systemd-journal-remote` keeps one space per remote
//! host, so in a central directory a space is a host.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::stream::open_files;

/// Files grouped by the space they belong to.
pub(super) type Groups = BTreeMap<String, Vec<PathBuf>>;

/// What is known about the files seen so far (a file's space never changes).
#[derive(Default)]
pub(super) struct Writers {
    /// File → its space; `None` while it holds no entry yet.
    known: HashMap<PathBuf, Option<String>>,
    /// Files that could not be opened, already reported.
    reported: std::collections::HashSet<PathBuf>,
}

impl Writers {
    /// Groups `files` (as listed by [`list`]) by space, skipping files without entries.
    pub(super) fn group(&mut self, files: Vec<PathBuf>) -> Groups {
        self.known.retain(|f, _| files.contains(f));
        let mut groups = Groups::new();
        for f in files {
            let space = match self.known.get(&f) {
                Some(Some(s)) => Some(s.clone()),
                _ => {
                    let s = self.space_of(&f);
                    self.known.insert(f.clone(), s.clone());
                    s
                }
            };
            if let Some(s) = space {
                groups.entry(s).or_default().push(f);
            }
        }
        groups
    }

    /// Whether a file without entries was seen: its writer is not known yet.
    pub(super) fn has_empty_files(&self) -> bool {
        self.known.values().any(Option::is_none)
    }

    fn space_of(&mut self, file: &Path) -> Option<String> {
        let first = open_files(&[file.to_path_buf()], None).and_then(|mut j| {
            j.seek_head()?;
            if j.next()? == 0 {
                return Ok(None);
            }
            Ok(Some(j.cursor()?))
        });
        match first {
            Ok(c) => c
                .as_deref()
                .and_then(super::cursor::seqnum)
                .map(|(id, _)| format!("s={id}")),
            Err(e) => {
                // libsystemd skips such files in a directory too; say so once.
                if self.reported.insert(file.to_path_buf()) {
                    tracing::warn!(file = %file.display(), error = format!("{e:#}"), "cannot read this journal file; it is left out until it can be");
                }
                None
            }
        }
    }
}

/// The journal files of a directory as `sd_journal_open_directory` takes them: the
/// directory's own and those of its immediate subdirectories (a copied `/var/log/journal`
/// has one per machine id).
pub(super) fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if let Ok(sub) = std::fs::read_dir(&path) {
                out.extend(sub.flatten().map(|e| e.path()).filter(|p| is_journal(p)));
            }
        } else if is_journal(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn is_journal(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".journal") || n.ends_with(".journal~"))
}
