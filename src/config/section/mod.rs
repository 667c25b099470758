//! The derived layer: each raw section turned into its typed, validated form, one file per
//! section holding that section's types, defaults, derivation and tests.
//!
//! Every key goes through a helper of `check`, so that each error names the key and its
//! line the same way. A section never reads another section's raw keys: what one needs of
//! another (the Forward input's topic defaults from `kafka.topic`) it takes in derived
//! form, handed over by `derive`. Rules that join several sections (an input must be on,
//! the record limit must fit the producer's) belong to `config::parse`, not here.
//!
//! This file holds only what several sections share: the order they are derived in, the
//! one template syntax and the ceiling for time limits.

pub(super) mod delivery;
pub(super) mod encoding;
pub(super) mod forward;
pub(super) mod journal;
pub(super) mod kafka;
pub(super) mod log;
pub(super) mod metrics;
pub(super) mod pipeline;
pub(super) mod state;

use anyhow::{Result, bail};

use super::Config;
use super::check::Locator;
use super::raw::RawConfig;

/// Time limits above this would overflow `Instant` arithmetic on some platforms and mean
/// "never" anyway: one day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Every section of the file in derived form. The order is the order errors are found in:
/// a file with several mistakes is refused for the same one every time.
pub(super) fn derive(raw: RawConfig, at: &Locator) -> Result<Config> {
    let Some(raw_kafka) = raw.kafka else {
        bail!("missing section [kafka]: at least kafka.brokers and kafka.topic are required");
    };
    let kafka_span = raw_kafka.span();

    let cfg = Config {
        journal: journal::journal(raw.journal, at)?,
        encoding: encoding::encoding(raw.encoding, at)?,
        kafka: kafka::kafka(raw_kafka.into_inner(), kafka_span, at)?,
        state: state::state(raw.state, at)?,
        pipeline: pipeline::pipeline(raw.pipeline, at)?,
        log: log::log(raw.log, at)?,
        metrics: metrics::metrics(raw.metrics, at)?,
        delivery: delivery::delivery(raw.delivery, at)?,
        forward: None,
    };
    // The Forward input derives last: its defaults come from the derived kafka and
    // journal sections.
    let forward = match raw.forward {
        Some(f) => {
            let span = f.span();
            Some(forward::forward(
                f.into_inner(),
                span,
                &cfg.kafka,
                cfg.journal.enabled,
                at,
            )?)
        }
        None => None,
    };
    Ok(Config { forward, ..cfg })
}

/// The one template syntax (journal topic and header templates, the Forward topic):
/// literal text and `{name}` parts. `name` turns a name into a part (or says why not),
/// `literal` a piece of text; `what` names the template in errors.
fn template<P>(
    s: &str,
    what: &str,
    name: impl Fn(&str) -> std::result::Result<P, String>,
    literal: impl Fn(String) -> P,
) -> std::result::Result<Vec<P>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(literal(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unclosed '{{' in {what} template {s:?}"));
        };
        parts.push(name(&rest[open + 1..open + close])?);
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(literal(rest.to_string()));
    }
    Ok(parts)
}
