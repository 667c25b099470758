//! The native journal reader against libsystemd's, entry by entry and field by field, on
//! every kind of journal systemd's own tools write here: journal-remote output in regular
//! and compact form, uncompressed and with each of XZ, LZ4 and ZSTD, keyed hash or not,
//! several boots and writers, file sets, filters, a live journald rotated and vacuumed
//! under load, and files damaged on purpose (the native reader must finish without a
//! panic, never read less than libsystemd, and never take unbounded memory).

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use journald_kafka::config;
use journald_kafka::journal::{Entry, Reader};

/// The tests of this file run one at a time: one measures the process's memory, and the
/// others' large journals would be counted in it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Rec {
    cursor: String,
    realtime: u64,
    monotonic: u64,
    boot: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

fn rec(e: &Entry) -> Rec {
    Rec {
        cursor: e.cursor.clone(),
        realtime: e.realtime_usec,
        monotonic: e.monotonic_usec,
        boot: e.boot_id.clone(),
        fields: e.fields().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
    }
}

fn cfg(journal: &str, reader: &str) -> config::Config {
    config::parse(&format!(
        "[journal]\n{journal}\nstart = \"head\"\nreader = \"{reader}\"\n\
         [kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\n[state]\ndirectory = \"/tmp/jk-native-unused\"\n"
    ))
    .unwrap()
}

/// Every entry the reader returns, from the head to the end.
fn read_all(journal: &str, reader: &str) -> (Vec<Rec>, u64) {
    let c = cfg(journal, reader);
    let mut r = Reader::open(&c.journal).unwrap();
    r.seek(&c.journal, None).unwrap();
    let out = rest(&mut r);
    let s = r.stats();
    (out, s.unreadable_entries + s.corrupt_fields)
}

/// Every entry the reader returns from where it stands to the end, for now.
fn rest(r: &mut Reader) -> Vec<Rec> {
    let mut e = Entry::new();
    let mut out = Vec::new();
    while r.next(&mut e).unwrap() {
        out.push(rec(&e));
    }
    out
}

/// Reads `journal` with both readers and requires the same entries in the same order,
/// with the same cursors, timestamps, boots and fields. Returns the number of entries.
fn same(journal: &str) -> usize {
    let (sd, _) = read_all(journal, "libsystemd");
    let (native, skipped) = read_all(journal, "native");
    assert_eq!(
        skipped, 0,
        "the native reader skipped something in an intact journal"
    );
    assert_eq!(native.len(), sd.len(), "entry counts differ for {journal}");
    for (i, (a, b)) in sd.iter().zip(&native).enumerate() {
        assert_eq!(a, b, "entry {i} differs for {journal}");
    }
    assert!(!sd.is_empty());
    sd.len()
}

/// journal-remote with the given environment (compression, compact, keyed hash).
fn remote(dir: &Path, name: &str, export: &[u8], env: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(name);
    let args: Vec<&str> = env
        .iter()
        .filter(|(k, _)| *k == "JK_REMOTE_ARGS")
        .map(|(_, v)| *v)
        .collect();
    let mut child = Command::new("/lib/systemd/systemd-journal-remote")
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg("-")
        .envs(env.iter().filter(|(k, _)| *k != "JK_REMOTE_ARGS").copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote");
    child.stdin.take().unwrap().write_all(export).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn generated(args: &[&str]) -> Vec<u8> {
    let o = Command::new("python3")
        .arg(root().join("tests/tools/gen_export.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout
}

/// Entries with large fields that compress (journald compresses fields above 512 bytes),
/// one of them several MB, and a binary one.
fn large_fields(start_usec: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let size = if i == n / 2 {
            3 << 20
        } else {
            600 + i * 997 % 40_000
        };
        let text: String = (0..size)
            .map(|k| (b'a' + ((k * 7 + i) % 26) as u8) as char)
            .collect();
        out.extend(format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\nMESSAGE=large {i}\nBIG={text}\nBLOB\n",
            start_usec + i as u64,
            1000 + i
        ).as_bytes());
        let blob: Vec<u8> = (0..2000u32).map(|k| (k * 31 + i as u32) as u8).collect();
        out.extend((blob.len() as u64).to_le_bytes());
        out.extend(&blob);
        out.extend(b"\n\n");
    }
    out
}

/// The header's incompatible flags, to prove a case wrote what it claims to test.
fn incompatible(file: &Path) -> u32 {
    let b = std::fs::read(file).unwrap();
    u32::from_le_bytes(b[12..16].try_into().unwrap())
}

/// A journal kind: its name, journal-remote's environment, the header flags it must set
/// and those it must not.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u32, u32);

#[test]
fn regular_and_compact_files_with_each_compression_read_the_same() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-kinds");
    let start = recent_usec(3600);
    let mut export = generated(&[
        "-n",
        "4000",
        "--boots",
        "3",
        "--start-usec",
        &start.to_string(),
    ]);
    export.extend(large_fields(start + 10_000_000_000, 40));
    // (name, environment, flags that must be set, flags that must not)
    // journal-remote 252 compresses with ZSTD or not at all (it ignores
    // SYSTEMD_JOURNAL_COMPRESS); LZ4 and XZ come from journald below.
    let cases: &[Case] = &[
        (
            "plain",
            &[
                ("JK_REMOTE_ARGS", "--compress=no"),
                ("SYSTEMD_JOURNAL_COMPACT", "0"),
            ],
            0,
            0x1b,
        ),
        (
            "zstd-compact",
            &[("SYSTEMD_JOURNAL_COMPACT", "1")],
            0x18,
            0x3,
        ),
        (
            "zstd-regular",
            &[("SYSTEMD_JOURNAL_COMPACT", "0")],
            0x8,
            0x13,
        ),
        (
            "unkeyed-compact",
            &[
                ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
                ("JK_REMOTE_ARGS", "--compress=no"),
            ],
            0x10,
            0xf,
        ),
    ];
    for (name, env, set, unset) in cases {
        let dir = s.path(name);
        let f = remote(&dir, "remote.journal", &export, env);
        let flags = incompatible(&f);
        assert_eq!(flags & set, *set, "{name}: flags {flags:#x}");
        assert_eq!(flags & unset, 0, "{name}: flags {flags:#x}");
        let n = same(&format!("directory = {:?}", dir.to_str().unwrap()));
        assert_eq!(n, 4040, "{name}");
        same(&format!("files = [{:?}]", f.to_str().unwrap()));
    }
}

#[test]
fn many_writers_file_sets_and_filters_read_the_same() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-writers");
    let dir = s.path("j");
    let start = recent_usec(3600);
    let mut files = Vec::new();
    for h in 0..5 {
        let export = generated(&[
            "-n",
            "1500",
            "--boots",
            "2",
            "--seed",
            &h.to_string(),
            "--host",
            &format!("host{h}"),
            "--start-usec",
            &(start + h * 333).to_string(),
        ]);
        files.push(remote(&dir, &format!("host{h}.journal"), &export, &[]));
    }
    // A writer whose files were rotated: journal-remote rotates its output at about 58,000
    // entries, and the files share the writer's sequence-number space.
    let export = generated(&[
        "-n",
        "70000",
        "--seed",
        "9",
        "--host",
        "rot",
        "--msg-len",
        "2",
        "--start-usec",
        &start.to_string(),
    ]);
    remote(&dir.join("sub"), "rot.journal", &export, &[]);
    let rotated = std::fs::read_dir(dir.join("sub")).unwrap().count();
    assert!(
        rotated >= 2,
        "journal-remote did not rotate ({rotated} file)"
    );
    assert_eq!(
        same(&format!("directory = {:?}", dir.to_str().unwrap())),
        5 * 1500 + 70000
    );
    let list: Vec<String> = files
        .iter()
        .map(|f| format!("{:?}", f.to_str().unwrap()))
        .collect();
    same(&format!("files = [{}]", list.join(", ")));
    for filter in [
        "matches = [\"_SYSTEMD_UNIT=nginx.service\"]",
        "matches = [\"_SYSTEMD_UNIT=nginx.service\", \"+\", \"PRIORITY=3\"]\npriority = \"warning\"",
        "identifiers = [\"sshd\", \"kernel\"]",
        "matches = [\"_HOSTNAME=host1\", \"_HOSTNAME=host3\"]",
    ] {
        let n = same(&format!(
            "directory = {:?}\n{filter}",
            dir.to_str().unwrap()
        ));
        assert!(n > 0 && n < 77500, "{filter} selects a part: {n}");
    }
}

/// Seeks: after every 97th cursor both readers continue with the same entry, and a tail
/// start lands on the same place.
#[test]
fn seeking_to_cursors_and_times_lands_on_the_same_entries() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-seek");
    let dir = s.path("j");
    let start = recent_usec(3600);
    for h in 0..3 {
        let export = generated(&[
            "-n",
            "1000",
            "--seed",
            &h.to_string(),
            "--host",
            &format!("h{h}"),
            "--start-usec",
            &(start + h).to_string(),
        ]);
        remote(&dir, &format!("h{h}.journal"), &export, &[]);
    }
    let j = format!("directory = {:?}", dir.to_str().unwrap());
    let (all, _) = read_all(&j, "libsystemd");
    for reader in ["libsystemd", "native"] {
        let c = cfg(&j, reader);
        for (i, at) in all.iter().enumerate().step_by(97) {
            let mut r = Reader::open(&c.journal).unwrap();
            let placed = r.seek(&c.journal, Some(&at.cursor)).unwrap();
            assert!(!placed.is_empty());
            let mut e = Entry::new();
            // The stream of the cursor's writer continues right after it.
            let mut seen = Vec::new();
            while r.next(&mut e).unwrap() {
                seen.push(e.cursor.clone());
            }
            let want_next = all[i + 1..]
                .iter()
                .find(|x| x.cursor[..34] == at.cursor[..34])
                .map(|x| x.cursor.clone());
            assert!(
                !seen.contains(&at.cursor),
                "{reader}: the cursor's own entry is returned again"
            );
            if let Some(w) = want_next {
                assert!(
                    seen.contains(&w),
                    "{reader}: {w} missing after seeking to entry {i}"
                );
            }
        }
    }
    for start in ["tail", "since"] {
        let mut got = Vec::new();
        for reader in ["libsystemd", "native"] {
            let extra = if start == "since" {
                let t = all[all.len() / 2].realtime / 1_000_000;
                let since = jiff::Timestamp::from_second(t as i64).unwrap();
                format!("{j}\nsince = \"{since}\"")
            } else {
                j.clone()
            };
            let text = format!(
                "[journal]\n{extra}\nstart = \"{start}\"\nreader = \"{reader}\"\n[kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\n[state]\ndirectory = \"/tmp/x\"\n"
            );
            let text = if start == "since" {
                text.replace("start = \"since\"\n", "")
            } else {
                text
            };
            let c = config::parse(&text).unwrap();
            let start_cursor = journald_kafka::journal::locate(&c.journal, &all[0].cursor).is_ok();
            assert!(start_cursor);
            let mut r = Reader::open(&c.journal).unwrap();
            r.seek(&c.journal, None).unwrap();
            let mut e = Entry::new();
            let mut n = Vec::new();
            while r.next(&mut e).unwrap() {
                n.push(e.cursor.clone());
            }
            got.push(n);
        }
        assert_eq!(got[0], got[1], "start = {start}");
    }
}

/// A live journald in its own namespace, written to while it rotates: the native reader
/// follows it (waiting on the directory). Inside the third file the reader pauses, the
/// writer finishes and vacuums archived files, the one being read included, and the reader
/// goes on. systemd's vacuum deallocates a file as it deletes it (`unlinkat_deallocate`),
/// so what an open descriptor still sees there may be zeros: those entries are gone for any
/// reader. The native reader must step over them, counted, never return garbage, and go on
/// with every entry still in the files, exactly as libsystemd reads them.
#[test]
fn a_live_journald_rotated_and_vacuumed_under_load_reads_the_same() {
    let _one = one_at_a_time();
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = Scratch::new("native-live");
    let ns = format!("jkn{}", std::process::id() % 100000);
    let jd = Journald::start(&ns, &s.path("journald.log"));
    let c = cfg(&format!("namespace = {ns:?}"), "native");
    let mut r = Reader::open(&c.journal).unwrap();
    r.seek(&c.journal, None).unwrap();
    let total = 6000;
    let paused = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ns, paused, done) = (ns.clone(), paused.clone(), done.clone());
        std::thread::spawn(move || {
            let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
            let to = format!("/run/systemd/journal.{ns}/socket");
            let rotate = || {
                let st = Command::new("journalctl")
                    .args(["--namespace", &ns, "--rotate"])
                    .status()
                    .unwrap();
                assert!(st.success());
            };
            for i in 0..total {
                if i == 5000 {
                    let t = Instant::now();
                    while !paused.load(Ordering::SeqCst) {
                        assert!(
                            t.elapsed() < Duration::from_secs(30),
                            "the reader never reached entry 3100"
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                let msg = format!("MESSAGE=live {i}\nSEQ={i}\nPAD={}\n", "p".repeat(i % 900));
                while sock.send_to(msg.as_bytes(), &to).is_err() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if i % 1500 == 1499 && i < 5000 {
                    rotate();
                }
            }
            // journald writes asynchronously: let it take in the last datagrams first.
            std::thread::sleep(Duration::from_millis(500));
            let st = Command::new("journalctl")
                .args(["--namespace", &ns, "--vacuum-files=1"])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
            done.store(true, Ordering::SeqCst);
        })
    };
    let seq = |r: &Rec| {
        r.fields
            .iter()
            .find(|(n, _)| n == b"SEQ")
            .map(|(_, v)| String::from_utf8_lossy(v).parse::<usize>().unwrap())
    };
    let mut e = Entry::new();
    let mut got: Vec<Rec> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut idle = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "the native reader followed {} entries",
            got.len()
        );
        if r.next(&mut e).unwrap() {
            idle = 0;
            let x = rec(&e);
            if seq(&x) == Some(3100) {
                paused.store(true, Ordering::SeqCst);
                while !done.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "the writer did not finish");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            got.push(x);
            continue;
        }
        // Done once the writer is and nothing came for a second.
        if done.load(Ordering::SeqCst) {
            idle += 1;
            if idle > 5 {
                break;
            }
        }
        r.wait(Duration::from_millis(200)).unwrap();
    }
    writer.join().unwrap();
    let seqs: Vec<usize> = got.iter().filter_map(seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    assert_eq!(
        &seqs[..=3100],
        &(0..=3100).collect::<Vec<_>>()[..],
        "everything read before the vacuum"
    );
    let (left_sd, _) = read_all(&format!("namespace = {ns:?}"), "libsystemd");
    let (left_native, _) = read_all(&format!("namespace = {ns:?}"), "native");
    assert_eq!(left_sd, left_native, "the files left read the same");
    let left: Vec<usize> = left_sd.iter().filter_map(seq).collect();
    assert!(left.contains(&(total - 1)), "the newest file was kept");
    let tail = &got[got.len() - left_sd.len()..];
    assert_eq!(
        tail,
        &left_sd[..],
        "the live read ends with exactly the files left"
    );
    let missing = total - seqs.len();
    let skipped = r.stats().unreadable_entries;
    // Entries the sequence numbers of what was returned pass over: the pipeline reports
    // each such jump as a gap with its size (`pipeline::reader`'s gap check).
    let mut jumped = 0;
    let mut last: Option<(String, u64)> = None;
    for x in &got {
        let (id, n) = journald_kafka::journal::cursor::seqnum(&x.cursor).unwrap();
        if let Some((lid, ln)) = &last {
            if lid == id && n > ln + 1 {
                jumped += n - ln - 1;
            }
        }
        last = Some((id.to_string(), n));
    }
    eprintln!(
        "vacuumed under the reader: {missing} entries gone, {skipped} stepped over as unreadable, {jumped} passed over by the sequence numbers"
    );
    // Whether the vacuum reached the file before the reader did, and whether the reader had
    // read the file's final header before it was zeroed, depends on timing: what is gone is
    // never silent. Each entry stepped over is counted, and every entry gone shows as a jump
    // in the sequence numbers returned (which the agent reports as a gap).
    assert!(
        missing as u64 <= jumped,
        "{missing} entries gone, only {jumped} passed over by the sequence numbers"
    );
    assert!(
        skipped <= jumped,
        "{skipped} counted as stepped over, {jumped} passed over"
    );
    drop(jd);
}

/// Damaged files: bytes flipped, numbers made huge, files cut short. libsystemd and the
/// native reader both read them; the native reader must finish, in bounded time and
/// memory, never panic, and return every entry libsystemd returns (it may return more:
/// libsystemd drops a file at its first bad entry).
#[test]
fn damaged_files_never_panic_and_never_read_less_than_libsystemd() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-fuzz");
    let start = recent_usec(3600);
    let mut export = generated(&[
        "-n",
        "400",
        "--boots",
        "2",
        "--start-usec",
        &start.to_string(),
    ]);
    export.extend(large_fields(start + 1_000_000_000, 6));
    let clean = remote(
        &s.path("clean"),
        "c.journal",
        &export,
        &[("SYSTEMD_JOURNAL_COMPRESS", "ZSTD")],
    );
    let bytes = std::fs::read(&clean).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd);
    let cases = std::env::var("JK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rss0 = rss_anon_kib(std::process::id());
    let mut more = 0;
    for case in 0..cases {
        let mut b = bytes.clone();
        match case % 4 {
            0 => {
                for _ in 0..rng.next(1, 16) {
                    let at = rng.next(0, b.len() as u64) as usize;
                    b[at] ^= rng.next(1, 256) as u8;
                }
            }
            1 => {
                // An 8-byte number (offset, size, count) replaced by a huge or small one.
                let at = (rng.next(0, b.len() as u64 / 8) * 8) as usize;
                let v = [u64::MAX, u64::MAX / 2, 1 << 40, 0, 8, b.len() as u64 - 8]
                    [rng.next(0, 6) as usize];
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            2 => {
                let keep = rng.next(0, b.len() as u64) as usize;
                b.truncate(keep);
            }
            _ => {
                // Inside the header, where every reader looks first.
                for _ in 0..rng.next(1, 4) {
                    let at = rng.next(8, 272) as usize;
                    b[at] = rng.next(0, 256) as u8;
                }
            }
        }
        let f = s.path(&format!("case{}.journal", case % 8));
        std::fs::write(&f, &b).unwrap();
        let j = format!("files = [{:?}]", f.to_str().unwrap());
        let t = Instant::now();
        let native = std::panic::catch_unwind(|| try_read_all(&j, "native"))
            .unwrap_or_else(|_| panic!("case {case}: the native reader panicked"));
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "case {case}: {:?}",
            t.elapsed()
        );
        let sd = try_read_all(&j, "libsystemd");
        if let (Some(sd), Some(native)) = (&sd, &native) {
            let have: std::collections::HashSet<&str> =
                native.iter().map(|n| n.cursor.as_str()).collect();
            for r in sd {
                assert!(
                    have.contains(r.cursor.as_str()),
                    "case {case}: libsystemd read {} and the native reader did not",
                    r.cursor
                );
            }
            more += native.len().saturating_sub(sd.len());
        }
        if sd.is_some() && native.is_none() {
            panic!("case {case}: libsystemd opened the file and the native reader refused it");
        }
    }
    let grew = rss_anon_kib(std::process::id()).saturating_sub(rss0);
    assert!(
        grew < 200 * 1024,
        "anonymous memory grew by {grew} KiB over the damaged files"
    );
    eprintln!(
        "{cases} damaged files: the native reader returned {more} entries more than libsystemd in all; anonymous memory grew by {grew} KiB"
    );
}

fn try_read_all(journal: &str, reader: &str) -> Option<Vec<Rec>> {
    let c = cfg(journal, reader);
    let mut r = Reader::open(&c.journal).ok()?;
    r.seek(&c.journal, None).ok()?;
    let mut e = Entry::new();
    let mut out = Vec::new();
    loop {
        match r.next(&mut e) {
            Ok(true) => out.push(rec(&e)),
            Ok(false) => return Some(out),
            Err(_) => return Some(out),
        }
    }
}

/// A namespace's directory that does not exist when the reader opens (journald starts
/// later, or has not flushed to /var yet), and a file in it caught while it is being written
/// (shorter than its header says): both are picked up once they are complete, without any
/// event but the file growing.
#[test]
fn directories_and_files_that_appear_or_complete_later_are_read() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-later");
    let ns = format!("jkl{}", std::process::id() % 100000);
    let mid = std::fs::read_to_string("/etc/machine-id").unwrap();
    let dir = PathBuf::from(format!("/var/log/journal/{}.{ns}", mid.trim()));
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    // The root is watched, not created: a fresh machine may not have it yet (journald
    // makes it only with persistent storage). Made here if missing, and removed after if
    // this test made it.
    let root = PathBuf::from("/var/log/journal");
    let made_root = !root.is_dir();
    std::fs::create_dir_all(&root).unwrap();
    struct Root(Option<PathBuf>);
    impl Drop for Root {
        fn drop(&mut self) {
            if let Some(r) = &self.0 {
                let _ = std::fs::remove_dir(r);
            }
        }
    }
    let _root = Root(made_root.then(|| root.clone()));
    let _gone = Gone(dir.clone());
    let start = recent_usec(600);
    let export = generated(&["-n", "300", "--start-usec", &start.to_string()]);
    let full = std::fs::read(remote(&s.path("src"), "a.journal", &export, &[])).unwrap();
    let export2 = generated(&[
        "-n",
        "200",
        "--seed",
        "7",
        "--start-usec",
        &(start + 1_000_000).to_string(),
    ]);
    let second = std::fs::read(remote(&s.path("src2"), "b.journal", &export2, &[])).unwrap();

    let c = cfg(&format!("namespace = {ns:?}"), "native");
    let mut r = Reader::open(&c.journal).unwrap();
    r.seek(&c.journal, None).unwrap();
    let mut e = Entry::new();
    assert!(!r.next(&mut e).unwrap(), "nothing yet");
    // The directory appears with one complete file.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("system.journal"), &full).unwrap();
    // And a second file, caught half written.
    let part = dir.join("system@0000-later.journal");
    std::fs::write(&part, &second[..second.len() / 2]).unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut completed = false;
    while got < 500 {
        assert!(Instant::now() < deadline, "read {got} of 500");
        if r.next(&mut e).unwrap() {
            got += 1;
            continue;
        }
        if got == 300 && !completed {
            // The rest of the copy arrives: only the file's own change says so.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .unwrap();
            f.write_all(&second[second.len() / 2..]).unwrap();
            completed = true;
        }
        r.wait(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(got, 500);
    assert!(!r.next(&mut e).unwrap());
}

/// A file rewritten in place (same inode: `cp` or `rsync --inplace` over a journal the agent
/// reads) holds other objects at the offsets the reader cached: what is read after the
/// rewrite must be the new file's entries, never the old file's bytes.
#[test]
fn a_file_rewritten_in_place_is_read_as_it_is_now() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-rewritten");
    let start = recent_usec(3600);
    let make = |n: &str, seed: &str, at: u64| {
        generated(&["-n", n, "--seed", seed, "--start-usec", &at.to_string()])
    };
    let a = remote(&s.path("a"), "a.journal", &make("300", "1", start), &[]);
    let b = remote(
        &s.path("b"),
        "b.journal",
        &make("900", "2", start + 1000),
        &[],
    );
    let x = s.path("x/x.journal");
    std::fs::create_dir_all(x.parent().unwrap()).unwrap();
    std::fs::copy(&a, &x).unwrap();
    let files = |p: &Path| format!("files = [{:?}]", p.to_str().unwrap());
    let c = cfg(&files(&x), "native");
    let mut r = Reader::open(&c.journal).unwrap();
    r.seek(&c.journal, None).unwrap();
    let before = rest(&mut r);
    let (from_a, _) = read_all(&files(&a), "libsystemd");
    assert_eq!(before, from_a);
    let ino = std::fs::metadata(&x).unwrap().ino();
    std::fs::write(&x, std::fs::read(&b).unwrap()).unwrap();
    assert_eq!(
        std::fs::metadata(&x).unwrap().ino(),
        ino,
        "rewritten in place"
    );
    let (from_b, _) = read_all(&files(&b), "libsystemd");
    let mut e = Entry::new();
    let mut after = Vec::new();
    // Until a second passes without an entry once some came (10 s at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut idle = 0;
    while Instant::now() < deadline && (after.is_empty() || idle < 10) {
        if r.next(&mut e).unwrap() {
            after.push(rec(&e));
            idle = 0;
        } else {
            r.wait(Duration::from_millis(100)).unwrap();
            idle += 1;
        }
    }
    eprintln!(
        "rewritten in place: {} entries read before, {} after, of {} in the new file",
        before.len(),
        after.len(),
        from_b.len()
    );
    assert!(!after.is_empty(), "the new entries were never read");
    for x in &after {
        assert!(
            from_b.contains(x),
            "read after the rewrite, and not an entry of the new file: {x:?}"
        );
    }
}

/// A field's bytes that change while the reader reads them (anyone who can write the file
/// can do that to a mapped file) never make a record claim text that is not UTF-8: a
/// MessagePack str must be UTF-8, and strict consumers, the agent's own decoder among
/// them, refuse a record whose str is not. Found by reading (stop 42's review): the
/// mapped path checked a field's bytes for UTF-8 in the file, then copied them.
#[test]
fn a_field_changing_under_the_reader_is_never_shipped_as_false_text() {
    use std::os::unix::fs::FileExt;
    let _one = one_at_a_time();
    let s = Scratch::new("native-changing");
    let start = recent_usec(3600);
    // Uncompressed fields of ~1 KiB, each its own DATA object, most of them inside one page
    // (where the reader checked them in place, then copied them).
    let mut export = Vec::new();
    for i in 0..40u64 {
        let value: String = (0..1000)
            .map(|k| (b'a' + ((k + i as usize) % 26) as u8) as char)
            .collect();
        export.extend(
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\nMESSAGE=m{i}\nBIG={i:04}{value}\n\n",
                start + i,
                1000 + i
            )
            .as_bytes(),
        );
    }
    let f = remote(
        &s.path("j"),
        "remote.journal",
        &export,
        &[("JK_REMOTE_ARGS", "--compress=no")],
    );
    let bytes = std::fs::read(&f).unwrap();
    let flips: Vec<u64> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"BIG=")
        .map(|(at, _)| (at + 4 + 500) as u64)
        .collect();
    assert_eq!(flips.len(), 40, "every BIG= object found in the file");
    // One byte of each value flips between a letter and a byte that is never UTF-8.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, flips) = (stop.clone(), flips.clone());
        let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let b = if n % 2 == 0 { 0xff } else { b'x' };
                for at in &flips {
                    file.write_at(&[b], *at).unwrap();
                }
                n += 1;
            }
        })
    };
    let c = cfg(&format!("files = [{:?}]", f.to_str().unwrap()), "native");
    let mut enc = journald_kafka::format::Encoder::new(&c.encoding, &c.kafka);
    let (mut text, mut binary, mut false_text, mut reads) = (0u64, 0u64, 0u64, 0u64);
    let until = Instant::now() + Duration::from_secs(3);
    let mut e = Entry::new();
    let mut out = Vec::new();
    while Instant::now() < until {
        let mut r = Reader::open(&c.journal).unwrap();
        r.seek(&c.journal, None).unwrap();
        while r.next(&mut e).unwrap() {
            out.clear();
            enc.encode(&e, &mut out);
            let v = rmpv::decode::read_value(&mut &out[..]).expect("a record");
            let rmpv::Value::Map(fields) = v else {
                panic!("a record is a map")
            };
            for (k, v) in &fields {
                if k.as_str() != Some("BIG") {
                    continue;
                }
                match v {
                    rmpv::Value::String(s) if s.as_str().is_some() => text += 1,
                    rmpv::Value::String(_) => false_text += 1,
                    rmpv::Value::Binary(_) => binary += 1,
                    other => panic!("BIG as {other:?}"),
                }
            }
        }
        reads += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    eprintln!(
        "{reads} reads of the file: BIG as text {text}, as binary {binary}, as text that is not UTF-8 {false_text}"
    );
    assert!(
        text > 0 && binary > 0,
        "the flips were not seen: the test did not test"
    );
    assert_eq!(
        false_text, 0,
        "records claimed text for bytes that are not UTF-8"
    );
}

/// A journal-remote file, regular (not compact), of one entry with a large `BIG` field and
/// `fillers` small ones, and a second entry `MESSAGE=after`. Every item of the first entry
/// is then made to point at the `BIG` object (its `=` made an `X` when `no_eq`: not a field).
/// Returns the file and the first entry's number of items.
fn entry_pointing_at_one_object(
    s: &Scratch,
    big_len: usize,
    fillers: usize,
    compress: bool,
    no_eq: bool,
) -> (PathBuf, usize) {
    let start = recent_usec(3600);
    let big = "a".repeat(big_len);
    let mut export = format!(
        "__REALTIME_TIMESTAMP={start}\n__MONOTONIC_TIMESTAMP=1000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\nBIG={big}\n"
    );
    drop(big);
    for k in 0..fillers {
        export.push_str(&format!("FILL_{k:03}=value {k}\n"));
    }
    export.push_str(&format!(
        "\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP=2000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\nMESSAGE=after\n\n",
        start + 1
    ));
    let mut env = vec![("SYSTEMD_JOURNAL_COMPACT", "0")];
    if !compress {
        env.push(("JK_REMOTE_ARGS", "--compress=no"));
    }
    let f = remote(&s.path("j"), "remote.journal", export.as_bytes(), &env);
    drop(export);
    let mut b = std::fs::read(&f).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(incompatible(&f) & 0x10, 0, "regular items");
    let (header, arena) = (u64_at(&b, 88) as usize, u64_at(&b, 96) as usize);
    // (offset, type, flags, size) of every object.
    let mut objects = Vec::new();
    let mut at = header;
    while at + 16 <= (header + arena).min(b.len()) {
        let size = u64_at(&b, at + 8) as usize;
        if size == 0 {
            break;
        }
        objects.push((at, b[at], b[at + 1], size));
        at += size.div_ceil(8) * 8;
    }
    // The one DATA object as large as the field (compressed or not).
    let large: Vec<_> = objects
        .iter()
        .filter(|o| {
            o.1 == 1
                && if compress {
                    o.2 & 7 != 0
                } else {
                    o.2 & 7 == 0 && o.3 > 64 * 1024
                }
        })
        .collect();
    assert_eq!(large.len(), 1, "the one large field");
    let (big_at, size) = (large[0].0, large[0].3);
    if no_eq {
        let payload = &mut b[big_at + 64..big_at + size];
        assert!(payload.starts_with(b"BIG="));
        payload[3] = b'X';
    }
    let big_at = big_at as u64;
    let entry = objects
        .iter()
        .find(|o| {
            o.1 == 3
                && (o.0 + 64..o.0 + o.3)
                    .step_by(16)
                    .any(|i| u64_at(&b, i) == big_at)
        })
        .expect("the entry holding the large field");
    let items = (entry.3 - 64) / 16;
    assert!(items > fillers, "BIG, _BOOT_ID and the fillers: {items}");
    for i in 0..items {
        let at = entry.0 + 64 + 16 * i;
        b[at..at + 8].copy_from_slice(&big_at.to_le_bytes());
    }
    std::fs::write(&f, &b).unwrap();
    (f, items)
}

/// The first entry of `f` through the native reader, the corrupt-field count, and that the
/// entry after it reads as usual.
fn read_hostile_entry(f: &Path) -> (Entry, u64) {
    let c = cfg(&format!("files = [{:?}]", f.to_str().unwrap()), "native");
    let mut r = Reader::open(&c.journal).unwrap();
    r.seek(&c.journal, None).unwrap();
    let mut first = Entry::new();
    assert!(r.next(&mut first).unwrap(), "the hostile entry is read");
    let corrupt = r.stats().corrupt_fields;
    let mut e = Entry::new();
    assert!(r.next(&mut e).unwrap(), "the entry after it is read");
    assert_eq!(e.get(b"MESSAGE"), Some(&b"after"[..]));
    assert!(e.damaged.is_none());
    (first, corrupt)
}

/// An entry whose items point at one large field over and over (a hostile file: a few KiB
/// of ZSTD can claim 768 MiB, and an entry may hold 65,536 items) is read no further than
/// journald's largest entry (770 MiB, `ENTRY_SIZE_MAX`, and 16 MiB for the fields journald
/// adds itself): the rest of its fields are left out unread, counted, and the entry ships
/// marked damaged. Before, it grew until its offsets passed 4 GiB, decompressing the
/// payload once per item. Found by reading (stop 42's review); here 32 items of a 40 MiB
/// field claim 1,280 MiB.
#[test]
fn an_entry_is_never_read_past_journalds_largest() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-entry-limit");
    let (f, items) = entry_pointing_at_one_object(&s, 40 << 20, 30, true, false);
    let (e, corrupt) = read_hostile_entry(&f);
    let read = e.data_len();
    eprintln!(
        "{items} items of a 40 MiB field: {} MiB read, {} fields, damaged: {:?}, {corrupt} fields counted corrupt",
        read >> 20,
        e.len(),
        e.damaged
    );
    assert!(
        read <= 786 << 20,
        "the entry was read to {} MiB, past journald's largest",
        read >> 20
    );
    assert_eq!(e.len(), 19, "as many copies of the field as fit");
    assert!(
        e.damaged
            .as_deref()
            .is_some_and(|w| w.contains("journald's largest entry")),
        "{:?}",
        e.damaged
    );
    assert_eq!(corrupt, (items - 19) as u64);
}

/// The same with an object that is not a field (no `=`): it is read and left out, and was
/// not counted at all, so the items could make the reader copy it once per item without
/// end (1 MiB of items, 65,536 copies of up to 768 MiB). Found by the adversarial review
/// of the bound above. The objects an entry's items point at are now charged as they are
/// read, fields or not; here 201 items of a 64 MiB object claim 12.6 GiB of copying.
#[test]
fn objects_that_are_not_fields_count_toward_an_entrys_work() {
    let _one = one_at_a_time();
    let s = Scratch::new("native-entry-work");
    let (f, items) = entry_pointing_at_one_object(&s, 64 << 20, 199, false, true);
    let started = Instant::now();
    let (e, corrupt) = read_hostile_entry(&f);
    eprintln!(
        "{items} items of a 64 MiB object without '=': {} fields, damaged: {:?}, {corrupt} counted, {:.1} s",
        e.len(),
        e.damaged,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(e.len(), 0, "none of them is a field");
    // 1,572 MiB of work holds 24 reads of 64 MiB; the other items are left out unread.
    assert_eq!(corrupt, (items - 24) as u64, "the items left out unread");
    assert!(
        e.damaged
            .as_deref()
            .is_some_and(|w| w.contains("costs more than any entry journald writes")),
        "{:?}",
        e.damaged
    );
}
