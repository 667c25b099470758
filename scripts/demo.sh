#!/usr/bin/env bash
# The main job end to end on one machine, as root:
#   a local broker on 127.0.0.1, a journal written by systemd's own tools, the agent shipping
#   it, and the records read back from Kafka, decoded.
# Everything lives under $DEMO_DIR (default /tmp/journald-kafka-demo); the broker and the
# agent are stopped (by PID) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO_DIR=${DEMO_DIR:-/tmp/journald-kafka-demo}
PORT=${DEMO_PORT:-19092}
ENTRIES=${DEMO_ENTRIES:-5000}

t0=$(date +%s)
echo "== installing what the demo needs (build tools, libsystemd, systemd-journal-remote, noida-db)"
scripts/install-deps.sh --demo
echo "== building journald-kafka (cargo build --release: 5-8 minutes on 2 cores the first time; librdkafka is compiled too)"
cargo build --release
BIN=$ROOT/target/release/journald-kafka
echo "== ready after $(( $(date +%s) - t0 )) s"

rm -rf "$DEMO_DIR"; mkdir -p "$DEMO_DIR/journal" "$DEMO_DIR/state"
broker_pid=""; agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null || true
  [ -n "$broker_pid" ] && "$ROOT/scripts/kafka-broker.sh" stop "$DEMO_DIR/broker" || true
}
trap cleanup EXIT

echo "== starting a Kafka-protocol broker on 127.0.0.1:$PORT (noida-db, from PyPI)"
broker_pid=$(scripts/kafka-broker.sh start "$PORT" "$DEMO_DIR/broker" noida)

echo "== writing $ENTRIES journal entries with systemd-journal-remote"
python3 tests/tools/gen_export.py -n "$ENTRIES" --start-usec "$(( $(date +%s) * 1000000 - ENTRIES * 1000 ))" \
  | /lib/systemd/systemd-journal-remote -o "$DEMO_DIR/journal/demo.journal" - 2>/dev/null
last=$(journalctl -D "$DEMO_DIR/journal" -n 1 -o export | sed -n 's/^__CURSOR=//p')

cat > "$DEMO_DIR/config.toml" <<TOML
[journal]
directory = "$DEMO_DIR/journal"
[kafka]
brokers = "127.0.0.1:$PORT"
topic = "journal"
key_field = "_SYSTEMD_UNIT"
[state]
directory = "$DEMO_DIR/state"
[log]
target = "stderr"
TOML

echo "== journald-kafka check"
"$BIN" check --config "$DEMO_DIR/config.toml"

echo "== journald-kafka run (until the cursor file reaches the newest entry)"
start=$(date +%s.%N)
"$BIN" run --config "$DEMO_DIR/config.toml" 2>"$DEMO_DIR/agent.log" &
agent_pid=$!
for _ in $(seq 1 600); do
  [ "$(cat "$DEMO_DIR/state/cursor" 2>/dev/null)" = "$last" ] && break
  kill -0 "$agent_pid" || { cat "$DEMO_DIR/agent.log"; exit 1; }
  sleep 0.1
done
[ "$(cat "$DEMO_DIR/state/cursor")" = "$last" ] || { echo "agent did not finish"; cat "$DEMO_DIR/agent.log"; exit 1; }
end=$(date +%s.%N)
kill -TERM "$agent_pid"; wait "$agent_pid"; agent_pid=""
echo "shipped $ENTRIES entries in $(echo "$end - $start" | bc 2>/dev/null || echo "?") s; agent log:"
sed 's/^/    /' "$DEMO_DIR/agent.log" | tail -5

echo "== the saved cursor"
"$BIN" cursor show --config "$DEMO_DIR/config.toml"

echo "== the first and last records in Kafka, decoded (journald-kafka cat)"
"$BIN" cat --brokers "127.0.0.1:$PORT" --topic journal -n "$ENTRIES" --idle-ms 3000 > "$DEMO_DIR/records.txt"
head -6 "$DEMO_DIR/records.txt"; echo "    ..."; tail -3 "$DEMO_DIR/records.txt"
echo "== one record in full (-o json)"
"$BIN" cat --brokers "127.0.0.1:$PORT" --topic journal -o json -n 1
# One JSON line per record, so lines count records (multi-line messages stay on one line).
got=$("$BIN" cat --brokers "127.0.0.1:$PORT" --topic journal -o json --idle-ms 3000 | wc -l)
echo "== $got records in Kafka for $ENTRIES journal entries"
[ "$got" -eq "$ENTRIES" ]
