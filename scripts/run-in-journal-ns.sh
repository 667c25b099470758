#!/bin/sh
# Carried from the workplace notes (shared/tools/run_in_ns.sh): the benchmarks run peers that read only the local journal.
# run-in-journal-ns.sh JOURNAL_DIR CMD... : run CMD in a private mount namespace in which JOURNAL_DIR is
# "the local journal": tmpfs over /var/log/journal and /run/log, JOURNAL_DIR bind-mounted at
# /var/log/journal/<machine-id>. Works for any reader that only reads the local journal.
# JOURNAL_DIR may itself lie under /var/log/journal (a live journald namespace's directory):
# it is bound aside first, so the tmpfs does not hide it.
D=$1; shift
exec unshare -m --propagation private sh -c '
  MID=$(cat /etc/machine-id)
  S=$(mktemp -d /tmp/jk-journal-ns.XXXXXX) && mount --bind "$0" "$S" &&
  mount -t tmpfs tmpfs /var/log/journal && mkdir /var/log/journal/$MID &&
  mount --bind "$S" /var/log/journal/$MID && umount "$S" && rmdir "$S" &&
  mkdir -p /run/log && mount -t tmpfs tmpfs /run/log && exec "$@"' "$D" "$@"
