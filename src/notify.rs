//! The systemd service protocol (`sd_notify`): READY, STATUS, WATCHDOG, STOPPING.
//!
//! Owns the datagram socket named by `$NOTIFY_SOCKET`. It must never block the pipeline or
//! fail it: a lost notification is logged at debug level and otherwise ignored, and when the
//! agent is not run by systemd every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, or nothing when not under systemd.
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`).
    pub(crate) fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.into_string().ok()?;
            let addr = match path.strip_prefix('@') {
                // Abstract socket names start with '@' in the variable.
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// A notifier that sends to the datagram socket at `path` (tests stand in for systemd).
    #[cfg(test)]
    pub(crate) fn to(path: &std::path::Path, watchdog: Option<Duration>) -> Notifier {
        let addr = std::os::unix::net::SocketAddr::from_pathname(path).expect("a socket path");
        Notifier {
            target: Some((UnixDatagram::unbound().expect("a socket"), addr)),
            watchdog,
        }
    }

    /// The watchdog interval systemd expects pings within, if any.
    pub(crate) fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub(crate) fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    /// A reload began; READY=1 follows when the new session is up.
    pub(crate) fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading: confirming what is in flight, then starting with the new configuration");
    }

    pub(crate) fn stopping(&self) {
        self.send(
            "STOPPING=1\nSTATUS=stopping: confirming what is in flight, then saving the cursor",
        );
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}
