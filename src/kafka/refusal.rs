//! Records the brokers refuse for good, one by one: which refusals are the record's fault
//! (too large, or its topic refused), what the configured policy makes of one
//! ([`Policy::decide`], the one rule for every input: the journal applies it in
//! `pipeline::repair`, the Forward input in `forward::ack`), and the hand-over of a
//! journal record from the delivery thread to the shipping thread. A refusal that concerns every record (credentials, the fixed
//! topic's ACL) is not the record's fault: it fails the session, which keeps the cursor
//! and retries with backoff.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::types::RDKafkaErrorCode;

use super::sink::Refused;
use crate::config::OnRefused;

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

/// A journal record refused for its own fault, waiting for the shipping thread.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) seq: u64,
    /// Its entry's cursor (from its header), for the log.
    pub(crate) cursor: String,
    pub(crate) refused: Refused,
}

/// What to do with a refused record, decided by [`Policy::decide`] for every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send it again unchanged, alone in its batch: brokers judge whole batches against
    /// `max.message.bytes`, so it may only have shared one with the record at fault.
    Alone,
    /// Re-encode it under this many bytes and send it again (the journal's entries; a
    /// Forward client's record is never cut).
    Shrink(usize),
    /// Send it unchanged to the dead-letter topic, with the error and the intended topic.
    DeadLetter,
    /// Give it up: the input keeps its place before it (the journal's cursor; a Forward
    /// chunk stays unacknowledged) and says why.
    Fail(&'static str),
}

/// Re-encoding stops at this record limit; smaller refused records are dead-lettered.
pub(crate) const MIN_RECORD_LIMIT: usize = 4096;

/// The policies of `[delivery] on_too_large` and `on_topic_refused`, for one input.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) on_too_large: OnRefused,
    pub(crate) on_topic_refused: OnRefused,
    pub(crate) dead_letter_topic: String,
    /// Topics every record of the input may go to (a fixed topic, the fallback): their
    /// refusals are not one record's fault.
    pub(crate) common_topics: Vec<String>,
    /// The input's own record limit when it can re-encode a record smaller; `None`: it
    /// cannot, and `shrink` means alone, then the dead-letter topic.
    pub(crate) shrink_from: Option<usize>,
}

impl Policy {
    /// The policy for a record of `len` bytes refused by `topic`, after `attempt` earlier
    /// sends of it by the policy (0: the first refusal).
    pub(crate) fn decide(&self, class: Class, topic: &str, len: usize, attempt: u32) -> Action {
        if topic == self.dead_letter_topic {
            return Action::Fail("the dead-letter topic refused it too");
        }
        let policy = match class {
            Class::TooLarge => self.on_too_large,
            Class::Topic if self.common_topics.iter().any(|t| t == topic) => {
                return Action::Fail("every record goes to this topic");
            }
            Class::Topic => self.on_topic_refused,
        };
        match (policy, class, self.shrink_from) {
            (OnRefused::Stall, _, _) => Action::Fail("policy \"stall\""),
            // Too large may mean "shared a batch with a record too large": alone first.
            (OnRefused::DeadLetter | OnRefused::Shrink, Class::TooLarge, _) if attempt == 0 => {
                match self.shrink_from {
                    Some(max) if policy == OnRefused::Shrink && len > max => Action::Shrink(max),
                    _ => Action::Alone,
                }
            }
            (OnRefused::DeadLetter, _, _) | (OnRefused::Shrink, _, None) => Action::DeadLetter,
            (OnRefused::Shrink, _, Some(max)) => {
                // Attempt 1 resent it as it was (alone); from then on the limit halves.
                let limit = max.min(len) >> attempt.min(30);
                if limit < MIN_RECORD_LIMIT {
                    Action::DeadLetter
                } else if len > limit {
                    Action::Shrink(limit)
                } else {
                    Action::Alone
                }
            }
        }
    }
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

    fn policy(on_too_large: OnRefused, shrink_from: Option<usize>) -> Policy {
        Policy {
            on_too_large,
            on_topic_refused: OnRefused::DeadLetter,
            dead_letter_topic: "dlq".into(),
            common_topics: vec!["fixed".into()],
            shrink_from,
        }
    }

    #[test]
    fn the_policy_is_one_rule_for_every_input() {
        use Action::*;
        let journal = policy(OnRefused::Shrink, Some(1_000_000));
        // Alone first, then halving from the record's size, then the dead-letter topic.
        assert_eq!(journal.decide(Class::TooLarge, "t", 300_000, 0), Alone);
        assert_eq!(
            journal.decide(Class::TooLarge, "t", 300_000, 1),
            Shrink(150_000)
        );
        assert_eq!(
            journal.decide(Class::TooLarge, "t", 150_000, 2),
            Shrink(37_500)
        );
        assert_eq!(journal.decide(Class::TooLarge, "t", 5_000, 3), DeadLetter);
        assert_eq!(
            journal.decide(Class::TooLarge, "t", 2_000_000, 0),
            Shrink(1_000_000)
        );
        // A Forward client's record is never cut: alone, then the dead-letter topic.
        let forward = policy(OnRefused::Shrink, None);
        assert_eq!(forward.decide(Class::TooLarge, "t", 300_000, 0), Alone);
        assert_eq!(forward.decide(Class::TooLarge, "t", 300_000, 1), DeadLetter);
        for p in [&journal, &forward] {
            assert_eq!(p.decide(Class::Topic, "t", 10, 0), DeadLetter);
            assert!(matches!(p.decide(Class::Topic, "fixed", 10, 0), Fail(_)));
            assert!(matches!(p.decide(Class::TooLarge, "dlq", 10, 0), Fail(_)));
        }
        let stall = policy(OnRefused::Stall, None);
        assert!(matches!(stall.decide(Class::TooLarge, "t", 10, 0), Fail(_)));
        let dead_letter = policy(OnRefused::DeadLetter, Some(1_000_000));
        assert_eq!(dead_letter.decide(Class::TooLarge, "t", 10, 0), Alone);
        assert_eq!(dead_letter.decide(Class::TooLarge, "t", 10, 1), DeadLetter);
    }
}
