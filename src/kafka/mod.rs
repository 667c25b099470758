//! The Kafka stage: everything that speaks to the brokers.
//!
//! Owns handing librdkafka its configuration for every command (`client`; which properties
//! is `config::properties`'s rule, the secrets are added here only), the output seam every
//! input hands its records to (`sink`: one producer type, delivery reports classified once
//! and handed back to the input that owns the record), the refusal policy for every input
//! (`refusal`), the brokers' probe (`probe`), the exactly-once store that commits the
//! cursor inside a Kafka transaction (`transaction`), and the AWS MSK IAM token and
//! credentials for SASL/OAUTHBEARER (`msk_iam`). Each input owns its side of the seam
//! (`pipeline::delivery`, `forward::ack`). Delivery reports are the only way this module tells an input what was
//! delivered.
//!
//! It must never report a record as delivered unless the broker acknowledged it (acks=all,
//! idempotent), never let a user property weaken that (the guarantee's settings are set
//! last, over the user's), and never commit a cursor that is not a `SafeCursor`.

mod cause;
mod client;
pub(crate) mod msk_iam;
mod probe;
pub(crate) mod refusal;
pub(crate) mod sink;
pub(crate) mod transaction;

pub(crate) use cause::{Cause, classify, speaks_tls};
pub(crate) use client::{AuthContext, connection, connection_config, give_token, producer_config};
pub(crate) use probe::{probe, probe_brokers};
pub(crate) use refusal::{Action, Policy, Refusal, Refusals};
pub(crate) use sink::{Outgoing, dead_letter_headers, owned_headers, within_tolerance};
pub(crate) use transaction::TransactionStore;
