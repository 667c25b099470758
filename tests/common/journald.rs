//! A real systemd-journald for one namespace, so tests never disturb the machine's own
//! journal: started, written to, rotated, and stopped by PID and removed on drop.

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Fields, parse_export};

/// A journald instance for one namespace, stopped (by PID) and removed on drop.
pub struct Journald {
    pub ns: String,
    child: Child,
    /// journald exits after ~30 s without clients; an open stream keeps it alive.
    _keepalive: Option<UnixStream>,
}

impl Journald {
    pub fn start(ns: &str, log: &Path) -> Journald {
        std::fs::create_dir_all("/run/systemd/journal").unwrap();
        let child = Command::new("/lib/systemd/systemd-journald")
            .arg(ns)
            .env("SYSTEMD_LOG_TARGET", "console")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start systemd-journald");
        let sock = PathBuf::from(format!("/run/systemd/journal.{ns}/stdout"));
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "journald did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let keepalive = UnixStream::connect(&sock).ok();
        Journald {
            ns: ns.to_string(),
            child,
            _keepalive: keepalive,
        }
    }

    pub fn send(&self, sock: &UnixDatagram, fields: &str) {
        sock.send_to(
            fields.as_bytes(),
            format!("/run/systemd/journal.{}/socket", self.ns),
        )
        .unwrap();
    }

    pub fn rotate(&self) {
        let st = Command::new("journalctl")
            .args(["--namespace", &self.ns, "--rotate"])
            .status()
            .unwrap();
        assert!(st.success(), "journalctl --rotate");
    }

    /// The directory journald writes this namespace's files to.
    pub fn directory(&self) -> PathBuf {
        let mid = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
        ["/var/log/journal", "/run/log/journal"]
            .iter()
            .map(|b| PathBuf::from(format!("{b}/{}.{}", mid.trim(), self.ns)))
            .find(|d| d.is_dir())
            .expect("the namespace's journal directory")
    }

    /// journald writes asynchronously: waits (up to 20 s) until at least `n` of its entries
    /// are `mine`, and returns them all with how many are.
    pub fn wait_for(&self, n: usize, mine: impl Fn(&Fields) -> bool) -> (Vec<Fields>, usize) {
        let start = Instant::now();
        loop {
            let e = self.entries();
            let count = e.iter().filter(|f| mine(f)).count();
            if count >= n {
                return (e, count);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "journald holds {count} of {n}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn entries(&self) -> Vec<Fields> {
        let out = Command::new("journalctl")
            .args(["--namespace", &self.ns, "-o", "export", "--no-pager"])
            .output()
            .unwrap();
        parse_export(&out.stdout)
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mid = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
        for base in ["/var/log/journal", "/run/log/journal"] {
            let _ = std::fs::remove_dir_all(format!("{base}/{}.{}", mid.trim(), self.ns));
        }
        let _ = std::fs::remove_dir_all(format!("/run/systemd/journal.{}", self.ns));
    }
}
