#!/usr/bin/env bash
# CRIU's ZDTM static tests through revenant, the way zdtm.py runs them in
# its host flavour: start a test (`make NAME.pid`: it sets its state up and
# daemonizes), dump it, restore it detached, compare each process's
# mappings and descriptors with what they were, then SIGTERM it: the test
# checks its own state and writes PASS or FAIL to NAME.out. Prints one line
# per test and the totals. Not run by scripts/test.sh: it needs a ZDTM
# tree built from CRIU's source.
#
#   ZDTM=/path/to/criu/test/zdtm/static scripts/zdtm.sh [NAME...]   (all if none)
#
# Verdicts:
#   PASS      dump and restore exit 0, the test passes, maps and fds match
#   FAIL      dump and restore exit 0 and the test fails or its maps or fds
#             differ: a restore that says done and is wrong
#   REFUSED   the dump refuses, naming why, and the test, left running,
#             still passes
#   BROKEN    anything else that loses the program: a refused dump that
#             leaves it failing, a failed restore, a hang
#   SKIP      the test is not for the host flavour or not automatic
#             (its .desc), or fails here without any checkpoint (it is run
#             again without one whenever it fails)
# Exits non-zero if any test is FAIL or BROKEN. KEEP=1 keeps the work
# directory (images, logs) even when all pass.
#
# The stock ZDTM library works: the shared anonymous page it maps in every
# test for the launcher's handshake is dumped and restored like any other.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ZDTM:-}" ]; then
    cat <<'EOF'
zdtm: no ZDTM given. Build CRIU's ZDTM static tests from its source
(tag v4.2 of https://github.com/checkpoint-restore/criu):
    make -C test/zdtm/lib && make -C test/zdtm/static
then:
    ZDTM=/path/to/criu/test/zdtm/static scripts/zdtm.sh
zdtm: skipped
EOF
    exit 0
fi
if [ "$(id -u)" != 0 ] || [ "$(uname -m)" != x86_64 ]; then
    echo "zdtm: needs root on x86_64 (revenant dump is x86_64 only)" >&2
    exit 1
fi
[ -f "$ZDTM/Makefile" ] && [ -x "$ZDTM/env00" ] || {
    echo "zdtm: $ZDTM is not a built ZDTM static directory (no Makefile or env00)" >&2
    exit 1
}
cargo build -q --release -p revenant || exit 1
export REVENANT=${CARGO_TARGET_DIR:-$PWD/target}/release/revenant
exec python3 - "$@" <<'PY'
import ast, ctypes, os, re, signal, subprocess, sys, tempfile, time

Z = os.path.abspath(os.environ["ZDTM"])
REV = os.environ["REVENANT"]
WORK = tempfile.mkdtemp(prefix="revenant-zdtm.")
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
# Tests daemonize: as the subreaper this script is their parent, so a dumped
# PID is reaped at once instead of whenever PID 1 gets to it.
libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def gone(pid, seconds):
    end = time.time() + seconds
    while time.time() < end:
        reap()
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    time.sleep(0.02)
                    continue
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.02)
    return False


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return sorted(out)


def state(pid):
    """What zdtm.py compares: each process's mappings (range, protection,
    file) and descriptors (number and target), the vDSO left out as it may
    move."""
    s, inodes = {}, {}
    for p in tree(pid):
        try:
            maps = []
            with open(f"/proc/{p}/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    name = parts[5].strip() if len(parts) > 5 else ""
                    if name in ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"):
                        continue
                    lo, hi = parts[0].split("-")
                    # Adjacent areas alike are one, as zdtm.py counts them:
                    # the kernel merges or splits them by flags it hides.
                    if maps and maps[-1][1] == lo and maps[-1][2:] == (parts[1], name):
                        maps[-1] = (maps[-1][0], hi, parts[1], name)
                    else:
                        maps.append((lo, hi, parts[1], name))
            fds = {}
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    fds[int(fd)] = canonical(os.readlink(f"/proc/{p}/fd/{fd}"), inodes)
                except OSError:
                    pass
            s[p] = (maps, fds)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return s


def canonical(link, inodes):
    """Pipes and sockets get new inode numbers: number them in the order
    they are met instead, so that what is shared stays shared."""
    kind, _, rest = link.partition(":[")
    if rest and kind in ("pipe", "socket"):
        return f"{kind}:#{inodes.setdefault(link, len(inodes))}"
    # An unlinked file whose path was taken since is made again beside it,
    # under the name the restore's warning gives (CRIU uses NAME.cr_link).
    m = re.fullmatch(r"(.*/)\.(.+)\.revenant-unlinked \(deleted\)", link)
    if m:
        return f"{m.group(1)}{m.group(2)} (deleted)"
    return link


def differences(a, b):
    if sorted(a) != sorted(b):
        return f"processes {sorted(a)} became {sorted(b)}"
    for p in a:
        (ma, fa), (mb, fb) = a[p], b[p]
        if ma != mb:
            lost = [m for m in ma if m not in mb][:2]
            new = [m for m in mb if m not in ma][:2]
            return f"pid {p} mappings differ: lost {lost} new {new}"
        if fa != fb:
            diff = {k: (fa.get(k), fb.get(k)) for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)}
            return f"pid {p} fds differ: {dict(list(diff.items())[:3])}"
    return None


def desc(name):
    try:
        with open(f"{Z}/{name}.desc") as f:
            text = f.read().strip() or "{}"
    except FileNotFoundError:
        return {}
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        # A few descriptions are Python expressions, as zdtm.py evaluates them.
        return eval(text, {"os": os})


def clean(name):
    # A test may leave a file system mounted in its directory (cgroup
    # tests do): what cannot go, stays.
    subprocess.run(f"rm -rf {name}.pid {name}.out {name}.out.inprogress {name}.out.external {name}.test {name}.dir.test {name}.state",
                   shell=True, cwd=Z, stderr=subprocess.DEVNULL)


def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
        return lines[-1] if lines else ""
    except FileNotFoundError:
        return ""


def stop(pid, name):
    """SIGTERM, then the test's own verdict from its .out file."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False, "not running"
    if not gone(pid, 30):
        for p in tree(pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        gone(pid, 10)
        return False, "did not exit on SIGTERM"
    out = last_line(f"{Z}/{name}.out")
    return "PASS" in out, out


def kill_running(name):
    for pid in [int(d) for d in os.listdir("/proc") if d.isdigit()]:
        try:
            if os.readlink(f"/proc/{pid}/exe") == f"{Z}/{name}":
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


def start(name):
    """`make NAME.pid`: the test sets itself up and daemonizes. One that
    does not within 15 s is killed, launcher and daemon (which has a
    session of its own by then): every process running the test's binary."""
    p = subprocess.Popen(["make", "--no-print-directory", "-s", f"{name}.pid"], cwd=Z, start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        kill_running(name)
        p.kill()
        p.communicate()
        reap()
        return None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def fails_alone(name):
    """Whether the test fails here with no checkpoint at all (its kernel
    feature or cgroup layout is missing): then it says nothing of us."""
    clean(name)
    r = start(name)
    if r is None or r.returncode != 0:
        return True
    pid = int(open(f"{Z}/{name}.pid").read().split()[0])
    ok, _ = stop(pid, name)
    return not ok


def run(name):
    verdict, why = checkpoint(name)
    if verdict in ("FAIL", "BROKEN") and fails_alone(name):
        return "SKIP", f"fails without a checkpoint too ({verdict}: {why})"
    return verdict, why


def checkpoint(name):
    d = desc(name)
    flavor = d.get("flavor", "h ns uns").split()
    flags = d.get("flags", "").split()
    if "h" not in flavor:
        return "SKIP", "not for the host flavour"
    for f in ("noauto", "crfail", "reqrst"):
        if f in flags:
            return "SKIP", f"flag {f}"
    work = os.path.join(WORK, name)
    os.makedirs(work)
    clean(name)
    r = start(name)
    if r is None:
        return "SKIP", "did not start within 15 s"
    if r.returncode != 0:
        return "SKIP", f"did not start: {last_line(f'{Z}/{name}.out') or r.stderr.strip()[-200:]}"
    pid = int(open(f"{Z}/{name}.pid").read().split()[0])
    before = state(pid)
    log = os.path.join(work, "dump.log")
    # The options of its .desc that revenant takes as CRIU does: for both
    # commands, and for the dump alone.
    opts = d.get("opts", "").split()
    extra = [o for o in opts if o in ("--tcp-established",)]
    dopts = opts + d.get("dopts", "").split()
    dump_extra = [o for o in dopts if o in ("--ext-unix-sk", "--skip-in-flight", "--ghost-fiemap", "--no-ghost-fiemap")]
    if "--ghost-limit" in dopts:
        dump_extra += dopts[dopts.index("--ghost-limit"):dopts.index("--ghost-limit") + 2]
    try:
        rc = subprocess.run([REV, "dump", "-t", str(pid), "-D", os.path.join(work, "img"), "-o", log] + extra + dump_extra,
                            timeout=120, stdin=subprocess.DEVNULL, capture_output=True).returncode
    except subprocess.TimeoutExpired:
        stop(pid, name)
        return "BROKEN", "dump did not finish within 120 s"
    if rc != 0:
        why = last_line(log)
        ok, out = stop(pid, name)
        if ok:
            return "REFUSED", why
        return "BROKEN", f"refused ({why}), and then the test said: {out}"
    if not gone(pid, 30):
        return "BROKEN", "the dumped tree did not go away"
    log = os.path.join(work, "restore.log")
    try:
        rc = subprocess.run([REV, "restore", "-D", os.path.join(work, "img"), "-d", "-o", log] + extra,
                            timeout=120, stdin=subprocess.DEVNULL, capture_output=True).returncode
    except subprocess.TimeoutExpired:
        stop(pid, name)
        return "BROKEN", "restore did not finish within 120 s"
    if rc != 0:
        return "BROKEN", f"restore failed: {last_line(log)}"
    after = state(pid)
    diff = differences(before, after)
    ok, out = stop(pid, name)
    if not ok:
        return "FAIL", out
    if diff:
        return "FAIL", diff
    return "PASS", ""


names = sys.argv[1:]
if not names:
    # The Makefile's own list; tests with a statefile (TST_STATE) are not in it.
    listing = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "revenant-list: ; @echo $(TST)",
                              "revenant-list"], cwd=Z, capture_output=True, text=True, check=True)
    names = sorted(listing.stdout.split())
counts = {}
bad = []
for name in names:
    t = time.time()
    try:
        verdict, why = run(name)
    except Exception as e:  # a driver bug must not stop the run
        verdict, why = "BROKEN", f"driver: {e!r}"
    counts[verdict] = counts.get(verdict, 0) + 1
    if verdict in ("FAIL", "BROKEN"):
        bad.append(name)
    print(f"{verdict:8} {name:32} {time.time() - t:5.1f}s  {why}"[:300], flush=True)
    clean(name)
print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
if bad:
    print("work directory kept: " + WORK)
elif os.environ.get("KEEP") != "1":
    subprocess.run(["rm", "-rf", WORK])
sys.exit(1 if bad else 0)
PY
