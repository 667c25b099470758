//! The Fluentd Forward input: a Forward protocol v1 server that sends every event to Kafka
//! and acknowledges a chunk to its sender only once Kafka confirmed all of its events.
//!
//! It is an input beside the journal, not behind the journal's seam (`pipeline::input`):
//! the journal has positions to resume from, a Forward client has none — its resend
//! protocol is the position. So the watermark and the cursor stores have nothing to do
//! here; the ack is the commit. What it shares with the journal path: the output seam
//! (`kafka::sink`: producer, delivery reports, connection failures, the refusal policy),
//! the lifecycle (`lifecycle::Input`, implemented by `server::Server`), the metrics.
//!
//! Stages, one way: `input` (the lifecycle: listeners bound, the runtime started, reload,
//! stop) starts `server` (sockets, connections, handshake via `handshake`) → `protocol`
//! (frames into events, over `msgpack`) → `record` (events into Kafka records) → `send`
//! (records to the sink; refused ones again, as the policy says) → the sink, whose
//! delivery reports reach `ack::ForwardOwner` and write the acks back through the
//! connection's writer (or send a refused event again, as the policy says).
//!
//! It must never acknowledge a chunk before every one of its events was confirmed by the
//! broker (acks=all, idempotent), never read more from a connection while the in-flight
//! window is full, and never let one connection's bad input affect another.

mod ack;
mod check;
mod handshake;
mod input;
pub(crate) mod msgpack;
pub(crate) mod protocol;
mod record;
mod send;
mod server;

pub(crate) use check::check;
pub(crate) use input::start;
