getent group journald-kafka >/dev/null || groupadd --system journald-kafka
getent passwd journald-kafka >/dev/null || useradd --system --gid journald-kafka \
    --home-dir /var/lib/journald-kafka --no-create-home --shell /sbin/nologin \
    --comment "journald-kafka agent" journald-kafka
if getent group systemd-journal >/dev/null; then
    usermod --append --groups systemd-journal journald-kafka
fi
exit 0
