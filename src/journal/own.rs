//! The agent's own entries: shipping them would let the agent feed on itself.
//!
//! Owns the rule that tells them apart, and it may rest only on *trusted* fields: those
//! journald itself sets from the kernel's view of the sender (`_PID`, `_UID`, `_BOOT_ID`,
//! `_SYSTEMD_UNIT`), which no client can choose. `SYSLOG_IDENTIFIER`, `_COMM` and the text
//! are the sender's to pick (`logger -t journald-kafka`, a renamed binary), so a rule that
//! looked at them would let any local user hide lines from central logging. It must never
//! skip an entry of another uid or of a unit that is not the agent's, whatever it calls
//! itself.
//!
//! Only this machine's: a directory or files source (a central journal-remote collector)
//! holds other hosts' journals, and their agents' logs are those hosts' data to ship.

use super::Entry;
use crate::config::Source;

/// Which entries are the agent's own, for one journal source.
#[derive(Debug, Clone)]
pub(crate) struct OwnEntries {
    /// This process on this boot (`_PID`, `_BOOT_ID`): lines it wrote when it runs outside
    /// its unit (from a shell on the host; in another PID namespace the rule is off).
    this_run: Option<(String, Vec<u8>)>,
    /// The uids the agent runs as: an entry of any other uid is never its own.
    uids: Vec<String>,
    /// For sources that hold several machines' journals: this machine's id. An entry is
    /// ours only if it carries it.
    machine: Option<Vec<u8>>,
}

/// Whether `unit` is one of the agent's units: `journald-kafka.service` or an instance of
/// `journald-kafka@.service`.
fn is_agent_unit(unit: &[u8]) -> bool {
    unit == b"journald-kafka.service"
        || (unit.starts_with(b"journald-kafka@") && unit.ends_with(b".service"))
}

/// This boot's id as journald writes it (32 hex digits, no dashes).
fn boot_id() -> Option<Vec<u8>> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id: Vec<u8> = id.trim().bytes().filter(|&b| b != b'-').collect();
    (id.len() == 32).then_some(id)
}

/// The effective uid of this process, from the kernel's own account of it
/// (`/proc/self/status`; the owner of `/proc/self` is root for a non-dumpable process).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// The uid of the packaged agent's user, `journald-kafka`, if it exists.
fn agent_user_uid() -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == "journald-kafka").then(|| f.nth(1)?.parse().ok())?
    })
}

/// Whether this process sees the host's PIDs (the initial PID namespace): in a container,
/// `std::process::id()` is not the `_PID` journald records, and PID 1 there would match
/// the host's systemd.
fn in_initial_pid_namespace() -> bool {
    std::fs::read_link("/proc/self/ns/pid").is_ok_and(|l| l.as_os_str() == "pid:[4026531836]")
}

impl OwnEntries {
    /// The rule for `source`, for the running agent (`pid`) or for a checker (`None`: only
    /// the agent's units are recognised, for the checker's uid or the packaged agent
    /// user's, since `verify` may run as root while the agent runs as `journald-kafka`).
    pub(crate) fn new(source: &Source, pid: Option<u32>) -> OwnEntries {
        let machine = match source {
            Source::Local | Source::Namespace(_) => None,
            // Unknown machine id: no entry can be proven ours, so none is skipped.
            Source::Directory(_) | Source::Files(_) => Some(
                super::host::machine_id()
                    .map(String::into_bytes)
                    .unwrap_or_default(),
            ),
        };
        // Without a boot id, or outside the host's PID namespace, no line of this process
        // can be proven ours by its PID: only the unit rule remains.
        let this_run = pid
            .filter(|_| in_initial_pid_namespace())
            .zip(boot_id())
            .map(|(p, b)| (p.to_string(), b));
        let mut uids: Vec<String> = effective_uid().map(|u| u.to_string()).into_iter().collect();
        if pid.is_none() {
            uids.extend(agent_user_uid().map(|u| u.to_string()));
        }
        OwnEntries {
            this_run,
            uids,
            machine,
        }
    }

    /// The same rule for an agent that runs as `uid` on boot `boot` (tests).
    #[cfg(test)]
    fn with_uid(mut self, uid: u32, pid: Option<u32>, boot: &[u8]) -> OwnEntries {
        self.uids = vec![uid.to_string()];
        self.this_run = pid.map(|p| (p.to_string(), boot.to_vec()));
        self
    }

    /// Whether `entry` was logged by journald-kafka on this machine (this process or an
    /// earlier run), judged by trusted fields only.
    pub(crate) fn matches(&self, entry: &Entry) -> bool {
        if let Some(m) = &self.machine {
            if m.is_empty() || entry.get(b"_MACHINE_ID") != Some(m.as_slice()) {
                return false;
            }
        }
        let Some(uid) = entry.get(b"_UID") else {
            return false;
        };
        if !self.uids.iter().any(|u| u.as_bytes() == uid) {
            return false;
        }
        if entry.get(b"_SYSTEMD_UNIT").is_some_and(is_agent_unit) {
            return true;
        }
        self.this_run.as_ref().is_some_and(|(pid, boot)| {
            entry.get(b"_PID") == Some(pid.as_bytes())
                && entry.get(b"_BOOT_ID") == Some(boot.as_slice())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "1e2feb89414c343c1027c4d1c386bbc4";
    const OTHER_BOOT: &str = "22222222222222222222222222222222";

    fn entry(fields: &[(&str, &str)]) -> Entry {
        let mut e = Entry::new();
        for (k, v) in fields {
            e.push_field(k.as_bytes(), v.as_bytes());
        }
        e
    }

    fn local(pid: Option<u32>) -> OwnEntries {
        OwnEntries::new(&Source::Local, pid).with_uid(990, pid, BOOT.as_bytes())
    }

    /// The reproduction: what a user can choose (identifier, command name) makes
    /// nothing the agent's own.
    #[test]
    fn a_name_a_user_can_choose_hides_nothing() {
        let own = local(Some(77));
        for fields in [
            &[("SYSLOG_IDENTIFIER", "journald-kafka"), ("_UID", "1000")][..],
            &[("SYSLOG_IDENTIFIER", "journald-kafka")][..],
            &[
                ("SYSLOG_IDENTIFIER", "journald-kafka"),
                ("_COMM", "journald-kafka"),
                ("_UID", "1001"),
                ("_SYSTEMD_UNIT", "cron.service"),
            ][..],
            // A user's own unit of that name is a user unit, under user@.service.
            &[
                ("_UID", "1000"),
                ("_SYSTEMD_UNIT", "user@1000.service"),
                ("_SYSTEMD_USER_UNIT", "journald-kafka.service"),
            ][..],
            // The agent's unit name, but another uid (not something journald would write
            // for the agent's unit unless an administrator changed User=).
            &[
                ("_UID", "1000"),
                ("_SYSTEMD_UNIT", "journald-kafka.service"),
            ][..],
            // This process's PID, but on another boot (the backlog of an earlier boot).
            &[("_UID", "990"), ("_PID", "77"), ("_BOOT_ID", OTHER_BOOT)][..],
            // This process's PID and boot, another uid: impossible from journald, refused.
            &[("_UID", "0"), ("_PID", "77"), ("_BOOT_ID", BOOT)][..],
        ] {
            assert!(!own.matches(&entry(fields)), "{fields:?} is shipped");
        }
    }

    #[test]
    fn the_agents_own_lines_by_unit_uid_pid_and_boot() {
        let own = local(Some(77));
        for fields in [
            &[("_UID", "990"), ("_SYSTEMD_UNIT", "journald-kafka.service")][..],
            &[
                ("_UID", "990"),
                ("_SYSTEMD_UNIT", "journald-kafka@edge.service"),
            ][..],
            &[("_UID", "990"), ("_PID", "77"), ("_BOOT_ID", BOOT)][..],
        ] {
            assert!(own.matches(&entry(fields)), "{fields:?} is skipped");
        }
        // A checker knows no PID: only the unit rule.
        let checker = local(None);
        assert!(!checker.matches(&entry(&[
            ("_UID", "990"),
            ("_PID", "77"),
            ("_BOOT_ID", BOOT)
        ])));
        assert!(checker.matches(&entry(&[
            ("_UID", "990"),
            ("_SYSTEMD_UNIT", "journald-kafka.service")
        ])));
        assert!(!is_agent_unit(b"journald-kafka.service.d"));
        assert!(!is_agent_unit(b"journald-kafka-evil.service"));
    }

    #[test]
    fn a_central_directory_skips_only_this_machines_agent() {
        let Ok(ours) = std::fs::read_to_string("/etc/machine-id") else {
            return;
        };
        let dir = OwnEntries::new(&Source::Directory("/var/log/journal/remote".into()), None)
            .with_uid(990, None, BOOT.as_bytes());
        let other = entry(&[
            ("_SYSTEMD_UNIT", "journald-kafka.service"),
            ("_UID", "990"),
            ("_MACHINE_ID", "0123456789abcdef0123456789abcdef"),
        ]);
        assert!(
            !dir.matches(&other),
            "another host's agent logs are shipped"
        );
        assert!(!dir.matches(&entry(&[
            ("_SYSTEMD_UNIT", "journald-kafka.service"),
            ("_UID", "990")
        ])));
        let mine = entry(&[
            ("_SYSTEMD_UNIT", "journald-kafka.service"),
            ("_UID", "990"),
            ("_MACHINE_ID", ours.trim()),
        ]);
        assert!(dir.matches(&mine));
    }
}
