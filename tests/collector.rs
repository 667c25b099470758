//! A central `systemd-journal-remote` collector with hundreds or thousands of hosts
//! (issue 31): descriptors that grow with what is being read now, not with the directory.
//!
//! `JK_COLLECTOR_HOSTS` sets the number of hosts (600 by default, the reproduction;
//! `scripts/test.sh --full` runs 2,000). Journal files are written by
//! `systemd-journal-remote` itself; their preallocated 8 MiB are punched back to holes
//! (`fallocate --dig-holes`) so that thousands of hosts fit on a CI disk.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Entries each host holds at first, and the rotated hosts' second file.
const FIRST: u64 = 40;
const AFTER_ROTATION: u64 = 10;
/// Hosts that send more while the agent follows, and how much each.
const FOLLOWING_HOSTS: u64 = 200;
const FOLLOWING: u64 = 100;

fn export(host: u64, from: u64, n: u64, start: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..from + n {
        out.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n_HOSTNAME=host-{host}\nMESSAGE=line {i} of host {host}\n\n",
                start + i,
                1_000_000 + i
            )
            .as_bytes(),
        );
    }
    out
}

fn live_file(dir: &Path, host: u64) -> std::path::PathBuf {
    dir.join(format!("remote-host-{host}.journal"))
}

/// Rotates a host's file the way journald and journal-remote do: the file is archived
/// under its `@` name and a new one continues its sequence-number space (the writer's
/// "template": same `seqnum_id`, sequence numbers going on). journal-remote only rotates
/// at a size no test can afford, so the new file's header gets the two template fields
/// written before its first entry.
fn rotate(dir: &Path, host: u64) {
    let live = live_file(dir, host);
    let header = std::fs::read(&live).unwrap();
    let seqnum_id: [u8; 16] = header[72..88].try_into().unwrap();
    let tail = u64::from_le_bytes(header[160..168].try_into().unwrap());
    let archived = dir.join(format!(
        "remote-host-{host}@{}-{:016x}-{:016x}.journal",
        seqnum_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        1,
        recent_usec(0)
    ));
    std::fs::rename(&live, &archived).unwrap();
    write_export(dir, live.file_name().unwrap().to_str().unwrap(), b"");
    let f = std::fs::OpenOptions::new().write(true).open(&live).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&seqnum_id, 72).unwrap();
    f.write_all_at(&tail.to_le_bytes(), 160).unwrap();
    drop(f);
}

fn dig_holes(dir: &Path) {
    let (ok, out) = run_command({
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg("for f in \"$1\"/*.journal; do fallocate --dig-holes \"$f\" || exit 1; done")
            .arg("sh")
            .arg(dir);
        c
    });
    assert!(ok.success(), "fallocate --dig-holes: {out}");
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Issue 31: a collector directory of many hosts (every 25th rotated: two files in one
/// sequence-number space), the agent under a hard open-file limit of 1,024. Every entry is
/// shipped; then 200 hosts send 100 more entries each while it follows, all shipped; then a
/// restart ships nothing twice. Before: "cannot watch the journal for changes:
/// sd_journal_get_fd: Too many open files" at start, nothing shipped (the directory needed
/// about two descriptors per file).
#[test]
fn a_collector_of_many_hosts_ships_everything_under_a_low_open_file_limit() {
    let hosts: u64 = std::env::var("JK_COLLECTOR_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let f = Fixture::new("collector").broker().topic("journal", 1);
    let t = Instant::now();
    let start = recent_usec(3600);
    let mut rotated = 0;
    for h in 0..hosts {
        let base = start + h * 1000;
        write_export(
            &f.jdir,
            &format!("remote-host-{h}.journal"),
            &export(h, 0, FIRST, base),
        );
        if h % 25 == 0 {
            rotate(&f.jdir, h);
            write_export(
                &f.jdir,
                &format!("remote-host-{h}.journal"),
                &export(h, FIRST, AFTER_ROTATION, base),
            );
            rotated += 1;
        }
    }
    dig_holes(&f.jdir);
    let files = std::fs::read_dir(&f.jdir).unwrap().count();
    let first = hosts * FIRST + rotated * AFTER_ROTATION;
    eprintln!(
        "[collector] {hosts} hosts, {files} files ({rotated} hosts rotated), {first} entries written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // The rotated hosts' two files are one writer each.
    let writers: BTreeSet<String> = f
        .entries()
        .iter()
        .map(|f| cursor_of(f).split(';').next().unwrap().to_string())
        .collect();
    assert_eq!(
        writers.len() as u64,
        hosts,
        "one sequence-number space per host"
    );

    let cfg = f.config("state");
    let mut agent = Agent::start_with_nofile(&f.s.path("agent"), &cfg, "1024:1024");
    let pid = agent.child.id();
    let peak_fds = Arc::new(AtomicU64::new(0));
    let peak_anon = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak_fds, peak_anon, stop) = (peak_fds.clone(), peak_anon.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_fds.fetch_max(open_fds(pid), Ordering::Relaxed);
                if let Some(kib) = try_rss_anon_kib(pid) {
                    peak_anon.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let wait_for = |agent: &mut Agent, want: u64, what: &str| -> (Duration, Duration) {
        let t = Instant::now();
        let mut first = None;
        let until = t + Duration::from_secs(240);
        loop {
            let got = consume_all(&f.broker.addr(), &["journal"], 1).len() as u64;
            if got > 0 && first.is_none() {
                first = Some(t.elapsed());
            }
            if got >= want {
                return (first.unwrap_or_default(), t.elapsed());
            }
            assert!(
                agent.child.try_wait().unwrap().is_none() && Instant::now() < until,
                "{what}: {got} of {want} shipped: {}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let (to_first, to_all) = wait_for(&mut agent, first, "the directory");
    let fds_first = peak_fds.load(Ordering::Relaxed);
    eprintln!(
        "[collector] shipped {first} in {:.1}s (first record after {:.1}s of polling); peak open files {fds_first}, peak anonymous memory {} KiB",
        to_all.as_secs_f64(),
        to_first.as_secs_f64(),
        peak_anon.load(Ordering::Relaxed)
    );

    // 200 hosts (spread over the directory) send more while the agent follows.
    let t = Instant::now();
    let step = (hosts / FOLLOWING_HOSTS).max(1);
    let following: Vec<u64> = (0..hosts)
        .step_by(step as usize)
        .take(FOLLOWING_HOSTS as usize)
        .collect();
    for &h in &following {
        let from = if h % 25 == 0 {
            FIRST + AFTER_ROTATION
        } else {
            FIRST
        };
        write_export(
            &f.jdir,
            &format!("remote-host-{h}.journal"),
            &export(h, from, FOLLOWING, recent_usec(60)),
        );
    }
    let total = first + following.len() as u64 * FOLLOWING;
    let (_, followed) = wait_for(&mut agent, total, "following");
    eprintln!(
        "[collector] {} more entries from {} hosts: written and shipped within {:.1}s (the last {:.1}s waiting for the broker to show them)",
        following.len() as u64 * FOLLOWING,
        following.len(),
        t.elapsed().as_secs_f64(),
        followed.as_secs_f64()
    );
    let log = agent.log();
    assert!(agent.stop().success(), "{log}");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let place = std::fs::metadata(cfg.state().join("cursor")).unwrap().len();
    let saved = agent.cursor().unwrap_or_default().lines().count();
    eprintln!(
        "[collector] peak open files {} (limit 1024), peak anonymous memory {} KiB, saved place {place} bytes for {saved} writers",
        peak_fds.load(Ordering::Relaxed),
        peak_anon.load(Ordering::Relaxed)
    );
    assert!(
        peak_fds.load(Ordering::Relaxed) < 1024,
        "the agent stayed under its limit"
    );
    assert!(!log.contains("Too many open files"), "{log}");
    assert_eq!(saved as u64, hosts, "one saved position per host");

    // A restart ships nothing twice; then ten hosts are removed from the directory (the
    // collector's retention) and their positions are forgotten, not carried for ever.
    let mut agent = Agent::start_with_nofile(&f.s.path("agent2"), &cfg, "1024:1024");
    std::thread::sleep(Duration::from_secs(5));
    let got = consume_all(&f.broker.addr(), &["journal"], 2).len() as u64;
    assert_eq!(
        got,
        total,
        "nothing shipped twice after a restart: {}",
        agent.log()
    );
    let (lost, dups, _, records) = verify(agent.config.as_path());
    assert_eq!((lost, dups, records), (0, 0, total));
    for h in 1..=10 {
        std::fs::remove_file(live_file(&f.jdir, h)).unwrap();
    }
    // The reader notices at its next gauge pass (every 10 s); a new entry makes the
    // checkpoint that leaves them out.
    let until = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    loop {
        write_export(
            &f.jdir,
            "remote-host-11.journal",
            &export(11, FIRST + sent, 1, recent_usec(1)),
        );
        sent += 1;
        std::thread::sleep(Duration::from_secs(2));
        let saved = agent.cursor().unwrap_or_default().lines().count() as u64;
        if saved == hosts - 10 {
            break;
        }
        assert!(
            Instant::now() < until,
            "{saved} positions saved for {} hosts: {}",
            hosts - 10,
            agent.log()
        );
    }
    let log = agent.log();
    assert!(agent.stop().success(), "{log}");
    assert!(log.contains("its saved position is forgotten"), "{log}");
    let got = consume_all(&f.broker.addr(), &["journal"], 2).len() as u64;
    assert_eq!(got, total + sent);
    // `status` counts every writer from the files' headers and finds none behind; a host
    // the saved place does not know yet counts with all its entries.
    let behind = |config: &Path| {
        let (_, out) = run_cli(&["status", "--json", "--config", config.to_str().unwrap()]);
        let json: serde_json::Value =
            serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}: {out}"));
        let n = |k: &str| json[k].as_u64();
        ((n("writers"), n("writers_behind"), n("lag_entries")), out)
    };
    let (got, out) = behind(&agent.config);
    assert_eq!(got, (Some(hosts - 10), Some(0), Some(0)), "{out}");
    write_export(
        &f.jdir,
        "remote-host-new.journal",
        &export(hosts, 0, 7, recent_usec(1)),
    );
    let (got, out) = behind(&agent.config);
    assert_eq!(got, (Some(hosts - 9), Some(1), Some(7)), "{out}");
    // `check` under the same limit opens the source the way `run` does, and says how many
    // files it holds against the limit.
    let (st, out) = run_command({
        let mut c = std::process::Command::new("prlimit");
        c.args(["--nofile=1024:1024", BIN, "check", "--config"])
            .arg(&agent.config);
        c
    });
    assert!(
        st.success()
            && out.contains("ok    open files: the source has")
            && out.contains("at most 512 of them open"),
        "{out}"
    );
}
