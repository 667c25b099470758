//! A journal entry's record on the wire: its headers (the cursor consumers de-duplicate
//! by), and the shipping thread's wait for room in librdkafka's queue. The bytes come from
//! `format`; the wire itself is the `sink`'s.

use std::thread;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::Producer;
use super::sink::{Outgoing, Sent};
use crate::checkpoint::Tracker;
use crate::format::{CURSOR_HEADER, FORMAT_HEADER, FORMAT_VERSION};

/// The headers every entry's record carries: its cursor (consumers de-duplicate by it) and
/// the layout version. They copy the cursor, so they are built before the watermark takes it.
pub(crate) fn headers(cursor: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: CURSOR_HEADER,
            value: Some(cursor.as_bytes()),
        })
        .insert(Header {
            key: FORMAT_HEADER,
            value: Some(FORMAT_VERSION.as_bytes()),
        })
}

/// [`headers`] and the configured extra ones (name, value).
pub(crate) fn headers_with<N: AsRef<str>, V: AsRef<[u8]>>(
    cursor: &str,
    extra: &[(N, V)],
) -> OwnedHeaders {
    let mut h = headers(cursor);
    for (k, v) in extra {
        h = h.insert(Header {
            key: k.as_ref(),
            value: Some(v.as_ref()),
        });
    }
    h
}

/// Hands the record admitted as `seq` to librdkafka, waiting (on this thread) while its
/// queue is full. Returns false when the session must end; the record is then failed in
/// the watermark, so nothing after it becomes safe.
pub(crate) fn send(producer: &Producer, tracker: &Tracker, seq: u64, mut r: Outgoing<'_>) -> bool {
    let topic = r.topic;
    loop {
        match producer.try_send(r, seq as usize) {
            Sent::Queued => return true,
            Sent::Full(back, _) => {
                // librdkafka's queue is sized above our window, so this is rare; wait for
                // deliveries to make room rather than dropping anything.
                if tracker.status().is_err() {
                    tracker.failed(seq, "not sent: the session is ending".into());
                    return false;
                }
                r = back;
                thread::sleep(Duration::from_millis(5));
            }
            Sent::Refused(e, _) => {
                tracker.failed(seq, format!("cannot produce to topic {topic:?}: {e}"));
                return false;
            }
        }
    }
}

/// Produces a progress record (`pipeline::progress`): marked by its header, keyed by the
/// machine, outside the watermark (its delivery report is only logged). False when
/// librdkafka cannot take it now.
pub(crate) fn send_progress(producer: &Producer, topic: &str, key: &[u8], payload: &[u8]) -> bool {
    let headers = OwnedHeaders::new().insert(Header {
        key: crate::format::PROGRESS_HEADER,
        value: Some(b"1".as_slice()),
    });
    let record = BaseRecord::with_opaque_to(topic, super::producer::PROGRESS)
        .payload(payload)
        .key(key)
        .headers(headers);
    producer.send(record).is_ok()
}
