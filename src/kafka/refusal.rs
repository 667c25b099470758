//! Records the brokers refuse for good, one by one: which refusals are the record's fault
//! (too large, or its topic refused), and the hand-over of such a record from the delivery
//! thread to the shipping thread, which applies the configured policy
//! (`pipeline::repair`). A refusal that concerns every record (credentials, the fixed
//! topic's ACL) is not the record's fault: it fails the session, which keeps the cursor
//! and retries with backoff.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::types::RDKafkaErrorCode;

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Larger than the topic or the broker accepts (`max.message.bytes`).
    TooLarge,
    /// Its topic cannot take it: invalid name, not authorized, does not exist, policy.
    Topic,
}

/// The class of a delivery error that is the record's own fault, if it is one.
pub(crate) fn classify(code: RDKafkaErrorCode) -> Option<Class> {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            Some(Class::TooLarge)
        }
        C::InvalidTopic
        | C::TopicAuthorizationFailed
        | C::UnknownTopic
        | C::PolicyViolation
        | C::InvalidRecord
        | C::InvalidTimestamp => Some(Class::Topic),
        _ => None,
    }
}

/// A refused record, as the delivery report returned it.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) seq: u64,
    pub(crate) class: Class,
    /// The librdkafka error code's name, for the failure counter.
    pub(crate) kind: String,
    pub(crate) error: String,
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    pub(crate) cursor: String,
    pub(crate) timestamp_ms: i64,
    /// The configured headers the record carried (beyond cursor and format), kept when it
    /// is sent again.
    pub(crate) extra_headers: Vec<(String, Vec<u8>)>,
}

/// Refused records waiting for the shipping thread. Written by librdkafka's delivery
/// thread, drained by the shipping thread; every record here is still in flight in the
/// watermark, so nothing after it can become safe until the policy settles it.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    queue: Mutex<VecDeque<Refusal>>,
    /// The queue's length, read without the lock on the shipping thread's hot path.
    pending: AtomicUsize,
}

impl Refusals {
    pub(crate) fn push(&self, r: Refusal) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(r);
        self.pending.store(q.len(), Ordering::Release);
    }

    pub(crate) fn pop(&self) -> Option<Refusal> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let r = q.pop_front();
        self.pending.store(q.len(), Ordering::Release);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_records_own_faults_are_classified() {
        assert_eq!(
            classify(RDKafkaErrorCode::MessageSizeTooLarge),
            Some(Class::TooLarge)
        );
        assert_eq!(
            classify(RDKafkaErrorCode::TopicAuthorizationFailed),
            Some(Class::Topic)
        );
        assert_eq!(classify(RDKafkaErrorCode::InvalidTopic), Some(Class::Topic));
        // Transient, or about every record: the session handles them.
        assert_eq!(classify(RDKafkaErrorCode::UnknownTopicOrPartition), None);
        assert_eq!(classify(RDKafkaErrorCode::MessageTimedOut), None);
        assert_eq!(classify(RDKafkaErrorCode::SaslAuthenticationFailed), None);
    }
}
