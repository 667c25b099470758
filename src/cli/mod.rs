//! The command line: `run`, `check`, `cat`, `verify`, `status`, `cursor show` and
//! `generate-assets`.
//!
//! Owns argument parsing, the help text and process-level glue (signals, exit codes):
//! `run` (the agent, its signals and threads around the pipeline), `check` (what `run`
//! would do, and `cursor show`), `status` (the running agent at a glance). It must never
//! contain pipeline logic: every command calls into the stage modules.

mod check;
mod run;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::{logging, readback};

/// Prints to stdout; a closed pipe (`| head`, `| grep -q`) ends output quietly.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub(crate) use say;

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
pub(crate) struct Cli {
    /// Log level: error, warn, info, debug or trace [default: log.level from the config, else info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
        /// Warn when the journal keeps fewer hours than this at the rate it was written
        /// (the longest broker outage it survives).
        #[arg(long, value_name = "HOURS", default_value_t = 24.0)]
        min_journal_hours: f64,
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
    ///   journald-kafka cat --config /etc/journald-kafka/config.toml -n 20
    Cat {
        /// The agent's TOML configuration: brokers, topic and the connection's security
        /// settings (TLS, SASL, the password file) come from it.
        #[arg(long, value_name = "FILE", required_unless_present = "brokers")]
        config: Option<PathBuf>,
        /// Bootstrap brokers, e.g. 127.0.0.1:9092 (overrides the config's).
        #[arg(long, value_name = "HOST:PORT")]
        brokers: Option<String>,
        /// Topic(s) to read [default: the config's topic, when it has no {FIELD} template].
        #[arg(long)]
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
    /// Did we lose entries? From Kafka alone: the entries' sequence numbers and the agent's
    /// progress records (delivery.progress_interval_ms) say, per host and journal writer,
    /// how many positions were shipped, filtered, or lost. Exits 1 when any is lost.
    Audit {
        /// The agent's configuration: brokers, topic and connection settings.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Topic(s) to read [default: kafka.topic and delivery.progress_topic].
        #[arg(long)]
        topic: Vec<String>,
        /// Stop reading when no record arrived for this long.
        #[arg(long, value_name = "MS", default_value = "3000")]
        idle_ms: u64,
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and, if it is valid, tell the running agent to reload it
    /// (SIGHUP). The units' ExecReload=: an invalid config makes `systemctl reload` fail
    /// with the key and line, and the agent is not disturbed.
    Reload {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The agent's process id (systemd's $MAINPID).
        #[arg(long, value_name = "PID")]
        pid: i32,
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
pub(crate) enum CursorCommand {
    /// Print the saved cursor, what it points at and whether the journal still has it.
    Show {
        /// The TOML configuration file (its state.directory holds the cursor file).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("journald-kafka: error: {e:#}");
            tracing::error!("{e:#}");
            ExitCode::FAILURE
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
            if let Some((old, new)) = run::raise_open_files_limit() {
                tracing::info!(old, new, "raised the soft limit on open files");
            }
            let log_level = cli.log_level.clone();
            run::run(cfg, move || load(&config, log_level.as_deref()))
        }
        Command::Check {
            config,
            min_journal_hours,
        } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            check::check(&cfg, &config, min_journal_hours)
        }
        Command::Cat {
            config,
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
            let cfg = match &config {
                Some(path) => Some(load_for_tool(path, cli.log_level.as_deref())?),
                None => {
                    tool_logging(cli.log_level.as_deref())?;
                    None
                }
            };
            let connection = cat_connection(cfg.as_ref(), brokers.as_deref())?;
            let topic = cat_topics(topic, cfg.as_ref())?;
            let terms = cat_terms(&matches, unit)?;
            let max_priority = priority
                .map(|p| {
                    config::parse_priority_text(&p).map_err(|e| anyhow::anyhow!("--priority: {e}"))
                })
                .transpose()?;
            readback::cat(&readback::CatOptions {
                connection,
                topics: topic,
                output,
                lines,
                idle: Duration::from_millis(idle_ms),
                follow,
                from,
                since: time_flag("since", since)?,
                until: time_flag("until", until)?,
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
            verify(&cfg, topic, idle_ms, json)
        }
        Command::Audit {
            config,
            topic,
            idle_ms,
            json,
        } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            audit(&cfg, topic, idle_ms, json)
        }
        Command::Reload { config, pid } => {
            load_for_tool(&config, cli.log_level.as_deref())?;
            reload(&config, pid)
        }
        Command::Status { config, json } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            status::status(&cfg, json)
        }
        Command::GenerateAssets { dir } => {
            generate_assets(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cursor {
            command: CursorCommand::Show { config },
        } => {
            let cfg = load_for_tool(&config, cli.log_level.as_deref())?;
            check::cursor_show(&cfg)
        }
    }
}

/// The connection `cat` reads with: the config's, with `--brokers` in place of its brokers
/// when given.
fn cat_connection(cfg: Option<&Config>, brokers: Option<&str>) -> Result<rdkafka::ClientConfig> {
    let mut connection = match (cfg, brokers) {
        (Some(c), _) => crate::kafka::connection_config(&c.kafka),
        (None, Some(b)) => crate::kafka::connection(b, []),
        (None, None) => anyhow::bail!("give --config FILE or --brokers HOST:PORT"),
    };
    if let Some(b) = brokers {
        connection.set("bootstrap.servers", b);
    }
    Ok(connection)
}

/// The topics `cat` reads: those given, else the config's topic when it is a fixed name.
fn cat_topics(topic: Vec<String>, cfg: Option<&Config>) -> Result<Vec<String>> {
    Ok(match (topic.is_empty(), cfg) {
        (false, _) => topic,
        (true, Some(c)) => match c.kafka.fixed_topic() {
            Some(t) => vec![t.to_string()],
            None => anyhow::bail!(
                "the config's kafka.topic is a template; name the topic(s) to read with --topic"
            ),
        },
        (true, None) => {
            anyhow::bail!("give --topic (or --config with a fixed kafka.topic)")
        }
    })
}

/// The `FIELD=VALUE` arguments and the `--unit`s, as the terms `cat` matches records with.
fn cat_terms(matches: &[String], units: Vec<String>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut terms = Vec::new();
    for m in matches {
        let Some((k, v)) = m.split_once('=') else {
            anyhow::bail!("{m:?} is not FIELD=VALUE");
        };
        if !config::is_valid_field_name(k) {
            anyhow::bail!("{k:?} in {m:?} is not a journal field name");
        }
        terms.push((k.to_string(), v.as_bytes().to_vec()));
    }
    for u in units {
        terms.push(("_SYSTEMD_UNIT".to_string(), u.into_bytes()));
    }
    Ok(terms)
}

/// An RFC 3339 time given to `--flag`, as µs since the epoch.
fn time_flag(flag: &str, v: Option<String>) -> Result<Option<u64>> {
    v.map(|t| config::parse_rfc3339(&t).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

/// `verify`: the journal against the topics, reported; fails when anything is lost or out
/// of order.
fn verify(cfg: &Config, topic: Vec<String>, idle_ms: u64, json: bool) -> Result<ExitCode> {
    let topics = if topic.is_empty() {
        match cfg.kafka.fixed_topic() {
            Some(t) => vec![t.to_string()],
            None => {
                anyhow::bail!("kafka.topic is a template: name the topics to read with --topic")
            }
        }
    } else {
        topic
    };
    let report = crate::verify::verify(cfg, &topics, Duration::from_millis(idle_ms))?;
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

/// `audit`: what Kafka alone says was lost; fails when anything was.
fn audit(cfg: &Config, topic: Vec<String>, idle_ms: u64, json: bool) -> Result<ExitCode> {
    let mut topics = topic;
    if topics.is_empty() {
        match cfg.kafka.fixed_topic() {
            Some(t) => topics.push(t.to_string()),
            None => {
                anyhow::bail!("kafka.topic is a template: name the topics to read with --topic")
            }
        }
        if let Some(p) = &cfg.delivery.progress_topic {
            if !topics.contains(p) {
                topics.push(p.clone());
            }
        }
    }
    let (spaces, skipped) = crate::audit::audit(
        crate::kafka::connection_config(&cfg.kafka),
        &topics,
        Duration::from_millis(idle_ms),
    )?;
    eprint!("{}", skipped.render());
    if json {
        say!("{}", serde_json::to_string(&spaces)?);
    } else {
        print!("{}", crate::audit::render(&spaces));
    }
    Ok(if spaces.iter().any(|s| s.lost > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `reload`, once the config was found valid: signals the running agent.
fn reload(config: &Path, pid: i32) -> Result<ExitCode> {
    let pid = rustix::process::Pid::from_raw(pid)
        .with_context(|| format!("--pid {pid} is not a process id"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("cannot signal process {pid:?}"))?;
    say!(
        "config {} is valid; asked process {} to reload it",
        config.display(),
        pid.as_raw_nonzero()
    );
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
