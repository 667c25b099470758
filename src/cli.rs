//! The command line: `run`, `check` and `cursor show`.
//!
//! Owns argument parsing, the help text and process-level glue (signals, exit codes). It
//! must never contain pipeline logic: every command calls into the stage modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::checkpoint::{FileStore, Tracker, read_cursor_file};
use crate::config::{self, Config};
use crate::journal::{self, Located, cursor};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::pipeline::{self, Shutdown};
use crate::{kafka, logging, readback};

/// Prints to stdout; a closed pipe (`| head`, `| grep -q`) ends output quietly.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

const DEFAULT_CONFIG: &str = "/etc/journald-kafka/config.toml";

/// Ships every systemd journal entry to Apache Kafka without losing one.
///
/// The journal is the buffer: the agent reads it with libsystemd, sends each entry as one
/// Kafka record (MessagePack by default, with the entry's cursor in the `journal-cursor`
/// header), and saves the cursor of the newest entry that the broker confirmed together
/// with every entry before it. After a crash or restart it continues from that cursor, so
/// nothing is lost; entries may be sent twice, and the header lets consumers drop repeats.
///
/// Start with `journald-kafka check --config FILE`, then `journald-kafka run --config FILE`
/// (or `systemctl enable --now journald-kafka`).
#[derive(Parser, Debug)]
#[command(name = "journald-kafka", version, max_term_width = 100)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace [default: log.level from the config, else info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ship journal entries to Kafka until stopped (SIGTERM or SIGINT).
    ///
    /// On SIGTERM/SIGINT the agent stops reading, waits up to pipeline.shutdown_timeout_ms for
    /// the broker to confirm what is in flight, saves the cursor and exits 0. A second signal
    /// exits at once; the saved cursor still only covers confirmed entries.
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the configuration, open the journal, reach the brokers and the topic, and
    /// print what `run` would do. Exits non-zero if anything is wrong.
    Check {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print records from Kafka, decoded, the way journalctl prints entries.
    ///
    /// Reads every partition of the topic(s) from the beginning (or the end, or --since) and
    /// stops after -n records or when no record arrived for --idle-ms, unless --follow. It
    /// decodes both encodings; a record it cannot decode is reported with its
    /// topic/partition/offset and skipped. It never commits consumer offsets.
    ///
    /// Examples:
    ///   journald-kafka cat --brokers k1:9092 --topic journal -u nginx.service -p warning
    ///   journald-kafka cat --brokers k1:9092 --topic journal -o export | systemd-journal-remote -o /tmp/x.journal -
    Cat {
        /// Bootstrap brokers, e.g. 127.0.0.1:9092.
        #[arg(long, value_name = "HOST:PORT")]
        brokers: String,
        /// Topic(s) to read.
        #[arg(long, required = true)]
        topic: Vec<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "short")]
        output: readback::Output,
        /// Stop after printing this many records.
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Keep waiting for new records.
        #[arg(short, long)]
        follow: bool,
        /// Where to start when --since is not given.
        #[arg(long, value_enum, default_value = "beginning")]
        from: readback::From,
        /// Only entries at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only entries of this unit (_SYSTEMD_UNIT=); repeatable.
        #[arg(short, long, value_name = "UNIT")]
        unit: Vec<String>,
        /// Only entries of this priority or more severe (0-7 or emerg..debug).
        #[arg(short, long, value_name = "PRIORITY")]
        priority: Option<String>,
        /// Drop records whose journal-cursor was already printed (after an agent crash).
        #[arg(long)]
        dedup: bool,
        /// Without --follow, stop when no record arrived for this long.
        #[arg(long, value_name = "MS", default_value = "2000")]
        idle_ms: u64,
        /// FIELD=value matches, as journalctl: ORed for one field, ANDed across fields.
        #[arg(value_name = "FIELD=VALUE")]
        matches: Vec<String>,
    },
    /// Compare the journal with what reached Kafka: lost, duplicated and out-of-order entries.
    ///
    /// Reads the journal from its oldest entry with the config's source and filters, and every
    /// record of the topic(s) from the beginning, matching them by the journal-cursor header.
    /// Exits 0 when nothing is lost or out of order (duplicates are allowed: at-least-once).
    Verify {
        /// The TOML configuration file (journal source, filters, brokers, topic).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Topic(s) to read [default: kafka.topic, which must then be a fixed name].
        #[arg(long)]
        topic: Vec<String>,
        /// Stop reading when no record arrived for this long.
        #[arg(long, value_name = "MS", default_value = "3000")]
        idle_ms: u64,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print whether the agent is healthy: its cursor, the cursor's age and lag, and — when
    /// [metrics] listen is set — live figures from the running agent. Exits 0 when healthy,
    /// 1 when not (for monitoring checks).
    Status {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the man page and shell completions into a directory (used for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory.
        dir: PathBuf,
    },
    /// Inspect the saved journal cursor.
    Cursor {
        #[command(subcommand)]
        command: CursorCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum CursorCommand {
    /// Print the saved cursor, what it points at and whether the journal still has it.
    Show {
        /// The TOML configuration file (its state.directory holds the cursor file).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Exit status of an exactly-once agent fenced by another one with the same transactional
/// id. The unit lists it in RestartPreventExitStatus: restarting would fence the other
/// agent in turn, and the two would take turns forever.
pub const EXIT_FENCED: u8 = 3;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("journald-kafka: error: {e:#}");
            tracing::error!("{e:#}");
            if e.downcast_ref::<crate::checkpoint::Fenced>().is_some() {
                ExitCode::from(EXIT_FENCED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load(path: &Path, log_level: Option<&str>) -> Result<Config> {
    let mut cfg = config::load(path)?;
    if let Some(l) = log_level {
        cfg.log.level = l.to_string();
    }
    Ok(cfg)
}

/// Commands other than `run` report on stderr, quietly unless asked (`--log-level`).
fn tool_logging(log_level: Option<&str>) -> Result<()> {
    logging::init(log_level.unwrap_or("warn"), config::LogTarget::Stderr)
}

/// The config and logging of a command other than `run`.
fn load_for_tool(path: &Path, log_level: Option<&str>) -> Result<Config> {
    let cfg = load(path, log_level)?;
    tool_logging(log_level)?;
    Ok(cfg)
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let cfg = load(&config, cli.log_level.as_deref())?;
            logging::init(&cfg.log.level, cfg.log.target)?;
            run(cfg)
        }
        Command::Check { config } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            check(&cfg)
        }
        Command::Cat {
            brokers,
            topic,
            output,
            lines,
            follow,
            from,
            since,
            until,
            unit,
            priority,
            dedup,
            idle_ms,
            matches,
        } => {
            tool_logging(cli.log_level.as_deref())?;
            let time = |flag: &str, v: Option<String>| -> Result<Option<u64>> {
                v.map(|t| config::parse_rfc3339(&t).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
                    .transpose()
            };
            let mut terms = Vec::new();
            for m in &matches {
                let Some((k, v)) = m.split_once('=') else {
                    anyhow::bail!("{m:?} is not FIELD=VALUE");
                };
                if !config::is_valid_field_name(k) {
                    anyhow::bail!("{k:?} in {m:?} is not a journal field name");
                }
                terms.push((k.to_string(), v.as_bytes().to_vec()));
            }
            for u in unit {
                terms.push(("_SYSTEMD_UNIT".to_string(), u.into_bytes()));
            }
            let max_priority = priority
                .map(|p| {
                    config::parse_priority_text(&p).map_err(|e| anyhow::anyhow!("--priority: {e}"))
                })
                .transpose()?;
            readback::cat(&readback::CatOptions {
                brokers,
                topics: topic,
                output,
                lines,
                idle: Duration::from_millis(idle_ms),
                follow,
                from,
                since: time("since", since)?,
                until: time("until", until)?,
                matches: terms,
                max_priority,
                dedup,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            config,
            topic,
            idle_ms,
            json,
        } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            let topics = if topic.is_empty() {
                match cfg.kafka.fixed_topic() {
                    Some(t) => vec![t.to_string()],
                    None => anyhow::bail!(
                        "kafka.topic is a template: name the topics to read with --topic"
                    ),
                }
            } else {
                topic
            };
            let report = crate::verify::verify(&cfg, &topics, Duration::from_millis(idle_ms))?;
            if json {
                say!("{}", report.json());
            } else {
                say!("{report}");
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { config, json } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            status(&cfg, json)
        }
        Command::GenerateAssets { dir } => {
            generate_assets(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cursor {
            command: CursorCommand::Show { config },
        } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            cursor_show(&cfg)
        }
    }
}

fn run(cfg: Config) -> Result<ExitCode> {
    // Signals first: a SIGTERM that arrives while we open things must stop us cleanly, not
    // kill us. The handlers are registered here, synchronously, and served by a small tokio
    // runtime on its own thread; the pipeline itself is plain threads because sd-journal and
    // librdkafka calls block.
    let shutdown = Shutdown::new();
    let notifier = Arc::new(Notifier::from_env());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler runtime")?;
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _enter = rt.enter();
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        )
    };
    let (sig, sig_notifier) = (shutdown.clone(), notifier.clone());
    let signals = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || rt.block_on(handle_signals(term, int, sig, sig_notifier)))
        .context("cannot start the signal thread")?;

    let mut store = FileStore::new(&cfg.state.directory);
    store.prepare()?;
    let metrics = Arc::new(Metrics::default());
    if let Some(listen) = &cfg.metrics.listen {
        crate::metrics::server::spawn(listen, metrics.clone(), cfg.metrics.stall_seconds)?;
        tracing::info!(
            "metrics and health on http://{listen}/metrics, /health/live, /health/ready"
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        source = %cfg.journal.source,
        brokers = %cfg.kafka.brokers,
        "journald-kafka starting"
    );
    let summary = {
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("summary".into())
            .spawn(move || {
                let mut last = String::new();
                while !shutdown_wait(&shutdown, Duration::from_secs(60)) {
                    let s = metrics.summary();
                    if s != last {
                        tracing::info!("{s}");
                        last = s;
                    }
                }
            })
            .context("cannot start the summary thread")?
    };

    let result = pipeline::run(&cfg, &mut store, &shutdown, &metrics, &notifier);
    notifier.stopping();
    shutdown.request();
    let _ = summary.join();
    drop(signals);
    match result {
        Ok(()) => {
            tracing::info!("{}; stopped cleanly", metrics.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

fn shutdown_wait(s: &Shutdown, d: Duration) -> bool {
    let step = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    while waited < d {
        if s.requested() {
            return true;
        }
        std::thread::sleep(step);
        waited += step;
    }
    s.requested()
}

async fn handle_signals(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    shutdown: Arc<Shutdown>,
    notifier: Arc<Notifier>,
) {
    let mut count = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        count += 1;
        if count == 1 {
            tracing::info!("{name}: stopping; waiting for the broker to confirm what is in flight");
            notifier.stopping();
            shutdown.request();
        } else {
            // The cursor file only ever holds confirmed positions, so leaving now loses
            // nothing: what was in flight is sent again on the next start.
            tracing::warn!("{name} again: exiting at once");
            std::process::exit(130);
        }
    }
}

fn check(cfg: &Config) -> Result<ExitCode> {
    let mut ok = true;
    let mut report = |what: &str, r: Result<String>| match r {
        Ok(s) => say!("ok    {what}: {s}"),
        Err(e) => {
            ok = false;
            say!("FAIL  {what}: {e:#}");
        }
    };
    report("config", Ok("valid".into()));

    let cursor_path = cfg.state.cursor_file();
    let cursor = read_cursor_file(&cursor_path);
    report(
        "cursor",
        cursor
            .as_ref()
            .map(|c| match c {
                Some(c) => format!("{} holds {c}", cursor_path.display()),
                None => format!(
                    "{} does not exist yet; starting at journal.start",
                    cursor_path.display()
                ),
            })
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    );
    let state_dir = &cfg.state.directory;
    report(
        "state directory",
        if state_dir.exists() {
            FileStore::new(state_dir)
                .prepare()
                .map(|()| format!("{} is writable", state_dir.display()))
        } else {
            Ok(format!("{} will be created", state_dir.display()))
        },
    );
    let cursor = cursor.ok().flatten();
    report("journal", pipeline::describe_start(cfg, cursor.as_deref()));
    if !cfg.journal.filter.is_empty() {
        let mut terms = cfg.journal.filter.matches.clone();
        terms.extend(journal::shorthand_terms(&cfg.journal.filter));
        report("filters", Ok(terms.join(" ")));
    }

    let probe_topic = cfg
        .kafka
        .fixed_topic()
        .or(cfg.kafka.topic_fallback.as_deref())
        .unwrap_or("journal");
    let tracker = Arc::new(Tracker::new(crate::checkpoint::Limits {
        entries: 1,
        bytes: 1,
    }));
    let kafka_result = kafka::producer(
        &cfg.kafka,
        &cfg.pipeline,
        None,
        tracker,
        Arc::new(Metrics::default()),
    )
    .and_then(|p| {
        kafka::probe(
            &p,
            probe_topic,
            Duration::from_millis(cfg.kafka.connect_timeout_ms.min(10_000)),
        )
    })
    .map(|parts| {
        format!(
            "brokers {} reachable; topic {probe_topic:?} has {parts} partition(s)",
            cfg.kafka.brokers
        )
    });
    report("kafka", kafka_result);
    if cfg.delivery.mode == config::Mode::ExactlyOnce {
        report(
            "delivery",
            crate::checkpoint::transaction::check(cfg).map(|s| format!("exactly-once: {s}")),
        );
    }

    let props = kafka::client_config(&cfg.kafka, &cfg.pipeline);
    let mut shown: Vec<String> = props
        .config_map()
        .iter()
        .map(|(k, v)| {
            if k.contains("password") || k.contains("secret") {
                format!("{k}=***")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    shown.sort();
    say!("      producer: {}", shown.join(" "));
    say!(
        "      records: {:?} encoding, topic {}, key {}, max {} bytes per record",
        cfg.encoding.format,
        cfg.kafka
            .fixed_topic()
            .map(str::to_string)
            .unwrap_or_else(|| format!("from template (fallback {probe_topic:?})")),
        cfg.kafka.key_field.as_deref().unwrap_or("none"),
        cfg.encoding.max_record_bytes
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cursor_show(cfg: &Config) -> Result<ExitCode> {
    let path = cfg.state.cursor_file();
    let Some(c) = read_cursor_file(&path)? else {
        say!(
            "no cursor: {} does not exist (the agent has not confirmed any entry yet)",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    say!("file:      {}", path.display());
    say!("cursor:    {c}");
    if let Ok(info) = cursor::parse(&c) {
        say!(
            "seqnum:    {} (sequence space {})",
            info.seqnum,
            info.seqnum_id
        );
        say!("boot:      {}", info.boot_id);
        let when = jiff::Timestamp::from_microsecond(info.realtime_usec as i64).map_or_else(
            |_| format!("{} µs since the epoch", info.realtime_usec),
            |t| t.to_string(),
        );
        say!("time:      {when} (of the entry the cursor names)");
    }
    if let Ok(m) = std::fs::metadata(&path).and_then(|m| m.modified()) {
        if let Ok(age) = m.elapsed() {
            say!("written:   {}s ago", age.as_secs());
        }
    }
    match journal::locate(&cfg.journal, &c) {
        Ok(Located::Exists) => say!("journal:   the entry is still in the journal"),
        Ok(Located::Missing { gap, .. }) => {
            say!(
                "journal:   the entry is GONE from the journal ({} entries after it are gone too)",
                gap.map_or("unknown number of".to_string(), |g| g.to_string())
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => say!("journal:   cannot check: {e:#}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The man page (from the same clap definitions as `--help`) and completions for bash, zsh
/// and fish.
fn generate_assets(dir: &Path) -> Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut man)?;
    std::fs::write(dir.join("journald-kafka.1"), man)?;
    for (shell, name) in [
        (clap_complete::Shell::Bash, "journald-kafka.bash"),
        (clap_complete::Shell::Zsh, "_journald-kafka"),
        (clap_complete::Shell::Fish, "journald-kafka.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "journald-kafka", &mut out);
        std::fs::write(dir.join(name), out)?;
    }
    Ok(())
}

/// Fetches `path` from the agent's HTTP endpoint: (status code, body).
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().context("metrics.listen")?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .with_context(|| format!("the agent's endpoint {addr} does not answer (is it running?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of a metric line `name value` (labels summed) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ')?;
        let base = key.split('{').next().unwrap_or(key);
        if base == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

fn status(cfg: &Config, json: bool) -> Result<ExitCode> {
    let path = cfg.state.cursor_file();
    let mut healthy = true;
    let mut problems: Vec<String> = Vec::new();
    let cursor = match read_cursor_file(&path) {
        Ok(c) => c,
        Err(e) => {
            healthy = false;
            problems.push(format!("{e:#}"));
            None
        }
    };
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .map(|d| d.as_secs());
    let now_usec = crate::metrics::unix_now_usec();
    let lag = cursor
        .as_deref()
        .and_then(|c| cursor::parse(c).ok())
        .map(|i| now_usec.saturating_sub(i.realtime_usec) / 1_000_000);
    let mut live: Vec<(&str, f64)> = Vec::new();
    let mut ready = None;
    if let Some(addr) = &cfg.metrics.listen {
        match http_get(addr, "/health/ready") {
            Ok((code, body)) => {
                ready = Some(code == 200);
                if code != 200 {
                    healthy = false;
                    problems.push(body.trim().to_string());
                }
            }
            Err(e) => {
                healthy = false;
                problems.push(format!("{e:#}"));
            }
        }
        if let Ok((200, text)) = http_get(addr, "/metrics") {
            for name in [
                "journald_kafka_entries_delivered_total",
                "journald_kafka_entries_failed_total",
                "journald_kafka_in_flight_entries",
                "journald_kafka_watermark_lag_seconds",
                "journald_kafka_broker_up",
                "journald_kafka_pipeline_restarts_total",
            ] {
                if let Some(v) = metric(&text, name) {
                    live.push((name, v));
                }
            }
        }
    }
    if json {
        let mut o = serde_json::Map::new();
        o.insert("healthy".into(), healthy.into());
        o.insert("cursor_file".into(), path.display().to_string().into());
        o.insert(
            "cursor".into(),
            cursor.clone().map_or(serde_json::Value::Null, Into::into),
        );
        o.insert(
            "cursor_age_seconds".into(),
            age.map_or(serde_json::Value::Null, Into::into),
        );
        o.insert(
            "lag_seconds".into(),
            lag.map_or(serde_json::Value::Null, Into::into),
        );
        o.insert(
            "ready".into(),
            ready.map_or(serde_json::Value::Null, Into::into),
        );
        for (k, v) in &live {
            o.insert(k.trim_start_matches("journald_kafka_").into(), (*v).into());
        }
        o.insert("problems".into(), problems.clone().into());
        say!("{}", serde_json::Value::Object(o));
    } else {
        say!(
            "{}  {}",
            if healthy { "HEALTHY" } else { "UNHEALTHY" },
            path.display()
        );
        say!("cursor:     {}", cursor.as_deref().unwrap_or("(none yet)"));
        if let Some(a) = age {
            say!("written:    {a}s ago");
        }
        if let Some(l) = lag {
            say!("lag:        {l}s behind now (time of the entry the cursor names)");
        }
        match ready {
            Some(r) => say!("ready:      {r}"),
            None => say!("live:       set [metrics] listen for live figures and readiness"),
        }
        for (k, v) in &live {
            say!(
                "{:<11} {v}",
                format!("{}:", k.trim_start_matches("journald_kafka_"))
            );
        }
        for p in &problems {
            say!("problem:    {p}");
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
