#!/usr/bin/env bash
# The whole test suite: installs what it needs, then style, lints, unit and integration tests
# against a real broker on 127.0.0.1 and real journals written by systemd's tools.
# Prints how long each phase took (CI has 90 minutes; the broker build alone takes ~24 on a
# fresh machine, once).
# --full: the long variants too (the central collector with 2,000 hosts instead of 600).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--full" ]; then
  export JK_COLLECTOR_HOSTS="${JK_COLLECTOR_HOSTS:-2000}"
fi

t0=$SECONDS
last=$SECONDS
phase() { # name: prints the previous phase's time, then the new phase's name
  local now=$SECONDS
  [ -n "${current:-}" ] && echo "== $current took $((now - last)) s"
  current=$1; last=$now
  [ -n "$1" ] && echo "== $1"
  return 0
}

phase "install dependencies"
scripts/install-deps.sh
phase "cargo fmt --check"
cargo fmt --check
phase "cargo clippy --all-targets -- -D warnings"
cargo clippy --release --all-targets -- -D warnings
phase "cargo test"
# Integration tests start their own brokers and journald instances and end them by PID.
cargo test --release -- --test-threads "${JK_TEST_THREADS:-2}"
phase "packages (.deb install, upgrade, purge; .rpm contents; unit hardening)"
tests/packaging/check.sh
phase "system test (the .deb under a real systemd in systemd-nspawn: enable, kill, watchdog, reload, template, credential, upgrade, purge)"
JK_PREV_DEB=/tmp/journald-kafka-prev.deb scripts/system-test.sh
phase "system probe on Debian 11 (bullseye: systemd 247, glibc 2.31) and 13 (trixie: systemd 257)"
scripts/system-test.sh --probe bullseye
scripts/system-test.sh --probe trixie
phase "benchmark harness, short mode (prints figures, asserts no timing)"
scripts/bench.sh --quick
scripts/bench-delivery.sh --quick
scripts/bench-live.sh --quick
scripts/bench-forward.sh --quick
phase ""
echo "== all tests passed in $((SECONDS - t0)) s"
