#!/usr/bin/env bash
# The whole test suite: installs what it needs, then style, lints, unit and integration tests
# against a real broker on 127.0.0.1 and real journals written by systemd's tools.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test"
# Integration tests start their own brokers and journald instances and end them by PID.
cargo test --release -- --test-threads "${JK_TEST_THREADS:-2}"
echo "== packages (.deb install, upgrade, purge; .rpm contents; unit hardening)"
tests/packaging/check.sh
echo "== benchmark harness, short mode (prints figures, asserts no timing)"
scripts/bench.sh --quick
scripts/bench-delivery.sh --quick
echo "== all tests passed"
