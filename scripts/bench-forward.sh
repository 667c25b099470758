#!/usr/bin/env bash
# The Forward input's throughput and cost, beside a baseline in the same run.
#   scripts/bench-forward.sh           200,000 events per run, 3 runs (medians), and 15 s at 10,000 events/s
#   FWD_BIN=/tmp/jk-old scripts/bench-forward.sh   another build of the agent (a before/after pair)
#   scripts/bench-forward.sh --quick   20,000 events, 1 run, 3 s at 10,000/s (CI: proves the harness
#                                      runs; prints figures, asserts nothing about speed)
# Rows, each against a fresh noida-db (in memory, so the broker is not the bottleneck):
#   forward (fast client)   PackedForward chunks of 1,000 events with acks, 8 chunks in flight,
#                           from tests/tools/forward_blast.py (events encoded once: the client costs little)
#   forward (@fluent-org)   the real npm client, PackedForward with acks (its own CPU is the limit)
#   direct (baseline)       the same records produced straight to Kafka by confluent-kafka
#                           (acks=all, idempotent, lz4): what the Forward hop adds
#   forward at 10,000/s     CPU % of one core, the measure kafka-connect-fluentd's benchmark used
# Each run starts with 10,000 events not counted (topic creation, first metadata).
# Reported: events/s (acknowledged), the agent's CPU seconds per 1M events, the client's
# CPU, the agent's anonymous RSS, and the broker's CPU seconds for the run (it shares the
# 2 cores: what it takes caps every row). Seed figures (quoted, not measured here):
# kafka-connect-fluentd 50,000 events/s and fluent-plugin-kafka 20,000 events/s on 2 vCPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${FWD_EVENTS:-200000}; REPS=${FWD_REPS:-3}; SECS=${FWD_SECONDS:-15}
if [ "${1:-}" = "--quick" ]; then N=${FWD_EVENTS:-20000}; REPS=1; SECS=3; fi
CACHE=${BENCH_CACHE:-$HOME/.cache/journald-kafka-bench}
WORK=$(mktemp -d /tmp/jk-fwd.XXXXXX)
PORT=${FWD_PORT:-29600}
BROKER=noida
. "$ROOT/scripts/bench-lib.sh"
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then kill -TERM "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; fi
  stop_broker; rm -rf "$WORK"
}
trap cleanup EXIT

scripts/install-deps.sh >/dev/null
python3 -c 'import confluent_kafka' 2>/dev/null || python3 -m pip install -q confluent-kafka >/dev/null
cargo build --release --quiet --bin journald-kafka
BIN=${FWD_BIN:-$ROOT/target/release/journald-kafka}
LPORT=$((PORT + 100))

start_agent() { # name
  cat > "$WORK/$1.toml" <<CONF
[journal]
enabled = false
[kafka]
brokers = "127.0.0.1:$PORT"
topic = "fluent"
[state]
directory = "$WORK/state-$1"
[log]
target = "stderr"
[forward]
listen = "127.0.0.1:$LPORT"
CONF
  "$BIN" run --config "$WORK/$1.toml" 2>"$WORK/$1.log" &
  agent_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$LPORT") 2>/dev/null && break; sleep 0.05; done
}

stop_agent() {
  kill -TERM "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
}

anon_kib() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }

# One run: prints "events_per_s agent_cpu_s_per_1M client_cpu_s anon_mib acked".
run_one() { # kind
  fresh_broker "$1"
  local out a0 a1 anon b0 b1 bpid
  bpid=$(cat "$broker_dir/broker.pid")
  b0=$(proc_cpu "/proc/$bpid/stat")
  if [ "$1" = direct ]; then
    # Warm-up, as for the agent below: the topic is created and its leader known.
    python3 tests/tools/forward_blast.py --direct "127.0.0.1:$PORT" --events 10000 >/dev/null
    b0=$(proc_cpu "/proc/$bpid/stat")
    out=$(python3 tests/tools/forward_blast.py --direct "127.0.0.1:$PORT" --events "$N")
    b1=$(proc_cpu "/proc/$bpid/stat")
    echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f - %.2f - %d %.2f" % (r["acked"] / r["seconds"], r["cpu"], r["acked"], '"$b1-$b0"'))'
    return
  fi
  start_agent "$1"
  # Warm-up (not counted): a fresh broker creates the topic on the first record, and the
  # first metadata round trips would otherwise be a good part of a 1-2 s run.
  python3 tests/tools/forward_blast.py --port "$LPORT" --events 10000 >/dev/null
  b0=$(proc_cpu "/proc/$bpid/stat")
  a0=$(proc_cpu "/proc/$agent_pid/stat")
  case $1 in
    blast) out=$(python3 tests/tools/forward_blast.py --port "$LPORT" --events "$N") ;;
    npm) out=$(node tests/tools/fluent/send.js "{\"port\":$LPORT,\"mode\":\"PackedForward\",\"count\":$N,\"ack\":true,\"ackTimeout\":60000,\"quiet\":true,\"batch\":1000,\"payload\":120}")
         out=$(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"events": r["sent"], "acked": r["acked"], "seconds": r["elapsed_ms"]/1000, "cpu": -1}))') ;;
    rate) out=$(python3 tests/tools/forward_blast.py --port "$LPORT" --rate 10000 --seconds "$SECS" --batch 100 --window 32) ;;
  esac
  a1=$(proc_cpu "/proc/$agent_pid/stat"); anon=$(anon_kib "$agent_pid")
  b1=$(proc_cpu "/proc/$bpid/stat")
  stop_agent
  echo "$out" | python3 -c "import json,sys; r=json.load(sys.stdin); a=$a1-$a0; n=r['acked']
c = ('%.2f' % r['cpu']) if r['cpu'] >= 0 else '-'
if '$1' == 'rate':
    print(f\"{n/r['seconds']:.0f} {a/r['seconds']*100:.1f} {c} {$anon/1024:.1f} {n} {$b1-$b0:.2f}\")
else:
    print(f\"{n/r['seconds']:.0f} {a/n*1e6:.2f} {c} {$anon/1024:.1f} {n} {$b1-$b0:.2f}\")"
}

echo "forward benchmark: $N events per run, $REPS run(s), records ~330 bytes, PackedForward with acks; broker noida-db (memory)"
for kind in blast npm direct; do
  for r in $(seq 1 "$REPS"); do run_one "$kind" >> "$WORK/$kind"; done
done
run_one rate >> "$WORK/rate"
printf '\n%-32s %12s %16s %12s %10s %10s %14s\n' "sender → Kafka" "events/s" "agent CPU s/1M" "client CPU s" "anon MiB" "acked" "broker CPU s"
for kind in blast npm direct; do
  case $kind in blast) name="forward (fast client)";; npm) name="forward (@fluent-org/logger)";; direct) name="direct, no agent (baseline)";; esac
  printf '%-32s %12s %16s %12s %10s %10s %14s\n' "$name" "$(median "$WORK/$kind" 1)" "$(median "$WORK/$kind" 2)" "$(median "$WORK/$kind" 3)" "$(median "$WORK/$kind" 4)" "$(median "$WORK/$kind" 5)" "$(median "$WORK/$kind" 6)"
done
printf '%-32s %12s %16s\n' "kafka-connect-fluentd (seed)" "50000" "quoted, 2 vCPU"
printf '%-32s %12s %16s\n' "fluent-plugin-kafka (seed)" "20000" "quoted, 2 vCPU"
read -r rate cpu ccpu anon acked bcpu < "$WORK/rate"
printf '\nsteady 10,000 events/s for %s s: %s events/s acknowledged, agent %s %% of one core, anon %s MiB\n' "$SECS" "$rate" "$cpu" "$anon"
