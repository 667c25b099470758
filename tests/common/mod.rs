//! Test bed shared by the integration tests: a real Kafka-protocol broker on 127.0.0.1,
//! real journal files written by systemd-journal-remote, the agent binary, and a consumer.
//!
//! Every process a test starts is remembered by PID and ended on drop, so a failing test
//! does not leave brokers or agents behind.
#![allow(dead_code)]

mod config;
mod fixture;
mod journald;
#[allow(unused_imports)]
pub use config::{Source, TestConfig};
#[allow(unused_imports)]
pub use fixture::Fixture;
#[allow(unused_imports)]
pub use journald::Journald;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub const BIN: &str = env!("CARGO_BIN_EXE_journald-kafka");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker in its own directory: Nisshi with SQLite storage, or noida-db where the test
/// needs transactions (see scripts/kafka-broker.sh).
pub struct Broker {
    pub port: u16,
    pub dir: PathBuf,
    pub pid: std::cell::Cell<u32>,
    engine: &'static str,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Self::start_engine(dir, free_port(), "sqlite")
    }

    /// A Nisshi broker in the scratch directory's "broker", with one topic created.
    pub fn with_topic(s: &Scratch, topic: &str, partitions: u32) -> Broker {
        let b = Self::start(&s.path("broker"));
        b.create_topic(topic, partitions);
        b
    }

    /// A broker with transactions, read_committed and fencing (for exactly-once tests).
    pub fn start_transactional(dir: &Path) -> Broker {
        Self::start_engine(dir, free_port(), "noida")
    }

    pub fn start_on(dir: &Path, port: u16) -> Broker {
        Self::start_engine(dir, port, "sqlite")
    }

    /// A Nisshi broker with extra listener arguments (`--authentication`, `--cert`, `--key`)
    /// on the storage in `dir`.
    pub fn start_secured(dir: &Path, port: u16, extra: &str) -> Broker {
        Self::start_with(dir, port, "sqlite", extra)
    }

    fn start_engine(dir: &Path, port: u16, engine: &'static str) -> Broker {
        Self::start_with(dir, port, engine, "")
    }

    fn start_with(dir: &Path, port: u16, engine: &'static str, extra: &str) -> Broker {
        let out = Command::new(root().join("scripts/kafka-broker.sh"))
            .args(["start", &port.to_string(), dir.to_str().unwrap(), engine])
            .env("NISSHI_EXTRA_ARGS", extra)
            .output()
            .expect("run scripts/kafka-broker.sh (is the broker installed? run scripts/install-deps.sh)");
        assert!(
            out.status.success(),
            "broker did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap()
            .parse()
            .unwrap();
        Broker {
            port,
            dir: dir.to_path_buf(),
            pid: std::cell::Cell::new(pid),
            engine,
        }
    }

    /// Crashes the broker (SIGKILL); its SQLite storage survives.
    pub fn kill9(&self) {
        let pid = self.pid.get().to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!("while kill -0 {pid} 2>/dev/null; do sleep 0.05; done"),
            ])
            .status();
    }

    /// Starts the broker again on the same port with the same storage.
    pub fn restart(&self) {
        let again = Broker::start_engine(&self.dir, self.port, self.engine);
        self.pid.set(again.pid.get());
        std::mem::forget(again);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, partitions, None);
    }

    /// A topic with one topic-level config, e.g. `max.message.bytes=100000`.
    pub fn create_topic_with(&self, name: &str, partitions: u32, config: Option<&str>) {
        let port = self.port.to_string();
        let partitions = partitions.to_string();
        let mut args = vec!["topic-create", &port, name, &partitions];
        args.extend(config);
        let out = Command::new(root().join("scripts/kafka-broker.sh"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A SASL/SCRAM user (the listener must be plain, not yet `--authentication`).
    pub fn create_user(&self, name: &str, password: &str, mechanism: &str) {
        let out = Command::new(root().join("scripts/kafka-broker.sh"))
            .args([
                "user-create",
                &self.port.to_string(),
                name,
                password,
                mechanism,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "user create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn stop(&self) {
        let _ = Command::new(root().join("scripts/kafka-broker.sh"))
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.get().to_string()])
            .status();
    }
}

/// Writes `count` entries in export format through systemd-journal-remote into `dir/name`.
pub fn write_journal(dir: &Path, name: &str, args: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let gen_out = Command::new("python3")
        .arg(root().join("tests/tools/gen_export.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(gen_out.status.success(), "gen_export.py failed");
    write_export(dir, name, &gen_out.stdout);
}

/// Feeds export-format bytes to systemd-journal-remote.
pub fn write_export(dir: &Path, name: &str, export: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut child = Command::new("/lib/systemd/systemd-journal-remote")
        .arg("-o")
        .arg(dir.join(name))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote (apt-get install systemd-journal-remote)");
    let written = child.stdin.take().unwrap().write_all(export);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && written.is_ok(),
        "journal-remote ({written:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One entry as journalctl exports it: field name → values (in order), raw bytes.
pub type Fields = BTreeMap<String, Vec<Vec<u8>>>;

/// Reads every entry of a journal directory with journalctl (systemd's own reader), as the
/// oracle the agent's output is compared with.
pub fn journal_entries(dir: &Path, filter: &[&str]) -> Vec<Fields> {
    let out = Command::new("journalctl")
        .arg("-D")
        .arg(dir)
        .args(["-o", "export", "--no-pager", "-m"])
        .args(filter)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "journalctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_export(&out.stdout)
}

pub fn parse_export(mut b: &[u8]) -> Vec<Fields> {
    let mut entries = Vec::new();
    let mut cur = Fields::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if line.is_empty() {
            if !cur.is_empty() {
                entries.push(std::mem::take(&mut cur));
            }
            b = &b[(nl + 1).min(b.len())..];
            continue;
        }
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            let name = String::from_utf8(line[..eq].to_vec()).unwrap();
            cur.entry(name).or_default().push(line[eq + 1..].to_vec());
            b = &b[(nl + 1).min(b.len())..];
        } else {
            // Binary field: NAME\n<u64 le length><data>\n
            let name = String::from_utf8(line.to_vec()).unwrap();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            cur.entry(name).or_default().push(rest[8..8 + len].to_vec());
            b = &rest[8 + len + 1..];
        }
    }
    if !cur.is_empty() {
        entries.push(cur);
    }
    entries
}

pub fn cursor_of(f: &Fields) -> String {
    String::from_utf8(f["__CURSOR"][0].clone()).unwrap()
}

/// The cursor of the newest entry of each writer (sequence-number space) among `entries`,
/// in journalctl's order: where the agent's saved place ends up once all is shipped.
pub fn newest_per_writer(entries: &[Fields]) -> Vec<String> {
    let mut last = BTreeMap::new();
    for f in entries {
        let c = cursor_of(f);
        last.insert(c.split(';').next().unwrap().to_string(), c);
    }
    last.into_values().collect()
}

/// A record as read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub cursor: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub format: Option<String>,
    /// Every header, by name.
    pub headers: BTreeMap<String, Vec<u8>>,
}

/// Reads every record of `topics` from the beginning until `want` records arrived or no new
/// record came for `idle`.
/// Every record of `topics`, read until none came for `idle_secs`.
pub fn consume_all(broker: &str, topics: &[&str], idle_secs: u64) -> Vec<Record> {
    consume(broker, topics, usize::MAX, Duration::from_secs(idle_secs))
}

pub fn consume(broker: &str, topics: &[&str], want: usize, idle: Duration) -> Vec<Record> {
    consume_isolated(broker, topics, want, idle, "read_committed")
}

/// [`consume`] with an explicit isolation.level (read_uncommitted also sees records of
/// aborted and open transactions).
pub fn consume_isolated(
    broker: &str,
    topics: &[&str],
    want: usize,
    idle: Duration,
    isolation: &str,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("isolation.level", isolation)
        .set("group.id", format!("test-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = consumer
            .fetch_metadata(Some(t), Duration::from_secs(10))
            .unwrap();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(t, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < want && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let mut cursor = String::new();
                let mut format = None;
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for hdr in h.iter() {
                        let raw = hdr.value.unwrap_or_default().to_vec();
                        headers.insert(hdr.key.to_string(), raw.clone());
                        let v = String::from_utf8(raw).unwrap();
                        match hdr.key {
                            "journal-cursor" => cursor = v,
                            "journal-format" => format = Some(v),
                            _ => {}
                        }
                    }
                }
                out.push(Record {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    cursor,
                    key: m.key().map(|k| k.to_vec()),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    timestamp_ms: m.timestamp().to_millis(),
                    format,
                    headers,
                });
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

/// Decodes a MessagePack record into the same shape as [`Fields`], plus the integer fields.
pub fn decode_msgpack(payload: &[u8]) -> (Fields, BTreeMap<String, u64>) {
    let v = rmpv::decode::read_value(&mut &payload[..]).unwrap();
    let mut fields = Fields::new();
    let mut ints = BTreeMap::new();
    let bytes = |v: &rmpv::Value| -> Vec<u8> {
        match v {
            rmpv::Value::String(s) => {
                assert!(s.is_str(), "str values must be valid UTF-8");
                s.as_bytes().to_vec()
            }
            rmpv::Value::Binary(b) => {
                assert!(
                    std::str::from_utf8(b).is_err(),
                    "valid UTF-8 must be sent as str"
                );
                b.clone()
            }
            other => panic!("unexpected value {other}"),
        }
    };
    for (k, v) in v.as_map().unwrap() {
        let k = k.as_str().unwrap().to_string();
        match v {
            rmpv::Value::Integer(i) => {
                ints.insert(k, i.as_u64().unwrap());
            }
            rmpv::Value::Array(a) => {
                fields.insert(k, a.iter().map(bytes).collect());
            }
            v => {
                fields.insert(k, vec![bytes(v)]);
            }
        }
    }
    (fields, ints)
}

/// The agent, started with a config file; stopped with SIGTERM (or killed) on drop.
pub struct Agent {
    pub child: Child,
    pub config: PathBuf,
    pub state: PathBuf,
    log: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, config: &TestConfig) -> Agent {
        Agent::start_under(dir, config, &[])
    }

    /// The agent with a limit on open files (`prlimit --nofile=SOFT:HARD`), as a unit's
    /// `LimitNOFILE=` or the systemd default would set it.
    pub fn start_with_nofile(dir: &Path, config: &TestConfig, nofile: &str) -> Agent {
        Agent::start_under(dir, config, &["prlimit", &format!("--nofile={nofile}")])
    }

    /// The agent with `vars` added to its environment and `unset` removed from it.
    pub fn start_with_env(
        dir: &Path,
        config: &TestConfig,
        vars: &[(&str, String)],
        unset: &[&str],
    ) -> Agent {
        let mut wrapper = vec!["env".to_string()];
        for u in unset {
            wrapper.extend(["-u".to_string(), u.to_string()]);
        }
        wrapper.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        Agent::start_under(dir, config, &wrapper)
    }

    /// The agent run through `wrapper` (a command that execs the rest, so the PID is the
    /// agent's), or directly.
    fn start_under(dir: &Path, config: &TestConfig, wrapper: &[&str]) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let path = config.write(&dir.join("config.toml"));
        let log = dir.join("agent.log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let state = config.state().to_path_buf();
        Agent {
            child,
            config: path,
            state,
            log,
        }
    }

    pub fn cursor(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join("cursor"))
            .ok()
            .map(|s| s.trim_end().to_string())
    }

    /// Whether the saved place holds `want` (as one of its writers' cursors).
    pub fn has_cursor(&self, want: &str) -> bool {
        self.cursor().is_some_and(|c| c.lines().any(|l| l == want))
    }

    /// Waits until the agent has saved any cursor (it is shipping).
    pub fn wait_cursor_any(&mut self, timeout: Duration) {
        let start = Instant::now();
        while self.cursor().is_none() {
            assert!(
                start.elapsed() < timeout,
                "no cursor within {timeout:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the cursor file holds `want` (as one of its writers' cursors).
    pub fn wait_cursor(&mut self, want: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.has_cursor(want) {
                return;
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!(
                    "agent exited with {s} before reaching the cursor:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "cursor file did not reach {want} within {timeout:?}; it holds {:?}\n{}",
            self.cursor(),
            self.log()
        );
    }

    /// Waits until the cursor file holds `last` (within 60 s), then stops the agent, which
    /// must exit 0.
    pub fn finish_at(&mut self, last: &str) {
        self.wait_cursor(last, Duration::from_secs(60));
        let st = self.stop();
        assert!(
            st.success(),
            "clean stop exits 0, got {st}:\n{}",
            self.log()
        );
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM and wait for the exit status. Waits for the agent to have started first: a
    /// process killed by a signal before it installed its handlers proves nothing.
    pub fn stop(&mut self) -> ExitStatus {
        let start = Instant::now();
        while !self.log().contains("journald-kafka starting")
            && start.elapsed() < Duration::from_secs(10)
        {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.signal("-TERM");
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > timeout {
                self.signal("-KILL");
                panic!("agent did not exit within {timeout:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion and returns (status, stdout + stderr).
/// `audit --config CONFIG --json` (of `topic`, else the configured topics): whether it
/// passed, its JSON (one object per writer), and all it printed.
pub fn audit_json(config: &Path, topic: Option<&str>) -> (bool, serde_json::Value, String) {
    let config = config.to_str().unwrap();
    let mut args = vec!["audit", "--config", config, "--json", "--idle-ms", "2000"];
    if let Some(t) = topic {
        args.extend(["--topic", t]);
    }
    let (st, out) = run_cli(&args);
    let json = out
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON from audit: {out}"));
    (st.success(), serde_json::from_str(json).unwrap(), out)
}

pub fn run_cli(args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_command(cmd)
}

/// Runs a command to completion (outside the service manager's journal stream) and
/// returns (status, stdout + stderr).
pub fn run_command(mut cmd: Command) -> (ExitStatus, String) {
    let out = cmd.env_remove("JOURNAL_STREAM").output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status, s)
}

/// Lines of a file, for log assertions.
pub fn lines(path: &Path) -> Vec<String> {
    BufReader::new(std::fs::File::open(path).unwrap())
        .lines()
        .map(Result::unwrap)
        .collect()
}

/// A scratch directory under target/, removed on drop unless JK_KEEP_TEST_DIRS is set.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = root()
            .join("target/test-scratch")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.0.join(sub)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("JK_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Anonymous resident memory of a process: journal mmaps excluded, unlike VmRSS.
pub fn rss_anon_kib(pid: u32) -> u64 {
    try_rss_anon_kib(pid).unwrap()
}

/// [`rss_anon_kib`], `None` once the process is gone (for samplers that outlive it).
pub fn try_rss_anon_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Microseconds since the epoch, now.
pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One entry in export format with a `HUGE` binary field of `size` incompressible bytes, so
/// that a broker sees more than its limit even after lz4.
pub fn huge_entry_export(realtime_usec: u64, size: usize) -> Vec<u8> {
    let mut big = format!(
        "__REALTIME_TIMESTAMP={realtime_usec}\n__MONOTONIC_TIMESTAMP=900000000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\nMESSAGE=big\nHUGE\n"
    )
    .into_bytes();
    big.extend_from_slice(&(size as u64).to_le_bytes());
    let mut x: u64 = 0x9e3779b97f4a7c15;
    big.extend((0..size).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }));
    big.extend_from_slice(b"\n\n");
    big
}

/// Kills the agent with -9 at random moments: starts it with `config(trial)` up to
/// `trials` times (`JK_KILL_TRIALS` overrides), each time waiting a random
/// `delay_ms` (seeded by `JK_FAULT_SEED`, else `seed`) and killing it unless its cursor has
/// already reached `last`. Returns (kills, seed).
pub fn kill_9_at_random(
    s: &Scratch,
    last: &str,
    seed: u64,
    trials: usize,
    delay_ms: (u64, u64),
    config: impl Fn(usize) -> TestConfig,
) -> (usize, u64) {
    let seed = std::env::var("JK_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(seed);
    let trials: usize = std::env::var("JK_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(trials);
    let mut rng = Rng(seed);
    let mut kills = 0;
    for trial in 0..trials {
        let mut agent = Agent::start(&s.path(&format!("a{trial}")), &config(trial));
        // Count the delay from the moment the agent is set up (journal open, and in
        // exactly-once mode its place restored), so that on a loaded machine the kills
        // still land while it ships rather than during its start.
        let setup = Instant::now();
        while !agent.log().contains("ready:") && setup.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.next(delay_ms.0, delay_ms.1)));
        if agent.has_cursor(last) {
            assert!(agent.stop().success());
            break;
        }
        agent.signal("-KILL");
        agent.wait(Duration::from_secs(5));
        kills += 1;
    }
    // A run that finished before most kills proves little about crashes.
    assert!(
        kills >= trials.min(3),
        "only {kills} of {trials} trials killed the agent before it finished (seed {seed:#x})"
    );
    (kills, seed)
}

/// Runs `journald-kafka verify --json` and returns (lost, duplicates, out_of_order, records).
pub fn verify(config: &Path) -> (u64, u64, u64, u64) {
    verify_idle(config, 3000)
}

/// [`verify`], waiting up to `idle_ms` for records (a big topic's first fetch takes a while).
pub fn verify_idle(config: &Path, idle_ms: u64) -> (u64, u64, u64, u64) {
    let idle = idle_ms.to_string();
    let (st, out) = run_cli(&[
        "verify",
        "--json",
        "--idle-ms",
        &idle,
        "--config",
        config.to_str().unwrap(),
    ]);
    let json = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("verify printed no report: {out}"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        st.success(),
        n("lost") == 0 && n("out_of_order") == 0,
        "{out}"
    );
    (n("lost"), n("duplicates"), n("out_of_order"), n("records"))
}

/// Microseconds since the epoch, `secs` seconds ago.
pub fn recent_usec(secs: u64) -> u64 {
    now_usec() - secs * 1_000_000
}

/// A small deterministic generator for kill timings.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// A plain HTTP GET to the agent's metrics listener on 127.0.0.1: (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_fmt(&mut s, format_args!("GET {path} HTTP/1.0\r\n\r\n")).unwrap();
    let mut r = String::new();
    std::io::Read::read_to_string(&mut s, &mut r).unwrap();
    let code = r.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        code,
        r.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a certificate signed by the CA of [`pki`] in `dir`: `NAME.pem` and `NAME.pk8`
/// (PKCS#8, as the agent and the brokers read keys), for common name `cn` and subject
/// alternative names `san` (openssl's syntax, e.g. `IP:127.0.0.1,DNS:localhost`).
pub fn issue(dir: &Path, name: &str, cn: &str, san: &str) {
    let (key, csr, ext, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ],
    );
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    pkcs8(dir, name);
}

/// `NAME.key` converted to `NAME.pk8` (PKCS#8, unencrypted).
pub fn pkcs8(dir: &Path, name: &str) {
    let (key, pk8) = (format!("{name}.key"), format!("{name}.pk8"));
    openssl(
        dir,
        &["pkcs8", "-topk8", "-nocrypt", "-in", &key, "-out", &pk8],
    );
}

pub fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=journald-kafka test CA",
        ],
    );
    issue(dir, "server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost");
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.pk8"),
    }
}
