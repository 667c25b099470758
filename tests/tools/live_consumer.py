#!/usr/bin/env python3
"""Reads a topic from its start while a live benchmark runs: which loadgen entries arrived,
and how long after they were sent (scripts/bench-live.sh).

live_consumer.py BROKERS TOPIC RUN STOPFILE
Reads until STOPFILE exists and holds the number of entries sent, then until all of them
were seen or nothing new arrived for 15 s. Prints "sent seen lost p50_ms p99_ms max_ms".
Latency: the record's arrival at this consumer minus the "t=" send time in its message;
it includes journald, the agent, the broker and this consumer's polling (a few ms).
"""
import os
import re
import sys
import time

from confluent_kafka import Consumer, TopicPartition

brokers, topic, run, stopfile = sys.argv[1:5]
c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-live-" + topic,
              "enable.auto.commit": False, "fetch.wait.max.ms": 10,
              "auto.offset.reset": "earliest"})
# The topic may not exist yet: the agent creates it with its first record.
parts = []
while not parts:
    md = c.list_topics(topic, timeout=5)
    t = md.topics.get(topic)
    if t is not None and t.error is None and t.partitions:
        parts = [TopicPartition(topic, p, 0) for p in t.partitions]
    else:
        time.sleep(0.05)
c.assign(parts)
pat = re.compile((r"run=%s seq=(\d+) t=(\d+)" % re.escape(run)).encode())
seen = set()
lat = []
sent = None
last_new = time.time()
while True:
    msgs = c.consume(num_messages=5000, timeout=0.05)
    now_us = time.time_ns() // 1000
    for m in msgs:
        if m.error():
            continue
        v = m.value() or b""
        g = pat.search(v)
        if not g:
            continue
        seq = int(g.group(1))
        if seq in seen:
            continue
        seen.add(seq)
        lat.append((now_us - int(g.group(2))) / 1000.0)
        last_new = time.time()
    if sent is None and os.path.exists(stopfile):
        txt = open(stopfile).read().split()
        if txt:
            sent = int(txt[0])
    if sent is not None and (len(seen) >= sent or time.time() - last_new > 15):
        break
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
fmt = lambda v: "-" if v != v else "%.1f" % v
print(sent, len(seen), sent - len(seen), fmt(q(0.50)), fmt(q(0.99)), fmt(lat[-1] if lat else float("nan")))
