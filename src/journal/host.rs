//! This host's identity as journald knows it: the machine id that names its journal
//! directory and that its entries carry in `_MACHINE_ID`. One reading for every user of it
//! (own-entry detection, journald's limits, the transactional id, progress records).
//!
//! It must never guess: an unreadable or empty id is an error the caller decides about.

use std::io;
use std::path::Path;

/// `/etc/machine-id`, trimmed.
pub(crate) fn machine_id() -> io::Result<String> {
    machine_id_under(Path::new("/"))
}

/// `etc/machine-id` under `root`, trimmed (tests give a root of their own).
pub(crate) fn machine_id_under(root: &Path) -> io::Result<String> {
    let path = root.join("etc/machine-id");
    let id = std::fs::read_to_string(&path)?.trim().to_string();
    if id.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_trimmed_and_an_empty_one_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/machine-id"), "abc123\n").unwrap();
        assert_eq!(machine_id_under(root.path()).unwrap(), "abc123");
        std::fs::write(root.path().join("etc/machine-id"), "\n").unwrap();
        assert!(machine_id_under(root.path()).is_err());
    }
}
