#!/bin/bash
# The system test's steps, run inside a booted Debian container by the oneshot unit
# jk-system-test.service (scripts/system-test.sh puts it there). Each step appends
# "ok    NAME" or "FAIL  NAME: why" to /root/jk/results; the last line is "DONE". Then the
# container powers off. Everything a user does is done the way a user does it: dpkg,
# systemctl, logger, systemd-run, journalctl.
set -u
J=/root/jk
R=$J/results
L=$J/steps.log
: >"$R"
: >"$L"
# PORT (plain broker), SPORT (SCRAM broker), MPORT (metrics), DPORT (nothing listens:
# a broker that is away), VERSION (new package).
. $J/env
exec >>"$L" 2>&1
set -x

ok() { echo "ok    $*" >>"$R"; }
fail() { echo "FAIL  $*" >>"$R"; }
# wait_for SECONDS CMD...: true once CMD succeeds, false after SECONDS.
wait_for() {
  local t=$1; shift
  local end=$((SECONDS + t))
  while [ $SECONDS -lt $end ]; do "$@" && return 0; sleep 0.5; done
  "$@"
}
active() { [ "$(systemctl is-active "$1")" = active ]; }
main_pid() { systemctl show -p MainPID --value "$1"; }
restarts() { systemctl show -p NRestarts --value "$1"; }
# count TOPIC PREFIX [BROKER_ARGS...]: distinct "PREFIX n" messages in TOPIC.
count() {
  local topic=$1 prefix=$2; shift 2
  journald-kafka cat "${@:---brokers=127.0.0.1:$PORT}" --topic "$topic" -o cat --idle-ms 2000 2>/dev/null \
    | grep -E "^$prefix [0-9]+$" | sort -u | wc -l
}
# all TOPIC PREFIX [BROKER_ARGS...]: every "PREFIX n" message in TOPIC, duplicates included.
all() {
  local topic=$1 prefix=$2; shift 2
  journald-kafka cat "${@:---brokers=127.0.0.1:$PORT}" --topic "$topic" -o cat --idle-ms 2000 2>/dev/null \
    | grep -cE "^$prefix [0-9]+$"
}
arrived() { [ "$(count "$@")" -ge "$N" ]; }
log_lines() { # PREFIX N
  for i in $(seq 1 "$2"); do logger -t jk-system "$1 $i"; done
}
http_code() { # PATH
  exec 3<>"/dev/tcp/127.0.0.1/$MPORT" || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3
  head -1 <&3 | awk '{print $2}'
  exec 3>&-
}
ready() { [ "$(http_code /health/ready)" = 200 ]; }
not_ready() { [ "$(http_code /health/ready)" = 503 ]; }
http_body() { # PATH
  exec 3<>"/dev/tcp/127.0.0.1/$MPORT" || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3
  sed '1,/^\r$/d' <&3
  exec 3>&-
}
forecast_below() { # SECONDS: the agent forecasts loss sooner than that
  local f
  f=$(http_body /metrics | sed -n 's/^journald_kafka_loss_forecast_seconds \([-0-9.]*\)$/\1/p')
  [ -n "$f" ] && awk -v f="$f" -v m="$1" 'BEGIN { exit !(f >= 0 && f < m) }'
}
with_libsystemd() { # CONFIG: the same configuration with journal.reader = "libsystemd"
  if grep -q '^\[journal\]' "$1"; then
    sed 's#^\[journal\]#[journal]\nreader = "libsystemd"#' "$1"
  else
    cat "$1"; printf '[journal]\nreader = "libsystemd"\n'
  fi
}
config() { # TOPIC [extra TOML]   (BROKER_PORT overrides the broker)
  cat >/etc/journald-kafka/config.toml <<EOF
[kafka]
brokers = "127.0.0.1:${BROKER_PORT:-$PORT}"
topic = "$1"
[metrics]
listen = "127.0.0.1:$MPORT"
${2:-}
EOF
}

# 1. Install the previous release and enable it with a short config.
if dpkg -i $J/prev.deb && getent passwd journald-kafka >/dev/null; then ok "install the .deb"; else fail "install: dpkg -i"; fi
config sys
if systemctl enable --now journald-kafka && wait_for 30 active journald-kafka; then
  ok "systemctl enable --now: active (READY=1 received: Type=notify)"
else
  fail "enable --now: $(systemctl status journald-kafka --no-pager | head -20)"
fi
if wait_for 15 ready; then ok "/health/ready 200 under systemd"; else fail "readiness: $(http_code /health/ready)"; fi
status=$(systemctl show -p StatusText --value journald-kafka)
[ -n "$status" ] && ok "STATUS= shown by systemctl: $status" || fail "no STATUS= text"

# 2. Live lines from logger arrive.
N=100; log_lines m1 100
if wait_for 60 arrived sys m1; then ok "100 logger lines shipped from the live journal"; else fail "m1: $(count sys m1) of 100"; fi

# 2b. journald's rate limit: the messages it drops never reach the journal, only its
# "Suppressed N messages from UNIT" entry does; the agent counts them per unit.
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nRateLimitIntervalSec=2s\nRateLimitBurst=20\n' >/etc/systemd/journald.conf.d/40-ratelimit.conf
systemctl restart systemd-journald
systemd-run -q --wait -u jk-flood /bin/sh -c 'for i in $(seq 1 300); do echo "flood $i"; done; sleep 3; echo after'
dropped() { journalctl MESSAGE_ID=a596d6fe7bfa4994828e72309e95d61e -o cat --no-pager | sed -n 's/^Suppressed \([0-9]*\) messages from jk-flood.service$/\1/p' | awk '{s+=$1} END {print s+0}'; }
counted() { http_body /metrics | sed -n 's/^journald_kafka_journal_suppressed_total{unit="jk-flood.service"} \([0-9]*\)$/\1/p'; }
suppressed_ok() { local d; d=$(dropped); [ "$d" -gt 0 ] && [ "$(counted)" = "$d" ]; }
if wait_for 40 suppressed_ok; then
  ok "suppressed: journald dropped $(dropped) lines of jk-flood.service; the agent counts $(counted)"
else
  fail "suppressed: journald says $(dropped), the agent $(counted): $(journalctl MESSAGE_ID=a596d6fe7bfa4994828e72309e95d61e -o export --no-pager | head -30)"
fi
if journald-kafka status --config /etc/journald-kafka/config.toml | grep -q "Suppressed: jk-flood.service"; then ok "suppressed: status names the unit"; else fail "status: $(journald-kafka status --config /etc/journald-kafka/config.toml)"; fi
rm /etc/systemd/journald.conf.d/40-ratelimit.conf
systemctl restart systemd-journald

# 3. SIGKILL: systemd restarts it (Restart=on-failure) and lines written meanwhile arrive.
pid=$(main_pid journald-kafka); r0=$(restarts journald-kafka)
systemctl kill -s KILL journald-kafka
N=100; log_lines m2 100
if wait_for 30 bash -c "[ \"\$(systemctl show -p MainPID --value journald-kafka)\" != $pid ] && [ \"\$(systemctl is-active journald-kafka)\" = active ]"; then
  ok "SIGKILL: restarted by systemd (NRestarts $r0 -> $(restarts journald-kafka))"
else
  fail "SIGKILL: not restarted: $(systemctl status journald-kafka --no-pager | head -20)"
fi
if wait_for 60 arrived sys m2; then ok "SIGKILL: lines written while it was dead arrived (lost 0)"; else fail "m2: $(count sys m2) of 100"; fi
if [ "$(count sys m1)" = 100 ]; then ok "SIGKILL: earlier lines still all there"; else fail "m1 after kill: $(count sys m1)"; fi

# The short probe on the other releases (PROBE=1): what the release changes for the agent,
# then purge.
if [ "${PROBE:-0}" = 1 ]; then
  . /etc/os-release
  [ "$VERSION_CODENAME" = "$SUITE" ] && ok "booted Debian $VERSION_ID ($VERSION_CODENAME)" || fail "booted $VERSION_CODENAME, not $SUITE"
  sysv=$(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
  out=$(journald-kafka check --config /etc/journald-kafka/config.toml 2>&1); rc=$?
  # The native reader (the default) guards its mappings; libsystemd's reader does not.
  if ! grep -q SIGBUS <<<"$out"; then ok "check on systemd $sysv: no SIGBUS warning for the native reader"; else fail "check on systemd $sysv warns of SIGBUS for the native reader: $out"; fi
  with_libsystemd /etc/journald-kafka/config.toml >/tmp/libsystemd.toml
  lib=$(journald-kafka check --config /tmp/libsystemd.toml 2>&1)
  if [ "$sysv" -ge 255 ]; then
    if ! grep -q SIGBUS <<<"$lib"; then ok "check on systemd $sysv, libsystemd reader: no SIGBUS warning (archive truncation fixed in 255)"; else fail "check on systemd $sysv warns of SIGBUS: $lib"; fi
  else
    if grep -q SIGBUS <<<"$lib"; then ok "check on systemd $sysv, libsystemd reader: warns that archive truncation can SIGBUS"; else fail "check on systemd $sysv, libsystemd reader: no SIGBUS warning: $lib"; fi
  fi
  [ "$rc" = 0 ] && ok "check passed (exit 0)" || fail "check exited $rc: $out"
  if dpkg --purge journald-kafka && ! active journald-kafka && [ ! -e /var/lib/journald-kafka ]; then ok "dpkg --purge: stopped, state removed"; else fail "purge"; fi
  echo DONE >>"$R"
  systemctl poweroff --force
  exit 0
fi

# 4. Watchdog: a frozen agent (SIGSTOP) is killed and restarted by systemd.
mkdir -p /etc/systemd/system/journald-kafka.service.d
printf '[Service]\nWatchdogSec=4\nTimeoutAbortSec=5\n' >/etc/systemd/system/journald-kafka.service.d/50-test.conf
systemctl daemon-reload
systemctl restart journald-kafka
wait_for 30 active journald-kafka
pid=$(main_pid journald-kafka)
kill -STOP "$pid"
N=50; log_lines m3 50
if wait_for 45 bash -c "[ \"\$(systemctl show -p MainPID --value journald-kafka)\" != $pid ] && [ \"\$(systemctl is-active journald-kafka)\" = active ]"; then
  ok "watchdog: the frozen agent was restarted by systemd"
else
  fail "watchdog: $(systemctl status journald-kafka --no-pager | head -20)"
fi
if journalctl -u journald-kafka --no-pager | grep -qi "watchdog timeout"; then ok "watchdog: systemd logged the watchdog timeout"; else fail "watchdog: no 'Watchdog timeout' in the unit's log"; fi
if wait_for 60 arrived sys m3; then ok "watchdog: lines written while it was frozen arrived (lost 0)"; else fail "m3: $(count sys m3) of 50"; fi
rm /etc/systemd/system/journald-kafka.service.d/50-test.conf
systemctl daemon-reload

# 5. Reload: a valid config applies without a restart; a bad one is refused, the agent goes on.
systemctl restart journald-kafka
wait_for 30 active journald-kafka
pid=$(main_pid journald-kafka)
config sys2
systemctl reload journald-kafka
if wait_for 20 bash -c "journalctl -u journald-kafka --no-pager | grep -q 'configuration reloaded'"; then ok "reload: configuration reloaded"; else fail "reload: not in the log"; fi
[ "$(main_pid journald-kafka)" = "$pid" ] && ok "reload: same process" || fail "reload: the process changed"
N=50; log_lines m4 50
if wait_for 60 arrived sys2 m4; then ok "reload: lines go to the new topic"; else fail "m4: $(count sys2 m4) of 50 in sys2"; fi
echo 'garbage = [' >>/etc/journald-kafka/config.toml
if ! systemctl reload journald-kafka && journalctl -u journald-kafka --no-pager | grep -q 'invalid config file' \
   && active journald-kafka && [ "$(main_pid journald-kafka)" = "$pid" ]; then
  ok "reload: an invalid config fails systemctl reload with the reason, the agent keeps running"
else
  fail "reload of an invalid config: $(systemctl status journald-kafka --no-pager | head -20)"
fi
config sys2

# 5b. An outage with a small journal written fast: readiness turns at once, the agent
# forecasts when journald will delete what it has not shipped, status and check say so;
# readiness returns with the brokers.
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nSystemMaxUse=16M\nSystemMaxFileSize=2M\nRateLimitBurst=0\n' >/etc/systemd/journald.conf.d/50-small.conf
systemctl restart systemd-journald
BROKER_PORT=$DPORT config sys2 "min_loss_forecast_seconds = 3600"
systemctl reload journald-kafka
if wait_for 30 not_ready; then
  ok "outage: /health/ready turns 503 when no broker answers"
else
  fail "outage: still ready: $(http_body /health/ready)"
fi
seq 1 300000 | sed 's/^/fill line with some text to make it longer /' | systemd-cat -t jk-fill
if wait_for 60 forecast_below 3600; then
  ok "forecast: $(http_body /metrics | grep '^journald_kafka_loss_forecast_seconds') with a 16M journal written fast"
else
  fail "forecast: $(http_body /metrics | grep -E '^journald_kafka_(loss_forecast|journal_allowed|journal_write_rate)')"
fi
body=$(http_body /health/ready)
case "$body" in *forecast*) ok "forecast: readiness names it: $body" ;; *) fail "forecast: readiness says: $body" ;; esac
if journald-kafka status --config /etc/journald-kafka/config.toml | grep -q "loss in"; then ok "forecast: status shows it"; else fail "status: $(journald-kafka status --config /etc/journald-kafka/config.toml)"; fi
chk=$(journald-kafka check --config /etc/journald-kafka/config.toml 2>&1)
case "$chk" in *"a broker outage longer than that loses entries"*) ok "check: warns that the journal keeps less than 24 h" ;; *) fail "check (hours): $chk" ;; esac
case "$chk" in *"systemd 252 truncates"*) fail "check warns about SIGBUS for the native reader: $chk" ;; *) ok "check: no SIGBUS warning for the native reader (it guards its mappings)" ;; esac
with_libsystemd /etc/journald-kafka/config.toml >/tmp/libsystemd.toml
chk_lib=$(journald-kafka check --config /tmp/libsystemd.toml 2>&1)
case "$chk_lib" in *"systemd 252 truncates"*) ok "check: warns about systemd 252 (SIGBUS) for the libsystemd reader" ;; *) fail "check (version, libsystemd reader): $chk_lib" ;; esac
printf '[Journal]\nStorage=volatile\n' >/etc/systemd/journald.conf.d/60-volatile.conf
chk=$(journald-kafka check --config /etc/journald-kafka/config.toml 2>&1)
case "$chk" in *"Storage=volatile"*) ok "check: warns about volatile storage" ;; *) fail "check (volatile): $chk" ;; esac
rm /etc/systemd/journald.conf.d/60-volatile.conf
sed "s#^\[metrics\]#[state]\ndirectory = \"/tmp/nobody-state\"\n[metrics]#" /etc/journald-kafka/config.toml >/tmp/nobody.toml
chmod 644 /tmp/nobody.toml
chk=$(runuser -u nobody -- journald-kafka check --config /tmp/nobody.toml 2>&1)
case "$chk" in *"neither systemd-journal nor adm"*) ok "check: warns about a user outside systemd-journal" ;; *) fail "check (user): $chk" ;; esac
config sys2
systemctl reload journald-kafka
if wait_for 30 ready; then ok "recovery: ready again once the brokers answer"; else fail "recovery: $(http_body /health/ready)"; fi
rm /etc/systemd/journald.conf.d/50-small.conf
systemctl restart systemd-journald

# 6. The templated unit, one instance reading a journal namespace.
cat >/etc/journald-kafka/web.toml <<EOF
[journal]
namespace = "web"
[kafka]
brokers = "127.0.0.1:$PORT"
topic = "sysweb"
[state]
directory = "/var/lib/journald-kafka/web"
EOF
chown root:journald-kafka /etc/journald-kafka/web.toml
chmod 640 /etc/journald-kafka/web.toml
systemd-run -q --wait -p LogNamespace=web /bin/echo "web starting"
if systemctl enable --now journald-kafka@web && wait_for 30 active journald-kafka@web; then
  ok "journald-kafka@web: active"
else
  fail "journald-kafka@web: $(systemctl status journald-kafka@web --no-pager | head -20)"
fi
systemd-run -q --wait -p LogNamespace=web /bin/sh -c 'for i in $(seq 1 30); do echo "w1 $i"; done'
N=30
if wait_for 60 arrived sysweb w1; then ok "journald-kafka@web: the namespace's lines arrived"; else fail "w1: $(count sysweb w1) of 30"; fi
[ -s /var/lib/journald-kafka/web/cursor ] && ok "journald-kafka@web: its cursor in /var/lib/journald-kafka/web" || fail "no cursor in /var/lib/journald-kafka/web"
[ "$(count sys2 w1)" = 0 ] && ok "the main instance did not ship the namespace's lines" || fail "w1 in the main topic"
# A copied config that names another instance's state directory is refused by the sandbox.
cp /etc/journald-kafka/web.toml /etc/journald-kafka/copy.toml
chown root:journald-kafka /etc/journald-kafka/copy.toml; chmod 640 /etc/journald-kafka/copy.toml
systemctl start journald-kafka@copy
sleep 2
if journalctl -u journald-kafka@copy --no-pager | grep -q 'set \[state\] directory = "/var/lib/journald-kafka/copy"'; then
  ok "journald-kafka@copy with web's state directory: refused, naming the directory to set"
else
  fail "journald-kafka@copy: $(journalctl -u journald-kafka@copy --no-pager | tail -5)"
fi
systemctl stop journald-kafka@copy; systemctl reset-failed journald-kafka@copy 2>/dev/null

# 7. The SASL password as a systemd credential (LoadCredential=), to a SCRAM broker.
echo -n "$SPASSWORD" >/etc/journald-kafka/kafka-password
chmod 600 /etc/journald-kafka/kafka-password
printf '[Service]\nLoadCredential=kafka-password:/etc/journald-kafka/kafka-password\n' \
  >/etc/systemd/system/journald-kafka.service.d/60-credential.conf
secure='sasl_password_credential = "kafka-password"
[kafka.properties]
"security.protocol" = "sasl_plaintext"
"sasl.mechanisms" = "SCRAM-SHA-512"
"sasl.username" = "jk"'
cat >/etc/journald-kafka/config.toml <<EOF
[kafka]
brokers = "127.0.0.1:$SPORT"
topic = "syssec"
$secure
[metrics]
listen = "127.0.0.1:$MPORT"
EOF
cat >/root/jk/cat-secure.toml <<EOF
[kafka]
brokers = "127.0.0.1:$SPORT"
topic = "syssec"
sasl_password_file = "/etc/journald-kafka/kafka-password"
[kafka.properties]
"security.protocol" = "sasl_plaintext"
"sasl.mechanisms" = "SCRAM-SHA-512"
"sasl.username" = "jk"
EOF
systemctl daemon-reload
systemctl restart journald-kafka
if wait_for 30 active journald-kafka && wait_for 20 ready; then ok "LoadCredential: active and ready against the SCRAM broker"; else fail "LoadCredential: $(journalctl -u journald-kafka --no-pager | tail -5)"; fi
N=40; log_lines m5 40
if wait_for 60 arrived syssec m5 --config=/root/jk/cat-secure.toml; then ok "LoadCredential: lines shipped with the credential's password"; else fail "m5: $(count syssec m5 --config=/root/jk/cat-secure.toml) of 40"; fi

# 8. Upgrade to the new package: restarted, cursor kept (nothing shipped again), lines arrive.
cursor_before=$(cat /var/lib/journald-kafka/cursor)
pid=$(main_pid journald-kafka)
if dpkg -i $J/new.deb && [ "$(dpkg-query -W -f='${Version}' journald-kafka)" != 0.0.1 ]; then ok "upgrade to $VERSION"; else fail "upgrade: dpkg -i new"; fi
if wait_for 30 active journald-kafka && [ "$(main_pid journald-kafka)" != "$pid" ]; then ok "upgrade: restarted by the package"; else fail "upgrade: not restarted"; fi
[ -s /var/lib/journald-kafka/cursor ] && ok "upgrade: cursor file kept" || fail "upgrade: cursor file gone"
N=40; log_lines m6 40
if wait_for 60 arrived syssec m6 --config=/root/jk/cat-secure.toml; then ok "upgrade: lines after the upgrade arrived"; else fail "m6: $(count syssec m6 --config=/root/jk/cat-secure.toml) of 40"; fi
dups=$(all syssec m5 --config=/root/jk/cat-secure.toml)
[ "$dups" = 40 ] && ok "upgrade: nothing shipped again (m5 40 times, once each)" || fail "upgrade: m5 seen $dups times (cursor before: $cursor_before)"

# 9. systemd-analyze security, online, for both units.
exp() { systemd-analyze security "$1" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'; }
e=$(exp journald-kafka.service); t=$(exp journald-kafka@web.service)
if awk -v e="$e" -v t="$t" 'BEGIN { exit !(e != "" && e <= 2.0 && t != "" && t <= e) }'; then
  ok "systemd-analyze security (online): main $e, journald-kafka@web $t"
else
  fail "exposure: main '$e', template '$t'"
fi

# 10. Purge: units stopped, state gone.
systemctl disable --now journald-kafka@web
rm -f /etc/systemd/system/journald-kafka.service.d/60-credential.conf
if dpkg --purge journald-kafka; then ok "dpkg --purge"; else fail "purge"; fi
! active journald-kafka && ok "purge: the service is stopped" || fail "purge: still active"
[ ! -e /var/lib/journald-kafka ] && ok "purge: state removed" || fail "purge: /var/lib/journald-kafka left"
[ ! -e /usr/lib/systemd/system/journald-kafka.service ] && [ ! -e /usr/lib/systemd/system/journald-kafka@.service ] \
  && ok "purge: unit files removed" || fail "purge: unit files left"

echo DONE >>"$R"
systemctl poweroff --force
