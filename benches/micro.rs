//! Micro-benchmarks of the per-entry hot path: encoding and the acknowledgement watermark.
//!
//!     cargo bench --bench micro

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use journald_kafka::checkpoint::Watermark;
use journald_kafka::config;
use journald_kafka::format::Encoder;
use journald_kafka::journal::Entry;

/// A typical entry: 17 fields, ~500 bytes, like the benchmark journal.
fn entry() -> Entry {
    let mut e = Entry::new();
    e.cursor = "s=9bd2d317844b4137b84e8c40246dec09;i=3e8;b=1e2feb89414c343c1027c4d1c386bbc4;m=5b7f4b;t=60a24182d740b;x=9b8e9c53bf7e9fdb".into();
    e.realtime_usec = 1_700_000_000_996_363;
    e.monotonic_usec = 5_996_363;
    e.boot_id = "1e2feb89414c343c1027c4d1c386bbc4".into();
    for (k, v) in [
        ("_BOOT_ID", "1e2feb89414c343c1027c4d1c386bbc4"),
        ("SYSLOG_FACILITY", "3"),
        ("_UID", "0"),
        ("_GID", "0"),
        ("_TRANSPORT", "journal"),
        ("_HOSTNAME", "testhost"),
        ("_MACHINE_ID", "cd613e30d8f16adf91b7584a2265b1f5"),
        ("SYSLOG_IDENTIFIER", "kafka-agent"),
        ("_PID", "31249"),
        ("_COMM", "kafka-agent"),
        ("_EXE", "/usr/bin/kafka-agent"),
        ("_SYSTEMD_UNIT", "kafka-agent.service"),
        ("_SYSTEMD_CGROUP", "/system.slice/kafka-agent.service"),
        ("PRIORITY", "5"),
        (
            "MESSAGE",
            "kafka-agent #999 client ms upstream upstream completed bytes session from from received ok ok timeout retry upstream backend session opened closed user root GET POST /api/v1/items latency ms bytes sent received",
        ),
        ("_SOURCE_REALTIME_TIMESTAMP", "1700000000996356"),
        ("SEQ", "999"),
    ] {
        e.push_field(k.as_bytes(), v.as_bytes());
    }
    e
}

fn encode(c: &mut Criterion) {
    let e = entry();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    for (name, extra) in [("msgpack", ""), ("json", "[encoding]\nformat = \"json\"\n")] {
        let cfg = config::parse(&format!(
            "[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\n{extra}"
        ))
        .unwrap();
        let mut enc = Encoder::new(&cfg.encoding, &cfg.kafka);
        let mut out = Vec::with_capacity(4096);
        g.bench_function(name, |b| {
            b.iter(|| enc.encode(std::hint::black_box(&e), &mut out))
        });
    }
    g.finish();
}

fn watermark(c: &mut Criterion) {
    let mut g = c.benchmark_group("watermark");
    g.throughput(Throughput::Elements(1024));
    // Push 1024 entries and acknowledge them out of order (odd ones first), as deliveries
    // from several partitions do.
    g.bench_function("push+ack 1024 shuffled", |b| {
        let cursors: Vec<String> = (0..1024).map(|i| format!("c{i}")).collect();
        b.iter(|| {
            let mut w = Watermark::new();
            for c in &cursors {
                w.push(c.clone(), 100);
            }
            for i in (1..1024).step_by(2).chain((0..1024).step_by(2)) {
                w.delivered(i);
            }
            std::hint::black_box(w.safe_cursor().is_some())
        })
    });
    g.finish();
}

/// A checkpoint of a collector with 5,000 writers (issue 31): the place rendered from the
/// watermark after one more entry was delivered, and written the way the cursor file is
/// (temporary file, fsync, rename). Prints the place's size once.
fn checkpoint_5000_writers(c: &mut Criterion) {
    let cursor = |w: u64, i: u64| {
        format!(
            "s={w:032x};i={i:x};b=1e2feb89414c343c1027c4d1c386bbc4;m=5b7f4b;t=60a24182d740b;x=9b8e9c53bf7e9fdb"
        )
    };
    let seed: Vec<String> = (0..5000).map(|w| cursor(w, 40)).collect();
    let mut w = Watermark::new();
    w.seed(&seed.join("\n"));
    let dir = std::env::temp_dir().join(format!("jk-bench-place-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, tmp) = (dir.join("cursor"), dir.join(".cursor.tmp"));
    let mut i = 41;
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(20);
    g.bench_function("render the place, 5000 writers", |b| {
        b.iter(|| {
            let seq = w.push(cursor(i % 5000, i), 100);
            w.delivered(seq);
            i += 1;
            std::hint::black_box(w.safe_place())
        })
    });
    let place = w.safe_place().unwrap();
    eprintln!(
        "checkpoint: a place of 5000 writers is {} bytes",
        place.len()
    );
    g.bench_function("write the place, 5000 writers (fsync, rename)", |b| {
        b.iter(|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(place.as_bytes()).unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, encode, watermark, checkpoint_5000_writers);
criterion_main!(benches);
