#!/usr/bin/env bash
# System test: the .deb installed and run the way users run it, under a real systemd.
#
# A Debian bookworm root (debootstrap --variant=minbase, cached in $JK_SYSTEM_ROOT) is copied
# and booted with systemd-nspawn (systemd 252, journald, shares this machine's loopback). A
# oneshot unit inside runs tests/system/steps.sh: install, enable --now, READY, live logger
# lines, SIGKILL and watchdog restarts, reload, the templated unit on a journal namespace,
# LoadCredential= for a SCRAM password, upgrade keeping the cursor, online
# systemd-analyze security, purge. It writes one line per step and powers off. The brokers
# (Nisshi, one plain, one SCRAM-only) run here on 127.0.0.1 and are stopped by PID.
#
#   scripts/system-test.sh            (root; builds the packages if missing)
#   scripts/system-test.sh --probe bullseye|trixie   the short probe on another release:
#       install, enable --now, READY, logger lines, SIGKILL restart, check, purge
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=bookworm; PROBE=0
if [ "${1:-}" = "--probe" ]; then SUITE=${2:?--probe needs a Debian release name}; PROBE=1; fi
ROOT_CACHE=${JK_SYSTEM_ROOT:-/var/cache/journald-kafka}/$SUITE
MIRROR=${JK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
t0=$SECONDS
say() { echo "== system: $* ($((SECONDS - t0)) s)"; }

command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null \
  || DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd-container debootstrap >/dev/null
if [ ! -x "$ROOT_CACHE/lib/systemd/systemd" ]; then
  say "making the $SUITE root once (debootstrap, about a minute)"
  rm -rf "$ROOT_CACHE.tmp"
  mkdir -p "$(dirname "$ROOT_CACHE")"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libsystemd0 \
    "$SUITE" "$ROOT_CACHE.tmp" "$MIRROR" >/tmp/jk-debootstrap.log 2>&1 \
    || { tail -20 /tmp/jk-debootstrap.log; exit 1; }
  mv "$ROOT_CACHE.tmp" "$ROOT_CACHE"
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
new=$(ls target/packages/journald-kafka_"$version"*_amd64.deb 2>/dev/null | head -1 || true)
prev=target/packages/system-test-prev.deb
# The packaging check already built a previous release: reuse it when it is as new as ours.
if [ -n "${JK_PREV_DEB:-}" ] && [ -f "$JK_PREV_DEB" ] && [ -n "$new" ] && [ ! "$JK_PREV_DEB" -ot target/release/journald-kafka ]; then
  cp "$JK_PREV_DEB" "$prev"
fi
if [ -z "$new" ] || [ ! -f "$prev" ] || [ "$new" -ot target/release/journald-kafka ] || [ "$prev" -ot target/release/journald-kafka ]; then
  say "building the packages (this version and a 0.0.1 'previous release')"
  scripts/package.sh --deb-version 0.0.1 >/dev/null
  mv target/packages/journald-kafka_0.0.1*_amd64.deb "$prev"
  scripts/package.sh >/dev/null
  new=$(ls target/packages/journald-kafka_"$version"*_amd64.deb | head -1)
fi

work=$(mktemp -d /var/tmp/jk-system.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${JK_KEEP_TEST_DIRS:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); SPORT=$(free_port); MPORT=$(free_port); DPORT=$(free_port)
SPASSWORD=$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
scripts/kafka-broker.sh install
pids+=("$(scripts/kafka-broker.sh start "$PORT" "$work/broker" sqlite)")
for t in sys sys2 sysweb; do scripts/kafka-broker.sh topic-create "$PORT" "$t" 1 >/dev/null; done
# The SCRAM broker: users are made on a plain listener over the same store, then it is
# restarted with --authentication.
sp=$(scripts/kafka-broker.sh start "$SPORT" "$work/sbroker" sqlite)
scripts/kafka-broker.sh user-create "$SPORT" jk "$SPASSWORD" scram512 >/dev/null
scripts/kafka-broker.sh topic-create "$SPORT" syssec 1 >/dev/null
scripts/kafka-broker.sh stop "$work/sbroker" >/dev/null
pids+=("$(NISSHI_EXTRA_ARGS=--authentication scripts/kafka-broker.sh start "$SPORT" "$work/sbroker" sqlite)")
say "brokers on 127.0.0.1:$PORT and 127.0.0.1:$SPORT (SCRAM-SHA-512); copying the root"

root=$work/root
cp -a "$ROOT_CACHE" "$root"
mkdir -p "$root/root/jk"
cp "$prev" "$root/root/jk/prev.deb"
cp "$new" "$root/root/jk/new.deb"
cp tests/system/steps.sh "$root/root/jk/steps.sh"
cat >"$root/root/jk/env" <<EOF
PORT=$PORT
SPORT=$SPORT
MPORT=$MPORT
DPORT=$DPORT
SPASSWORD=$SPASSWORD
VERSION=$version
PROBE=$PROBE
SUITE=$SUITE
EOF
cat >"$root/etc/systemd/system/jk-system-test.service" <<'EOF'
[Unit]
Description=journald-kafka system test steps
After=multi-user.target

[Service]
Type=simple
ExecStart=/bin/bash /root/jk/steps.sh
EOF
ln -sf /etc/systemd/system/jk-system-test.service "$root/etc/systemd/system/multi-user.target.wants/jk-system-test.service"
# A machine id of its own, persistent journal storage as on a real host.
systemd-id128 new | tr -d - >"$root/etc/machine-id"
mkdir -p "$root/var/log/journal"

say "booting the $SUITE container (systemd-nspawn -b); the steps take about two minutes"
limit=${JK_SYSTEM_TIMEOUT:-600}
timeout --kill-after=10 "$limit" systemd-nspawn -D "$root" --register=no --keep-unit -q -b \
  >"$work/console.log" 2>&1 </dev/null || true

results=$root/root/jk/results
echo "---- system test results"
cat "$results" 2>/dev/null || echo "(no results: the steps did not run)"
if [ ! -f "$results" ] || ! tail -1 "$results" | grep -qx DONE || grep -q '^FAIL' "$results"; then
  echo "---- steps log (tail)"; tail -60 "$root/root/jk/steps.log" 2>/dev/null || true
  echo "---- console (tail)"; tail -30 "$work/console.log"
  say "FAILED"
  JK_KEEP_TEST_DIRS=1
  echo "kept in $work"
  exit 1
fi
say "passed on $SUITE: $(grep -c '^ok' "$results") steps"
