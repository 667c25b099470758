//! journald-kafka: ships every systemd journal entry to Apache Kafka and saves the journal
//! cursor only after the broker has confirmed the entry and every entry before it.
//!
//! Data flows one way, one module per stage:
//!
//! ```text
//! journal ──▶ pipeline (reader thread ─queue─▶ shipping thread) ──▶ format ──▶ kafka
//!                                                                       │ delivery reports
//!                                         checkpoint (watermark, stores) ◀┘
//! ```
//!
//! Module dependencies point one way too (no cycles): `config`, `error`, `logging`,
//! `malloc`, `metrics` and `notify` depend on no stage; `journal` on `config`; `format` on
//! `journal`; `checkpoint` on `journal` and `logging`; `kafka` on `checkpoint` and
//! `format`; `pipeline` on all of them; `forward` (the Forward-protocol input, beside the
//! journal pipeline) on `config`, `kafka`, `logging` and `metrics`; `cli`, `readback` and
//! `verify` sit on top. See `docs/design.md` for the reasoning behind the shape.
//!
//! Only what the benchmarks use is public; everything else is `pub(crate)`.

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
mod malloc;
mod metrics;
mod notify;
mod pipeline;
mod readback;
mod verify;

pub use cli::main;
