#!/usr/bin/env bash
# Times `revenant dump --leave-running` of a process holding 1 MiB and one
# holding 256 MiB of touched heap (tests/dumpees/single.c), several runs
# each, and prints min / median / max wall time. A benchmark, not a test:
# nothing is asserted. Needs root (ptrace) on x86_64.
#
#   scripts/bench-dump.sh [RUNS]        (default 15)
#
# CRIU 4.2 on the reference machine: 37-60 ms for 1 MiB, 150-270 ms for
# 256 MiB (../shared/research/criu.md, 1.5).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-15}
WORK=$(mktemp -d /tmp/revenant-bench-dump.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build -q --release -p revenant
REV=target/release/revenant
cc -O2 -pthread -o "$WORK/single" tests/dumpees/single.c

bench() {
    local kib=$1 label=$2
    local out="$WORK/out-$kib"
    # stdin is a pipe this script holds open (a coprocess), so the program
    # keeps waiting in read() and no helper process outlives the script.
    coproc DUMPEE { exec setsid "$WORK/single" "$kib" >"$out" 2>&1; }
    PIDS+=("$DUMPEE_PID")
    local pid=""
    for _ in $(seq 1000); do
        pid=$(awk '/^ready/ {print $2}' "$out" 2>/dev/null || true)
        [ -n "$pid" ] && break
        sleep 0.01
    done
    [ -n "$pid" ] || { echo "dumpee did not start" >&2; exit 1; }
    local times=()
    for i in $(seq "$RUNS"); do
        local dir="$WORK/img-$kib-$i"
        mkdir -p "$dir"
        local t0 t1
        t0=${EPOCHREALTIME/./}
        "$REV" dump -t "$pid" -D "$dir" --leave-running
        t1=${EPOCHREALTIME/./}
        times+=($(( t1 - t0 )))  # microseconds
        rm -rf "$dir"
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v label="$label" -v n="$RUNS" '
        { t[NR] = $1 }
        END { printf "%-8s n=%d  min %.1f ms  median %.1f ms  max %.1f ms\n",
                     label, n, t[1] / 1000, t[int((n + 1) / 2)] / 1000, t[n] / 1000 }'
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench 1024 "1 MiB"
bench 262144 "256 MiB"
