#!/usr/bin/env bash
# The README's test command on a busy machine (issue 18, item 9): RUNS times
# in a row (default 3), each on a fresh clone of this checkout's HEAD, while
# a second process keeps both cores busy for the whole time (a loop of
# `cargo build --release` of the app and the load generator, with `cargo
# clean` between builds, in a clone and target directory of its own).
#
#   scripts/busy-suite.sh              # 3 runs; stops at the first failure
#   RUNS=1 scripts/busy-suite.sh
#   FRESH_TARGET=1 scripts/busy-suite.sh   # each run compiles from nothing
#
# By default the runs share one target directory: the first compiles
# everything, the others only the workspace's own crates (their sources are
# new files), then run the tests. What a busy machine breaks is the tests'
# timing, not the compiler; FRESH_TARGET=1 gives each run an empty one.
#
# Needs what the README's test command needs (Postgres and Redis as the
# README says). Each run's log is kept in $OUT (default /tmp/busy-suite):
# run-N.log, with one line per run in results.txt (exit code, seconds) and
# the load average every 30 s in load.txt. Exits non-zero if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
OUT=${OUT:-/tmp/busy-suite}
SRC=$(pwd)
HEAD=$(git rev-parse HEAD)
[ -n "$OUT" ] || { echo "OUT is empty" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT" || exit 2
echo "busy suite of $HEAD: $RUNS runs, logs in $OUT" | tee "$OUT/results.txt"

# The second process: its own clone and target directory, so it never
# shares a lock or an artefact with the runs it competes with.
git clone -q "$SRC" "$OUT/busy-src"
# In a session of its own, so that stopping it stops every rustc it started.
setsid bash -c '
  cd "$1/busy-src" || exit 1
  while [ ! -e "$1/stop" ]; do
    cargo build --release -p app -p loadtest --target-dir "$1/busy-target" >/dev/null 2>&1
    cargo clean --target-dir "$1/busy-target" >/dev/null 2>&1
  done' busy "$OUT" &
BUSY=$!
(
  while [ ! -e "$OUT/stop" ]; do
    echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"
    sleep 30
  done
) &
LOAD=$!
stop_busy() {
  touch "$OUT/stop"
  kill -- -"$BUSY" 2>/dev/null
  pkill -P "$LOAD" 2>/dev/null
  kill "$LOAD" 2>/dev/null
  # Every rustc of the group gone before its files are removed.
  while kill -0 -- -"$BUSY" 2>/dev/null; do sleep 1; done
  wait "$BUSY" "$LOAD" 2>/dev/null
  rm -rf "$OUT/busy-src" "$OUT/busy-target"
}
trap stop_busy EXIT
# Let the busy loop get going before the first run starts.
sleep 20

failed=0
for i in $(seq 1 "$RUNS"); do
  clone="$OUT/clone"   # one path, so a shared target directory matches it
  git clone -q "$SRC" "$clone"
  git -C "$clone" checkout -q "$HEAD"
  target="$OUT/target"
  [ -z "${FRESH_TARGET:-}" ] || target="$OUT/target-$i"
  start=$(date +%s)
  (cd "$clone" && CARGO_TARGET_DIR="$target" cargo test --workspace) >"$OUT/run-$i.log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  echo "run $i: exit $rc in ${secs} s (load at the end: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/results.txt"
  rm -rf "$clone"
  [ -z "${FRESH_TARGET:-}" ] || rm -rf "$target"
  if [ "$rc" -ne 0 ]; then
    failed=1
    grep -E "^test .* FAILED|^---- |panicked" "$OUT/run-$i.log" | head -20 | tee -a "$OUT/results.txt"
    break
  fi
done
exit "$failed"
