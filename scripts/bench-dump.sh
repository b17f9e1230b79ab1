#!/usr/bin/env bash
# Dump speed: wall time of `revenant dump --leave-running` of a process
# holding 1, 64, 256 and 1024 MiB of touched heap (tests/dumpees/single.c),
# median of several runs, beside how long the tree stood frozen (the
# dump's own log), what `dd` takes to read the pages image from the page
# cache and to copy it into a new file next to it (the cost of writing
# that much through the file system's page cache, which any dump pays),
# and, when CRIU names a criu binary, `criu dump --leave-running` of the
# same process. A benchmark, not a test: nothing is asserted. Needs root
# (ptrace) on x86_64.
#
# Then iterative dumps (PRE_SIZES, default 1 and 256 MiB, of
# tests/dumpees/bigmem.c): per run a `revenant pre-dump` (its wall time
# and how long the tree stood still), 1 MiB dirtied (SIGUSR1: one word in
# each of 256 pages), and the final `revenant dump --prev-images-dir
# --leave-running` (wall time, frozen time, pages copied and pages left to
# the parent); then the program is killed and the chain restored
# (`restore -d` of the final directory, its pages read from both).
#
#   [CRIU=/path/to/criu] [SIZES="1 256"] [PRE_SIZES="256"] scripts/bench-dump.sh [RUNS]   (default 9)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-9}
SIZES=${SIZES:-1 64 256 1024}
PRE_SIZES=${PRE_SIZES:-1 256}
WORK=$(mktemp -d /tmp/revenant-bench-dump.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build -q --release -p revenant
REV=$PWD/target/release/revenant
cc -O2 -pthread -o "$WORK/single" tests/dumpees/single.c
cc -O2 -o "$WORK/bigmem" tests/dumpees/bigmem.c

# $EPOCHREALTIME, not $(date): forking date costs milliseconds here.
now() { echo "${EPOCHREALTIME/./}"; }
median() { sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)] / 1000}'; }
# "frozen for 125.4ms" (or µs, s) at the end of a log's last line, in µs.
frozen_us() {
    sed -n 's/.*frozen for \([0-9.]*\)\(µs\|ms\|s\)$/\1 \2/p' "$1" |
        awk '{ f = ($2 == "s") ? 1e6 : ($2 == "ms") ? 1e3 : 1; printf "%d", $1 * f }'
}

printf '%-8s %12s %12s %12s %12s %12s\n' size dump_ms frozen_ms dd_read_ms dd_copy_ms criu_ms
for MIB in $SIZES; do
    OUT="$WORK/out-$MIB"
    # stdin is a pipe this script holds open (a coprocess), so the program
    # keeps waiting in read() and no helper process outlives the script.
    coproc DUMPEE { exec setsid "$WORK/single" "$((MIB * 1024))" >"$OUT" 2>&1; }
    PIDS+=("$DUMPEE_PID")
    PID=""
    for _ in $(seq 3000); do
        PID=$(awk '/^ready/ {print $2}' "$OUT" 2>/dev/null || true)
        [ -n "$PID" ] && break
        sleep 0.01
    done
    [ -n "$PID" ] || { echo "dumpee did not start" >&2; exit 1; }
    dumps=() frozen=() reads=() copies=() criu=()
    for i in $(seq "$RUNS"); do
        D="$WORK/img"; rm -rf "$D"; mkdir -p "$D"
        t0=$(now)
        "$REV" dump -t "$PID" -D "$D" --leave-running -v 1 -o dump.log
        t1=$(now)
        dumps+=($((t1 - t0)))
        # "frozen for 125.4ms" (or µs, s) in the log's last line.
        frozen+=("$(sed -n 's/.*frozen for \([0-9.]*\)\(µs\|ms\|s\)$/\1 \2/p' "$D/dump.log" |
            awk '{ f = ($2 == "s") ? 1e6 : ($2 == "ms") ? 1e3 : 1; printf "%d", $1 * f }')")
        t0=$(now)
        dd if="$D/pages-1.img" of=/dev/null bs=16M status=none
        t1=$(now)
        reads+=($((t1 - t0)))
        t0=$(now)
        dd if="$D/pages-1.img" of="$WORK/copy" bs=16M status=none
        t1=$(now)
        copies+=($((t1 - t0)))
        rm -f "$WORK/copy"
        if [ -n "${CRIU:-}" ]; then
            C="$WORK/criu"; rm -rf "$C"; mkdir -p "$C"
            t0=$(now)
            "$CRIU" dump -t "$PID" -D "$C" --leave-running --shell-job -o dump.log >/dev/null 2>&1 ||
                { echo "criu dump failed: $C/dump.log" >&2; exit 1; }
            t1=$(now)
            criu+=($((t1 - t0)))
        fi
    done
    c=-
    [ ${#criu[@]} -gt 0 ] && c=$(printf '%s\n' "${criu[@]}" | median)
    printf '%-8s %12s %12s %12s %12s %12s\n' "${MIB} MiB" \
        "$(printf '%s\n' "${dumps[@]}" | median)" "$(printf '%s\n' "${frozen[@]}" | median)" \
        "$(printf '%s\n' "${reads[@]}" | median)" "$(printf '%s\n' "${copies[@]}" | median)" "$c"
    kill -9 "$PID" 2>/dev/null || true
    wait "$DUMPEE_PID" 2>/dev/null || true
done

echo
printf '%-8s %12s %12s %12s %12s %12s %12s %14s\n' size pre_ms pre_frozen final_ms final_frozen final_pages in_parent \
    chain_restore
for MIB in $PRE_SIZES; do
    OUT="$WORK/pre-out-$MIB"
    setsid "$WORK/bigmem" "$MIB" "$OUT" </dev/null >/dev/null 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 3000); do
        grep -q '^pid=' "$OUT" 2>/dev/null && break
        sleep 0.01
    done
    pres=() pfrozen=() finals=() ffrozen=() fpages=() fparent=() crestores=()
    for i in $(seq "$RUNS"); do
        P="$WORK/pre"; F="$WORK/final"; rm -rf "$P" "$F"; mkdir -p "$P" "$F"
        t0=$(now)
        "$REV" pre-dump -t "$PID" -D "$P" -v 1 -o pre.log
        t1=$(now)
        pres+=($((t1 - t0)))
        pfrozen+=("$(frozen_us "$P/pre.log")")
        kill -USR1 "$PID"
        for _ in $(seq 3000); do
            [ "$(grep -c '^dirtied=' "$OUT")" -ge "$i" ] && break
            sleep 0.01
        done
        t0=$(now)
        "$REV" dump -t "$PID" -D "$F" --prev-images-dir ../pre --leave-running -v 1 -o dump.log
        t1=$(now)
        finals+=($((t1 - t0)))
        ffrozen+=("$(frozen_us "$F/dump.log")")
        # "dump done: 1 processes, 277 pages, 65288 pages in the parent, ..."
        fpages+=("$(sed -n 's/.*dump done: [0-9]* processes, \([0-9]*\) pages, \([0-9]*\) pages in the parent.*/\1/p' "$F/dump.log")")
        fparent+=("$(sed -n 's/.*dump done: [0-9]* processes, \([0-9]*\) pages, \([0-9]*\) pages in the parent.*/\2/p' "$F/dump.log")")
        # The chain restored in its place; the restored program runs the
        # next round.
        kill -9 "$PID"
        wait "$PID" 2>/dev/null || true
        while [ -e "/proc/$PID" ]; do sleep 0.01; done
        t0=$(now)
        "$REV" restore -d -D "$F"
        t1=$(now)
        crestores+=($((t1 - t0)))
    done
    mid() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '%-8s %12s %12s %12s %12s %12s %12s %14s\n' "${MIB} MiB" \
        "$(printf '%s\n' "${pres[@]}" | median)" "$(printf '%s\n' "${pfrozen[@]}" | median)" \
        "$(printf '%s\n' "${finals[@]}" | median)" "$(printf '%s\n' "${ffrozen[@]}" | median)" \
        "$(mid "${fpages[@]}")" "$(mid "${fparent[@]}")" "$(printf '%s\n' "${crestores[@]}" | median)"
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
done
