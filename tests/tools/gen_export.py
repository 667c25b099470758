#!/usr/bin/env python3
"""Generate systemd journal *export format* records on stdout.

Feed to:  /lib/systemd/systemd-journal-remote -o DIR/NAME.journal -
  (stdin/file input allows only --split-mode=none, so -o must be a file ending in .journal;
   rotated files appear beside it as NAME@<seqnum_id>-<seqnum>-<realtime>.journal)
Format reference: https://systemd.io/JOURNAL_EXPORT_FORMATS/
  text field:    KEY=value\n              (value has no \n)
  binary field:  KEY\n<u64 LE length><raw bytes>\n
  entry end:     \n  (empty line)

Usage: gen_export.py [-n COUNT] [--seed S] [--start-usec T] [--start-mono M] [--boots B]
                     [--host NAME] [--rate-usec D] [--msg-len L] [--tag T] [--first-seq N]
                     [--binary-every N] [--multiline-every N]
Same --seed => same _BOOT_ID/_MACHINE_ID; to append to a boot, reuse the seed and pass
--start-usec/--start-mono beyond the last entry's timestamps.
"""
import argparse
import random
import struct
import sys
import uuid

UNITS = [
    ("nginx.service", "nginx", "/usr/sbin/nginx"),
    ("sshd.service", "sshd", "/usr/sbin/sshd"),
    ("cron.service", "CRON", "/usr/sbin/cron"),
    ("kafka-agent.service", "kafka-agent", "/usr/bin/kafka-agent"),
    ("postgresql@15-main.service", "postgres", "/usr/lib/postgresql/15/bin/postgres"),
    ("systemd-logind.service", "systemd-logind", "/lib/systemd/systemd-logind"),
    ("docker.service", "dockerd", "/usr/bin/dockerd"),
]
TRANSPORTS = ["stdout", "journal", "syslog"]
WORDS = ("connection accepted from client request completed status ok error "
         "timeout retry upstream backend session opened closed user root "
         "GET POST /api/v1/items latency ms bytes sent received").split()


def bin_field(key: bytes, val: bytes) -> bytes:
    return key + b"\n" + struct.pack("<Q", len(val)) + val + b"\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start-usec", type=int, default=1_700_000_000_000_000)
    ap.add_argument("--rate-usec", type=int, default=1000,
                    help="average usec between entries")
    ap.add_argument("--start-mono", type=int, default=5_000_000,
                    help="__MONOTONIC_TIMESTAMP base (continue a boot: pass last+1)")
    ap.add_argument("--boots", type=int, default=1)
    ap.add_argument("--host", default="testhost")
    ap.add_argument("--machine-id", default=None)
    ap.add_argument("--msg-len", type=int, default=12, help="words per message")
    ap.add_argument("--tag", default="", help="prefix for every MESSAGE")
    ap.add_argument("--first-seq", type=int, default=0, help="SEQ= of first entry")
    ap.add_argument("--binary-every", type=int, default=97,
                    help="every Nth entry carries a binary field (0=never)")
    ap.add_argument("--multiline-every", type=int, default=53,
                    help="every Nth entry has a multi-line MESSAGE (0=never)")
    ap.add_argument("--repeat-every", type=int, default=31,
                    help="every Nth entry carries a field three times (TAG=...) (0=never)")
    a = ap.parse_args()

    rnd = random.Random(a.seed)
    machine_id = a.machine_id or uuid.UUID(int=rnd.getrandbits(128)).hex
    boot_ids = [uuid.UUID(int=rnd.getrandbits(128)).hex for _ in range(a.boots)]
    per_boot = max(1, a.count // a.boots)
    host = a.host.encode()
    out = sys.stdout.buffer
    buf = []
    rt = a.start_usec
    mono = a.start_mono
    pids = {u[0]: rnd.randint(300, 60000) for u in UNITS}
    prev_b = 0
    for i in range(a.count):
        b = min(i // per_boot, a.boots - 1)
        if b != prev_b:
            mono = a.start_mono  # new boot: monotonic clock restarts
            prev_b = b
        step = rnd.randint(1, 2 * a.rate_usec)
        rt += step
        mono += step
        unit, ident, exe = UNITS[rnd.randrange(len(UNITS))]
        prio = rnd.choices("3456", weights=(1, 3, 10, 30))[0]
        transport = TRANSPORTS[rnd.randrange(3)]
        words = " ".join(rnd.choice(WORDS) for _ in range(a.msg_len))
        seq = a.first_seq + i
        msg = ("%s%s #%d %s" % (a.tag, ident, seq, words)).encode()
        parts = [
            b"__REALTIME_TIMESTAMP=%d\n" % rt,
            b"__MONOTONIC_TIMESTAMP=%d\n" % mono,
            b"_BOOT_ID=%s\n" % boot_ids[b].encode(),
        ]
        if a.multiline_every and i % a.multiline_every == 0:
            msg += b"\n  at frame one\n  at frame two\n\ttrailing line"
            parts.append(bin_field(b"MESSAGE", msg))
        else:
            parts.append(b"MESSAGE=" + msg + b"\n")
        parts += [
            b"PRIORITY=" + prio.encode() + b"\n",
            b"SYSLOG_FACILITY=3\n",
            b"SYSLOG_IDENTIFIER=" + ident.encode() + b"\n",
            b"_PID=%d\n" % pids[unit],
            b"_UID=0\n_GID=0\n",
            b"_COMM=" + ident.encode() + b"\n",
            b"_EXE=" + exe.encode() + b"\n",
            b"_SYSTEMD_UNIT=" + unit.encode() + b"\n",
            b"_SYSTEMD_CGROUP=/system.slice/" + unit.encode() + b"\n",
            b"_TRANSPORT=" + transport.encode() + b"\n",
            b"_HOSTNAME=" + host + b"\n",
            b"_MACHINE_ID=" + machine_id.encode() + b"\n",
            b"_SOURCE_REALTIME_TIMESTAMP=%d\n" % (rt - 7),
            b"SEQ=%d\n" % seq,
        ]
        if a.repeat_every and i % a.repeat_every == 0:
            # A field given several times: journald keeps every value.
            parts += [b"TAG=alpha\n", b"TAG=beta\n", bin_field(b"TAG", b"g\xffmma")]
        if a.binary_every and i % a.binary_every == 0:
            parts.append(bin_field(b"BINARY_BLOB",
                                   bytes([0, 1, 2, 0xff, 0xfe]) + rnd.randbytes(11)))
        parts.append(b"\n")
        buf.append(b"".join(parts))
        if len(buf) >= 4096:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.flush()


if __name__ == "__main__":
    main()
