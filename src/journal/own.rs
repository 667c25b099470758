//! The agent's own entries: shipping them would let the agent feed on itself.
//!
//! Only this machine's: a directory or files source (a central journal-remote collector)
//! holds other hosts' journals, and their agents' logs are those hosts' data to ship.

use super::Entry;
use crate::config::Source;
use crate::logging::IDENTIFIER;

/// Which entries are the agent's own, for one journal source.
#[derive(Debug, Clone)]
pub(crate) struct OwnEntries {
    /// This process's PID, for lines it wrote before its log identifier was set.
    pid: Option<String>,
    /// For sources that hold several machines' journals: this machine's id. An entry is
    /// ours only if it carries it.
    machine: Option<Vec<u8>>,
}

impl OwnEntries {
    /// The rule for `source`, for the running agent (`pid`) or for a checker (`None`).
    pub(crate) fn new(source: &Source, pid: Option<u32>) -> OwnEntries {
        let machine = match source {
            Source::Local | Source::Namespace(_) => None,
            // Unknown machine id: no entry can be proven ours, so none is skipped.
            Source::Directory(_) | Source::Files(_) => Some(
                std::fs::read_to_string("/etc/machine-id")
                    .map(|m| m.trim().as_bytes().to_vec())
                    .unwrap_or_default(),
            ),
        };
        OwnEntries {
            pid: pid.map(|p| p.to_string()),
            machine,
        }
    }

    /// Whether `entry` was logged by journald-kafka on this machine (this process or an
    /// earlier run).
    pub(crate) fn matches(&self, entry: &Entry) -> bool {
        if let Some(m) = &self.machine {
            if m.is_empty() || entry.get(b"_MACHINE_ID") != Some(m.as_slice()) {
                return false;
            }
        }
        entry.get(b"SYSLOG_IDENTIFIER") == Some(IDENTIFIER.as_bytes())
            || self.pid.as_ref().is_some_and(|pid| {
                entry.get(b"_PID") == Some(pid.as_bytes())
                    && entry
                        .get(b"_COMM")
                        .is_some_and(|c| c.starts_with(b"journald-kafka"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> Entry {
        let mut e = Entry::new();
        for (k, v) in fields {
            e.push_field(k.as_bytes(), v.as_bytes());
        }
        e
    }

    #[test]
    fn own_entries_by_identifier_or_pid_and_command() {
        let local = OwnEntries::new(&Source::Local, Some(77));
        assert!(local.matches(&entry(&[("SYSLOG_IDENTIFIER", "journald-kafka")])));
        let by_pid = entry(&[("_PID", "77"), ("_COMM", "journald-kafka")]);
        assert!(local.matches(&by_pid));
        assert!(!OwnEntries::new(&Source::Local, Some(78)).matches(&by_pid));
        assert!(!OwnEntries::new(&Source::Local, None).matches(&by_pid));
        assert!(!local.matches(&entry(&[("_PID", "77"), ("_COMM", "sshd")])));
    }

    #[test]
    fn a_central_directory_skips_only_this_machines_agent() {
        let Ok(ours) = std::fs::read_to_string("/etc/machine-id") else {
            return;
        };
        let dir = OwnEntries::new(&Source::Directory("/var/log/journal/remote".into()), None);
        let other = entry(&[
            ("SYSLOG_IDENTIFIER", "journald-kafka"),
            ("_MACHINE_ID", "0123456789abcdef0123456789abcdef"),
        ]);
        assert!(
            !dir.matches(&other),
            "another host's agent logs are shipped"
        );
        assert!(!dir.matches(&entry(&[("SYSLOG_IDENTIFIER", "journald-kafka")])));
        let mine = entry(&[
            ("SYSLOG_IDENTIFIER", "journald-kafka"),
            ("_MACHINE_ID", ours.trim()),
        ]);
        assert!(dir.matches(&mine));
    }
}
