#!/usr/bin/env bash
# Installs everything needed to build and test journald-kafka on Debian (bookworm), as root:
# the C toolchain and headers, systemd's journal tools, Python for the fixture generator,
# and the local Kafka-protocol broker (built once, then cached in ~/.local).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: journald-kafka needs Rust >= 1.85 (https://rustup.rs)" >&2
  exit 1
fi

pkgs=(build-essential pkg-config perl make cmake libsystemd-dev libsasl2-dev libzstd-dev liblz4-dev systemd systemd-journal-remote python3 procps util-linux rpm rpmlint passwd time bc kcat openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The demo needs only a broker that installs in seconds (noida-db, from PyPI); the tests
# also need the crash-safe one, built from crates.io once (~24 minutes on 2 cores).
if [ "${1:-}" != "--demo" ]; then
  scripts/kafka-broker.sh install
fi
# The exactly-once tests need a broker with transactions (see kafka-broker.sh).
scripts/kafka-broker.sh install-noida

# Real Forward-protocol clients for the Forward input's tests: @fluent-org/logger (npm,
# pinned in tests/tools/fluent/package.json) and fluent-logger (PyPI).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/tools/fluent/node_modules/@fluent-org/logger ]; then
  (cd tests/tools/fluent && npm install --no-audit --no-fund --silent)
fi
python3 -c 'import fluent.sender' 2>/dev/null || python3 -m pip install -q fluent-logger==0.11.1
# promtool (Debian's prometheus package) checks and unit-tests the alerting rules the package
# ships. Without recommends: they bring another daemon (node-exporter). Where systemd runs,
# the package starts a Prometheus server the tests do not want: one that was not running
# before is stopped again, by its own pid.
if ! command -v promtool >/dev/null 2>&1; then
  before=$(pgrep -x prometheus || true)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  for pid in $(pgrep -x prometheus || true); do
    grep -qx "$pid" <<<"$before" || kill "$pid" 2>/dev/null || true
  done
fi
# zig and cargo-zigbuild (the packaged binary's glibc 2.28 build) are installed, pinned, by
# scripts/package.sh itself, like cargo-deb.
# OpenTelemetry's own protobuf definitions: the OTLP format's test decodes what the agent
# wrote with them, as the Collector's Kafka receiver would (pinned: the test's oracle).
python3 -c 'import opentelemetry.proto.logs.v1.logs_pb2' 2>/dev/null || python3 -m pip install -q opentelemetry-proto==1.45.2
# AWS's own MSK IAM signer: the agent's tokens are compared with what it builds for the same
# inputs. In a directory of its own (with the botocore it needs), so that the machine's
# Python packages (an AWS CLI's pinned botocore) are left as they are.
MSK_SIGNER=${JK_MSK_SIGNER_PATH:-$HOME/.cache/journald-kafka/msk-signer}
if ! PYTHONPATH=$MSK_SIGNER python3 -c 'import aws_msk_iam_sasl_signer' 2>/dev/null; then
  python3 -m pip install -q --target "$MSK_SIGNER" aws-msk-iam-sasl-signer-python==1.0.2
fi
