#!/usr/bin/env bash
# Builds fluent-bit (the peer most fleets would pick) once into a cache, for the benchmark.
#   FLUENT_BIT_SRC=<git dir or source tree> scripts/fluent-bit.sh    prints the binary's path
# No registry this project may reach ships fluent-bit, so its source must be given: a git
# directory (a fetched snapshot; the ref is FLUENT_BIT_REF, default v5.1.1) or an unpacked
# tree. The build takes about 20 minutes on 2 cores; the binary is cached in
# $BENCH_CACHE/fluent-bit-<version>/ and reused. Exits 2 when no source is known.
set -euo pipefail
VERSION=${FLUENT_BIT_VERSION:-5.1.1}
REF=${FLUENT_BIT_REF:-v$VERSION}
CACHE=${BENCH_CACHE:-$HOME/.cache/journald-kafka-bench}
OUT=$CACHE/fluent-bit-$VERSION
if [ -x "$OUT/fluent-bit" ]; then echo "$OUT/fluent-bit"; exit 0; fi
SRC=${FLUENT_BIT_SRC:-}
[ -n "$SRC" ] || { echo "fluent-bit: no cached build in $OUT and FLUENT_BIT_SRC is not set" >&2; exit 2; }
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq flex bison cmake libsystemd-dev libsqlite3-dev libyaml-dev libssl-dev >/dev/null
BUILD=$(mktemp -d /tmp/fluent-bit-build.XXXXXX)
trap 'rm -rf "$BUILD" "$BUILD.index"' EXIT
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  # The snapshot lacks the bundled sqlite amalgamation's blob (git archive fails on it
  # even when excluded); the system sqlite is used, so that file is left out of a private
  # index before checking the tree out.
  GD=$(git -C "$SRC" rev-parse --absolute-git-dir)
  export GIT_INDEX_FILE=$BUILD.index
  git --git-dir="$GD" read-tree "$REF^{tree}"
  git --git-dir="$GD" ls-files -- 'lib/sqlite-amalgamation-*/sqlite3.c' \
    | xargs -r git --git-dir="$GD" update-index --force-remove --
  git --git-dir="$GD" --work-tree="$BUILD" checkout-index -a
  rm -f "$GIT_INDEX_FILE"; unset GIT_INDEX_FILE
else
  cp -a "$SRC/." "$BUILD/"
fi
mkdir -p "$BUILD/build"
cd "$BUILD/build"
# simdutf fails to build for this CPU's AVX2 target; LuaJIT and WASM are not needed to read
# the journal and ship to Kafka.
cmake .. -DCMAKE_BUILD_TYPE=Release -DFLB_PREFER_SYSTEM_LIB_SQLITE=On -DFLB_USE_SIMDUTF=No \
  -DFLB_UNICODE_ENCODER=Off -DFLB_LUAJIT=Off -DFLB_WASM=Off -DFLB_EXAMPLES=Off >cmake.log 2>&1 \
  || { tail -30 cmake.log >&2; exit 1; }
make -j"$(nproc)" fluent-bit-bin >make.log 2>&1 || { tail -40 make.log >&2; exit 1; }
mkdir -p "$OUT"
cp bin/fluent-bit "$OUT/fluent-bit.tmp" && mv "$OUT/fluent-bit.tmp" "$OUT/fluent-bit"
echo "fluent-bit $VERSION built in $(( $(date +%s) - start )) s" >&2
echo "$OUT/fluent-bit"
