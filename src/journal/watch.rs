//! Watching the directories of a source read per writer for changes, with one inotify
//! descriptor.
//!
//! A writer's stream does not hold its files open while it is caught up (`per_writer`), so
//! something else must say when its files gain entries. journald and
//! `systemd-journal-remote` announce every append with a change to the file (libsystemd's
//! `journal_file_post_change` truncates the file to its own size for exactly this), which
//! a watch on the directory reports as `IN_MODIFY` with the file's name. One descriptor
//! covers the directory and its immediate subdirectories however many files they hold; an
//! sd-journal handle over the directory would hold one per file.
//!
//! Owns the inotify descriptor and its watches. Must never decide what a change means: it
//! reports which files changed and whether the listing did, and the reader acts.

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// What happened since the last [`Watch::take`].
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Files whose contents changed (appended to, truncated, closed after writing).
    pub modified: HashSet<PathBuf>,
    /// Files or subdirectories came, went or were renamed: list the directory again.
    pub listing: bool,
    /// The kernel dropped events: anything may have changed.
    pub overflow: bool,
    /// Names that were created or moved into place: what was known about a file of that
    /// name before is void.
    pub created: HashSet<PathBuf>,
}

pub(super) struct Watch {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
    pending: Changes,
}

impl Watch {
    /// Watches `dirs` (a directory source: it and its subdirectories; a file set: the
    /// directories holding the files).
    pub(super) fn new(dirs: &[PathBuf]) -> io::Result<Watch> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let mut w = Watch {
            fd,
            dirs: HashMap::new(),
            pending: Changes::default(),
        };
        for d in dirs {
            w.add(d)?;
        }
        Ok(w)
    }

    pub(super) fn add(&mut self, dir: &Path) -> io::Result<()> {
        let flags = WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        let wd = inotify::add_watch(&self.fd, dir, flags).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot watch {} for changes: {e}", dir.display()),
            )
        })?;
        self.dirs.insert(wd, dir.to_path_buf());
        Ok(())
    }

    /// Waits up to `timeout` for a change; true when there is one to [`take`](Self::take).
    pub(super) fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        self.drain()?;
        if self.has_pending() || timeout.is_zero() {
            return Ok(self.has_pending());
        }
        let ts = rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        self.drain()?;
        Ok(self.has_pending())
    }

    fn has_pending(&self) -> bool {
        let p = &self.pending;
        p.listing || p.overflow || !p.modified.is_empty()
    }

    /// The changes gathered so far, reading whatever the kernel holds first.
    pub(super) fn take(&mut self) -> io::Result<Changes> {
        self.drain()?;
        Ok(std::mem::take(&mut self.pending))
    }

    fn drain(&mut self) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut new_dirs = Vec::new();
        {
            let mut r = inotify::Reader::new(&self.fd, &mut buf);
            loop {
                let ev = match r.next() {
                    Ok(ev) => ev,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                };
                let flags = ev.events();
                if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                    self.pending.overflow = true;
                    self.pending.listing = true;
                    continue;
                }
                let Some(dir) = self.dirs.get(&ev.wd()) else {
                    continue;
                };
                if flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF) {
                    self.pending.listing = true;
                    continue;
                }
                let Some(name) = ev.file_name() else { continue };
                let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
                if flags.intersects(
                    ReadFlags::CREATE
                        | ReadFlags::DELETE
                        | ReadFlags::MOVED_FROM
                        | ReadFlags::MOVED_TO,
                ) {
                    self.pending.listing = true;
                    if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                        self.pending.created.insert(path.clone());
                    }
                    if flags.contains(ReadFlags::ISDIR)
                        && flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO)
                    {
                        new_dirs.push(path.clone());
                    }
                }
                self.pending.modified.insert(path);
            }
        }
        for d in new_dirs {
            // A subdirectory that vanished again before it could be watched is nothing to
            // watch; the listing notices whatever it held.
            let _ = self.add(&d);
        }
        Ok(())
    }
}
