//! The agent's journal reader alone, for benchmarks and profiles: reads a directory from its
//! head to its end through `journal::Reader` (the per-writer streams, cursors, every field)
//! with libsystemd or the native reader, and nothing else.
//!
//!     cargo run --release --example reader_scan -- /path/to/journal/dir native

use journald_kafka::config;
use journald_kafka::journal::{Entry, Reader};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: reader_scan DIR [libsystemd|native]");
    let reader = args.next().unwrap_or_else(|| "native".into());
    let cfg = config::parse(&format!(
        "[journal]\ndirectory = {dir:?}\nstart = \"head\"\nreader = {reader:?}\n\
         [kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\n[state]\ndirectory = \"/tmp/unused\"\n"
    ))
    .expect("configuration");
    let mut r = Reader::open(&cfg.journal).expect("open the journal");
    r.seek(&cfg.journal, None).expect("seek");
    let mut e = Entry::new();
    let (mut entries, mut bytes) = (0u64, 0u64);
    while r.next(&mut e).expect("next") {
        entries += 1;
        bytes += (e.cursor.len() + e.data_len()) as u64;
    }
    println!("{entries} entries, {bytes} bytes ({reader})");
}
