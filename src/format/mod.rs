//! The record contract: what one Kafka record holds, for the agent that writes it and for
//! every tool that reads it back (`docs/format.md` is the reader's copy of this contract).
//!
//! Owns the layout version, the header names, the truncation marker, encoding
//! ([`Encoder`]: one entry in, one record's value, key and topic out; MessagePack, JSON or
//! OTLP), decoding ([`decode`], every format) and the OTLP schema (`otlp`). MessagePack's
//! forms are written by `crate::msgpack`, which the journal's entries and the Forward input
//! share. Encoding is a pure function of the entry and the configuration: no I/O, no
//! clock, no global state. This module must never drop a field silently: the only lossy
//! step is the documented truncation of oversized entries, marked inside the record itself.
//! It knows nothing of Kafka clients; `kafka` puts these bytes on the wire.

mod decode;
mod encode;
mod otlp;

pub(crate) use decode::{Value, decode, to_entry};
pub use encode::{Encoder, Outcome};

/// Version of the record layout, carried in the [`FORMAT_HEADER`] header.
pub(crate) const FORMAT_VERSION: &str = "1";

/// Header carrying the entry's journal cursor on every record: consumers de-duplicate by it.
pub(crate) const CURSOR_HEADER: &str = "journal-cursor";

/// Header marking a progress record (not a journal entry): consumers skip records that
/// carry it; `audit` reads them.
pub(crate) const PROGRESS_HEADER: &str = "journal-progress";

/// Header naming the input of a record that is not a journal entry (`forward`): such a
/// record is never counted or shown as a journal entry, whatever fields its sender wrote.
pub(crate) const SOURCE_HEADER: &str = "journald-kafka-source";

/// Header carrying the record layout version.
pub(crate) const FORMAT_HEADER: &str = "journal-format";

/// Dead-lettered records: the broker's error, and the topic the record was meant for.
pub(crate) const DEAD_LETTER_ERROR_HEADER: &str = "journald-kafka-error";
pub(crate) const DEAD_LETTER_TOPIC_HEADER: &str = "journald-kafka-topic";

/// Name of the field added to an entry whose later fields libsystemd could not read
/// (corrupt journal file): why, and how many were read.
pub(crate) const DAMAGED_FIELD: &str = "JOURNALD_KAFKA_DAMAGED";

/// Name of the field added to an entry whose fields had to be shortened to fit.
pub(crate) const TRUNCATED_FIELD: &str = "JOURNALD_KAFKA_TRUNCATED";
