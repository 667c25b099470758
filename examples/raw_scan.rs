//! The raw read ceiling for benchmarks: a minimal sd-journal scan of a directory that touches
//! every field of every entry and its cursor, with no encoding and no Kafka.
//!
//!     cargo run --release --example raw_scan -- /path/to/journal/dir

fn main() {
    let dir = std::env::args().nth(1).expect("usage: raw_scan DIR");
    let mut j = systemd::journal::OpenDirectoryOptions::default()
        .open_directory(dir.as_str())
        .expect("open the journal directory");
    j.set_data_threshold(0).expect("lift the data threshold");
    let (mut entries, mut bytes) = (0u64, 0u64);
    while j.next().expect("sd_journal_next") > 0 {
        entries += 1;
        bytes += j.cursor().expect("cursor").len() as u64;
        j.restart_data();
        while let Some(f) = j.enumerate_data().expect("enumerate_data") {
            bytes += f.data().len() as u64;
        }
    }
    println!("{entries} entries, {bytes} bytes");
}
