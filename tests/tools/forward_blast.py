#!/usr/bin/env python3
"""A fast Forward-protocol sender for the benchmark (scripts/bench-forward.sh).

Sends PackedForward messages of --batch events, each asking for an ack, keeping at most
--window chunks unacknowledged; the events are encoded once, so the sender costs little
beside the agent. --rate sends that many events per second for --seconds instead of as fast
as acks come back. --direct BROKER produces the same records straight to Kafka with
confluent-kafka instead (the baseline: acks=all, idempotent, lz4), no Forward hop.

Prints one JSON line: events sent and acknowledged (or delivered), seconds, this process's
CPU seconds.
"""
import argparse
import json
import os
import resource
import socket
import sys
import time

import msgpack


def record(i):
    return {
        "host": "bench-host",
        "level": "info",
        "service": "checkout",
        "msg": "GET /api/v1/cart/%06d 200 12ms user-agent=Mozilla/5.0 (X11; Linux x86_64) " % i + "x" * 120,
        "n": i,
    }


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def packed_entries(batch, now):
    t = msgpack.ExtType(0, int(now).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    return b"".join(msgpack.packb([t, record(i)], use_bin_type=True) for i in range(batch))


def forward(a):
    s = socket.create_connection(("127.0.0.1", a.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    entries = packed_entries(a.batch, time.time())
    head = msgpack.packb("bench", use_bin_type=True)
    unpacker = msgpack.Unpacker(raw=False)
    chunks = a.events // a.batch
    sent = acked = 0
    outstanding = 0
    start = time.monotonic()
    c0 = cpu()
    interval = a.batch / a.rate if a.rate else 0
    next_send = start

    def read_acks(block):
        nonlocal acked, outstanding
        s.setblocking(block)
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        finally:
            s.setblocking(True)
        if not data:
            sys.exit("the agent closed the connection")
        unpacker.feed(data)
        for m in unpacker:
            acked += 1
            outstanding -= 1

    entries_bin = msgpack.packb(entries, use_bin_type=True)
    for c in range(chunks):
        if a.rate:
            now = time.monotonic()
            if now < next_send:
                time.sleep(next_send - now)
            next_send += interval
        while outstanding >= a.window:
            read_acks(True)
        opt = msgpack.packb({"chunk": "c%d" % c, "size": a.batch}, use_bin_type=True)
        s.sendall(b"\x93" + head + entries_bin + opt)
        sent += 1
        outstanding += 1
        read_acks(False)
    while outstanding > 0:
        read_acks(True)
    secs = time.monotonic() - start
    return {"events": sent * a.batch, "acked": acked * a.batch, "seconds": round(secs, 3), "cpu": round(cpu() - c0, 3)}


def direct(a):
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": a.direct, "enable.idempotence": True, "acks": "all",
        "compression.codec": "lz4", "linger.ms": 100, "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200000,
    })
    payloads = [msgpack.packb(record(i), use_bin_type=True) for i in range(a.batch)]
    delivered = 0

    def cb(err, _msg):
        nonlocal delivered
        if err is None:
            delivered += 1

    start = time.monotonic()
    c0 = cpu()
    for i in range(a.events):
        while True:
            try:
                p.produce(a.topic, payloads[i % a.batch], headers={"fluent-tag": b"bench"}, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    secs = time.monotonic() - start
    return {"events": a.events, "acked": delivered, "seconds": round(secs, 3), "cpu": round(cpu() - c0, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=24224)
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0)
    ap.add_argument("--seconds", type=float, default=0)
    ap.add_argument("--direct")
    ap.add_argument("--topic", default="fluent")
    a = ap.parse_args()
    if a.rate and a.seconds:
        a.events = int(a.rate * a.seconds)
    print(json.dumps(direct(a) if a.direct else forward(a)))


if __name__ == "__main__":
    main()
