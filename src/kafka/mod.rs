//! The Kafka stage: everything that speaks to the brokers.
//!
//! Owns the client configuration used by every command (`client`), the one producer of a
//! session and its delivery reports (`producer`), putting records on the wire (`record`),
//! and the exactly-once store that commits the cursor inside a Kafka transaction
//! (`transaction`). Delivery reports feed the checkpoint's watermark; that is the only way
//! this module tells the rest of the agent what was delivered.
//!
//! It must never report a record as delivered unless the broker acknowledged it (acks=all,
//! idempotent), never let a user property weaken that (the guarantee's settings are set
//! last, over the user's), and never commit a cursor that is not a `SafeCursor`.

mod cause;
mod client;
mod producer;
mod record;
pub(crate) mod refusal;
pub(crate) mod transaction;

pub(crate) use cause::{Cause, classify, speaks_tls};
pub(crate) use client::{STATS_INTERVAL_MS, client_config, connection, connection_config};
pub(crate) use producer::{
    CONTROL, Poller, Producer, Transactional, log_line, probe, producer, repair_producer,
};
pub(crate) use record::{
    Outgoing, dead_letter_headers, headers, headers_with, send, send_progress,
};
pub(crate) use refusal::{Class, Refusal, Refusals};
pub(crate) use transaction::TransactionStore;
