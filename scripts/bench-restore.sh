#!/usr/bin/env bash
# Restore speed: wall time of `revenant restore -d` for a process holding
# 1 MiB and one holding 256 MiB of touched heap (tests/dumpees/bigmem.c),
# median of several runs, beside the time `dd` takes to read the same
# pages image (the floor: restore has to read every page) and, when a
# `criu` binary is on PATH, `criu restore -d` of the same images.
# A benchmark, not a test: nothing is asserted. Needs root on x86_64.
#
#   scripts/bench-restore.sh [RUNS]        (default 9)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-9}
WORK=$(mktemp -d /tmp/revenant-bench-restore.XXXXXX)
cleanup() {
    [ -n "${PID:-}" ] && kill -9 "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build -q --release -p revenant
REV=$PWD/target/release/revenant
cc -O2 -o "$WORK/bigmem" tests/dumpees/bigmem.c

# $EPOCHREALTIME, not $(date): forking date costs milliseconds here,
# as much as a 1 MiB restore.
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e3 }'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Waits until PID is gone (a restored process is not our child).
gone() { while kill -0 "$1" 2>/dev/null; do sleep 0.01; done; }

printf '%-8s %12s %12s %12s %12s\n' size dump_ms restore_ms dd_ms criu_ms
for MIB in 1 256; do
    D="$WORK/img-$MIB"; mkdir -p "$D"
    OUT="$WORK/out-$MIB"
    # Only stdio (on /dev/null) may reach the dumpee: an inherited pipe
    # (a jobserver's, say) is not restorable yet.
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        exec setsid "$WORK/bigmem" "$MIB" "$OUT" </dev/null >/dev/null 2>&1
    ) &
    PID=$!
    until [ -s "$OUT" ]; do sleep 0.02; done
    t0=${EPOCHREALTIME/./}; "$REV" dump -t "$PID" -D "$D"; t1=${EPOCHREALTIME/./}
    wait "$PID" 2>/dev/null || true
    dump=$(ms "$t0" "$t1")
    restores=(); dds=(); criu=()
    for _ in $(seq "$RUNS"); do
        t0=${EPOCHREALTIME/./}; "$REV" restore -d -D "$D"; t1=${EPOCHREALTIME/./}
        restores+=("$(ms "$t0" "$t1")")
        kill -9 "$PID"; gone "$PID"
        t0=${EPOCHREALTIME/./}; dd if="$D/pages-1.img" of=/dev/null bs=4M status=none; t1=${EPOCHREALTIME/./}
        dds+=("$(ms "$t0" "$t1")")
        if command -v criu >/dev/null; then
            t0=${EPOCHREALTIME/./}; criu restore -d -D "$D" >/dev/null 2>&1 && t1=${EPOCHREALTIME/./} && criu+=("$(ms "$t0" "$t1")")
            kill -9 "$PID" 2>/dev/null || true; gone "$PID"
        fi
    done
    c="n/a"; [ ${#criu[@]} -gt 0 ] && c=$(printf '%s\n' "${criu[@]}" | median)
    printf '%-8s %12s %12s %12s %12s\n' "${MIB}MiB" "$dump" \
        "$(printf '%s\n' "${restores[@]}" | median)" "$(printf '%s\n' "${dds[@]}" | median)" "$c"
done
PID=
