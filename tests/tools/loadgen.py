#!/usr/bin/env python3
"""Writes journal entries to a journald socket at a fixed rate, for scripts/bench-live.sh.

loadgen.py SOCKET RATE SECONDS RUN
  SOCKET   journald's native socket (/run/systemd/journal[.NAMESPACE]/socket)
  RATE     entries per second; 0 = as fast as journald takes them
  RUN      a word put in every message, so a run's entries are told from others

Every message carries "seq=N t=USEC" (the send time, microseconds since the epoch): a
consumer reading the records back measures end-to-end latency from it, whatever the
agent's record format. Entries look like a service's log lines (~300 bytes of message,
a few fields of its own; journald adds its trusted fields). Pacing is by elapsed time, so
a slow moment is caught up at once rather than lost. Prints "sent N seconds".
"""
import socket
import sys
import time

sock_path, rate, seconds, run = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(sock_path)
pad = "GET /api/v1/items?page=%d HTTP/1.1 200 bytes=5123 upstream=10.0.0.7:8080 rt=0.004 ua=curl/7.88.1 ref=- " * 2
fixed = b"PRIORITY=6\nSYSLOG_IDENTIFIER=loadgen\nSYSLOG_FACILITY=3\nCODE_FILE=server.c\nCODE_LINE=120\nCODE_FUNC=handle\n"
start = time.time()
end = start + seconds
n = 0
while True:
    now = time.time()
    if now >= end:
        break
    due = int((now - start) * rate) + 1 if rate > 0 else n + 256
    while n < due:
        t = time.time_ns() // 1000
        msg = "MESSAGE=bench-live run=%s seq=%d t=%d %s" % (run, n, t, pad % (n, n))
        s.send(msg.encode() + b"\n" + fixed)
        n += 1
    if rate > 0:
        time.sleep(0.002)
print(n, round(time.time() - start, 3))
