//! The preamble most integration tests share: a scratch directory, a broker with its
//! storage in it, journal files in its `journal` directory, and a configuration that joins
//! them. Written once here instead of at the top of every test.
//!
//! ```ignore
//! let f = Fixture::new("kill9")
//!     .broker()                          // or .transactional_broker(), or none
//!     .topic("journal", 3)
//!     .journal("a.journal", &["-n", "60000"]);
//! let last = f.last();
//! let cfg = f.config("state").set("kafka", "key_field", "_SYSTEMD_UNIT");
//! let mut agent = Agent::start(&f.s.path("agent"), &cfg);
//! ```

use std::path::PathBuf;

use super::{
    Broker, Fields, Scratch, TestConfig, cursor_of, journal_entries, write_export, write_journal,
};

/// A test's scratch directory `s`, its broker (`()` for a test that starts none, or starts
/// one later on a port it chose), and `jdir`, the scratch's `journal` directory.
///
/// The fields drop in their declaration order: the broker is killed before the scratch
/// directory holding its storage is removed, as when the three were locals.
pub struct Fixture<B = ()> {
    pub broker: B,
    pub jdir: PathBuf,
    pub s: Scratch,
}

impl Fixture<()> {
    /// A fresh scratch directory `target/test-scratch/NAME-PID`, no broker, no journal yet.
    pub fn new(name: &str) -> Fixture<()> {
        let s = Scratch::new(name);
        Fixture {
            broker: (),
            jdir: s.path("journal"),
            s,
        }
    }

    /// A Nisshi broker with its storage in the scratch's `broker`.
    pub fn broker(self) -> Fixture<Broker> {
        let broker = Broker::start(&self.s.path("broker"));
        self.with_broker(broker)
    }

    /// A broker with transactions (noida-db) in the scratch's `broker`, for exactly-once.
    pub fn transactional_broker(self) -> Fixture<Broker> {
        let broker = Broker::start_transactional(&self.s.path("broker"));
        self.with_broker(broker)
    }

    /// A broker the test starts its own way, in the scratch (TLS, SASL…).
    pub fn broker_from(self, start: impl FnOnce(&Scratch) -> Broker) -> Fixture<Broker> {
        let broker = start(&self.s);
        self.with_broker(broker)
    }

    fn with_broker(self, broker: Broker) -> Fixture<Broker> {
        Fixture {
            broker,
            jdir: self.jdir,
            s: self.s,
        }
    }
}

impl<B> Fixture<B> {
    /// Writes `name` in the journal directory: gen_export.py's entries for `args`, through
    /// systemd-journal-remote ([`write_journal`]).
    pub fn journal(self, name: &str, args: &[&str]) -> Self {
        write_journal(&self.jdir, name, args);
        self
    }

    /// Writes `name` in the journal directory from export-format bytes ([`write_export`]).
    pub fn export(self, name: &str, export: &[u8]) -> Self {
        write_export(&self.jdir, name, export);
        self
    }

    /// Every entry of the journal directory as journalctl reads them, now.
    pub fn entries(&self) -> Vec<Fields> {
        journal_entries(&self.jdir, &[])
    }

    /// The cursor of the newest entry of the journal directory now (`journalctl -n 1`).
    pub fn last(&self) -> String {
        cursor_of(journal_entries(&self.jdir, &["-n", "1"]).last().unwrap())
    }

    /// A configuration reading the journal directory and shipping to `brokers`, its state
    /// in the scratch's `state` ([`TestConfig::new`]).
    pub fn config_to(&self, brokers: &str, state: &str) -> TestConfig {
        TestConfig::new(&self.jdir, brokers, &self.s.path(state))
    }
}

impl Fixture<Broker> {
    /// A topic on the broker.
    pub fn topic(self, name: &str, partitions: u32) -> Self {
        self.broker.create_topic(name, partitions);
        self
    }

    /// A configuration reading the journal directory and shipping to the broker, its state
    /// in the scratch's `state` ([`TestConfig::new`]).
    pub fn config(&self, state: &str) -> TestConfig {
        self.config_to(&self.broker.addr(), state)
    }
}
