#!/usr/bin/env bash
# The monitoring files the package installs (packaging/monitoring/): the alerting rules pass
# `promtool check rules` and their unit tests, the dashboard is a Grafana dashboard whose
# queries parse as PromQL, and every metric the rules and the dashboard name is served by a
# live agent (--metrics: the text of its /metrics). Installs Debian's prometheus package for
# promtool when it is missing (as root, like scripts/install-deps.sh).
#   tests/monitoring/check.sh [--metrics FILE]
#   tests/monitoring/check.sh --list-metrics   the names used, one a line, nothing else
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok    $*"; }
usage() { sed -n '2,8s/^# \{0,1\}//p' "$0" >&2; exit 2; }

# Before the cd: FILE is relative to the caller's directory.
metrics=
list=
case "${1:-}" in
  "") ;;
  --list-metrics) [ $# -eq 1 ] || usage; list=1 ;;
  --metrics) [ $# -eq 2 ] || usage; [ -r "$2" ] || fail "cannot read $2"; metrics=$(realpath -- "$2") ;;
  *) usage ;;
esac
cd "$(dirname "$0")/../.."
dir=packaging/monitoring
refs=tests/monitoring/refs.py
[ -z "$list" ] || exec python3 "$refs" names "$dir"

# (a) promtool. The package's postinst starts a Prometheus server where systemd runs: one
# that was not running before is stopped again, by its own pid, nothing else.
if ! command -v promtool >/dev/null 2>&1; then
  before=$(pgrep -x prometheus || true)
  export DEBIAN_FRONTEND=noninteractive
  # Without recommends: they bring prometheus-node-exporter, another daemon.
  out=$( (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus) 2>&1) \
    || fail "cannot install the prometheus package (for promtool): $out"
  command -v promtool >/dev/null 2>&1 || fail "the prometheus package did not install promtool"
  for pid in $(pgrep -x prometheus || true); do
    grep -qx "$pid" <<<"$before" || kill "$pid" 2>/dev/null || true
  done
  pass "installed $(promtool --version 2>&1 | head -1)"
fi

# (b) The rules.
promtool check rules "$dir/alerts.yml" >/dev/null || fail "promtool check rules $dir/alerts.yml"
out=$(promtool test rules "$dir/alerts.test.yml" 2>&1) || fail "promtool test rules $dir/alerts.test.yml: $out"
pass "alerts.yml: $(grep -c '^ *- alert:' "$dir/alerts.yml") alerts pass promtool check rules and test rules"

# (c) The dashboard: JSON, Grafana's structure, and its queries as PromQL (promtool parses
# them as recording rules, Grafana's variables replaced).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m json.tool "$dir/dashboard.json" >/dev/null || fail "dashboard.json is not JSON"
python3 "$refs" dashboard "$dir" "$tmp/queries.yml" || fail "dashboard.json: see above"
out=$(promtool check rules "$tmp/queries.yml" 2>&1) || fail "dashboard.json: a query is not PromQL (panel_<id>_query_<refId>): $out"
pass "dashboard.json: valid, $(grep -c '"record"' "$tmp/queries.yml") queries parse"

# (d) Every name against a live agent's /metrics.
if [ -z "$metrics" ]; then
  echo "skip  metric names against a live agent's /metrics (no --metrics FILE)"
  exit 0
fi
missing=$(python3 "$refs" missing "$dir" "$metrics") || fail "not served by the agent ($metrics):
$missing"
pass "all $(python3 "$refs" names "$dir" | wc -l) metric names used are served in $metrics"
