#!/usr/bin/env bash
# The cost of exactly-once against at-least-once, on the same journal and the same broker
# (noida-db: the broker here that has transactions), in one invocation. Prints medians.
#   scripts/bench-delivery.sh            200,000 entries, 3 repetitions
#   scripts/bench-delivery.sh --quick    20,000 entries, 1 repetition
#   BENCH_ENTRIES=N BENCH_REPS=R scripts/bench-delivery.sh
#   BENCH_CONFIG='transaction_max_ms = 5000' scripts/bench-delivery.sh   (lines for [delivery])
# Two figures per mode:
#   bulk     shipping the whole journal: entries/s and agent CPU seconds per 1M entries;
#   latency  the agent idle and following a live directory, a burst of 1,000 entries is
#            written at T0; T1 is when a read_committed consumer has seen all of them.
#            In exactly-once mode records become visible only when their transaction
#            commits, so this is where delivery.transaction_max_ms shows. The consumer
#            polls with fetch.wait.max.ms=10 so its own long poll is not measured.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ENTRIES=${BENCH_ENTRIES:-200000}; REPS=${BENCH_REPS:-3}
if [ "${1:-}" = "--quick" ]; then ENTRIES=${BENCH_ENTRIES:-20000}; REPS=${BENCH_REPS:-1}; fi
CACHE=${BENCH_CACHE:-$HOME/.cache/journald-kafka-bench}
WORK=$(mktemp -d /tmp/jk-bench-delivery.XXXXXX)
PORT=${BENCH_PORT:-29292}
BROKER=noida
. "$ROOT/scripts/bench-lib.sh"
cleanup() { stop_broker; rm -rf "$WORK"; }
trap cleanup EXIT

scripts/install-deps.sh >/dev/null
cargo build --release --quiet --bin journald-kafka
BIN=$ROOT/target/release/journald-kafka

bench_journal "$ENTRIES"

config() { # mode dir state topic
  cat <<TOML
[journal]
directory = "$2"
[kafka]
brokers = "127.0.0.1:$PORT"
topic = "$4"
[state]
directory = "$3"
checkpoint_interval_ms = 50
[delivery]
mode = "$1"
transactional_id = "bench-$4"
${BENCH_CONFIG:-}
[log]
target = "stderr"
TOML
}

# Appends "seconds cpu_seconds" to $WORK/bulk-<mode>.
bulk() { # mode rep
  local state=$WORK/state-$1-$2 cfg=$WORK/bulk-$1-$2.toml log=$WORK/bulk-$1-$2.log
  config "$1" "$JDIR" "$state" "bulk$2$1" > "$cfg"
  local start end pid
  start=$(date +%s.%N)
  "$BIN" run --config "$cfg" 2>"$log" & pid=$!
  # In exactly-once mode the cursor file is a cache written after each commit.
  while [ "$(cat "$state/cursor" 2>/dev/null)" != "$LAST" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.05
  done
  end=$(date +%s.%N)
  local cpu; cpu=$(proc_cpu "/proc/$pid/stat")
  kill -TERM "$pid"; wait "$pid"
  echo "$(echo "$end - $start" | bc) $cpu" >> "$WORK/bulk-$1"
}

# Appends the burst's time to visibility, in ms, to $WORK/latency-<mode>. A warm-up entry
# first creates the topic (and, in exactly-once mode, adds its partition to transactions);
# the consumer is connected before T0, so neither its start nor topic creation is timed.
latency() { # mode rep
  local dir=$WORK/live-$1-$2 state=$WORK/lstate-$1-$2 cfg=$WORK/lat-$1-$2.toml log=$WORK/lat-$1-$2.log topic="lat$2${1//-/}"
  mkdir -p "$dir"
  config "$1" "$dir" "$state" "$topic" > "$cfg"
  local now; now=$(( $(date +%s) * 1000000 ))
  python3 tests/tools/gen_export.py -n 1 --start-usec $(( now - 120000000 )) > "$WORK/warm.export"
  python3 tests/tools/gen_export.py -n 1000 --msg-len 40 --start-usec $(( now - 60000000 )) --start-mono 100000000000 --seed 2 > "$WORK/burst.export"
  local pid; "$BIN" run --config "$cfg" 2>"$log" & pid=$!
  until grep -q "ready:" "$log"; do kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }; sleep 0.05; done
  /lib/systemd/systemd-journal-remote -o "$dir/warm.journal" "$WORK/warm.export" 2>/dev/null
  timeout 60 kcat -C -q -b "127.0.0.1:$PORT" -t "$topic" -o beginning -c 1 -X isolation.level=read_committed -f '.' >/dev/null
  kcat -C -q -b "127.0.0.1:$PORT" -t "$topic" -o beginning -c 1001 \
    -X isolation.level=read_committed -X fetch.wait.max.ms=10 -f '.' >/dev/null & local kc=$!
  sleep 1
  local t0 t1
  t0=$(date +%s%N)
  /lib/systemd/systemd-journal-remote -o "$dir/burst.journal" "$WORK/burst.export" 2>/dev/null
  wait "$kc"
  t1=$(date +%s%N)
  kill -TERM "$pid"; wait "$pid"
  echo "$(( (t1 - t0) / 1000000 ))" >> "$WORK/latency-$1"
}

for r in $(seq 1 "$REPS"); do
  echo "repetition $r/$REPS" >&2
  fresh_broker "$r"
  for mode in at-least-once exactly-once; do
    bulk "$mode" "$r"
    latency "$mode" "$r"
  done
done

N=$ENTRIES
echo
echo "delivery modes: $N entries, $REPS repetition(s), medians; broker noida-db on 127.0.0.1; $(nproc) cores, $(uname -r)"
printf "%-16s %12s %14s %28s\n" "mode" "entries/s" "CPU s / 1M" "1,000-entry burst visible ms"
for mode in at-least-once exactly-once; do
  secs=$(median "$WORK/bulk-$mode" 1); cpu=$(median "$WORK/bulk-$mode" 2); lat=$(median "$WORK/latency-$mode" 1)
  printf "%-16s %12.0f %14.2f %28s\n" "$mode" "$(echo "$N / $secs" | bc -l)" "$(echo "$cpu * 1000000 / $N" | bc -l)" "$lat"
done
