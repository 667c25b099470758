//! How a session ends when it does not end cleanly, and what the process does about it.
//!
//! Owns the one failure type that crosses stage boundaries. Each failure answers for
//! itself: [`Failure::is_retryable`] tells the pipeline whether a fresh session may get past
//! it, [`Failure::exit_code`] tells the command line how the process ends. Stages create a
//! failure where they know its kind; nobody downstream inspects error text or downcasts. It
//! must never hold a secret in its message.

use std::fmt;

/// Exit status of an exactly-once agent fenced by another one with the same transactional
/// id. The unit lists it in `RestartPreventExitStatus=`: restarting would fence the other
/// agent in turn, and the two would take turns forever.
pub(crate) const EXIT_FENCED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A fresh session may get past it: a delivery failed, the broker or journal is away.
    Retry,
    /// An operator must change something (configuration, journal, cursor policy).
    Fatal,
    /// Another agent took over this transactional id.
    Fenced,
    /// The brokers cannot give this agent transactions.
    Unsupported,
}

/// Why a session ended early.
pub(crate) struct Failure {
    kind: Kind,
    error: anyhow::Error,
}

impl Failure {
    pub(crate) fn retry(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            kind: Kind::Retry,
            error: error.into(),
        }
    }

    pub(crate) fn fatal(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            kind: Kind::Fatal,
            error: error.into(),
        }
    }

    /// Fencing by another instance. The message says what to do about it.
    pub(crate) fn fenced(detail: impl fmt::Display) -> Failure {
        Failure {
            kind: Kind::Fenced,
            error: anyhow::anyhow!(
                "fenced: another journald-kafka with the same transactional id started and took over ({detail}); two agents must never ship the same journal with one delivery.transactional_id"
            ),
        }
    }

    pub(crate) fn unsupported(why: impl fmt::Display) -> Failure {
        Failure {
            kind: Kind::Unsupported,
            error: anyhow::anyhow!(
                "{why}; delivery.mode = \"exactly-once\" cannot run against these brokers (\"at-least-once\" can)"
            ),
        }
    }

    /// Whether a new session from the last safe cursor may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        self.kind == Kind::Retry
    }

    /// The process's exit status when this failure ends it.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Fenced => EXIT_FENCED,
            Kind::Retry | Kind::Fatal | Kind::Unsupported => 1,
        }
    }

    pub(crate) fn into_error(self) -> anyhow::Error {
        self.error
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:#}", self.kind, self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_answers_for_itself() {
        assert!(Failure::retry(anyhow::anyhow!("broker away")).is_retryable());
        let fatal = Failure::fatal(anyhow::anyhow!("cursor refused"));
        assert!(!fatal.is_retryable());
        assert_eq!(fatal.exit_code(), 1);
        let fenced = Failure::fenced("epoch bumped");
        assert!(!fenced.is_retryable());
        assert_eq!(fenced.exit_code(), EXIT_FENCED);
        assert!(fenced.to_string().starts_with("fenced: "));
        let u = Failure::unsupported("no transactions");
        assert!(!u.is_retryable());
        assert!(u.to_string().contains("at-least-once"));
    }
}
