//! The one way tests write an agent configuration: typed, so a test says what it changes
//! and the state directory is known without re-reading the text.

use std::path::{Path, PathBuf};

/// Where the agent reads from.
#[derive(Clone, Debug)]
pub enum Source {
    Directory(PathBuf),
    Files(Vec<PathBuf>),
    Namespace(String),
    Local,
}

/// An agent configuration, written out as TOML by [`TestConfig::toml`].
#[derive(Clone, Debug)]
pub struct TestConfig {
    table: toml::Table,
    state: PathBuf,
}

impl TestConfig {
    /// A directory source, topic "journal", state in `state`, checkpoints every 100 ms.
    pub fn new(jdir: &Path, brokers: &str, state: &Path) -> TestConfig {
        TestConfig {
            table: toml::Table::new(),
            state: state.to_path_buf(),
        }
        .source(Source::Directory(jdir.to_path_buf()))
        .set("kafka", "brokers", brokers)
        .set("kafka", "topic", "journal")
        .set("state", "directory", state.to_str().unwrap())
        .set("state", "checkpoint_interval_ms", 100)
    }

    pub fn source(mut self, source: Source) -> TestConfig {
        let journal = self.section("journal");
        for k in ["directory", "files", "namespace"] {
            journal.remove(k);
        }
        match source {
            Source::Directory(d) => self.set("journal", "directory", d.to_str().unwrap()),
            Source::Files(f) => {
                let files: Vec<toml::Value> = f
                    .iter()
                    .map(|p| toml::Value::from(p.to_str().unwrap()))
                    .collect();
                self.set("journal", "files", files)
            }
            Source::Namespace(ns) => self.set("journal", "namespace", ns.as_str()),
            Source::Local => self,
        }
    }

    pub fn topic(self, topic: &str) -> TestConfig {
        self.set("kafka", "topic", topic)
    }

    /// Sets `key` in `section` ("kafka.properties" for nested tables).
    pub fn set(mut self, section: &str, key: &str, value: impl Into<toml::Value>) -> TestConfig {
        self.section(section).insert(key.to_string(), value.into());
        self
    }

    /// Removes `key` from `section` (to test a default).
    pub fn unset(mut self, section: &str, key: &str) -> TestConfig {
        self.section(section).remove(key);
        self
    }

    /// Removes a whole section (to turn an input off).
    pub fn without(mut self, section: &str) -> TestConfig {
        self.table.remove(section);
        self
    }

    /// A librdkafka property.
    pub fn property(self, key: &str, value: impl Into<toml::Value>) -> TestConfig {
        self.set("kafka.properties", key, value)
    }

    /// Exactly-once delivery with an explicit transactional id.
    pub fn exactly_once(self, id: &str) -> TestConfig {
        self.set("delivery", "mode", "exactly-once")
            .set("delivery", "transactional_id", id)
    }

    fn section(&mut self, path: &str) -> &mut toml::Table {
        let mut t = &mut self.table;
        for part in path.split('.') {
            t = t
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        t
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    pub fn toml(&self) -> String {
        toml::to_string(&self.table).unwrap()
    }

    /// Writes the file and returns its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.toml()).unwrap();
        path.to_path_buf()
    }
}
