//! `journald-kafka audit`: completeness from Kafka alone, with the agent's progress records.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[test]
fn audit_tells_lost_from_filtered_without_the_host() {
    let f = Fixture::new("audit")
        .broker()
        .topic("au", 2)
        .topic("au-copy", 2)
        .journal(
            "a.journal",
            &["-n", "2000", "--start-usec", &recent_usec(600).to_string()],
        );
    let all = f.entries();
    let cfg = f
        .config("state")
        .topic("au")
        .set("delivery", "progress_interval_ms", 300)
        // Entries whose SEQ ends in 0, 1 or 2: 600 of 2000, dropped by the agent.
        .set("journal", "exclude_matches", vec!["SEQ=*[0-2]"]);
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.wait_cursor(&cursor_of(all.last().unwrap()), Duration::from_secs(60));
    assert!(agent.stop().success());
    let config = agent.config.to_str().unwrap().to_string();

    // A clean run: nothing lost, the filtered ones accounted for.
    let (ok, v, out) = audit_json(Path::new(&config), None);
    assert!(ok, "{out}");
    assert_eq!(v.as_array().unwrap().len(), 1, "{out}");
    let w = &v[0];
    assert_eq!(w["covered"], 2000, "{out}");
    assert_eq!(w["shipped"], 1400, "{out}");
    assert_eq!(w["filtered"], 600, "{out}");
    assert_eq!(w["lost"], 0, "{out}");
    assert_eq!(w["duplicates"], 0, "{out}");
    assert_eq!(w["hosts"][0], "testhost", "{out}");

    // A copy of the topic with 37 entry records left out: exactly those are lost.
    let records = consume_all(&f.broker.addr(), &["au"], 3);
    let progress = records
        .iter()
        .filter(|r| r.headers.contains_key("journal-progress"))
        .count();
    assert!(progress >= 1, "progress records were produced");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", f.broker.addr())
        .create()
        .unwrap();
    let mut left_out = 0;
    for (i, r) in records.iter().enumerate() {
        let entry = !r.headers.contains_key("journal-progress");
        if entry && i % 20 == 7 && left_out < 37 {
            left_out += 1;
            continue;
        }
        let mut h = OwnedHeaders::new();
        for (k, v) in &r.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let mut rec = BaseRecord::to("au-copy")
            .payload(&r.payload)
            .headers(h)
            .partition(r.partition);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(left_out, 37);
    let (ok, v, out) = audit_json(Path::new(&config), Some("au-copy"));
    assert!(!ok, "audit fails when entries are lost: {out}");
    assert_eq!(v[0]["lost"], 37, "{out}");
    assert_eq!(v[0]["filtered"], 600, "{out}");
    let (_, text) = run_cli(&[
        "audit",
        "--config",
        &config,
        "--topic",
        "au-copy",
        "--idle-ms",
        "2000",
    ]);
    assert!(
        text.contains("37 LOST") && text.contains("total lost: 37"),
        "{text}"
    );

    // verify and cat are not confused by progress records.
    let (vst, vout) = run_cli(&["verify", "--config", &config, "--json"]);
    assert!(vst.success(), "{vout}");
    assert!(
        vout.contains("\"entries\":1400")
            && vout.contains("\"lost\":0")
            && vout.contains("\"unmarked\":0"),
        "verify expects only what the filter keeps, and skips progress records: {vout}"
    );
}
