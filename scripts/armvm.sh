#!/usr/bin/env bash
# Runs revenant's armv7 build on a real ARM kernel: a full-system qemu VM
# (qemu-system-arm -M virt, Cortex-A15, 2 CPUs, 512 MiB) booting Debian's
# armmp kernel with an initramfs of busybox, the armhf libraries, and the
# files to test. Unlike qemu-user (scripts/test.sh's armv7 half) it has
# ptrace, userfaultfd and a real SysV/SHMLBA implementation. Needs root on
# Debian (bookworm) x86_64; installs what is missing.
#
#   scripts/armvm.sh [check]   build (debug; REVENANT_ARMVM_PROFILE=release),
#                              then the check set below in two boots of the
#                              VM: exit 1 if a check failed or a boot did
#                              not finish
#   scripts/armvm.sh prepare   only fill the cache (kernel, busybox, tools)
#   scripts/armvm.sh boot [-d DISK] [-n N] SCRIPT [FILE[=/VM/PATH]]...
#                              one boot: SCRIPT is sourced by /init with
#                              the helpers below, each FILE is put at
#                              /t/NAME (or at /VM/PATH); DISK (made empty if
#                              missing) is what /persist holds across boots
#
# Inside the VM: /init mounts proc, sys, devtmpfs and tmpfs on /dev/shm
# (not on /tmp: the initramfs root is writable, and the test executables
# may sit under /tmp at the paths they were built at), loads virtio-blk,
# fills /persist from the state disk, sources the test script with BOOT=N
# (`-n`), writes /persist back to the disk and powers off. The disk is a 512-byte header "revenant-armvm-state BYTES"
# and a tar of BYTES bytes: no filesystem, nothing to mkfs, two modules
# without dependencies; the host reads it with
# `head -c $((BYTES + 512)) DISK | tail -c BYTES | tar -x`. The script
# reports with
#   check NAME CMD...   runs CMD; prints "ARMVM ok NAME" or "ARMVM FAIL
#                       NAME" and the tail of its output
#   note TEXT           prints "ARMVM note TEXT"
# and the host prints those lines, fails on any FAIL and on a boot that
# did not reach "ARMVM done" within REVENANT_ARMVM_TIMEOUT seconds (600).
#
# Cache: REVENANT_ARMVM_CACHE (/var/cache/revenant-armvm): the kernel and
# its two virtio modules, busybox; a second run downloads nothing. KEEP=1
# keeps the work directory (initramfs, console logs, state disk).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE=${REVENANT_ARMVM_CACHE:-/var/cache/revenant-armvm}
ARM=armv7-unknown-linux-gnueabihf
PROFILE=${REVENANT_ARMVM_PROFILE:-debug}
LIMIT=${REVENANT_ARMVM_TIMEOUT:-600}
SYSROOT=/usr/arm-linux-gnueabihf

step() { printf '\n== %s\n' "$*"; }
die() {
    echo "armvm: $*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/revenant-armvm.XXXXXX")
cleanup() {
    if [ -n "${KEEP:-}" ]; then
        echo "armvm: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# The kernel's modules the VM loads, in order: the state disk's, then the
# sock_diag families a dump of sockets asks (where the kernel would load
# them on demand, with modprobe, which the VM lacks).
MODULES="drivers/virtio/virtio_mmio.ko drivers/block/virtio_blk.ko net/ipv4/inet_diag.ko net/ipv4/tcp_diag.ko
    net/ipv4/udp_diag.ko net/unix/unix_diag.ko"

# The cache: host tools, the armhf kernel (vmlinuz, config, $MODULES) and
# busybox. Each part is fetched only if missing.
prepare() {
    local t0 need=() kpkg kdir
    t0=$(now)
    command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
    command -v cpio >/dev/null || need+=(cpio)
    command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
    [ -e $SYSROOT/lib/crt1.o ] || need+=(libc6-dev-armhf-cross)
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#need[@]} -gt 0 ]; then
        step "installing ${need[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    if ! dpkg --print-foreign-architectures | grep -qx armhf; then
        dpkg --add-architecture armhf
        apt-get update -qq
    fi
    # The versioned kernel package linux-image-armmp depends on today.
    kpkg=$(apt-cache depends linux-image-armmp:armhf 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^:]*\).*/\1/p' | head -n 1)
    if [ -z "$kpkg" ]; then
        apt-get update -qq
        kpkg=$(apt-cache depends linux-image-armmp:armhf | sed -n 's/^ *Depends: \(linux-image-[^:]*\).*/\1/p' | head -n 1)
    fi
    [ -n "$kpkg" ] || die "apt knows no linux-image-armmp:armhf"
    mkdir -p "$CACHE"
    kdir=$CACHE/$kpkg
    local m missing=
    for m in $MODULES; do [ -e "$kdir/$(basename "$m")" ] || missing=1; done
    if [ ! -e "$kdir/ok" ] || [ -n "$missing" ]; then
        step "downloading $kpkg:armhf"
        rm -rf "$kdir" "$CACHE/dl"
        mkdir -p "$CACHE/dl"
        chown _apt "$CACHE/dl" 2>/dev/null || true
        (cd "$CACHE/dl" && apt-get download -qq "$kpkg:armhf")
        dpkg-deb -x "$CACHE"/dl/"$kpkg"_*.deb "$CACHE/dl/x"
        mkdir -p "$kdir"
        cp "$CACHE"/dl/x/boot/vmlinuz-* "$kdir/vmlinuz"
        cp "$CACHE"/dl/x/boot/config-* "$kdir/config"
        for m in $MODULES; do
            cp "$CACHE"/dl/x/lib/modules/*/kernel/$m "$kdir/"
        done
        rm -rf "$CACHE/dl"
        touch "$kdir/ok"
    fi
    ln -sfn "$kpkg" "$CACHE/kernel"
    find "$CACHE" -maxdepth 1 -name 'linux-image-*' ! -name "$kpkg" -exec rm -rf {} +
    if [ ! -e "$CACHE/busybox/ok" ]; then
        step "downloading busybox-static:armhf"
        rm -rf "$CACHE/busybox" "$CACHE/dl"
        mkdir -p "$CACHE/dl" "$CACHE/busybox"
        chown _apt "$CACHE/dl" 2>/dev/null || true
        (cd "$CACHE/dl" && apt-get download -qq busybox-static:armhf)
        dpkg-deb -x "$CACHE"/dl/busybox-static_*.deb "$CACHE/dl/x"
        cp "$CACHE/dl/x/bin/busybox" "$CACHE/busybox/"
        rm -rf "$CACHE/dl"
        touch "$CACHE/busybox/ok"
    fi
    echo "armvm: cache $CACHE ready ($kpkg), $(since "$t0")"
}

# The shared libraries FILE... need, from the armhf sysroot, recursively.
libs_of() {
    local todo=("$@") seen=" " f n p
    while [ ${#todo[@]} -gt 0 ]; do
        f=${todo[0]}
        todo=("${todo[@]:1}")
        for n in $(arm-linux-gnueabihf-readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            case $seen in *" $n "*) continue ;; esac
            seen="$seen$n "
            p=$SYSROOT/lib/$n
            [ -e "$p" ] || die "$f needs $n, not in $SYSROOT/lib"
            echo "$p"
            todo+=("$p")
        done
    done
}

# The VM's /init: mounts, the state disk, the test script, power off.
write_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/shm /dev/pts /tmp /persist /root
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm
mount -t tmpfs persist /persist
echo 1 >/proc/sys/kernel/printk
BOOT=$(sed -n 's/.*armvm\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "ARMVM boot ${BOOT:-?} $(uname -r) $(nproc) CPUs, $(sed -n 's/^CPU part.*: //p' /proc/cpuinfo | head -n 1)"
insmod /lib/modules/virtio_mmio.ko && insmod /lib/modules/virtio_blk.ko
for m in inet_diag tcp_diag udp_diag unix_diag; do insmod /lib/modules/$m.ko; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
# The state disk: a 512-byte header "revenant-armvm-state BYTES", then a
# tar of BYTES bytes. (busybox tar reads its input to the end, here 1 GiB.)
if [ -b /dev/vda ]; then
    size=$(head -c 512 /dev/vda | sed -n 's/^revenant-armvm-state \([0-9]*\).*/\1/p')
    if [ -z "$size" ]; then
        echo "ARMVM FAIL state-disk (no header)"
    elif [ "$size" != 0 ]; then
        dd if=/dev/vda bs=512 skip=1 count=$(((size + 511) / 512)) 2>/dev/null | tar -xf - -C /persist ||
            echo "ARMVM FAIL state-disk (reading $size bytes)"
    fi
else
    echo "ARMVM FAIL state-disk (no /dev/vda)"
fi
note() { echo "ARMVM note $*"; }
check() {
    name=$1
    shift
    t0=$(date +%s)
    if "$@" >/tmp/.check.out 2>&1; then
        echo "ARMVM ok $name ($(($(date +%s) - t0)) s)"
    else
        rc=$?
        echo "ARMVM FAIL $name (exit $rc, $(($(date +%s) - t0)) s): $*"
        tail -n 40 /tmp/.check.out | sed 's/^/ARMVM | /'
    fi
    cat /tmp/.check.out >>/tmp/checks.log
}
cd /t
. /t/run.sh
cd /
if [ -b /dev/vda ]; then
    cp /tmp/checks.log "/persist/checks-boot${BOOT:-0}.log" 2>/dev/null
    tar -cf /tmp/.state.tar -C /persist . &&
        { printf '%-511s\n' "revenant-armvm-state $(wc -c </tmp/.state.tar)"; cat /tmp/.state.tar; } |
        dd of=/dev/vda bs=64k conv=fsync 2>/dev/null || echo "ARMVM FAIL state-disk (writing it)"
fi
echo "ARMVM done at $(cut -d" " -f1 /proc/uptime) s of uptime"
poweroff -f
EOF
    chmod +x "$1"
}

# make_initramfs OUT SCRIPT FILE[=DEST]...
make_initramfs() {
    local out=$1 script=$2 r=$WORK/root f src dest
    shift 2
    rm -rf "$r"
    mkdir -p "$r"/{bin,sbin,lib/modules,proc,sys,dev,tmp,t}
    cp "$CACHE/busybox/busybox" "$r/bin/"
    ln -s busybox "$r/bin/sh" # the rest of its applet links are made by /init
    cp "$CACHE"/kernel/*.ko "$r/lib/modules/"
    write_init "$r/init"
    cp "$script" "$r/t/run.sh"
    local elves=()
    for f in "$@"; do
        src=${f%%=*}
        dest=/t/$(basename "$src")
        [ "$src" = "$f" ] || dest=${f#*=}
        [ -e "$src" ] || die "no $src"
        mkdir -p "$r$(dirname "$dest")"
        if [ -f "$src" ] && head -c 4 "$src" | grep -q ELF; then
            # Debug builds are mostly symbols: strip them to keep the
            # initramfs (which lives in the VM's RAM) small.
            arm-linux-gnueabihf-strip -o "$r$dest" "$src"
            elves+=("$src")
        else
            cp -a "$src" "$r$dest"
        fi
    done
    if [ ${#elves[@]} -gt 0 ]; then
        cp -L $SYSROOT/lib/ld-linux-armhf.so.3 "$r/lib/"
        libs_of "${elves[@]}" >"$WORK/libs"
        for f in $(sort -u "$WORK/libs"); do
            cp -L "$f" "$r/lib/"
        done
    fi
    (cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
    rm -rf "$r"
}

# boot_vm INITRD DISK N LOG: one boot; 0 if it finished with no FAIL.
boot_vm() {
    local initrd=$1 disk=$2 n=$3 log=$4 t0 rc=0
    t0=$(now)
    timeout --kill-after=10 "$LIMIT" nice qemu-system-arm -M virt -cpu cortex-a15 -smp 2 -m 512 \
        -nographic -no-reboot -nic none -kernel "$CACHE/kernel/vmlinuz" -initrd "$initrd" \
        -drive "if=none,file=$disk,format=raw,id=state" -device virtio-blk-device,drive=state \
        -append "console=ttyAMA0 rdinit=/init quiet panic=1 armvm.boot=$n" </dev/null 2>&1 |
        tr -d '\r' >"$log" || rc=$?
    grep '^ARMVM ' "$log" | sed 's/^ARMVM /  /' || true
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "armvm: boot $n did not finish within ${LIMIT} s; the console's end:" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
    if ! grep -q '^ARMVM done' "$log"; then
        echo "armvm: boot $n ended without finishing (qemu exit $rc); the console's end:" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
    echo "armvm: boot $n: $(since "$t0")"
    read_disk "$disk" "$WORK/state-$n" || echo "armvm: could not read the state disk $disk" >&2
    ! grep -q '^ARMVM FAIL' "$log"
}

# A state disk holding nothing: the header (see /init) and 1 GiB of room.
new_disk() {
    printf '%-511s\n' "revenant-armvm-state 0" >"$1"
    truncate -s 1G "$1"
}

# read_disk DISK DIR: what /persist held when the VM wrote DISK.
read_disk() {
    local size
    size=$(head -c 512 "$1" | sed -n 's/^revenant-armvm-state \([0-9]*\).*/\1/p')
    mkdir -p "$2"
    [ "${size:-0}" = 0 ] || head -c $((size + 512)) "$1" | tail -c "$size" | tar -xf - -C "$2"
}

cmd_boot() {
    local disk="" n=1 t0
    while getopts d:n: o; do
        case $o in
        d) disk=$OPTARG ;;
        n) n=$OPTARG ;;
        *) die "usage: scripts/armvm.sh boot [-d DISK] [-n N] SCRIPT [FILE[=/VM/PATH]]..." ;;
        esac
    done
    shift $((OPTIND - 1))
    [ $# -ge 1 ] || die "usage: scripts/armvm.sh boot [-d DISK] [-n N] SCRIPT [FILE[=/VM/PATH]]..."
    prepare
    if [ -z "$disk" ]; then
        disk=$WORK/state.img
    fi
    [ -e "$disk" ] || new_disk "$disk"
    t0=$(now)
    make_initramfs "$WORK/initrd.gz" "$@"
    echo "armvm: initramfs $(du -h "$WORK/initrd.gz" | cut -f1), $(since "$t0")"
    boot_vm "$WORK/initrd.gz" "$disk" "$n" "$WORK/console-$n.log"
}

# The check set -------------------------------------------------------------

cmd_check() {
    local t0 dir=target/$ARM/$PROFILE flag=() tests=() files=() f ok=1
    prepare
    [ "$PROFILE" = release ] && flag=(--release)
    step "building for $ARM ($PROFILE)"
    t0=$(now)
    nice cargo build "${flag[@]}" --target $ARM -p revenant
    # The test executables of the workspace, by the names cargo prints.
    if ! nice cargo test "${flag[@]}" --workspace --target $ARM --no-run >"$WORK/build.log" 2>&1; then
        cat "$WORK/build.log" >&2
        die "building the tests for $ARM failed"
    fi
    mkdir -p "$WORK/bin"
    arm-linux-gnueabihf-gcc -O1 -pthread -Wall -o "$WORK/bin/armcheck" tests/dumpees/armcheck.c
    echo "armvm: built in $(since "$t0")"
    # The test executables keep the paths they were built with
    # (CARGO_MANIFEST_DIR for fixtures, CARGO_TARGET_TMPDIR), so they go to
    # the same paths in the VM.
    while read -r f; do
        tests+=("$f=$ROOT/$f")
    done < <(sed -n 's/^ *Executable .*(\(.*\))$/\1/p' "$WORK/build.log")
    # They reach the fixtures through host/../tests and host/images/../../tests.
    mkdir -p "$WORK/empty"
    files=("$dir/revenant=/t/revenant" "$WORK/bin/armcheck" "${tests[@]}"
        "tests/fixtures=$ROOT/tests/fixtures" "$WORK/empty=$ROOT/host/images")
    write_checks "$WORK/checks.sh"
    make_initramfs "$WORK/initrd.gz" "$WORK/checks.sh" "${files[@]}"
    echo "armvm: initramfs $(du -h "$WORK/initrd.gz" | cut -f1)"
    new_disk "$WORK/state.img"
    step "boot 1 of 2"
    boot_vm "$WORK/initrd.gz" "$WORK/state.img" 1 "$WORK/console-1.log" || ok=
    step "boot 2 of 2 (sees what boot 1 left in /persist)"
    boot_vm "$WORK/initrd.gz" "$WORK/state.img" 2 "$WORK/console-2.log" || ok=
    echo "armvm: $(cat "$WORK"/console-*.log | grep -c '^ARMVM ok') checks passed," \
        "$(cat "$WORK"/console-*.log | grep -c '^ARMVM FAIL') failed"
    if [ -z "$ok" ]; then
        KEEP=1
        echo "armvm: FAILED (console logs and state disk in $WORK)" >&2
        return 1
    fi
}

# The in-VM check set, sourced by /init in each boot (BOOT=1, then 2).
write_checks() {
    cat >"$1" <<EOF
ROOT=$ROOT
EOF
    cat >>"$1" <<'EOF'
# A hung test costs a minute, not five.
export REVENANT_TEST_TIMEOUT=60
R=/t/revenant
# Each cargo test executable, one check each. Skipped: tests that run a C
# compiler (none in the VM).
run_tests() {
    found=$(find "$ROOT/target" -path '*/deps/*' -type f 2>/dev/null | wc -l)
    check "test executables found under $ROOT/target" test "$found" -gt 0
    for t in $(find "$ROOT/target" -path '*/deps/*' -type f | sort); do
        name=$(basename "$t" | sed 's/-[0-9a-f]*$//')
        case $name in
        blob_c_loader) note "skipped $name: compiles its C loader"; continue ;;
        blob_pipeline) skip="--skip header_compiles" ;;
        *) skip= ;;
        esac
        # An executable with no test for this arch says "0 tests".
        [ "$("$t" --list 2>/dev/null | grep -c ': test$')" != 0 ] || continue
        check "test:$name" "$t" --test-threads=1 $skip
    done
}

# armcheck on its own, asked twice: the baseline for its dump and restore.
armcheck_alone() {
    (sleep 3; printf x; sleep 3; printf x; sleep 3) | /t/armcheck /tmp/armcheck.dat >/tmp/armcheck.out 2>&1
    cat /tmp/armcheck.out
    [ "$(grep -c '^ok$' /tmp/armcheck.out)" = 2 ]
}

# Dump and restore across a reboot. Boot 1: armcheck runs in its own
# session (stdin a FIFO it holds read-write, stdout and stderr files), is
# asked once, and is dumped (which kills it) into /persist/armcheck with the
# files it has open or maps; a lazy restore of those images is asked again
# and killed. Boot 2: the files go back to their paths, it is restored and
# asked again, and must answer "ok".
A=${A:-/persist/armcheck} AC=${AC:-/t/armcheck}
lines() { if [ -e "$1" ]; then wc -l <"$1"; else echo 0; fi; }
wait_lines() { # FILE N: until FILE has N lines, 60 s at most
    i=0
    while [ "$(lines "$1")" -lt "$2" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(lines "$1")" -ge "$2" ]
}
armcheck_dump() {
    rm -rf "$A" /tmp/ac
    mkdir -p "$A/images" /tmp/ac
    mkfifo /tmp/ac/in
    setsid "$AC" /tmp/ac/file <>/tmp/ac/in >/tmp/ac/out 2>/tmp/ac/err &
    wait_lines /tmp/ac/out 1 || { cat /tmp/ac/err; return 1; }
    pid=$(sed -n 's/^ready //p' /tmp/ac/out)
    printf x >/tmp/ac/in
    wait_lines /tmp/ac/out 2
    cat /tmp/ac/out /tmp/ac/err
    [ "$(sed -n 2p /tmp/ac/out)" = ok ] || return 1
    if ! $R dump -t "$pid" -D "$A/images" -o /tmp/ac/dump.log 2>/tmp/ac/dump.err; then
        cat /tmp/ac/dump.err /tmp/ac/dump.log 2>/dev/null
        kill -9 "$pid"
        return 1
    fi
    # Reaped, so that a restore can have its PID.
    wait "$pid" 2>/dev/null
    rm /tmp/ac/dump.*
    cp -a /tmp/ac "$A/files"
    echo "$pid" >"$A/pid"
}
# restore [ARGS]: armcheck from $A, asked once more (its Nth answer, N
# one more than the lines its saved output has), then killed.
armcheck_restore() {
    pid=$(cat "$A/pid")
    rm -rf /tmp/ac
    cp -a "$A/files" /tmp/ac
    [ -p /tmp/ac/in ] || mkfifo /tmp/ac/in
    n=$(($(lines /tmp/ac/out) + 1))
    if ! $R restore -d "$@" -D "$A/images" -o /tmp/ac/restore.log; then
        cat /tmp/ac/restore.log
        return 1
    fi
    grep -E 'warn|lazy' /tmp/ac/restore.log
    printf x >/tmp/ac/in
    wait_lines /tmp/ac/out $n
    cat /tmp/ac/out /tmp/ac/err
    kill -9 "$pid"
    i=0
    while [ -e "/proc/$pid" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(sed -n ${n}p /tmp/ac/out)" = ok ]
}

# A dump killed (SIGKILL, as by the OOM killer) at every 10th of its steps
# must leave armcheck as it was: it answers ok after each. (With
# --leave-running, so a dump that gets to its end does not kill it.)
armcheck_killed_dumps() {
    rm -rf /tmp/kd
    mkdir -p /tmp/kd/l
    mkfifo /tmp/kd/in
    setsid "$AC" /tmp/kd/file <>/tmp/kd/in >/tmp/kd/out 2>/tmp/kd/err &
    wait_lines /tmp/kd/out 1 || return 1
    pid=$(sed -n 's/^ready //p' /tmp/kd/out)
    REVENANT_FAULT=list $R dump --leave-running -t "$pid" -D /tmp/kd/l 2>/tmp/kd/steps >/dev/null
    steps=$(grep -c 'revenant: step' /tmp/kd/steps)
    echo "$steps steps"
    [ "$steps" -gt 100 ] || return 1
    bad=0 n=1
    for k in $(seq 1 10 "$steps"); do
        rm -rf /tmp/kd/k
        mkdir /tmp/kd/k
        REVENANT_FAULT=kill:$k $R dump --leave-running -t "$pid" -D /tmp/kd/k >/dev/null 2>&1
        printf x >/tmp/kd/in
        n=$((n + 1))
        wait_lines /tmp/kd/out $n
        if [ "$(sed -n ${n}p /tmp/kd/out)" != ok ]; then
            echo "killed at step $k ($(sed -n "${k}p" /tmp/kd/steps)): $(sed -n ${n}p /tmp/kd/out)"
            bad=$((bad + 1))
        fi
    done
    kill -9 "$pid"
    [ $bad = 0 ]
}

# busybox's httpd (static, nobody's test program): dumped with its
# listening socket, restored, and serving the same page.
httpd_round_trip() {
    rm -rf /tmp/www /tmp/httpd
    mkdir -p /tmp/www /tmp/httpd
    echo "served on armv7" >/tmp/www/index.html
    ip link set lo up
    setsid busybox httpd -f -p 8080 -h /tmp/www </dev/null >/dev/null 2>&1 &
    pid=$!
    sleep 0.5
    timeout 5 wget -q -O - http://127.0.0.1:8080/ | grep -q "served on armv7" || return 1
    $R dump -t "$pid" -D /tmp/httpd -o /tmp/httpd.log || { cat /tmp/httpd.log; kill -9 "$pid"; return 1; }
    wait "$pid" 2>/dev/null
    $R restore -d -D /tmp/httpd -o /tmp/httpd-restore.log || { cat /tmp/httpd-restore.log; return 1; }
    timeout 5 wget -q -O - http://127.0.0.1:8080/ >/tmp/httpd.page
    kill -9 "$pid"
    cat /tmp/httpd.page
    grep -q "served on armv7" /tmp/httpd.page
}

if [ "$BOOT" = 1 ]; then
    check "revenant --version" $R --version
    # Its probes run in forked children: a panic there is not its exit code.
    check "revenant check, no probe panicked" sh -c \
        "$R check --no-cache >/tmp/kd 2>&1 && $R check --json --no-cache >>/tmp/kd 2>&1; rc=\$?; cat /tmp/kd; [ \$rc = 0 ] && ! grep -q panicked /tmp/kd"
    $R check 2>/dev/null | while read -r l; do note "kerndat: $l"; done
    check "revenant blob info" $R blob info
    check "revenant blob selftest" $R blob selftest
    check "revenant demo" $R demo
    check "kerndat: ptrace works here" sh -c "$R check --json | grep -q '\"ptrace\": true'"
    check "armcheck answers ok twice" armcheck_alone
    note "$(grep '^armcheck: shmat' /tmp/armcheck.out)"
    run_tests
    check "armcheck: dumps killed at every 10th step leave it intact" armcheck_killed_dumps
    check "busybox httpd dumped and restored serves again" httpd_round_trip
    check "armcheck asked once, then dumped" armcheck_dump
    check "armcheck restored lazily answers ok" armcheck_restore --lazy
    echo "written in boot 1" >/persist/marker
else
    check "state from boot 1" grep -q "written in boot 1" /persist/marker
    check "armcheck restored after a reboot answers ok" armcheck_restore
fi
EOF
}

case ${1:-check} in
prepare) prepare ;;
boot) shift; cmd_boot "$@" ;;
check) cmd_check ;;
*) die "usage: scripts/armvm.sh [check | prepare | boot [-d DISK] [-n N] SCRIPT [FILE[=/VM/PATH]]...]" ;;
esac
