#!/usr/bin/env python3
"""Baseline for benchmarks: what a user might script instead of journald-kafka.

    journalctl -D DIR -o json | json_to_kafka.py BROKER TOPIC

One record per input line, idempotent producer with acks=all (confluent-kafka, which bundles
a librdkafka recent enough for the test broker; Debian's kcat is too old). Prints the count.
"""
import sys
from confluent_kafka import Producer

broker, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "acks": "all",
              "linger.ms": 20, "compression.codec": "lz4", "queue.buffering.max.messages": 500000})
n = 0
for line in sys.stdin.buffer:
    while True:
        try:
            p.produce(topic, line.rstrip(b"\n"))
            break
        except BufferError:
            p.poll(0.05)
    n += 1
    if n % 10000 == 0:
        p.poll(0)
left = p.flush(120)
print(f"{n} records, {left} not delivered")
sys.exit(1 if left else 0)
