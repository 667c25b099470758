#!/usr/bin/env bash
# Throughput, CPU and memory of journald-kafka beside the raw read ceiling and a baseline,
# on the same journal, in one invocation. Prints medians of several repetitions.
#   scripts/bench.sh                 1,000,000 entries, 3 repetitions
#   scripts/bench.sh --quick         20,000 entries, 1 repetition (CI: proves it runs, asserts no timing)
#   BENCH_ENTRIES=N BENCH_REPS=R scripts/bench.sh
#   BENCH_RUNS="scan agent" scripts/bench.sh     only some of the runs (also: libsystemd, otlp, filter90,
#                                                baseline, kcat, rsyslog, syslog-ng, fluent-bit; the
#                                                peers are not in the default set: they install
#                                                Debian packages, and fluent-bit is built from its
#                                                source, FLUENT_BIT_SRC, by scripts/fluent-bit.sh)
#   BENCH_PROPS='"linger.ms" = 5' scripts/bench.sh   producer properties for the agent (TOML lines)
#   BENCH_CONFIG=$'[pipeline]\nmax_in_flight_bytes = 8388608' scripts/bench.sh   other agent settings
#   BENCH_AB="before=/tmp/jk-old after=target/release/journald-kafka" BENCH_RUNS=ab scripts/bench.sh
#                                    the agent run for several builds, interleaved in each
#                                    repetition (before/after figures of one change, one run);
#                                    name=path%file also appends the lines of file to that build's
#                                    config, under [kafka.properties] unless they open a section (a sweep of settings in one run)
# The journal is generated once with systemd-journal-remote and cached in $BENCH_CACHE.
# The broker (fresh for every run) is noida-db by default: Debian's kcat and rsyslog link
# librdkafka 2.0.2, which cannot talk to Nisshi, and every contender must use the same
# broker. BENCH_BROKER=nisshi uses Nisshi with in-memory storage instead (the baselines
# that cannot reach it are then reported as not run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ENTRIES=${BENCH_ENTRIES:-1000000}; REPS=${BENCH_REPS:-3}
if [ "${1:-}" = "--quick" ]; then ENTRIES=${BENCH_ENTRIES:-20000}; REPS=${BENCH_REPS:-1}; fi
CACHE=${BENCH_CACHE:-$HOME/.cache/journald-kafka-bench}
WORK=$(mktemp -d /tmp/jk-bench.XXXXXX)
PORT=${BENCH_PORT:-29192}
BROKER=${BENCH_BROKER:-noida}
. "$ROOT/scripts/bench-lib.sh"
cleanup() { stop_broker; rm -rf "$WORK"; }
trap cleanup EXIT

scripts/install-deps.sh >/dev/null
command -v /usr/bin/time >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq time >/dev/null; }
cargo build --release --quiet --bin journald-kafka --example raw_scan
BIN=$ROOT/target/release/journald-kafka
SCAN=$ROOT/target/release/examples/raw_scan

bench_journal "$ENTRIES"
N=$("$SCAN" "$JDIR" | awk '{print $1}')

# Each run appends "seconds cpu_seconds peak_rss_kib anon_rss_kib" to its results file.
run_scan() {
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/t" "$SCAN" "$JDIR" >/dev/null
  read -r e u s m < "$WORK/t"
  echo "$e $(echo "$u + $s" | bc) $m -" >> "$WORK/scan"
}

run_agent() { # repetition [results name] [journal settings]
  local out=${2:-agent}
  local state=$WORK/state-$out-$1 cfg=$WORK/$out-$1.toml
  cat > "$cfg" <<TOML
[journal]
directory = "$JDIR"
${3:-}
[kafka]
brokers = "127.0.0.1:$PORT"
topic = "bench"
[state]
directory = "$state"
checkpoint_interval_ms = 50
${BENCH_CONFIG:-}
[log]
target = "stderr"
[kafka.properties]
${BENCH_PROPS:-}
$( [ -n "${AGENT_EXTRA:-}" ] && cat "$AGENT_EXTRA")
TOML
  local start end pid anon=0 a bpid b0
  bpid=$(cat "$broker_dir/broker.pid"); b0=$(proc_cpu "/proc/$bpid/stat")
  start=$(date +%s.%N)
  "${AGENT_BIN:-$BIN}" run --config "$cfg" 2>"$WORK/agent-$1.log" & pid=$!
  while [ "$(cat "$state/cursor" 2>/dev/null)" != "$LAST" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/agent-$1.log" >&2; exit 1; }
    a=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${a:-0}" -gt "$anon" ] && anon=$a
    sleep 0.05
  done
  end=$(date +%s.%N)
  local cpu hwm
  cpu=$(proc_cpu "/proc/$pid/stat")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  # Where the CPU went: the reader thread, librdkafka's broker threads (compression,
  # requests), the delivery-report thread, and the broker process on the same cores.
  local reader=0 ship=0 rdk=0 poll=0 t c
  for t in /proc/"$pid"/task/*; do
    c=$(proc_cpu "$t/stat")
    case "$(cat "$t/comm")" in
      journal-reader) reader=$(echo "$reader + $c" | bc) ;;
      shipper) ship=$(echo "$ship + $c" | bc) ;;
      rdk:*) rdk=$(echo "$rdk + $c" | bc) ;;
      producer*) poll=$(echo "$poll + $c" | bc) ;;
    esac
  done
  local broker; broker=$(echo "$(proc_cpu "/proc/$bpid/stat") - $b0" | bc)
  kill -TERM "$pid"; wait "$pid"
  echo "$(echo "$end - $start" | bc) $cpu $hwm $anon $reader $rdk $poll $broker $ship" >> "$WORK/$out"
}

run_baseline() {
  if ! python3 -c 'import confluent_kafka' 2>/dev/null; then
    python3 -m pip install -q confluent-kafka >/dev/null 2>&1 || { echo "baseline skipped: cannot install confluent-kafka from PyPI" >&2; return; }
  fi
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/t" sh -c \
    "journalctl -D '$JDIR' -o json --no-pager | python3 '$ROOT/tests/tools/json_to_kafka.py' 127.0.0.1:$PORT bench-baseline >/dev/null"
  read -r e u s m < "$WORK/t"
  echo "$e $(echo "$u + $s" | bc) $m -" >> "$WORK/baseline"
}

# What a user might pipe together from Debian's packages: kcat with the same guarantees.
run_kcat() {
  [ "$BROKER" = nisshi ] && return
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/t" sh -c \
    "journalctl -D '$JDIR' -o json --no-pager | kcat -P -b 127.0.0.1:$PORT -t bench-kcat -z lz4 -X enable.idempotence=true -X acks=all -X linger.ms=20"
  read -r e u s m < "$WORK/t"
  echo "$e $(echo "$u + $s" | bc) $m -" >> "$WORK/kcat"
}

# Records in a topic: the sum of its partitions' high watermarks (confluent-kafka).
topic_count() {
  python3 - "127.0.0.1:$PORT" "$1" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "bench-count"})
md = c.list_topics(sys.argv[2], timeout=10)
t = md.topics.get(sys.argv[2])
n = 0
if t is not None and t.error is None:
    for p in t.partitions:
        n += c.get_watermark_offsets(TopicPartition(sys.argv[2], p), timeout=10)[1]
print(n)
PY
}

# A peer agent (rsyslog, syslog-ng) reading the benchmark journal as "the local journal"
# (scripts/run-in-journal-ns.sh) into topic $2, with the same guarantees where it allows
# them (idempotence, acks=all, lz4). Runs until its topic holds N records or nothing more
# arrived for 20 s: a peer that loses entries is reported with its completeness, not hidden.
# Appends "seconds cpu hwm anon - - - broker - records".
run_peer() { # name topic command...
  local name=$1 topic=$2; shift 2
  local bpid b0 start pid anon=0 a n=0 prev=-1 still=0 end
  bpid=$(cat "$broker_dir/broker.pid"); b0=$(proc_cpu "/proc/$bpid/stat")
  start=$(date +%s.%N)
  if [ -n "${RUN_PEER_DIRECT:-}" ]; then
    "$@" >"$WORK/$name.log" 2>&1 & pid=$!
  else
    "$ROOT/scripts/run-in-journal-ns.sh" "$JDIR" "$@" >"$WORK/$name.log" 2>&1 & pid=$!
  fi
  sleep 0.5
  # The namespace wrapper execs the agent: the PID is the agent's.
  while :; do
    kill -0 "$pid" 2>/dev/null || { echo "$name exited:" >&2; tail -20 "$WORK/$name.log" >&2; return; }
    a=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${a:-0}" -gt "$anon" ] && anon=$a
    n=$(topic_count "$topic" 2>/dev/null || echo 0)
    [ "$n" -ge "$N" ] && break
    if [ "$n" = "$prev" ]; then still=$((still + 1)); else still=0; fi
    [ "$still" -ge 40 ] && break
    prev=$n
    sleep 0.5
  done
  end=$(date +%s.%N)
  [ "$still" -ge 40 ] && end=$(echo "$end - 20" | bc)
  local cpu hwm broker
  cpu=$(proc_cpu "/proc/$pid/stat"); hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  broker=$(echo "$(proc_cpu "/proc/$bpid/stat") - $b0" | bc)
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  echo "$(echo "$end - $start" | bc) $cpu $hwm $anon - - - $broker - $n" >> "$WORK/$name"
}

# fluent-bit reads the directory itself (no namespace trick): systemd input -> kafka output,
# MessagePack, with idempotence and acks=all like the agent. Built once from its source.
run_fluentbit() {
  local fb d=$WORK/fluent-bit-$1
  fb=$("$ROOT/scripts/fluent-bit.sh") || { echo "fluent-bit skipped: no build and no FLUENT_BIT_SRC" >&2; return 0; }
  mkdir -p "$d"
  RUN_PEER_DIRECT=1 run_peer fluent-bit bench-fluentbit "$fb" -q -i systemd -p path="$JDIR" -p db="$d/fb.db" \
    -p read_from_tail=off -p max_entries=5000 -o kafka -p brokers="127.0.0.1:$PORT" -p topics=bench-fluentbit \
    -p format=msgpack -p match='*' -p rdkafka.compression.codec=lz4 -p rdkafka.enable.idempotence=true \
    -p rdkafka.acks=all
}

run_rsyslog() {
  ensure_rsyslog || return 0
  local d=$WORK/rsyslog-$1; mkdir -p "$d"
  rsyslog_conf "$d" bench-rsyslog
  run_peer rsyslog bench-rsyslog rsyslogd -n -f "$d/rsyslog.conf" -i "$d/pid"
}

run_syslogng() {
  ensure_syslogng || return 0
  local d=$WORK/syslog-ng-$1; mkdir -p "$d"
  syslogng_conf "$d" bench-syslogng
  # shellcheck disable=SC2046
  run_peer syslog-ng bench-syslogng $(syslogng_cmd "$d")
}

# BENCH_RUNS picks a subset while iterating on one of them (e.g. "scan agent").
RUNS=${BENCH_RUNS:-scan agent libsystemd otlp filter90 baseline kcat}
want() { case " $RUNS " in *" $1 "*) return 0 ;; esac; return 1; }
for r in $(seq 1 "$REPS"); do
  echo "repetition $r/$REPS" >&2
  if want scan; then run_scan; fi
  if want agent; then fresh_broker "a$r"; run_agent "$r"; fi
  # The same agent reading through libsystemd instead of its own reader (the default).
  if want libsystemd; then fresh_broker "l$r"; run_agent "$r" libsystemd 'reader = "libsystemd"'; fi
  # The agent's own filter dropping 9 of 10 entries (SEQ ends in 0-8): it must cost no
  # more per entry read than shipping everything.
  # The same entries as OTLP protobuf instead of MessagePack: what the format costs.
  if want otlp; then fresh_broker "o$r"; run_agent "$r" otlp $'[encoding]\nformat = "otlp"'; fi
  if want filter90; then fresh_broker "f$r"; run_agent "$r" filter90 'exclude_matches = ["SEQ=*[0-8]"]'; fi
  if want baseline; then fresh_broker "b$r"; run_baseline; fi
  if want kcat; then fresh_broker "c$r"; run_kcat; fi
  if want rsyslog; then fresh_broker "r$r"; run_rsyslog "$r"; fi
  if want syslog-ng; then fresh_broker "s$r"; run_syslogng "$r"; fi
  if want fluent-bit; then fresh_broker "fb$r"; run_fluentbit "$r"; fi
  if want ab; then
    for ab in ${BENCH_AB:-}; do
      spec=${ab#*=}; extra=; case $spec in *%*) extra=${spec#*%}; spec=${spec%%%*} ;; esac
      fresh_broker "ab$r"; AGENT_BIN=$spec AGENT_EXTRA=$extra run_agent "$r" "ab-${ab%%=*}"
    done
  fi
done

row() { # name file
  local secs cpu hwm anon
  secs=$(median "$2" 1); cpu=$(median "$2" 2); hwm=$(median "$2" 3); anon=$(median "$2" 4)
  if [ "$secs" = "-" ]; then printf "%-34s %12s\n" "$1" "(not run)"; return; fi
  printf "%-34s %12.0f %14.2f %13.1f %13s\n" "$1" "$(echo "$N / $secs" | bc -l)" "$(echo "$cpu * 1000000 / $N" | bc -l)" \
    "$(echo "$hwm / 1024" | bc -l)" "$( [ "$anon" = "-" ] && echo - || printf "%.1f" "$(echo "$anon / 1024" | bc -l)")"
}
echo
echo "journald-kafka benchmark: $N entries, $REPS repetition(s), medians; broker $BROKER on 127.0.0.1; $(nproc) cores, $(uname -r)"
printf "%-34s %12s %14s %13s %13s\n" "run" "entries/s" "CPU s / 1M" "peak RSS MiB" "anon RSS MiB"
row "raw sd-journal scan (ceiling)" "$WORK/scan"
row "journald-kafka -> Kafka" "$WORK/agent"
row "journald-kafka, libsystemd reader" "$WORK/libsystemd"
row "journald-kafka, OTLP records" "$WORK/otlp"
row "journald-kafka, filter drops 90%" "$WORK/filter90"
row "journalctl -o json | producer.py" "$WORK/baseline"
row "journalctl -o json | kcat -P" "$WORK/kcat"
row "rsyslog imjournal -> omkafka" "$WORK/rsyslog"
row "syslog-ng systemd-journal -> kafka-c" "$WORK/syslog-ng"
row "fluent-bit systemd -> kafka" "$WORK/fluent-bit"
for ab in ${BENCH_AB:-}; do
  f=$WORK/ab-${ab%%=*}
  [ -f "$f" ] || continue
  row "agent build '${ab%%=*}'" "$f"
  per() { printf "%.2f" "$(echo "$(median "$f" "$1") * 1000000 / $N" | bc -l)"; }
  echo "    CPU s / 1M: reader $(per 5), shipping $(per 9), librdkafka broker threads $(per 6), delivery reports $(per 7)"
done
for peer in rsyslog syslog-ng fluent-bit; do
  if [ -f "$WORK/$peer" ]; then
    printf "%s completeness: %s of %s entries in Kafka (median)\n" "$peer" "$(median "$WORK/$peer" 10)" "$N"
  fi
done
rate() { [ -f "$1" ] && echo "$N / $(median "$1" 1)" | bc -l || echo 0; }
a=$(rate "$WORK/agent"); c=$(rate "$WORK/scan"); b=$(rate "$WORK/baseline"); k=$(rate "$WORK/kcat")
if [ -f "$WORK/agent" ]; then
  per() { printf "%.2f" "$(echo "$(median "$WORK/agent" "$1") * 1000000 / $N" | bc -l)"; }
  echo "CPU s / 1M entries during the journald-kafka run: reader thread $(per 5), shipping thread $(per 9), librdkafka broker threads $(per 6), delivery-report thread $(per 7); the broker process $(per 8)"
fi
if [ -f "$WORK/libsystemd" ]; then
  per() { printf "%.2f" "$(echo "$(median "$WORK/libsystemd" "$1") * 1000000 / $N" | bc -l)"; }
  echo "CPU s / 1M entries with the libsystemd reader: reader thread $(per 5), shipping thread $(per 9), librdkafka broker threads $(per 6), delivery-report thread $(per 7)"
fi
if [ -f "$WORK/otlp" ]; then
  per() { printf "%.2f" "$(echo "$(median "$WORK/otlp" "$1") * 1000000 / $N" | bc -l)"; }
  echo "CPU s / 1M entries with OTLP records: reader thread $(per 5), shipping thread (encodes) $(per 9), librdkafka broker threads $(per 6), delivery-report thread $(per 7)"
fi
[ "$c" != "0" ] && [ "$a" != "0" ] && printf "journald-kafka / ceiling:  %.0f%%\n" "$(echo "100 * $a / $c" | bc -l)"
[ "$b" != "0" ] && printf "journald-kafka / producer.py baseline: %.1fx\n" "$(echo "$a / $b" | bc -l)"
[ "$k" != "0" ] && printf "journald-kafka / kcat baseline: %.1fx\n" "$(echo "$a / $k" | bc -l)"
exit 0
