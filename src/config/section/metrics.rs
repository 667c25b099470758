//! `[metrics]`: the HTTP endpoint's address and the thresholds of `/health/ready`.
//!
//! Owns the settings only; it must never bind the address (`metrics::server` does, at
//! start).

use anyhow::Result;

use crate::config::check::Locator;
use crate::config::raw::RawMetrics;

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint (/metrics, /health/*); `None` keeps it off.
    pub listen: Option<String>,
    /// Not ready once the cursor has not moved for this long while entries are in flight.
    pub stall_seconds: u64,
    /// Not ready when entries are in flight and the journal's writer is forecast to delete
    /// unshipped entries within this many seconds (0: never for this reason).
    pub min_loss_forecast_seconds: u64,
}

pub(super) fn metrics(raw: RawMetrics, at: &Locator) -> Result<MetricsConfig> {
    let listen = raw
        .listen
        .map(|l| {
            at.with("metrics.listen", l, |l| {
                match l.parse::<std::net::SocketAddr>() {
                    Ok(_) => Ok(l),
                    Err(_) => Err(format!(
                        "{l:?} is not an address such as \"127.0.0.1:9464\""
                    )),
                }
            })
        })
        .transpose()?;
    Ok(MetricsConfig {
        listen,
        stall_seconds: at.range("metrics.stall_seconds", raw.stall_seconds, 60, 1, 86_400)?,
        min_loss_forecast_seconds: at.range(
            "metrics.min_loss_forecast_seconds",
            raw.min_loss_forecast_seconds,
            900,
            0,
            365 * 86_400,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::test_support::{MIN, err};

    #[test]
    fn listen_address_and_defaults() {
        let e = err(&format!("{MIN}[metrics]\nlisten = \"everywhere\"\n"));
        assert!(e.contains("metrics.listen (line 5)"), "{e}");
        let c = parse(&format!("{MIN}[metrics]\nlisten = \"127.0.0.1:9464\"\n")).unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(c.metrics.stall_seconds, 60);
    }
}
