//! The at-least-once checkpoint store: a cursor file in the state directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{SafeCursor, Store};

/// What a saved place must look like to be used, decided by the input that wrote it (the
/// journal: one cursor per line, `journal::validate_place`): the checkpoint stores opaque
/// positions and never parses one.
pub(crate) type Validate = fn(&str) -> Result<(), String>;

/// The cursor file: the place (one journal cursor per line, see [`super::place`]), replaced atomically
/// (temp file, fsync, rename, fsync of the directory) so that after a crash it holds either
/// the old or the new cursor, never a torn mix.
pub(crate) struct FileStore {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    last: Option<String>,
    validate: Validate,
}

impl FileStore {
    pub(crate) fn new(dir: &Path, validate: Validate) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
            path: dir.join("cursor"),
            tmp: dir.join(".cursor.tmp"),
            last: None,
            validate,
        }
    }

    /// Creates the state directory if needed and checks that we can write there, so that a
    /// read-only or misowned directory stops the agent at start instead of after an hour.
    pub(crate) fn prepare(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create state directory {}", self.dir.display()))?;
        let probe = self.dir.join(".write-test");
        create_fresh(&probe)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("state directory {} is not writable", self.dir.display()))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }
}

/// Creates `path` as a new regular file of ours. Whatever is there first (a leftover, or a
/// symbolic link planted by someone who can write the directory) is unlinked, never
/// followed: `O_CREAT|O_EXCL` fails on any existing name, links included, so a link
/// planted between the two steps makes this fail instead of truncating its target.
fn create_fresh(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// The longest cursor file read: a place names one cursor (under 200 bytes) per writer,
/// so this holds tens of thousands of writers, and a planted huge file is refused.
const MAX_CURSOR_FILE: u64 = 16 << 20;

/// Reads and validates a cursor file. `Ok(None)` when it does not exist.
pub(crate) fn read_cursor_file(path: &Path, validate: Validate) -> Result<Option<String>> {
    // Not followed if it is a link, and read only up to a bound: the state directory's
    // contents are data, and a root `check` must not be pointed at another file.
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        // The agent writes it by rename, so it has one name: a second one is a hard link
        // someone planted to make a root `check` read another file.
        if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            return Err(std::io::Error::other(
                "it has other names (hard links): refused; the agent writes a file of its own there",
            ));
        }
        let mut b = Vec::new();
        f.take(MAX_CURSOR_FILE + 1).read_to_end(&mut b)?;
        if b.len() as u64 > MAX_CURSOR_FILE {
            return Err(std::io::Error::other(format!(
                "larger than {MAX_CURSOR_FILE} bytes"
            )));
        }
        Ok(b)
    };
    let bytes = match read() {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!(
                "cursor file {} is a symbolic link: refused (the agent writes a regular file there; remove the link)",
                path.display()
            );
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read cursor file {}", path.display()));
        }
    };
    let hint = "fix it, or delete it to start from journal.start (entries may then be shipped twice or skipped)";
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!(
            "cursor file {} is not text ({} bytes); {hint}",
            path.display(),
            bytes.len()
        );
    };
    let text = text.strip_suffix('\n').unwrap_or(text);
    if let Err(e) = validate(text) {
        bail!(
            "cursor file {} does not hold a journal cursor (one per writer, one per line): {e}; {hint}",
            path.display()
        );
    }
    Ok(Some(text.to_string()))
}

impl Store for FileStore {
    fn load(&mut self) -> Result<Option<String>> {
        let c = read_cursor_file(&self.path, self.validate)?;
        self.last = c.clone();
        Ok(c)
    }

    fn commit(&mut self, cursor: &SafeCursor) -> Result<()> {
        self.write(cursor)
    }

    fn describe(&self) -> String {
        format!("cursor file {}", self.path.display())
    }
}

impl FileStore {
    /// Keeps the file in step with a cursor that another store already committed (the
    /// exactly-once cursor topic, which accepts only safe cursors): a cache, never the
    /// authority, for `cursor show` and a later switch back to at-least-once.
    pub(crate) fn mirror_committed(&mut self, cursor: &str) -> Result<()> {
        self.write(cursor)
    }

    fn write(&mut self, cursor: &str) -> Result<()> {
        if self.last.as_deref() == Some(cursor) {
            return Ok(());
        }
        let write = || -> std::io::Result<()> {
            let mut f = create_fresh(&self.tmp)?;
            f.write_all(cursor.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            drop(f);
            fs::rename(&self.tmp, &self.path)?;
            File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            // Leave the old file in place; it still points at acknowledged data.
            let _ = fs::remove_file(&self.tmp);
            return Err(e)
                .with_context(|| format!("cannot write cursor file {}", self.path.display()));
        }
        self.last = Some(cursor.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's rule: what these tests store are journal cursors.
    const V: Validate = crate::journal::validate_place;

    const C1: &str =
        "s=0e7a5b6d4c3b4a29a1b2c3d4e5f60718;i=1;b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=1;t=1;x=1";
    const C2: &str =
        "s=0e7a5b6d4c3b4a29a1b2c3d4e5f60718;i=2;b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=2;t=2;x=2";

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::new(dir.path(), V);
        s.prepare().unwrap();
        assert_eq!(s.load().unwrap(), None);
        s.commit(&SafeCursor(C1.into())).unwrap();
        assert_eq!(fs::read_to_string(&s.path).unwrap(), format!("{C1}\n"));
        s.commit(&SafeCursor(C2.into())).unwrap();
        let mut again = FileStore::new(dir.path(), V);
        assert_eq!(again.load().unwrap().as_deref(), Some(C2));
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cursor")]);
    }

    /// Issue 27, item 8: links planted in the state directory are never followed. Before,
    /// `.write-test` and `.cursor.tmp` were opened following links and truncating, so a
    /// root `check` or `run` emptied the link's target.
    #[test]
    fn planted_links_are_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        symlink(&victim, state.join(".write-test")).unwrap();
        symlink(&victim, state.join(".cursor.tmp")).unwrap();
        let mut s = FileStore::new(&state, V);
        s.prepare().unwrap();
        s.commit(&SafeCursor(C1.into())).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(
            fs::read_to_string(state.join("cursor")).unwrap(),
            format!("{C1}\n")
        );
        assert!(
            !fs::symlink_metadata(&victim)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A cursor file that is a link is refused, not read (a root `check` must not be
        // pointed at another file and quote it).
        fs::remove_file(state.join("cursor")).unwrap();
        symlink(&victim, state.join("cursor")).unwrap();
        let e = FileStore::new(&state, V).load().unwrap_err();
        assert!(format!("{e:#}").contains("is a symbolic link"), "{e:#}");
        assert!(!format!("{e:#}").contains("precious"));
    }

    #[test]
    fn a_place_of_several_writers_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::new(dir.path(), V);
        let other = C2.replace("s=0e7a", "s=1e7a");
        let place = format!("{C1}\n{other}");
        s.commit(&SafeCursor(place.clone())).unwrap();
        assert_eq!(FileStore::new(dir.path(), V).load().unwrap(), Some(place));
    }

    #[test]
    fn a_stale_temp_file_does_not_matter() {
        // A crash between writing the temp file and renaming it leaves the old cursor valid.
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::new(dir.path(), V);
        s.commit(&SafeCursor(C1.into())).unwrap();
        fs::write(dir.path().join(".cursor.tmp"), "s=half-writ").unwrap();
        assert_eq!(
            FileStore::new(dir.path(), V).load().unwrap().as_deref(),
            Some(C1)
        );
        s.commit(&SafeCursor(C2.into())).unwrap();
        assert_eq!(
            FileStore::new(dir.path(), V).load().unwrap().as_deref(),
            Some(C2)
        );
    }

    #[test]
    fn bad_files_are_named_and_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        for (content, expect) in [
            (&b""[..], "empty"),
            (b"garbage", "key=value"),
            (&C1.as_bytes()[..C1.find(";m=").unwrap()], "lacks"),
            (&[0xff, 0xfe][..], "not text"),
            (format!("{C1}\n{C2}").as_bytes(), "line 2: a second cursor"),
            (format!("{C1}\n\n").as_bytes(), "line 2"),
        ] {
            fs::write(&path, content).unwrap();
            let e = format!("{:#}", FileStore::new(dir.path(), V).load().unwrap_err());
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(expect), "{expect}: {e}");
        }
    }

    #[test]
    fn unwritable_directory_is_reported_at_prepare() {
        if is_root() {
            // root ignores permission bits; the read-only case is covered by the fault suite.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut p = fs::metadata(dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o500);
        fs::set_permissions(dir.path(), p).unwrap();
        let e = format!("{:#}", FileStore::new(dir.path(), V).prepare().unwrap_err());
        assert!(e.contains("not writable"), "{e}");
    }

    #[test]
    fn failed_write_keeps_the_old_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::new(dir.path(), V);
        s.commit(&SafeCursor(C1.into())).unwrap();
        // Make the rename fail: the target path becomes a non-empty directory.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), "").unwrap();
        let mut s2 = FileStore {
            path: blocked.clone(),
            ..FileStore::new(dir.path(), V)
        };
        assert!(s2.commit(&SafeCursor(C2.into())).is_err());
        assert_eq!(
            FileStore::new(dir.path(), V).load().unwrap().as_deref(),
            Some(C1)
        );
        assert!(!dir.path().join(".cursor.tmp").exists());
    }

    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    proptest::proptest! {
        /// Whatever bytes the cursor file holds: no panic, and a refusal names the file.
        #[test]
        fn arbitrary_cursor_files(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cursor");
            fs::write(&path, &bytes).unwrap();
            match read_cursor_file(&path, V) {
                Ok(Some(c)) => proptest::prop_assert!(V(&c).is_ok()),
                Ok(None) => proptest::prop_assert!(false, "an existing file is never 'no cursor'"),
                Err(e) => {
                    let msg = format!("{:#}", e);
                    proptest::prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
                }
            }
        }
    }
}
