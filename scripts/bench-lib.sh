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

# The peers fleets run today, configured alike for every benchmark: the same guarantees
# where they allow them (idempotence, acks=all, lz4, linger 100 ms), everything in the
# journal entry sent as JSON. Both read only "the local journal": run them through
# scripts/run-in-journal-ns.sh.
ensure_rsyslog() {
  if ! command -v rsyslogd >/dev/null || [ ! -f /usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsyslog rsyslog-kafka >/dev/null \
      || { echo "rsyslog skipped: cannot install rsyslog-kafka" >&2; return 1; }
  fi
}

rsyslog_conf() { # dir topic
  cat > "$1/rsyslog.conf" <<CONF
global(workDirectory="$1")
module(load="imjournal" StateFile="$1/imjournal.state" Ratelimit.Interval="0" Ratelimit.Burst="0" IgnorePreviousMessages="off" PersistStateInterval="100000")
module(load="omkafka")
template(name="all" type="string" string="%\$!all-json%")
action(type="omkafka" broker=["127.0.0.1:$PORT"] topic="$2" template="all"
       confParam=["compression.codec=lz4", "enable.idempotence=true", "acks=all", "linger.ms=100"])
CONF
}

# syslog-ng and rsyslog conflict as Debian packages (both "system-log-daemon"), so syslog-ng
# runs from its unpacked packages (dpkg -x into the cache), its libraries installed by apt.
SNG=$CACHE/syslog-ng-root
ensure_syslogng() {
  if [ ! -x "$SNG/usr/sbin/syslog-ng" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcap2 libglib2.0-0 libivykis0 libjson-c5 \
      libnet1 libpcre3 librdkafka1 libwrap0 >/dev/null || { echo "syslog-ng skipped: its libraries" >&2; return 1; }
    local dl; dl=$(mktemp -d)
    (cd "$dl" && apt-get download syslog-ng-core syslog-ng-mod-rdkafka >/dev/null 2>&1) || { echo "syslog-ng skipped: apt-get download" >&2; return 1; }
    mkdir -p "$SNG"; for f in "$dl"/*.deb; do dpkg -x "$f" "$SNG"; done; rm -rf "$dl"
  fi
}

# flags(flow-control): without it syslog-ng drops entries when its output queue fills
# (measured: 10 % of a 200,000-entry backlog), which is not the guarantee compared here.
syslogng_conf() { # dir topic
  cat > "$1/syslog-ng.conf" <<CONF
@version: 3.38
options { stats_freq(0); log_fifo_size(100000); };
source s_journal { systemd-journal(prefix(".journal.") max-field-size(65536) log-fetch-limit(1000)); };
destination d_kafka { kafka-c(bootstrap-servers("127.0.0.1:$PORT") config("compression.codec" "lz4" "enable.idempotence" "true" "acks" "all" "linger.ms" "100")
                              topic("$2") message("\$(format-json --scope all-nv-pairs)")); };
log { source(s_journal); destination(d_kafka); flags(flow-control); };
CONF
}

syslogng_cmd() { # dir
  echo env LD_LIBRARY_PATH="$SNG/usr/lib/syslog-ng:$SNG/usr/lib/x86_64-linux-gnu" \
    "$SNG/usr/sbin/syslog-ng" -F -f "$1/syslog-ng.conf" --module-path="$SNG/usr/lib/syslog-ng/3.38" \
    -R "$1/persist" -p "$1/pid" -c "$1/ctl"
}
