//! The agent's own entries: shipping them would let the agent feed on itself.

use super::Entry;
use crate::logging::IDENTIFIER;

/// Whether an entry carries the agent's own log identifier (any run of the agent).
pub(crate) fn logged_by_agent(entry: &Entry) -> bool {
    entry.get(b"SYSLOG_IDENTIFIER") == Some(IDENTIFIER.as_bytes())
}

/// Whether an entry was logged by journald-kafka itself (this process or an earlier run).
pub(crate) fn is_own(entry: &Entry, own_pid: &str) -> bool {
    logged_by_agent(entry)
        || (entry.get(b"_PID") == Some(own_pid.as_bytes())
            && entry
                .get(b"_COMM")
                .is_some_and(|c| c.starts_with(b"journald-kafka")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_entries_by_identifier_or_pid_and_command() {
        let mut e = Entry::new();
        e.push_field(b"SYSLOG_IDENTIFIER", b"journald-kafka");
        assert!(logged_by_agent(&e) && is_own(&e, "1"));
        let mut e = Entry::new();
        e.push_field(b"_PID", b"77");
        e.push_field(b"_COMM", b"journald-kafka");
        assert!(!logged_by_agent(&e));
        assert!(is_own(&e, "77"));
        assert!(!is_own(&e, "78"), "another process's entries are not ours");
        let mut e = Entry::new();
        e.push_field(b"_PID", b"77");
        e.push_field(b"_COMM", b"sshd");
        assert!(!is_own(&e, "77"));
    }
}
