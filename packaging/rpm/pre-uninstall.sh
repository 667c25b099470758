# $1 = 0: removal, not upgrade.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now journald-kafka.service >/dev/null 2>&1 || :
fi
exit 0
