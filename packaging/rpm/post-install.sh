install -d -o journald-kafka -g journald-kafka -m 0750 /var/lib/journald-kafka
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # $1 > 1: an upgrade. Restart a running agent; SIGTERM makes it save its cursor first.
    if [ "$1" -gt 1 ]; then
        systemctl try-restart journald-kafka.service >/dev/null 2>&1 || :
    fi
fi
exit 0
