//! journald-kafka: ships every systemd journal entry to Apache Kafka and saves the journal
//! cursor only after the broker has confirmed the entry and every entry before it.
//!
//! Data flows one way: [`journal`] → [`encode`] → [`kafka`] → [`checkpoint`], wired by
//! [`pipeline`]. See `docs/design.md` for the reasoning behind the shape.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod encode;
pub mod journal;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod readback;
pub mod verify;
