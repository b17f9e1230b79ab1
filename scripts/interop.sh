#!/usr/bin/env bash
# Interop with CRIU: every dumpee of tests/dumpees/ that runs on its own
# (files only, no stdin) goes both ways,
#   revenant dump -> criu restore   and   criu dump -> revenant restore,
# and must carry on after the restore: its output grows with lines that
# say its state came back (see the case_ lines at the end), and where it has a last act
# (reaping children, taking a pending signal) it does it. Prints a table;
# exits non-zero if any case FAILs. Needs root on x86_64 and a CRIU
# binary; not run by scripts/test.sh.
#
#   CRIU=/path/to/criu scripts/interop.sh [NAME...]    (all cases if none)
#
# KEEP=1 keeps the work directory (images, logs, outputs) even when all
# pass; it is always kept when something fails. REVENANT_RESTORE_ARGS adds
# options to every `revenant restore` (e.g. `--lazy`, so CRIU's images of
# every case are restored lazily).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ -z "${CRIU:-}" ]; then
    cat <<'EOF'
interop: no CRIU given. Build CRIU 4.2 from its source, outside this
repository: tag v4.2 of https://github.com/checkpoint-restore/criu, as its
INSTALL.md says (its `make criu` leaves the binary at criu/criu; Debian's
packaged CRIU 3.17 does not run on Linux 6.13 and later). Then:
    CRIU=/path/to/criu scripts/interop.sh
interop: skipped
EOF
    exit 0
fi
if [ "$(id -u)" != 0 ] || [ "$(uname -m)" != x86_64 ]; then
    echo "interop: needs root on x86_64 (revenant dump is x86_64 only, both tools ptrace)" >&2
    exit 1
fi
CRIU_VERSION=$("$CRIU" --version 2>/dev/null | sed -n 's/^Version: //p')
if [ -z "$CRIU_VERSION" ]; then
    echo "interop: $CRIU does not run as CRIU (criu --version)" >&2
    exit 1
fi

cargo build -q --release -p revenant || exit 1
REV=${CARGO_TARGET_DIR:-$ROOT/target}/release/revenant
WORK=$(mktemp -d /tmp/revenant-interop.XXXXXX)
mkdir -p "$WORK/bin"

# Each case lists the PIDs of its tree in CASE_DIR/live while it runs; if
# the script is stopped, those still running one of our dumpees are killed.
cleanup() {
    local f p
    for f in "$WORK"/*/live; do
        [ -f "$f" ] || continue
        for p in $(cat "$f"); do
            [[ $(readlink /proc/"$p"/exe 2>/dev/null) == "$WORK"/bin/* ]] && kill -9 "$p" 2>/dev/null
        done
    done
    # posixsem's named semaphores, whose child unlinks them unless killed.
    for f in /dev/shm/sem.revenant-named-*; do
        [ -e "$f" ] && [ ! -e /proc/"${f##*-}" ] && rm -f "$f"
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Dumpees that talk over a stdin pipe (pingpong.h) cannot run detached:
# a restore has nobody to reconnect the pipe to.
SKIPPED=(
    "single|talks over a stdin pipe (pingpong.h); counter covers it"
    "child|talks over a stdin pipe (pingpong.h); family covers it"
    "threads|talks over a stdin pipe (pingpong.h); tickthreads covers it"
    "files|talks over a stdin pipe (pingpong.h); counter covers files"
    "pipe|talks over a stdin pipe (pingpong.h); pipefile covers it"
    "spin|talks over a stdin pipe (pingpong.h)"
    "socket|talks over a stdin pipe (pingpong.h); its netlink socket is refused by design (tests/dump.rs)"
    "sharing|refused at dump by design (tests/dump.rs)"
)

PATIENCE=30 # seconds for anything to happen; only reached when broken

# The PIDs of PID and all its descendants.
tree() {
    local p=$1 c
    echo "$p"
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done
}

# Waits until none of the PIDs exists (PID 1 reaps killed orphans late).
gone() {
    local t=$((SECONDS + PATIENCE)) p
    for p in "$@"; do
        while [ -e /proc/"$p" ] && [ $SECONDS -lt $t ]; do sleep 0.02; done
    done
}

lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }

# Waits until FILE has at least N lines; fails after PATIENCE.
wait_lines() {
    local t=$((SECONDS + PATIENCE))
    while [ "$(lines "$1")" -lt "$2" ]; do
        [ $SECONDS -ge $t ] && return 1
        sleep 0.05
    done
}

# The first error line of a CRIU log (but the harmless one of a root
# without CAP_SYS_RESOURCE), without time and PID; revenant's last line.
criu_error() {
    grep -E '^\([0-9. ]+\) +([0-9]+: )?Error' "$1" 2>/dev/null | grep -v 'RLIMIT_NOFILE' | head -n1 |
        sed -E 's/^\([0-9. ]+\) +([0-9]+: )?//; s/^Error \(([^)]*)\): /\1: /'
}
rev_error() { tail -n1 "$1" 2>/dev/null | sed 's/^revenant: //'; }

# Kills PIDs and waits until they are gone.
kill_all() {
    [ $# -gt 0 ] || return 0
    kill -9 "$@" 2>/dev/null
    gone "$@"
}

# run_case DUMPER RESTORER (revenant or criu) and the case's fields: one
# case one way. Prints "STAGE<tab>WHAT": STAGE is pass, start, dump,
# restore (the restoring tool failed) or check (the program did not carry
# on as it should).
run_case() {
    local dumper=$1 restorer=$2 name=$3 prog=$4 args=$5 stdout=$6 wrap=$7 ready=$8 ok=$9 gowait=${10} gook=${11}
    [ "$dumper" = criu ] && [ -n "${12:-}" ] && ok=${12}
    local d
    d="$WORK/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')-$dumper-$restorer"
    mkdir -p "$d/images"
    local out=$d/out go=$d/go
    args=${args//@OUT@/$out}
    args=${args//@GO@/$go}
    args=${args//@DIR@/$d}
    local so=/dev/null
    [ "$stdout" = out ] && so=$out
    [ "$wrap" = - ] && wrap=
    # A grandchild: neither this script nor either tool is its parent.
    # Only stdio reaches it (fds this shell inherited are not its).
    (
        (
            for fd in /proc/$BASHPID/fd/*; do
                fd=${fd##*/}
                [ "$fd" -gt 2 ] && eval "exec $fd>&-"
            done
            cd "$d" || exit 1
            # shellcheck disable=SC2086
            exec $wrap setsid "$WORK/bin/$prog" $args </dev/null >"$so" 2>"$d/stderr"
        ) &
        echo $! >"$d/pid"
    )
    local pid pids
    pid=$(cat "$d/pid")
    echo "$pid" >"$d/live"
    if ! wait_lines "$out" "$ready"; then
        kill_all $(tree "$pid")
        rm -f "$d/live"
        printf 'start\tit never wrote %s lines\n' "$ready"
        return
    fi
    pids=$(tree "$pid")
    echo $pids >"$d/live"
    ok=${ok//@PID@/$pid}
    ok=${ok//@DIR@/$d}
    gook=${gook//@PID@/$pid}

    local dump_cmd restore_cmd
    if [ "$dumper" = revenant ]; then
        dump_cmd=("$REV" dump -t "$pid" -D "$d/images" -o dump.log $TCP)
    else
        # No iptables or nftables here: CRIU's own lock is skipped (both
        # ends of every connection are in the tree, frozen).
        dump_cmd=("$CRIU" dump -t "$pid" -D "$d/images" -o dump.log -v4 --file-locks ${TCP:+$TCP --network-lock skip})
    fi
    if [ "$restorer" = revenant ]; then
        restore_cmd=("$REV" restore -d -D "$d/images" -o restore.log $TCP ${REVENANT_RESTORE_ARGS:-})
    else
        restore_cmd=("$CRIU" restore -d -D "$d/images" -o restore.log -v4 --file-locks $TCP)
    fi
    if ! timeout 120 "${dump_cmd[@]}" >"$d/dump.err" 2>&1; then
        kill_all $pids
        rm -f "$d/live"
        if [ "$dumper" = criu ]; then
            printf 'dump\t%s\n' "$(criu_error "$d/images/dump.log")"
        else
            printf 'dump\t%s\n' "$(rev_error "$d/dump.err")"
        fi
        return
    fi
    gone $pids
    # revenant's keeper holds the connections for a revenant restore; CRIU
    # builds its own, so the keeper must let them go.
    local keeper
    keeper=$(sed -n 's/.*held locked by process \([0-9]*\).*/\1/p' "$d/images/dump.log" 2>/dev/null)
    if [ -n "$keeper" ] && [ "$restorer" = criu ]; then
        kill "$keeper"
        # Gone once it holds no descriptor (init may reap it late).
        local t=$((SECONDS + PATIENCE))
        while [ -n "$(ls /proc/"$keeper"/fd 2>/dev/null)" ] && [ $SECONDS -lt $t ]; do sleep 0.05; done
    fi
    local n k v
    n=$(lines "$out")
    while [[ $ok =~ @LAST:([a-z]+)@ ]]; do
        k=${BASH_REMATCH[1]}
        v=$(tail -n1 "$out" | grep -oE "(^| )$k=[^ ]*" | cut -d= -f2)
        ok=${ok//@LAST:$k@/$v}
    done
    if ! timeout 120 "${restore_cmd[@]}" >"$d/restore.err" 2>&1; then
        kill_all $pids
        rm -f "$d/live"
        if [ "$restorer" = criu ]; then
            printf 'restore\t%s\n' "$(criu_error "$d/images/restore.log")"
        else
            printf 'restore\t%s\n' "$(rev_error "$d/restore.err")"
        fi
        return
    fi
    local result="pass"
    if ! wait_lines "$out" $((n + 4)); then
        result="check	it did not carry on ($(($(lines "$out") - n)) lines after the restore)"
    elif [ ! -e /proc/"$pid" ]; then
        result="check	PID $pid is not back"
    else
        local bad
        bad=$(tail -n +$((n + 1)) "$out" | grep -m1 -vE "$ok")
        [ -n "$bad" ] && result="check	it wrote \"$bad\""
    fi
    if [ "$result" = pass ] && [ "$gowait" != - ]; then
        local re=${gowait%#*} count=${gowait##*#} t=$((SECONDS + PATIENCE))
        : >"$go"
        while [ "$(grep -cE "$re" "$out")" -lt "$count" ] && [ $SECONDS -lt $t ]; do sleep 0.05; done
        if [ "$(grep -cE "$re" "$out")" -lt "$count" ]; then
            result="check	no \"$re\" line once asked for its last act"
        else
            local last
            last=$(grep -E "$re" "$out" | grep -m1 -vE "$gook")
            [ -n "$last" ] && result="check	its last act wrote \"$last\""
        fi
    fi
    kill_all $pids
    rm -f "$d/live"
    printf '%s\n' "$result"
}

cc_dumpee() {
    cc -O1 -pthread -o "$WORK/bin/$1" "tests/dumpees/$1.c" || {
        echo "interop: compiling tests/dumpees/$1.c failed" >&2
        exit 1
    }
}

ROWS=()
FAILED=0
# Options both tools take for the cases that need them.
TCP=
SELECTED=("$@")

# case NAME PROGRAM ARGS STDOUT WRAP READY OK GO_WAIT GO_OK: runs one
# dumpee both ways and adds its row.
#   ARGS: the program's arguments; @OUT@ (its output file), @GO@ (a file
#     whose creation asks for its last act) and @DIR@ (the case's
#     directory) are replaced.
#   STDOUT: "out" (stdout is the output file) or "null".
#   WRAP: a command to run it under ("unshare -i": an IPC namespace of its
#     own), or "-".
#   READY: lines of output before the dump.
#   OK: an extended regex every line written after the restore matches
#     (@PID@ is the dumped PID, @DIR@ as above, @LAST:KEY@ the value of
#     KEY= in the last line before the dump); at least 4 such lines must
#     come, from the same PID.
#   GO_WAIT: "-", or "RE#N": then @GO@ is created once the restored
#     program carries on, and it must write N lines matching RE, each of
#     which must match GO_OK.
#   LACKS, CRIU_OK (optional): what CRIU's images have no field for, and
#     the OK regex that CRIU → revenant must meet instead.
#
# What is not ours is not a FAIL: CRIU refusing to dump a program
# (CRIU → revenant), and, revenant → CRIU, a CRIU restore that fails, or a
# program that finds its state changed after it, when CRIU does the same
# with its own dump of the program (run then to tell).
case_() {
    local name=$1 prog=$2 sel=${1%% *}
    if [ ${#SELECTED[@]} -gt 0 ] && [[ " ${SELECTED[*]} " != *" $sel "* ]]; then
        return
    fi
    [ -x "$WORK/bin/$prog" ] || cc_dumpee "$prog"
    local a b stage what c_stage c_what
    IFS=$'\t' read -r stage what < <(run_case revenant criu "${@:1:9}")
    case $stage in
    pass) a=PASS ;;
    start) a="FAIL (the program: $what)" ;;
    dump) a="FAIL (revenant dump: $what)" ;;
    *)
        IFS=$'\t' read -r c_stage c_what < <(run_case criu criu "${@:1:9}")
        if [ "$c_stage" = pass ] || [ "$c_stage" = start ]; then
            a="FAIL (criu $stage: $what)"
        elif [ "$stage" = restore ]; then
            a="CRIU refuses: $what (CRIU → CRIU: $c_what)"
        else
            a="CRIU gap: $what (CRIU → CRIU: $c_what)"
        fi
        ;;
    esac
    IFS=$'\t' read -r stage what < <(run_case criu revenant "${@:1:9}" "${11:-}")
    case $stage in
    pass) b=PASS${10:+ (not in CRIU images: ${10})} ;;
    start) b="FAIL (the program: $what)" ;;
    dump) b="CRIU refuses: $what" ;;
    *) b="FAIL (revenant $stage: $what)" ;;
    esac
    [[ $a == FAIL* || $b == FAIL* ]] && FAILED=1
    printf '%s: %s | %s\n' "$name" "$a" "$b" >&2
    ROWS+=("| $name | $a | $b |")
}

case_ counter counter '@OUT@ @DIR@' null - 3 '^pid=@PID@ tick=[0-9]+ check=ok cwd=@DIR@$' - -
case_ bigmem bigmem '64 @OUT@' null - 3 '^pid=@PID@ tick=[0-9]+$' - -
case_ tickthreads tickthreads '' out - 3 '^tick [0-9]+ [0-9]+$' - -
case_ sleeper sleeper '' out - 3 '^tick [0-9]+$' - -
case_ avxthreads avxthreads '@OUT@' null - 12 '^tid=[0-9]+ n=[0-9]+ ymm=ok$' - -
case_ survivor survivor '@OUT@' null - 5 '^tick [0-9]+ alarms=[0-9]+ iters=[0-9]+ bad=0 why=-$' - -
case_ signals signals '@OUT@ @GO@' null - 3 '^alarms=[0-9]+ onstack=1 trap=1 usr2blocked=1$' '^usr1=#1' '^usr1=delivered$'
case_ posixtimer posixtimer '@OUT@' null - 3 '^fired=[0-9]+ interval_ns=20000000 id=1 armed=1$' - -
case_ clock clock '@OUT@' null - 3 '^tick=[0-9]+ vdso=ok$' - -
case_ guards guards '@OUT@' null - 3 '^tick=[0-9]+ guards=ok$' - -
case_ lonegroup lonegroup '@OUT@' null - 3 '^tick=[0-9]+ group=ok$' - -
case_ strict strict '@OUT@ @GO@' null - 3 '^tick=[0-9]+$' '^strict=#1' '^strict=ok$'
case_ movedvdso movedvdso '@OUT@' null - 3 '^tick=[0-9]+ moved=ok$' - -
case_ sandboxed sandboxed '@OUT@' null - 3 '^pid=@PID@ tick=[0-9]+ main=77,0 thread=77,78$' - -
case_ pipefile pipefile '@OUT@ @GO@' null - 3 '^pid=@PID@ tick=[0-9]+$' \
    '^pipe=#1' '^pipe=through the pipe again=again \(16 5\) size=262144$'
case_ family family '@OUT@ @GO@' null - 6 '^(parent pid=@PID@|child pid=[0-9]+ ppid=@PID@ pgid=[0-9]+) tick=[0-9]+$' \
    '^reaped #2' '^reaped pid=[0-9]+ signal=15$'
case_ zombies zombies '@OUT@ @GO@' null - 3 '^pid=@PID@ tick=[0-9]+ zombies a=[0-9]+ b=[0-9]+ chld=@LAST:chld@$' \
    ' reaped #1' '^pid=@PID@ tick=[0-9]+ reaped a=exit:7 b=signal:15$'
KNOBS='^tick=[0-9]+ subreaper=1 thp_disabled=1 personality=0x40000 nice=7 worker_nice=3 worker_policy=1073741827'
case_ knobs knobs '@OUT@' null - 2 \
    "$KNOBS slack=123456 worker_slack=123456 oom_score_adj=100 membarrier=0x10 worker_cpus=0x1 worker_ioprio=0x4006 coredump_filter=0000003f dumpable=0 ksm=@LAST:ksm@ autogroup=@LAST:autogroup@\$" - - \
    'timer slack, CPU affinity, I/O priority, core dump filter, KSM, autogroup nice' \
    "$KNOBS slack=[0-9]+ worker_slack=[0-9]+ oom_score_adj=100 membarrier=0x10 worker_cpus=0x[0-9a-f]+ worker_ioprio=(0|0x[0-9a-f]+) coredump_filter=[0-9a-f]+ dumpable=0 ksm=(0|1|-1) autogroup=(-|-?[0-9]+)\$"
case_ pipetree pipetree '@OUT@' null - 3 '^child=[0-9]+ got=[0-9]+$' - -
case_ shareddesc shareddesc '@OUT@ @DIR@/shared' null - 3 '^tick=[0-9]+ shared=ok pipe=ok owner=ok opath=ok$' - -
case_ shmanon shmanon '@OUT@' null - 3 '^pid=@PID@ tick=[0-9]+ child=ok pattern=ok b=ok$' - -
case_ "shmanon priv" shmanon '@OUT@ priv' null - 3 '^pid=@PID@ tick=[0-9]+ child=ok pattern=ok b=ok priv=ok$' - -
case_ cow cow '@OUT@' null - 3 '^pid=@PID@ tick=[0-9]+ contents=ok shared=ok$' - -
case_ memfd memfd '@OUT@' null - 3 '^pid=@PID@ tick=[0-9]+ child=ok content=ok seals=ok name=ok pos=ok private=ok$' - -
case_ sockpair sockpair '@OUT@' null - 3 '^tick=[0-9]+ child=ok dgram=ok seqpacket=ok shutdown=ok opts=ok$' - -
case_ fifo fifo '@OUT@ @DIR@' null - 3 '^tick=[0-9]+ fifo=ok$' - -
case_ "fifo unlinked" fifo '@OUT@ @DIR@ unlinked' null - 3 '^tick=[0-9]+ fifo=ok$' - -
case_ inotify inotify '@OUT@ @DIR@' null - 3 '^tick=[0-9]+ inotify=ok$' - -
case_ fanotify fanotify '@OUT@ @DIR@' null - 3 '^tick=[0-9]+ fan=ok$' - -
case_ ghost ghost '@OUT@ @DIR@' null - 3 '^tick=[0-9]+ ghost=ok$' - -
case_ posixsem posixsem '@OUT@' null - 3 '^tick=[0-9]+ sem=ok$' - -
case_ rmcwd rmcwd '@OUT@ @DIR@' null - 3 '^tick=[0-9]+ cwd=ok$' - -
case_ procgone procgone '@OUT@' null - 3 '^tick=[0-9]+ cwd=ok$' - -
case_ locks locks '@OUT@ @DIR@' null - 3 '^tick=[0-9]+ locks=ok$' - -
case_ "locks breaking" locks '@OUT@ @DIR@ breaking' null - 3 '^tick=[0-9]+ locks=ok$' - -
case_ pty pty '@OUT@ @GO@' null - 3 '^tick=[0-9]+ tty=ok$' '^data=#1' '^data=ok$'
case_ unixsrv unixsrv '@OUT@ @DIR@ @GO@' null - 3 '^tick=[0-9]+ named=ok$' '^data=#1' '^data=ok$' \
    'SO_TIMESTAMP' '^tick=[0-9]+ named=(ok|BAD:opts,)$'
case_ sharedfds sharedfds '@OUT@' null - 3 '^tick=[0-9]+ shared=ok$' - -
case_ hungpty hungpty '@OUT@' null - 3 '^tick=[0-9]+ hung=ok$' - -
case_ procself procself '@OUT@' null - 3 '^pid=@PID@ tick=[0-9]+ ns=ok maps=ok pos=ok kin=ok$' - -
case_ unixgone unixgone '@OUT@ @DIR@ @GO@' null - 3 '^tick=[0-9]+ gone=ok$' '^data=#1' '^data=ok$'
case_ scm scm '@OUT@ @DIR@ @GO@' null - 3 '^tick=[0-9]+ scm=ok$' '^data=#1' '^data=ok$'
case_ "scm sock" scm '@OUT@ @DIR@ @GO@ sock' null - 3 '^tick=[0-9]+ scm=ok$' '^data=#1' '^data=ok$'
case_ inetsrv inetsrv '@OUT@' null - 3 '^tick=[0-9]+ inet=ok$' - - \
    'queued UDP datagrams, SO_TIMESTAMP, TCP_DEFER_ACCEPT, IPV6_UNICAST_HOPS' \
    '^tick=[0-9]+ inet=(ok|BAD:(options,)?queue\(0\),)$'
case_ rawsock rawsock '@OUT@' null - 3 '^tick=[0-9]+ raw=ok$' - - \
    'queued UDP-Lite datagrams, IP_RECVTTL' '^tick=[0-9]+ raw=(ok|BAD:(recvttl,)?queue\(0\),)$'
case_ pktsock pktsock '@OUT@' null - 3 '^tick=[0-9]+ packet=ok$' - -
case_ pidfds pidfds '@OUT@' null - 3 '^tick=[0-9]+ pidfd=ok$' - -
case_ nlsock nlsock '@OUT@ plain' null - 3 '^tick=[0-9]+ netlink=ok$' - -
TCP=--tcp-established
case_ tcpconn tcpconn '@OUT@' null - 3 '^tick=[0-9]+ tcp=ok$' - -
TCP=
case_ evloop evloop '@OUT@' null - 3 '^tick=[0-9]+ efd=ok tfd=ok sfd=ok epoll=ok$' - - \
    'eventfd semaphore mode' '^tick=[0-9]+ efd=(ok|BAD) tfd=ok sfd=ok epoll=ok$'
case_ chrooted chrooted '@OUT@ @DIR@/root' null - 2 '^tick=[0-9]+ cwd=/sub found=1$' - -
SHM_OK='^pid=@PID@ tick=[0-9]+ a=[0-9]+ b=[0-9]+ check=ok$'
case_ "sysvshm keep (own IPC ns)" sysvshm '@OUT@ keep' null 'unshare -i' 3 "$SHM_OK" - -
case_ "sysvshm keep fork (own IPC ns)" sysvshm '@OUT@ keep fork' null 'unshare -i' 3 "$SHM_OK" - -
case_ "sysvshm rmid (own IPC ns)" sysvshm '@OUT@ rmid' null 'unshare -i' 3 "$SHM_OK" - -
case_ "sysvshm rmid (host IPC ns)" sysvshm '@OUT@ rmid' null - 3 "$SHM_OK" - -

for s in "${SKIPPED[@]}"; do
    sel=${s%%|*}
    if [ ${#SELECTED[@]} -gt 0 ] && [[ " ${SELECTED[*]} " != *" $sel "* ]]; then
        continue
    fi
    ROWS+=("| $sel | SKIP (${s#*|}) | SKIP |")
done

echo
CPU="$(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) CPUs"
grep -qw avx512f /proc/cpuinfo && CPU="$CPU with AVX-512"
echo "revenant $("$REV" --version | awk '{print $2}') and CRIU $CRIU_VERSION, $(date -u +%Y-%m-%d), Linux $(uname -r), $CPU"
echo
echo "| dumpee | revenant → CRIU | CRIU → revenant |"
echo "| --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
if [ $FAILED = 0 ] && [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
else
    echo
    echo "images, logs and outputs: $WORK"
fi
exit $FAILED
