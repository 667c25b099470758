#!/usr/bin/env bash
# Live load: what each agent costs while it follows a real systemd-journald fed at fixed
# rates, the measure fleets care about (an agent runs on machines doing real work).
#   scripts/bench-live.sh            rates idle 1000 10000 30000 max, 20 s each, journald-kafka,
#                                    rsyslog (imjournal -> omkafka), syslog-ng (systemd-journal -> kafka-c)
#   scripts/bench-live.sh --quick    journald-kafka only, 1000 and 10000 entries/s, 5 s (CI: proves
#                                    the harness runs; prints figures, asserts nothing about speed)
#   LIVE_RATES="10000" LIVE_SECONDS=30 LIVE_REPS=3 LIVE_AGENTS="agent rsyslog" scripts/bench-live.sh
#   LIVE_AB="before=/tmp/jk-old after=target/release/journald-kafka" LIVE_AGENTS= scripts/bench-live.sh
#                                    journald-kafka builds side by side (before/after one change);
#                                    name=path%READER also sets journal.reader (libsystemd, native)
#   LIVE_PERF=DIR ...                also records a perf profile of each agent during the load
#                                    (DIR/AGENT-RATE-REP.data; perf report -i ... --sort comm,sym)
# For every agent and rate: a fresh journald namespace instance (rate limit off, persistent
# storage) and a fresh broker (noida-db, which the peers' librdkafka 2.0.2 can talk to); the
# agent starts first and follows the namespace (the peers read it as "the local journal"
# through scripts/run-in-journal-ns.sh); tests/tools/loadgen.py writes entries at the rate
# ("max": as fast as journald takes them; "idle": nothing, what an agent costs on a quiet host) while tests/tools/live_consumer.py reads the topic.
# Reported: the rate journald took, the agent's CPU as % of one core over the load (user +
# system, all threads), its largest anonymous RSS, latency p50/p99 from send to the record
# being read back from Kafka, and entries lost (sent, and never seen in Kafka after 15 s of
# quiet). journald's own CPU is printed for context. Medians over LIVE_REPS repetitions.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATES=${LIVE_RATES:-idle 1000 10000 30000 max}; SECS=${LIVE_SECONDS:-20}; REPS=${LIVE_REPS:-1}
AGENTS=${LIVE_AGENTS-agent rsyslog syslog-ng}
if [ "${1:-}" = "--quick" ]; then
  RATES=${LIVE_RATES:-idle 1000 10000}; SECS=${LIVE_SECONDS:-5}; AGENTS=${LIVE_AGENTS-agent}
fi
CACHE=${BENCH_CACHE:-$HOME/.cache/journald-kafka-bench}
WORK=$(mktemp -d /tmp/jk-live.XXXXXX)
PORT=${LIVE_PORT:-29400}
BROKER=noida
NS=jkbenchlive
MID=$(tr -d '\n' < /etc/machine-id)
. "$ROOT/scripts/bench-lib.sh"

jd_pid=""; keep_pid=""; agent_pid=""; cons_pid=""; samp_pid=""
stop_pid() { if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; fi; }
stop_journald() {
  stop_pid "$keep_pid"; keep_pid=""
  stop_pid "$jd_pid"; jd_pid=""
  rm -rf "/var/log/journal/$MID.$NS" "/run/log/journal/$MID.$NS" "/run/systemd/journal.$NS"
}
cleanup() {
  stop_pid "$samp_pid"; stop_pid "$cons_pid"; stop_pid "$agent_pid"; stop_journald; stop_broker
  rm -f "/etc/systemd/journald@$NS.conf"; rm -rf "$WORK"
}
trap cleanup EXIT

scripts/install-deps.sh >/dev/null
python3 -c 'import confluent_kafka' 2>/dev/null || python3 -m pip install -q confluent-kafka >/dev/null
cargo build --release --quiet --bin journald-kafka
BIN=$ROOT/target/release/journald-kafka

# Rate limiting off (it would drop the load), persistent storage, room for the longest run.
mkdir -p /etc/systemd /run/systemd/journal /var/log/journal
cat > "/etc/systemd/journald@$NS.conf" <<CONF
[Journal]
Storage=persistent
RateLimitIntervalSec=0
SystemMaxUse=8G
CONF

start_journald() {
  stop_journald
  SYSTEMD_LOG_TARGET=console setsid /lib/systemd/systemd-journald "$NS" >"$WORK/journald.log" 2>&1 & jd_pid=$!
  for _ in $(seq 1 200); do [ -S "/run/systemd/journal.$NS/stdout" ] && break; sleep 0.05; done
  # journald ends an idle namespace after ~30 s without a client: hold a stream open.
  python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(86400)' \
    "/run/systemd/journal.$NS/stdout" & keep_pid=$!
  for _ in $(seq 1 200); do [ -d "/var/log/journal/$MID.$NS" ] && break; sleep 0.05; done
}

start_agent() { # name topic
  local d=$WORK/$1 bin=$BIN reader=; mkdir -p "$d"
  case $1 in
    ab-*) for ab in ${LIVE_AB:-}; do [ "ab-${ab%%=*}" = "$1" ] && bin=${ab#*=}; done ;;
  esac
  case $bin in *%*) reader="reader = \"${bin#*%}\""; bin=${bin%%%*} ;; esac
  case $1 in
    agent|ab-*)
      cat > "$d/agent.toml" <<TOML
[journal]
namespace = "$NS"
$reader
[kafka]
brokers = "127.0.0.1:$PORT"
topic = "$2"
[state]
directory = "$d/state"
[log]
target = "stderr"
TOML
      "$bin" run --config "$d/agent.toml" 2>"$d/log" & agent_pid=$! ;;
    rsyslog)
      ensure_rsyslog || return 1
      rsyslog_conf "$d" "$2"
      "$ROOT/scripts/run-in-journal-ns.sh" "/var/log/journal/$MID.$NS" rsyslogd -n -f "$d/rsyslog.conf" -i "$d/pid" >"$d/log" 2>&1 & agent_pid=$! ;;
    syslog-ng)
      ensure_syslogng || return 1
      syslogng_conf "$d" "$2"
      # shellcheck disable=SC2046
      "$ROOT/scripts/run-in-journal-ns.sh" "/var/log/journal/$MID.$NS" $(syslogng_cmd "$d") >"$d/log" 2>&1 & agent_pid=$! ;;
  esac
}

# Largest RssAnon of $1 while it lives, into file $2 (KiB).
sample_anon() {
  local max=0 a
  while kill -0 "$1" 2>/dev/null; do
    a=$(awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
    [ "${a:-0}" -gt "$max" ] && { max=$a; echo "$max" > "$2"; }
    sleep 0.2
  done
}

# One agent at one rate; appends "rate_taken cpu_pct anon_kib p50 p99 lost journald_pct sent".
run_one() { # agent rate rep
  local name=$1 rate=$2 topic=live-$1 r=${2/max/0}
  [ "$rate" = idle ] && r=0
  fresh_broker "$1-$2-$3"
  start_journald
  start_agent "$name" "$topic" || { stop_journald; return 0; }
  sleep 0.5
  sample_anon "$agent_pid" "$WORK/anon" & samp_pid=$!
  rm -f "$WORK/stop"
  python3 "$ROOT/tests/tools/live_consumer.py" "127.0.0.1:$PORT" "$topic" "$3$2" "$WORK/stop" > "$WORK/consumer.out" 2>"$WORK/consumer.err" & cons_pid=$!
  sleep 2
  kill -0 "$agent_pid" 2>/dev/null || { echo "$name exited:" >&2; tail -20 "$WORK/$name/log" >&2; return 1; }
  local c0 j0 t0 t1 c1 j1 sent took
  c0=$(proc_cpu "/proc/$agent_pid/stat"); j0=$(proc_cpu "/proc/$jd_pid/stat"); t0=$(date +%s.%N)
  local perf_pid=""
  if [ -n "${LIVE_PERF:-}" ]; then
    mkdir -p "$LIVE_PERF"; perf record -F 999 -g -p "$agent_pid" -o "$LIVE_PERF/$1-$2-$3.data" >/dev/null 2>&1 & perf_pid=$!
  fi
  if [ "$rate" = idle ]; then
    sleep "$SECS"; sent=0; took=$SECS
  else
    read -r sent took < <(python3 "$ROOT/tests/tools/loadgen.py" "/run/systemd/journal.$NS/socket" "$r" "$SECS" "$3$2")
  fi
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  t1=$(date +%s.%N)
  c1=$(proc_cpu "/proc/$agent_pid/stat"); j1=$(proc_cpu "/proc/$jd_pid/stat")
  echo "$sent" > "$WORK/stop"
  wait "$cons_pid" || true; cons_pid=""
  local csent seen lost p50 p99 mx
  read -r csent seen lost p50 p99 mx < "$WORK/consumer.out" || { echo "consumer failed:" >&2; cat "$WORK/consumer.err" >&2; return 1; }
  stop_pid "$agent_pid"; agent_pid=""; wait "$samp_pid" 2>/dev/null || true; samp_pid=""
  local dt; dt=$(echo "$t1 - $t0" | bc -l)
  printf "%.0f %.1f %s %s %s %s %.1f %s\n" "$(echo "$sent / $took" | bc -l)" "$(echo "100 * ($c1 - $c0) / $dt" | bc -l)" \
    "$(cat "$WORK/anon" 2>/dev/null || echo 0)" "$p50" "$p99" "$lost" "$(echo "100 * ($j1 - $j0) / $dt" | bc -l)" "$sent" >> "$WORK/res-$name-$rate"
  stop_journald
}

for ab in ${LIVE_AB:-}; do AGENTS="$AGENTS ab-${ab%%=*}"; done
for rep in $(seq 1 "$REPS"); do
  for rate in $RATES; do
    for a in $AGENTS; do
      echo "repetition $rep/$REPS: $a at $rate entries/s for $SECS s" >&2
      run_one "$a" "$rate" "$rep"
    done
  done
done

label() { case $1 in agent) echo "journald-kafka" ;; ab-*) echo "journald-kafka '${1#ab-}'" ;; rsyslog) echo "rsyslog imjournal->omkafka" ;; syslog-ng) echo "syslog-ng journal->kafka-c" ;; esac; }
echo
echo "live benchmark: journald namespace instance, noida-db on 127.0.0.1, $SECS s per rate, $REPS repetition(s), medians; $(nproc) cores, $(uname -r)"
printf "%-28s %8s %10s %8s %10s %9s %9s %7s %11s\n" agent rate "taken/s" "CPU %" "anon MiB" "p50 ms" "p99 ms" lost "journald %"
for rate in $RATES; do
  for a in $AGENTS; do
    f=$WORK/res-$a-$rate
    [ -f "$f" ] || { printf "%-28s %8s %10s\n" "$(label "$a")" "$rate" "(not run)"; continue; }
    printf "%-28s %8s %10s %8s %10.1f %9s %9s %7s %11s\n" "$(label "$a")" "$rate" "$(median "$f" 1)" "$(median "$f" 2)" \
      "$(echo "$(median "$f" 3) / 1024" | bc -l)" "$(median "$f" 4)" "$(median "$f" 5)" "$(median "$f" 6)" "$(median "$f" 7)"
  done
done
for rate in $RATES; do
  a=$WORK/res-agent-$rate
  [ -f "$a" ] || continue
  for peer in rsyslog syslog-ng; do
    p=$WORK/res-$peer-$rate
    [ -f "$p" ] || continue
    printf "at %s entries/s journald-kafka uses %.0f%% of %s's CPU\n" "$rate" "$(echo "100 * $(median "$a" 2) / $(median "$p" 2)" | bc -l)" "$peer"
  done
done
exit 0
