//! The place as the agent's own transactional offsets (KIP-98, KIP-447): committed inside
//! the transaction that carries the entries, as offset metadata of a consumer group that
//! belongs to this agent alone (its transactional id), on the partitions of the cursor
//! topic. Restore is one stable `OffsetFetch` of that group: the broker holds it back only
//! for this group's own pending commit (aborted by `init_transactions` before we ask),
//! never for another producer's open transaction, and its cost does not grow with the
//! fleet.
//!
//! A partition's metadata holds at most `delivery.place_metadata_bytes` (the broker's
//! `offset.metadata.max.bytes`, 4,096 by default), so a place of many writers is spread
//! over several partitions: chunk `i` of `n` is `jk1 i/n` on its first line, then whole
//! positions, one per line. Every chunk of one commit carries the same offset (the
//! commit's generation); a restore takes chunks `0..n` of partition 0's generation, or
//! nothing.
//!
//! Whoever may commit offsets for this group can write here: what is read is data. It must
//! never panic on it, never allocate what it claims, and never return a place whose chunks
//! disagree or whose positions are not journal cursors.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::{Offset, TopicPartitionList};

use crate::checkpoint::place;
use crate::config::KafkaConfig;
use crate::kafka::client::{AuthContext, connection_config, give_token};

/// The first line of every chunk names the layout, so that a future one is told apart.
const LAYOUT: &str = "jk1";

/// What a chunk's first line may take: the layout, a space, `i/n` with up to ten digits
/// each, the newline (measured generously).
const HEADER_ROOM: usize = LAYOUT.len() + 1 + 2 * 10 + 2;

/// `place` cut into chunks of at most `limit` bytes each, whole positions only.
pub(crate) fn split(place: &str, limit: usize) -> Result<Vec<String>, String> {
    let room = limit.saturating_sub(HEADER_ROOM);
    let mut bodies: Vec<String> = vec![String::new()];
    for p in place::positions(place) {
        if p.len() + 1 > room {
            return Err(format!(
                "a position of {} bytes does not fit in offset metadata of {limit} bytes",
                p.len()
            ));
        }
        let last = bodies.last_mut().expect("never empty");
        if !last.is_empty() && last.len() + 1 + p.len() > room {
            bodies.push(String::new());
        }
        let last = bodies.last_mut().expect("never empty");
        if !last.is_empty() {
            last.push('\n');
        }
        last.push_str(p);
    }
    let n = bodies.len();
    Ok(bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| format!("{LAYOUT} {i}/{n}\n{b}"))
        .collect())
}

/// What one partition holds for the group: its offset and metadata, or why it could not
/// be read (which matters only if the place uses that partition).
pub(crate) type Chunk = Result<(Option<i64>, Option<String>), String>;

/// The place the chunks of partitions `0..` make, or `None` when partition 0 holds none.
/// `chunks[i]` is partition `i`'s; `Err` names what is wrong.
pub(crate) fn join(chunks: &[Chunk]) -> Result<Option<(i64, String)>, String> {
    let first = match chunks.first() {
        None => return Ok(None),
        Some(Err(e)) => return Err(e.clone()),
        Some(Ok(c)) => c,
    };
    let (Some(generation), first) = first else {
        return Ok(None);
    };
    let header = |i: usize, text: &Option<String>| -> Result<(usize, String), String> {
        let text = text
            .as_deref()
            .ok_or_else(|| format!("partition {i}: no metadata"))?;
        let (head, body) = text.split_once('\n').unwrap_or((text, ""));
        let (layout, count) = head
            .split_once(' ')
            .ok_or_else(|| format!("partition {i}: not a place chunk"))?;
        let (at, n) = count
            .split_once('/')
            .ok_or_else(|| format!("partition {i}: not a place chunk"))?;
        let (at, n): (usize, usize) = match (at.parse(), n.parse()) {
            (Ok(a), Ok(n)) => (a, n),
            _ => return Err(format!("partition {i}: not a place chunk")),
        };
        if layout != LAYOUT {
            return Err(format!("partition {i}: unknown layout {layout:?}"));
        }
        if at != i {
            return Err(format!("partition {i} holds chunk {at}"));
        }
        Ok((n, body.to_string()))
    };
    let (n, body) = header(0, first)?;
    if n == 0 || n > chunks.len() {
        return Err(format!(
            "partition 0 says the place has {n} chunks; the topic has {} partitions",
            chunks.len()
        ));
    }
    let mut bodies = vec![body];
    for (i, chunk) in chunks.iter().enumerate().take(n).skip(1) {
        let (offset, text) = chunk.as_ref().map_err(String::clone)?;
        if *offset != Some(*generation) {
            return Err(format!(
                "partition {i} holds generation {offset:?}, partition 0 generation {generation}"
            ));
        }
        let (count, body) = header(i, text)?;
        if count != n {
            return Err(format!(
                "partition {i} is chunk of {count}, partition 0 of {n}"
            ));
        }
        bodies.push(body);
    }
    Ok(Some((
        *generation,
        place::join(bodies.iter().flat_map(|b| place::positions(b))),
    )))
}

/// What one commit's offsets may weigh in all: the group coordinator writes them as one
/// batch, which the brokers' `message.max.bytes` (~1 MB by default) bounds.
pub(crate) const MAX_COMMIT_BYTES: usize = 900_000;

/// About how many bytes a journal cursor takes (`s=`, `b=` and `x=` are fixed-width; the
/// numbers vary a little).
const CURSOR_BYTES: usize = 128;

/// About how many writers' positions `partitions` partitions of `limit` bytes of metadata
/// each can hold.
pub(crate) fn capacity(partitions: usize, limit: usize) -> usize {
    let room = limit.saturating_sub(HEADER_ROOM);
    partitions * (room / (CURSOR_BYTES + 1))
}

/// The consumer that speaks for this agent's group: its metadata goes with each commit,
/// and it fetches the committed offsets (stable: `read_committed`).
pub(crate) fn group_consumer(k: &KafkaConfig, group: &str) -> Result<BaseConsumer<AuthContext>> {
    let mut config = connection_config(k);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer<AuthContext> = config
        .create_with_context(AuthContext)
        .context("cannot create the consumer of the agent's offsets group")?;
    give_token(consumer.client(), &config)?;
    Ok(consumer)
}

/// The group's metadata for `send_offsets_to_transaction`.
pub(crate) fn group_metadata(
    consumer: &BaseConsumer<AuthContext>,
) -> Result<ConsumerGroupMetadata> {
    consumer
        .group_metadata()
        .ok_or_else(|| anyhow!("the offsets consumer has no group metadata"))
}

/// The partitions `topic` has (the chunks a place may use).
pub(crate) fn partition_count(
    consumer: &BaseConsumer<AuthContext>,
    topic: &str,
    timeout: Duration,
) -> Result<usize> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot read metadata of the cursor topic {topic:?}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        bail!("the brokers did not return metadata for the cursor topic {topic:?}");
    };
    if let Some(e) = t.error() {
        bail!(
            "cursor topic {topic:?}: {}",
            rdkafka::types::RDKafkaErrorCode::from(e)
        );
    }
    if t.partitions().is_empty() {
        bail!("cursor topic {topic:?} has no partitions");
    }
    Ok(t.partitions().len())
}

/// The offsets (with metadata) that commit `chunks` as generation `generation`.
pub(crate) fn offsets(
    topic: &str,
    generation: i64,
    chunks: &[String],
) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (i, c) in chunks.iter().enumerate() {
        let mut e = tpl.add_partition(topic, i as i32);
        e.set_offset(Offset::Offset(generation))
            .context("cannot set an offset")?;
        e.set_metadata(c);
    }
    Ok(tpl)
}

/// What the group committed on partitions `0..partitions` of `topic` (stable).
pub(crate) fn fetch(
    consumer: &BaseConsumer<AuthContext>,
    topic: &str,
    partitions: usize,
    timeout: Duration,
) -> Result<Vec<Chunk>> {
    let mut tpl = TopicPartitionList::new();
    for i in 0..partitions {
        tpl.add_partition(topic, i as i32);
    }
    let got = consumer
        .committed_offsets(tpl, timeout)
        .context("cannot fetch the agent's committed offsets")?;
    let mut out: Vec<Chunk> = vec![Ok((None, None)); partitions];
    for e in got.elements_for_topic(topic) {
        let p = e.partition();
        let Some(slot) = usize::try_from(p).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        if let Err(err) = e.error() {
            *slot = Err(format!("partition {p}: {err}"));
            continue;
        }
        let offset = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        // rdkafka panics on metadata that is not UTF-8, and anyone who may commit for this
        // group can write it: read it inside a guard and take a panic for invalid data.
        let metadata =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metadata().to_string()));
        *slot = match metadata {
            Ok(m) => Ok((offset, Some(m).filter(|m| !m.is_empty()))),
            Err(_) => Err(format!("partition {p}: offset metadata that is not UTF-8")),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(i: usize) -> String {
        format!(
            "s={i:032x};i={i:x};b=1e2feb89414c343c1027c4d1c386bbc4;m=21495f1;t=661b4cc4b18fe;x=fbd30ee98aea80b7"
        )
    }

    fn place_of(n: usize) -> String {
        place::join(
            (0..n)
                .map(cursor)
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        )
    }

    fn round_trip(place: &str, limit: usize) -> (usize, String) {
        let chunks = split(place, limit).unwrap();
        assert!(chunks.iter().all(|c| c.len() <= limit), "{chunks:?}");
        let read: Vec<Chunk> = chunks
            .iter()
            .map(|c| Ok((Some(7), Some(c.clone()))))
            .collect();
        let (generation, back) = join(&read).unwrap().unwrap();
        assert_eq!(generation, 7);
        (chunks.len(), back)
    }

    #[test]
    fn a_place_of_many_writers_is_spread_and_read_back_whole() {
        for n in [1, 2, 30, 31, 500, 2000] {
            let place = place_of(n);
            let (chunks, back) = round_trip(&place, 4096);
            assert_eq!(back, place, "{n} writers");
            // A cursor is at most ~128 bytes: at least 31 fit in 4,096 bytes of metadata.
            assert!(chunks <= n.div_ceil(31), "{n} writers in {chunks} chunks");
        }
        assert_eq!(round_trip("", 4096), (1, String::new()));
    }

    #[test]
    fn chunks_that_disagree_are_refused_not_joined() {
        let chunks = split(&place_of(100), 4096).unwrap();
        let chunk = |g: i64, c: &str| -> Chunk { Ok((Some(g), Some(c.to_string()))) };
        let mut read: Vec<Chunk> = chunks.iter().map(|c| chunk(3, c)).collect();
        assert!(join(&read).is_ok());
        // Another generation in a later partition (a commit of fewer chunks left it, or
        // someone wrote it).
        read[2] = chunk(2, &chunks[2]);
        assert!(join(&read).unwrap_err().contains("generation"));
        read[2] = chunk(3, &chunks[2]);
        read.swap(1, 2);
        assert!(join(&read).unwrap_err().contains("holds chunk"));
        read.swap(1, 2);
        // A partition the place uses could not be read (not UTF-8, an error): refused; one
        // beyond the place's chunks does not matter.
        let n = chunks.len();
        read[1] = Err("partition 1: offset metadata that is not UTF-8".into());
        assert!(join(&read).unwrap_err().contains("UTF-8"));
        read[1] = chunk(3, &chunks[1]);
        read.push(Err("partition 9: not authorized".into()));
        assert!(join(&read).is_ok(), "{n} chunks, an error beyond them");
        // Partition 0 claims more chunks than there are partitions.
        assert!(join(&[chunk(1, "jk1 0/9999999999\n")]).is_err());
        for junk in ["", "x", "jk1 0", "jk9 0/1\n", "jk1 a/b\n"] {
            assert!(join(&[chunk(1, junk)]).is_err(), "{junk:?}");
        }
        // Nothing committed on partition 0: no place, whatever the others say.
        assert_eq!(join(&[Ok((None, None)), chunk(1, "jk1 1/2\n")]), Ok(None));
        assert_eq!(join(&[]), Ok(None));
    }

    #[test]
    fn stale_chunks_beyond_the_count_are_ignored() {
        let big = split(&place_of(100), 4096).unwrap();
        let small = split(&place_of(3), 4096).unwrap();
        let mut read: Vec<Chunk> = big.iter().map(|c| Ok((Some(1), Some(c.clone())))).collect();
        read[0] = Ok((Some(2), Some(small[0].clone())));
        assert_eq!(join(&read).unwrap().unwrap().1, place_of(3));
    }

    #[test]
    fn capacity_is_what_split_fits() {
        // A single host's place fits one partition; the default topic holds ~2,000 writers.
        assert_eq!(capacity(1, 4096), 31);
        assert_eq!(capacity(64, 4096), 1984);
        let place = place_of(capacity(64, 4096));
        assert!(split(&place, 4096).unwrap().len() <= 64);
    }

    #[test]
    fn a_position_larger_than_the_metadata_is_refused() {
        assert!(split(&"x".repeat(5000), 4096).is_err());
    }
}
