//! librdkafka's share of the agent's CPU per entry: the bench journal's records, read and
//! encoded beforehand by the agent's reader and encoder, produced with the journal
//! producer's properties and headers (cursor and format), delivery reports counted; the
//! CPU the process spends from the first send to the last report, per 1M records. What the
//! agent spends beyond this figure is its own: reading, encoding, the window, the queue.
//!
//! With RATE, the records go out at RATE per second for SECONDS (default 15), a batch every
//! 25 ms as the agent's reader finds them in a live journal, and the figure is the share of
//! one core.
//!
//!     cargo run --release --example produce_floor -- DIR BROKERS TOPIC [RATE [SECONDS]]
//!
//! `FLOOR_TOML` is appended to the configuration (e.g. a `[kafka.properties]` table), to
//! see what a setting is worth; `FLOOR_HEADERS=0` sends the records without headers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use journald_kafka::config;
use journald_kafka::format::Encoder;
use journald_kafka::journal::{Entry, Reader};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

static DELIVERED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

struct Count;

impl rdkafka::ClientContext for Count {}

impl ProducerContext for Count {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => DELIVERED.fetch_add(1, Ordering::Relaxed),
            Err(_) => FAILED.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The process's user and system CPU seconds (`/proc/self/stat`, clock ticks of 1/100 s).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f[i].parse::<f64>().expect("ticks");
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: produce_floor DIR BROKERS TOPIC [RATE [SECONDS]]";
    let (dir, brokers, topic) = (
        args.next().expect(usage),
        args.next().expect(usage),
        args.next().expect(usage),
    );
    let rate: Option<u64> = args.next().map(|r| r.parse().expect(usage));
    let seconds: u64 = args.next().map_or(15, |s| s.parse().expect(usage));
    let limit = rate.map_or(u64::MAX, |r| r * seconds);
    let cfg = config::parse(&format!(
        "[journal]\ndirectory = {dir:?}\nstart = \"head\"\n\
         [state]\ndirectory = \"/tmp/unused\"\n[kafka]\nbrokers = {brokers:?}\ntopic = {topic:?}\n{}\n",
        std::env::var("FLOOR_TOML").unwrap_or_default()
    ))
    .expect("configuration");
    let mut r = Reader::open(&cfg.journal).expect("open the journal");
    r.seek(&cfg.journal, None).expect("seek");
    let mut encoder = Encoder::new(&cfg.encoding, &cfg.kafka);
    let mut e = Entry::new();
    let mut records = Vec::new();
    let mut bytes = 0usize;
    while (records.len() as u64) < limit && r.next(&mut e).expect("next") {
        let mut payload = Vec::new();
        encoder.encode(&e, &mut payload);
        bytes += payload.len();
        records.push((payload, e.cursor.clone(), (e.realtime_usec / 1000) as i64));
    }
    let n = records.len() as u64;
    let headers = std::env::var("FLOOR_HEADERS").map_or(true, |h| h != "0");
    let mut client = ClientConfig::new();
    for (k, v) in journald_kafka::bench::journal_producer_properties(&cfg) {
        client.set(k, v);
    }
    let producer: ThreadedProducer<Count> = client.create_with_context(Count).expect("producer");
    let (cpu0, t0) = (cpu_s(), Instant::now());
    // Recent timestamps: a broker applies its retention to them.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let shift = now_ms - records.last().map_or(now_ms, |r| r.2);
    for (i, (payload, cursor, ts)) in records.iter().enumerate() {
        if let Some(rate) = rate {
            // A batch every 25 ms: wait until this record is due.
            let due = Duration::from_millis(i as u64 * 1000 / rate / 25 * 25);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut record: BaseRecord<'_, (), [u8]> = BaseRecord::to(&topic)
            .payload(payload.as_slice())
            .timestamp(ts + shift);
        if headers {
            record = record.headers(journald_kafka::bench::record_headers(cursor));
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    while DELIVERED.load(Ordering::Relaxed) + FAILED.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (cpu, wall) = (cpu_s() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "{n} records ({bytes} payload bytes) delivered {} failed {}: {:.2} CPU s / 1M, {:.0} records/s, {:.1} % of a core",
        DELIVERED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
        cpu * 1e6 / n as f64,
        n as f64 / wall,
        cpu * 100.0 / wall
    );
    producer.flush(Duration::from_secs(10)).expect("flush");
}
