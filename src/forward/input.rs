//! The Forward input in the process's lifecycle (`lifecycle::Input`): binding its
//! listeners, starting its runtime thread, readiness, signs of life, reload and stop.
//!
//! It must never apply a reload halfway: what needs a restart is refused whole
//! (`restart_needed`), and the rest is swapped at once for every connection's next message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::sync::{Semaphore, watch};

use super::ack::{self, Window};
use super::send::retire;
use super::server::{HEARTBEAT, Shared, fwd, large_slots, serve, tls_acceptor};
use crate::config::Config;
use crate::logging::RateLimit;
use crate::metrics::Metrics;

/// The running Forward input.
pub(crate) struct Server {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
    /// Where it listens, for logs and `status`.
    pub(crate) listening: Vec<String>,
}

/// Binds the listeners (an address in use is an error now, not later) and starts serving.
pub(crate) fn start(
    cfg: &Config,
    metrics: Arc<Metrics>,
    shutdown_timeout: Duration,
) -> Result<Server> {
    let fwd = fwd(cfg);
    let mut listening = Vec::new();
    let tcp = match &fwd.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("forward.listen: cannot listen on {addr}"))?;
            l.set_nonblocking(true)?;
            listening.push(format!(
                "{}://{}",
                if fwd.tls.is_some() { "tls" } else { "tcp" },
                l.local_addr()?
            ));
            Some(l)
        }
        None => None,
    };
    let unix = match &fwd.socket {
        Some(path) => {
            // A socket left by an earlier run: nobody listens on it any more.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                && std::os::unix::net::UnixStream::connect(path).is_err()
            {
                let _ = std::fs::remove_file(path);
            }
            let l = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("forward.socket: cannot listen on {}", path.display()))?;
            l.set_nonblocking(true)?;
            // The unit's UMask=0077 would leave it to the agent's user alone: applications
            // in the agent's group may send.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
                .with_context(|| {
                    format!("forward.socket: cannot set the mode of {}", path.display())
                })?;
            listening.push(format!("unix:{}", path.display()));
            Some(l)
        }
        None => None,
    };
    let tls = match &fwd.tls {
        Some((cert, key)) => Some(Arc::new(tls_acceptor(cert, key)?)),
        None => None,
    };
    let window = Arc::new(Window::new(fwd.max_in_flight_bytes));
    let repairs = Arc::new(ack::Repairs::new(cfg));
    let producer = ack::producer(
        cfg,
        window.clone(),
        metrics.clone(),
        repairs.clone(),
        ack::Stage::Connections,
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        window,
        repairs,
        metrics,
        producer: std::sync::Mutex::new(Arc::new(producer)),
        config: std::sync::Mutex::new(Arc::new(cfg.clone())),
        auth_generation: AtomicU64::new(0),
        stop: stop_rx,
        large: Arc::new(Semaphore::new(large_slots(fwd.max_message_bytes))),
        refusals: RateLimit::default(),
        report: crate::lifecycle::Report::default(),
        remade: std::sync::Mutex::new(None),
        reserved: std::sync::Mutex::new(Arc::new(cfg.delivery.reserved_topics())),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the Forward input's runtime")?;
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("forward".into())
            .spawn(move || rt.block_on(serve(shared, tcp, unix, tls, shutdown_timeout)))
            .context("cannot start the Forward input's thread")?
    };
    Ok(Server {
        stop: stop_tx,
        thread: Some(thread),
        shared,
        shutdown_timeout,
        listening,
    })
}

impl crate::lifecycle::Input for Server {
    fn name(&self) -> &'static str {
        "forward"
    }

    /// Ready once it listens: the listeners are bound before the input is handed over.
    fn started(&self) -> Option<String> {
        Some(format!(
            "forward input listening on {}",
            self.listening.join(", ")
        ))
    }

    fn unhealthy(&self) -> Option<String> {
        (!self.running()).then(|| "the forward input's thread ended".to_string())
    }

    /// Its runtime's heartbeat: a wedged task would hold every connection.
    fn alive(&self, within: Duration) -> bool {
        self.running() && self.shared.report.beat_within(within.max(2 * HEARTBEAT))
    }

    fn status(&self) -> String {
        let m = &self.shared.metrics;
        format!(
            "forward: {} connections, {} chunks acknowledged",
            m.forward_connections_open.load(Ordering::Relaxed),
            Metrics::get(&m.forward_acks)
        )
    }

    fn ended(&mut self) -> Option<crate::error::Failure> {
        (!self.running()).then(|| {
            crate::error::Failure::fatal(anyhow!("the forward input stopped unexpectedly"))
        })
    }

    /// Settings of `[forward]` the listeners and the memory bounds were made from at
    /// start. Everything else (`[kafka]`, `[delivery]`'s refusal policy, the topic, key,
    /// tag and time settings, the shared key and users) applies at a reload.
    fn restart_needed(&self, old: &Config, new: &Config) -> Vec<&'static str> {
        let (Some(a), Some(b)) = (old.forward.as_ref(), new.forward.as_ref()) else {
            return vec!["forward (on or off)"];
        };
        crate::lifecycle::changed([
            ("forward.listen", a.listen != b.listen),
            ("forward.socket", a.socket != b.socket),
            ("forward.tls_cert, forward.tls_key", a.tls != b.tls),
            (
                "forward.max_connections",
                a.max_connections != b.max_connections,
            ),
            (
                "forward.max_in_flight_bytes",
                a.max_in_flight_bytes != b.max_in_flight_bytes,
            ),
            (
                "forward.max_message_bytes",
                a.max_message_bytes != b.max_message_bytes,
            ),
        ])
    }

    /// A new producer from the new `[kafka]` (the old one confirms what it holds and goes;
    /// chunks it cannot confirm in time stay unacknowledged and their clients resend
    /// them), the new policy and `[forward]` settings from every connection's next
    /// message, and a new handshake for connections whose key or users changed.
    fn reload(&mut self, new: &Config) -> Result<()> {
        let producer = Arc::new(self.shared.make_producer(new, ack::Stage::Connections)?);
        let old_cfg = self.shared.config();
        let (a, b) = (fwd(&old_cfg), fwd(new));
        *self
            .shared
            .repairs
            .policy
            .write()
            .unwrap_or_else(|p| p.into_inner()) = ack::Repairs::policy(new);
        *self
            .shared
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(new.delivery.reserved_topics());
        *self.shared.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new.clone());
        // After the configuration is stored (connections read the generation first).
        if a.shared_key != b.shared_key || a.users != b.users || a.self_hostname != b.self_hostname
        {
            self.shared.auth_generation.fetch_add(1, Ordering::AcqRel);
        }
        let old = std::mem::replace(
            &mut *self
                .shared
                .producer
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            producer,
        );
        retire(old, self.shutdown_timeout);
        Ok(())
    }

    /// Stops accepting and reading, waits (up to the shutdown timeout) for what is in
    /// flight to be confirmed and acknowledged, then closes every connection.
    fn stop(mut self: Box<Self>) -> Result<(), crate::error::Failure> {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

impl Server {
    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}
