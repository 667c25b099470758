# Shared by scripts/bench.sh and scripts/bench-delivery.sh (sourced, not run). Expects
# ROOT, CACHE, WORK, PORT and BROKER (noida | nisshi) to be set.
TCK=$(getconf CLK_TCK)
broker_dir=""

# Sets JDIR to a cached journal of $1 entries (~17 fields, ~1 KiB, binary and multi-line
# fields), generated once with systemd-journal-remote, and LAST to its last cursor.
bench_journal() {
  JDIR=$CACHE/$1
  if [ ! -f "$JDIR/.complete" ]; then
    echo "generating $1 journal entries (~17 fields, ~1 KiB, binary and multi-line fields) into $JDIR" >&2
    rm -rf "$JDIR"; mkdir -p "$JDIR"
    python3 "$ROOT/tests/tools/gen_export.py" -n "$1" --msg-len 40 --start-usec "$(( ($(date +%s) - 86400) * 1000000 ))" \
      | /lib/systemd/systemd-journal-remote -o "$JDIR/bench.journal" - 2>/dev/null
    touch "$JDIR/.complete"
  fi
  LAST=$(journalctl -D "$JDIR" -n 1 -o export | sed -n 's/^__CURSOR=//p')
}

# Stops the previous broker and starts a fresh one (named $1) on a new port: the previous
# broker's port may still be in TIME_WAIT.
fresh_broker() {
  [ -n "$broker_dir" ] && "$ROOT/scripts/kafka-broker.sh" stop "$broker_dir"
  PORT=$((PORT + 1))
  broker_dir=$WORK/broker-$1
  if [ "$BROKER" = nisshi ]; then
    "$ROOT/scripts/kafka-broker.sh" start "$PORT" "$broker_dir" memory >/dev/null
    "$ROOT/scripts/kafka-broker.sh" topic-create "$PORT" bench 4 >/dev/null
  else
    "$ROOT/scripts/kafka-broker.sh" start "$PORT" "$broker_dir" noida >/dev/null
    # An open port is not yet a broker that answers, and kcat gives up at once.
    for _ in $(seq 1 100); do kcat -L -b "127.0.0.1:$PORT" -m 2 >/dev/null 2>&1 && break; sleep 0.1; done
  fi
}

stop_broker() { if [ -n "$broker_dir" ]; then "$ROOT/scripts/kafka-broker.sh" stop "$broker_dir" 2>/dev/null || true; fi; }

# CPU seconds (user + system) from a /proc/.../stat file.
proc_cpu() { awk -v t="$TCK" '{printf "%.2f", ($14 + $15) / t}' "$1"; }

# Median of column $2 of file $1, or "-" when the run did not happen.
median() {
  [ -f "$1" ] || { echo "-"; return; }
  awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}
