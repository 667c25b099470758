//! The writers of a directory or file set: which journal files belong to which
//! sequence-number space.
//!
//! A journal file's header names one sequence-number space, which every cursor into the
//! file carries as its `s=` part; a writer keeps its space across rotations (the new file
//! takes the old one's as template). `systemd-journal-remote` keeps one space per remote
//! host, so in a central directory a space is a host.
//!
//! The space is read from the file's header (`header`), once per file: grouping thousands
//! of files opens no sd-journal handle and holds no descriptor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::header;

/// Files grouped by the space they belong to.
pub(super) type Groups = BTreeMap<String, Vec<PathBuf>>;

/// What is known about the files seen so far (a file's space never changes).
#[derive(Default)]
pub(super) struct Writers {
    /// File → its inode and space (`None` while its header is not written yet).
    known: HashMap<PathBuf, (u64, Option<String>)>,
    /// Files that could not be read, already reported.
    reported: HashSet<PathBuf>,
}

impl Writers {
    /// Groups `files` (as listed by [`list`]) by space, skipping files that are not journal
    /// files yet (a header being written).
    pub(super) fn group(&mut self, files: Vec<PathBuf>) -> Groups {
        let listed: HashSet<&PathBuf> = files.iter().collect();
        self.known.retain(|f, _| listed.contains(f));
        self.reported.retain(|f| listed.contains(f));
        let mut groups = Groups::new();
        for f in files {
            let space = match self.known.get(&f) {
                Some((ino, Some(s))) if same_inode(&f, *ino) => Some(s.clone()),
                _ => match self.space_of(&f) {
                    Some((ino, s)) => {
                        self.known.insert(f.clone(), (ino, s.clone()));
                        s
                    }
                    None => None,
                },
            };
            if let Some(s) = space {
                groups.entry(s).or_default().push(f);
            }
        }
        groups
    }

    /// The space of a file seen before, if its header was readable then.
    pub(super) fn known_space(&self, file: &Path) -> Option<&str> {
        self.known.get(file).and_then(|(_, s)| s.as_deref())
    }

    /// Whether every one of `files` is still the file that was grouped under its name: a
    /// rotation renames the active file away and gives its name to a new one.
    pub(super) fn unchanged(&self, files: &[PathBuf]) -> bool {
        files.iter().all(|f| {
            self.known
                .get(f)
                .is_some_and(|(ino, _)| same_inode(f, *ino))
        })
    }

    /// Forgets what was learnt about `file` (created or replaced under the same name).
    pub(super) fn forget(&mut self, file: &Path) {
        self.known.remove(file);
    }

    fn space_of(&mut self, file: &Path) -> Option<(u64, Option<String>)> {
        match header::read_with_inode(file) {
            Ok((ino, h)) => Some((ino, h.map(|h| h.space()))),
            Err(e) => {
                // libsystemd skips such files in a directory too; say so once.
                if self.reported.insert(file.to_path_buf()) {
                    tracing::warn!(file = %file.display(), error = %e, "cannot read this journal file; it is left out until it can be");
                }
                None
            }
        }
    }
}

fn same_inode(f: &Path, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(f).is_ok_and(|m| m.ino() == ino)
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

/// The immediate subdirectories of `dir`, whose journal files [`list`] takes too.
pub(super) fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn is_journal(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".journal") || n.ends_with(".journal~"))
}
