#!/usr/bin/env bash
# Restore speed: wall time of `revenant restore -d` for processes holding
# 1, 64, 256 and 1024 MiB of touched heap (tests/dumpees/bigmem.c), median
# of several runs, beside the time `dd` takes to read the same pages image
# from the page cache (the floor: a restore has to read every page) into
# one 4 MiB buffer again and again, and into one buffer as big as the
# image (`dd_fresh`: what reading it into memory never used costs, which a
# restore pays for every page it places), and
# `revenant restore -d --lazy`: when it returns, and when its page server
# reports the last page in (counted from the moment it got the process).
# With CRIU naming a criu binary, the same process is also dumped by CRIU,
# and its images restored by revenant and by `criu restore -d`, with `dd`
# of CRIU's pages image. A benchmark, not a test: nothing is asserted.
# Needs root on x86_64.
#
#   [CRIU=/path/to/criu] [SIZES="1 256"] scripts/bench-restore.sh [RUNS]   (default 9)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-9}
SIZES=${SIZES:-1 64 256 1024}
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
now() { echo "${EPOCHREALTIME/./}"; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e3 }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
# Waits until PID is gone or a zombie (a restored process is not our
# child, and this machine's init reaps slowly).
gone() { while [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; do sleep 0.005; done; }
# Waits until PID's number is free again, so it can be restored.
free() { while [ -e "/proc/$1" ]; do sleep 0.01; done; }
# Times `revenant restore -d` of $1 with extra options; kills the result.
restore_ms() {
    local d=$1; shift
    local t0 t1
    t0=$(now); "$REV" restore -d -D "$d" "$@"; t1=$(now)
    ms "$t0" "$t1"
}
dd_ms() {
    local t0 t1
    t0=$(now); dd if="$1" of=/dev/null bs=4M status=none; t1=$(now)
    ms "$t0" "$t1"
}
dd_fresh_ms() {
    local t0 t1 size
    size=$(stat -c %s "$1")
    t0=$(now); dd if="$1" of=/dev/null bs="$size" count=1 iflag=fullblock status=none; t1=$(now)
    ms "$t0" "$t1"
}

printf '%-9s %10s %10s %10s %12s %10s %10s' size dump restore lazy lazy_last dd dd_fresh
[ -n "${CRIU:-}" ] && printf ' %12s %10s %10s' rev_criu_img criu_dd criu
printf '   (ms, medians of %s)\n' "$RUNS"
for MIB in $SIZES; do
    D="$WORK/img-$MIB"; C="$WORK/criu-$MIB"; mkdir -p "$D" "$C"
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
    if [ -n "${CRIU:-}" ]; then
        "$CRIU" dump -t "$PID" -D "$C" --leave-running -o dump.log >/dev/null 2>&1 ||
            { echo "criu dump failed: $C/dump.log" >&2; exit 1; }
    fi
    t0=$(now); "$REV" dump -t "$PID" -D "$D"; t1=$(now)
    { wait "$PID"; } 2>/dev/null || true
    dump=$(ms "$t0" "$t1")
    restores=() lazies=() lasts=() dds=() fresh=() revcriu=() cdds=() criu=()
    for i in $(seq "$RUNS"); do
        restores+=("$(restore_ms "$D")"); kill -9 "$PID"; gone "$PID"; free "$PID"
        dds+=("$(dd_ms "$D/pages-1.img")")
        fresh+=("$(dd_fresh_ms "$D/pages-1.img")")
        L="$WORK/lazy-$i.log"
        lazies+=("$(restore_ms "$D" --lazy -o "$L")")
        # The page server appends its figure to the log when it is done.
        until grep -q "all pages in after" "$L"; do sleep 0.01; done
        lasts+=("$(sed -n 's/.*all pages in after \([0-9.]*\) ms.*/\1/p' "$L" | head -1)")
        kill -9 "$PID"; gone "$PID"; free "$PID"
        if [ -n "${CRIU:-}" ]; then
            revcriu+=("$(restore_ms "$C")"); kill -9 "$PID"; gone "$PID"; free "$PID"
            cdds+=("$(dd_ms "$(ls "$C"/pages-*.img | head -1)")")
            t0=$(now)
            "$CRIU" restore -d -D "$C" -o restore.log >/dev/null 2>&1 ||
                { echo "criu restore failed: $C/restore.log" >&2; exit 1; }
            t1=$(now)
            criu+=("$(ms "$t0" "$t1")"); kill -9 "$PID"; gone "$PID"; free "$PID"
        fi
    done
    printf '%-9s %10s %10s %10s %12s %10s %10s' "${MIB} MiB" "$dump" \
        "$(printf '%s\n' "${restores[@]}" | median)" "$(printf '%s\n' "${lazies[@]}" | median)" \
        "$(printf '%s\n' "${lasts[@]}" | median)" "$(printf '%s\n' "${dds[@]}" | median)" \
        "$(printf '%s\n' "${fresh[@]}" | median)"
    if [ -n "${CRIU:-}" ]; then
        printf ' %12s %10s %10s' "$(printf '%s\n' "${revcriu[@]}" | median)" \
            "$(printf '%s\n' "${cdds[@]}" | median)" "$(printf '%s\n' "${criu[@]}" | median)"
    fi
    printf '\n'
    PID=
done
