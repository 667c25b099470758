//! journald-kafka: ships every systemd journal entry to Apache Kafka and saves the journal
//! cursor only after the broker has confirmed the entry and every entry before it.
//!
//! Data flows one way, one module per stage:
//!
//! ```text
//! journal ──▶ pipeline (reader thread ─queue─▶ shipping thread) ──▶ format ──▶ kafka::sink
//! forward (connections ─▶ events ─▶ records) ─────────────────────────────────▶ kafka::sink
//!                                     delivery reports, back to the input that owns the record:
//!                          checkpoint (watermark, stores) for the journal; chunk acks for forward
//! ```
//!
//! Both inputs join one lifecycle (`lifecycle::Input`) that `cli/run.rs` drives. The
//! import direction between modules is written down, with the reasons, in
//! `docs/design.md` (module map).
//!
//! Only what the benchmarks use is public; everything else is `pub(crate)`, and
//! `unreachable_pub` keeps it so: an item marked `pub` that nothing outside the crate can
//! reach does not compile.

#![deny(unreachable_pub)]

mod audit;
pub mod checkpoint;
mod cli;
pub mod config;
mod error;
pub mod format;
mod forward;
pub mod journal;
mod kafka;
mod lifecycle;
mod logging;
mod metrics;
mod msgpack;
mod notify;
mod pipeline;
mod readback;
mod verify;

pub use cli::main;

/// For the benchmark examples only (`examples/produce_floor.rs`), so that they produce
/// exactly what the agent does.
#[doc(hidden)]
pub mod bench {
    /// The journal producer's librdkafka properties for `cfg`, without its secrets.
    pub fn journal_producer_properties(cfg: &crate::config::Config) -> Vec<(String, String)> {
        use crate::config::properties::{Producer, producer};
        producer(&cfg.kafka, &cfg.pipeline, Producer::Journal)
    }

    /// The headers of a journal entry's record (cursor, format), as the agent sends them.
    pub fn record_headers(cursor: &str) -> rdkafka::message::OwnedHeaders {
        crate::pipeline::record_headers(cursor)
    }
}
