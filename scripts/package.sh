#!/usr/bin/env bash
# Builds target/packages/journald-kafka_<version>_amd64.deb and journald-kafka-<version>.x86_64.rpm.
#   scripts/package.sh [--deb-version V]   (V overrides the .deb version, for upgrade tests)
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

have() { command -v "$1" >/dev/null 2>&1; }
# zig (PyPI) and cargo-zigbuild, at the versions scripts/install-deps.sh pins.
python3 -c 'import ziglang' 2>/dev/null || python3 -m pip install -q ziglang==0.17.1
if [ "$(cargo-zigbuild --version 2>/dev/null | awk '{print $2}')" != 0.24.1 ]; then
  cargo install cargo-zigbuild --version =0.24.1 --locked
fi
if ! have cargo-deb || [ "$(cargo deb --version | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
  cargo install cargo-deb --version "=$CARGO_DEB_VERSION" --locked
fi
if ! have cargo-generate-rpm; then
  cargo install cargo-generate-rpm --version "=$CARGO_GENERATE_RPM_VERSION" --locked
fi

# The packaged binary is linked against glibc 2.28's symbol versions (zig as the C compiler
# and linker, through cargo-zigbuild), so it runs on every glibc from 2.28 (RHEL 8, Debian
# 11, Ubuntu 20.04, SUSE 15) to today's; a plain build on this machine would need 2.34.
# cargo-zigbuild gives zig to the crates that read CC_<target>; Kerberos' build reads only
# CC, and with the host's compiler and headers it would call res_nsearch by its glibc 2.34
# name: CC is zig for 2.28 too.
GLIBC_FLOOR=2.28
# Kerberos configures no -O: zig's cc would then build it in its Debug mode, with the
# undefined-behaviour sanitizer and a runtime that aborts the agent on a hit. Optimised and
# without sanitizers, as cargo-zigbuild builds the others. Its clang also turns some of
# Kerberos' old C into errors: they stay warnings. (Kerberos' own flags come first, so
# these go last.)
tdir=${CARGO_TARGET_DIR:-target}
mkdir -p "$tdir/zig"
cat >"$tdir/zig/cc" <<EOF
#!/bin/sh
exec python3 -m ziglang cc -target x86_64-linux-gnu.$GLIBC_FLOOR "\$@" -O2 -fno-sanitize=all -Wno-error=incompatible-pointer-types-discards-qualifiers -Wno-error=incompatible-pointer-types -Wno-error=int-conversion -Wno-error=implicit-function-declaration -Wno-error=implicit-int
EOF
chmod +x "$tdir/zig/cc"
CC=$(realpath "$tdir/zig/cc") cargo zigbuild --release --locked --target "x86_64-unknown-linux-gnu.$GLIBC_FLOOR"
bin=$tdir/x86_64-unknown-linux-gnu/release/journald-kafka
# The man page and completions come from the same clap definitions as --help.
rm -rf target/assets
"$bin" generate-assets target/assets
gzip -9n target/assets/journald-kafka.1
# Release builds keep line tables for profiling; packages ship without them.
objcopy --strip-debug "$bin" target/assets/journald-kafka
mkdir -p target/packages
cargo deb --no-build --output target/packages/ "$@"
# xz, not cargo-generate-rpm's zstd: RPM 4.14 (RHEL 8) and SUSE 15's may not read zstd.
cargo generate-rpm --payload-compress xz --output target/packages/
ls -l target/packages/
