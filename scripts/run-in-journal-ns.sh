#!/bin/sh
# Carried from the workplace notes (shared/tools/run_in_ns.sh): the benchmark runs peers that read only the local journal.
# run_in_ns.sh JOURNAL_DIR CMD... : run CMD in a private mount namespace in which JOURNAL_DIR is
# "the local journal": tmpfs over /var/log/journal and /run/log, JOURNAL_DIR bind-mounted at
# /var/log/journal/<machine-id>. Works for any reader that only reads the local journal.
D=$1; shift
exec unshare -m --propagation private sh -c '
  MID=$(cat /etc/machine-id)
  mount -t tmpfs tmpfs /var/log/journal && mkdir /var/log/journal/$MID &&
  mount --bind "$0" /var/log/journal/$MID &&
  mkdir -p /run/log && mount -t tmpfs tmpfs /run/log && exec "$@"' "$D" "$@"
