#!/usr/bin/env bash
# Runs every check revenant has, on a fresh Debian machine as root: installs
# what is missing (cross gcc and qemu-user for the armv7 half, the pinned
# toolchain and its targets), then formatting, clippy and the tests, natively
# on x86_64 and for armv7 under qemu-arm, then the armv7 build in a
# full-system ARM VM (scripts/armvm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

need=()
command -v qemu-arm >/dev/null || need+=(qemu-user)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
[ -e /usr/arm-linux-gnueabihf/lib/crt1.o ] || need+=(libc6-dev-armhf-cross)
command -v node >/dev/null || need+=(nodejs)
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "toolchain (rust-toolchain.toml)"
# rustup >= 1.28 installs the pinned toolchain only when asked.
rustup toolchain install 2>/dev/null || rustup show active-toolchain >/dev/null
rustup target add armv7-unknown-linux-gnueabihf >/dev/null
rustup component add clippy rustfmt >/dev/null
cargo --version

ARM=armv7-unknown-linux-gnueabihf
BLOB=restorer-blob/blob/Cargo.toml

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path "$BLOB" -- --check

step "clippy (host workspace, x86_64 and armv7; the blob, both arches)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --target "$ARM" -- -D warnings
for t in x86_64-unknown-linux-gnu "$ARM"; do
    cargo clippy --manifest-path "$BLOB" --target "$t" -- -D warnings
done

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# A hung test must not keep CI running: tests that create processes abort
# their binary after REVENANT_TEST_TIMEOUT seconds (300 by default), naming
# themselves, and each run of the tests (built beforehand, so a slow first
# build does not count) ends here at the latest.
RUN_LIMIT=${RUN_LIMIT:-30m}
tests() {
    cargo test --workspace "$@" --no-run
    timeout --kill-after=30s "$RUN_LIMIT" cargo test --workspace --no-fail-fast "$@"
}

step "tests, x86_64"
tests 2>&1 | tee -a "$results"

step "tests, armv7 under $(qemu-arm --version | head -n 1)"
tests --target "$ARM" 2>&1 | tee -a "$results"

# One closing line for both runs (cargo's own last line is a doc-test
# summary that often counts nothing).
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$results"

# The same armv7 build on a real ARM kernel (ptrace, SysV, the kernel's own
# address-space rules), in a full-system VM: about a minute and a half with
# the tests built above; the kernel and busybox are downloaded once into
# /var/cache/revenant-armvm. Each boot is bounded by REVENANT_ARMVM_TIMEOUT.
step "armv7 on a real kernel (scripts/armvm.sh, qemu-system-arm)"
scripts/armvm.sh
