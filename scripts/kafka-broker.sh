#!/usr/bin/env bash
# A local Kafka-protocol broker for tests, benchmarks and the demo, on 127.0.0.1 only.
#
# Apache Kafka itself is not installable from the registries our CI reaches (no Maven
# Central, no Docker Hub), so we use Nisshi (Apache-2.0, the continuation of Tansu) from
# crates.io: it speaks the Kafka protocol, supports idempotent producers with acks=all,
# and with its SQLite engine keeps messages and producer state across kill -9.
#
# Nisshi has no transactions, so the exactly-once tests use noida-db (PyPI, one binary that
# speaks the Kafka protocol with transactions, read_committed and fencing): engine "noida".
#
#   kafka-broker.sh install                          build once; no-op when the pinned version exists
#   kafka-broker.sh start <port> <datadir> [sqlite|memory|noida]   start, wait until ready, print the PID
#   kafka-broker.sh stop  <datadir>                  SIGTERM the broker we started, then wait
#   kafka-broker.sh kill9 <datadir>                  crash it (fault injection)
#   kafka-broker.sh topic-create <port> <name> [partitions] [key=value]   (a topic config, e.g. max.message.bytes=100000)
#   kafka-broker.sh user-create <port> <name> <password> scram256|scram512   a SASL/SCRAM user (on a plain listener)
set -euo pipefail
NISSHI_VERSION=${NISSHI_VERSION:-0.8.1}
NISSHI_ROOT=${NISSHI_ROOT:-$HOME/.local/nisshi-$NISSHI_VERSION}
NISSHI=$NISSHI_ROOT/bin/nisshi

install() {
  if [ -x "$NISSHI" ] && [ "$("$NISSHI" --version 2>/dev/null)" = "nisshi $NISSHI_VERSION" ]; then return 0; fi
  echo "building the Nisshi $NISSHI_VERSION broker from crates.io (15-20 minutes on 2 cores, once)" >&2
  # --ignore-rust-version: one dependency declares a newer rust-version than it needs.
  local tgt; tgt=$(mktemp -d /tmp/nisshi-build.XXXXXX)
  cargo install nisshi --version "=$NISSHI_VERSION" --locked --ignore-rust-version \
      --no-default-features --features dynostore,libsql \
      --root "$NISSHI_ROOT" --target-dir "$tgt"
  rm -rf "$tgt"
}

NOIDA_VERSION=${NOIDA_VERSION:-0.2.3}

install-noida() {
  python3 -c "import noida_db" 2>/dev/null && [ "$(python3 -m pip show noida-db 2>/dev/null | sed -n 's/^Version: //p')" = "$NOIDA_VERSION" ] && return 0
  python3 -m pip install --quiet "noida-db==$NOIDA_VERSION"
}

# The server binary itself, not the Python wrapper: the PID we record must be the process
# that holds the port, so that kill -9 really crashes the broker.
noida_bin() { python3 -c 'import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))'; }

wait_port() { # port pid
  for _ in $(seq 1 400); do
    kill -0 "$2" 2>/dev/null || { echo "broker exited during start" >&2; return 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "broker on port $1 not ready after 20 s" >&2; return 1
}

wait_ready() { # port pid
  for _ in $(seq 1 400); do
    kill -0 "$2" 2>/dev/null || { echo "broker exited during start" >&2; return 1; }
    "$NISSHI" topic list --broker "tcp://127.0.0.1:$1" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "broker on port $1 not ready after 20 s" >&2; return 1
}

start() { # port datadir [engine]
  local port=$1 dir=$2 engine=${3:-sqlite} url
  mkdir -p "$dir"
  case $engine in
    sqlite) url=sqlite://nisshi.db ;;   # relative to the broker's cwd, i.e. $dir
    memory) url=memory://nisshi/ ;;
    noida)
      # It prints a harmless GLIBC_2.39 "weak version" warning on Debian 12 and runs.
      "$(noida_bin)" start --only kafka --kafka-port "$port" --data-dir "$dir/data" >>"$dir/broker.log" 2>&1 &
      local pid=$!
      echo "$pid" > "$dir/broker.pid"; echo "$port" > "$dir/broker.port"
      # Never leave a broker behind that the caller does not know about.
      wait_port "$port" "$pid" || { kill -KILL "$pid" 2>/dev/null; return 1; }
      echo "$pid"
      return 0 ;;
    *) echo "engine: sqlite|memory|noida" >&2; return 2 ;;
  esac
  # NISSHI_EXTRA_ARGS: e.g. "--authentication --cert c.pem --key k.pem" for a secured
  # listener; readiness is then the open port (the plain topic list cannot log in).
  # shellcheck disable=SC2086
  ( cd "$dir" && exec "$NISSHI" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$url" \
      --group-initial-rebalance-delay 0s ${NISSHI_EXTRA_ARGS:-} ) >>"$dir/broker.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/broker.pid"; echo "$port" > "$dir/broker.port"
  if [ -n "${NISSHI_EXTRA_ARGS:-}" ]; then
    wait_port "$port" "$pid" || { kill -KILL "$pid" 2>/dev/null; return 1; }
  else
    wait_ready "$port" "$pid" || { kill -KILL "$pid" 2>/dev/null; return 1; }
  fi
  echo "$pid"
}

stop() { # datadir
  local pid; pid=$(cat "$1/broker.pid")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

kill9() { kill -KILL "$(cat "$1/broker.pid")" 2>/dev/null || true; }

user-create() { # port name password scram256|scram512
  "$NISSHI" user create "$2" "$3" --mechanism "$4" --broker "tcp://127.0.0.1:$1"
}

topic-create() { # port name [partitions] [key=value]
  "$NISSHI" topic create "$2" --broker "tcp://127.0.0.1:$1" --partitions "${3:-1}" ${4:+--config "$4"}
}

cmd=${1:?usage: kafka-broker.sh install|install-noida|start|stop|kill9|topic-create|user-create}; shift
"$cmd" "$@"
