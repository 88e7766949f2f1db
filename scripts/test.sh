#!/usr/bin/env bash
# The whole cowfs test suite: formatting, clippy, benches build, all tests (release build).
#
#   scripts/test.sh [extra cargo test args...]     e.g. scripts/test.sh cli::   (the tests of tests/cli.rs)
#
# Runs as root on Debian/Ubuntu: installs fuse3, attr, sqlite3 and e2fsprogs when missing and makes
# sure /dev/fuse exists. Exits non-zero on any failure, and when the tests leave a FUSE mount behind.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
warn() { echo "test.sh: warning: $*" >&2; }
die() { echo "test.sh: $*" >&2; exit 1; }
fuse_mounts() { awk '$3 ~ /^fuse(\.|$)/ {print $2}' /proc/self/mounts | sort; }

start=$SECONDS

# --- system prerequisites ------------------------------------------------------------------------
# What the tests run, as "command:Debian package": fusermount3 and getfattr everywhere; setfacl
# in the ACL tests; fuse-overlayfs, the drop-in reference of tests/posix_trust.rs; sqlite3 in
# tests/sqlite.rs; mkfs.ext4 and mkfs.xfs for the loop-mounted layers of lifecycle, storm and
# powercut; setcap/getcap for the file capability tests; make, man and groff for tests/install.rs
# (make install, the man page rendering without warnings), unshare for its mount(8) helper test;
# dmesg for the kernel's log in tests/redirect_dir.rs; setpriv for cowfs stats run as another user
# in tests/stats.rs.
prerequisites="fusermount3:fuse3 getfattr:attr setfacl:acl fuse-overlayfs:fuse-overlayfs
    sqlite3:sqlite3 mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs setcap:libcap2-bin
    make:make man:man-db groff:groff-base unshare:util-linux dmesg:util-linux setpriv:util-linux"
missing=""
for pair in $prerequisites; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq $missing >/dev/null
    else
        warn "missing and cannot apt-get install (not root or no apt):$missing"
    fi
fi
if [ ! -c /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    [ -c /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
    [ -c /dev/fuse ] || warn "/dev/fuse is missing; FUSE tests will fail"
fi
[ "$(id -u)" -eq 0 ] || warn "not root: whiteout/xattr tests need root"
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup"

mounts_before=$(fuse_mounts)

# --- static checks -------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --check

# Test-only hooks (fault injection) are compiled in for the tests, and linted with them; the
# build without them is compiled by the benches step below.
step "cargo clippy --all-targets --features test-hooks -- -D warnings"
cargo clippy --all-targets --features test-hooks -- -D warnings

# Benches build with the release-derived bench profile, sharing dependencies with the tests below.
if [ -d benches ]; then
    step "cargo bench --no-run"
    cargo bench --no-run
fi

# --- tests ---------------------------------------------------------------------------------------
# test-hooks: the fault-injection tests (tests/hooks.rs: an injected panic, errors at each step
# of a copy-up); without their environment the hooks do nothing.
#
# The whole suite runs once per transport: requests read from /dev/fuse (the fuse module's
# enable_uring off, every mount with io_uring=off), then FUSE over io_uring (enable_uring on,
# every mount with io_uring=on, so a mount that can't start its rings fails its test). cowfs
# never changes the module parameter itself; this script sets it for the run and puts it back.
uring_param=/sys/module/fuse/parameters/enable_uring
uring_before=$(cat "$uring_param" 2>/dev/null || true)
log=$(mktemp)
restore() {
    rm -f "$log"
    if [ -n "$uring_before" ]; then echo "$uring_before" >"$uring_param" 2>/dev/null || true; fi
}
trap restore EXIT
# A third pass, over /dev/fuse, has cowfs open files for the kernel (COWFS_OPEN=daemon: every
# mount that does not say otherwise takes -o open=daemon, with passthrough), where the first two
# take the default, open=kernel.
transports="dev io_uring dev-daemon-open"
if [ -z "$uring_before" ] || ! echo "$uring_before" >"$uring_param" 2>/dev/null; then
    warn "$uring_param can't be set (kernel before 6.14, or not root): FUSE over io_uring untested"
    transports="dev dev-daemon-open"
fi
rc=0
for transport in $transports; do
    open=kernel
    case $transport in
        dev) param=N mode=off ;;
        io_uring) param=Y mode=on ;;
        dev-daemon-open) param=N mode=off open=daemon ;;
    esac
    [ -z "$uring_before" ] || echo "$param" >"$uring_param"
    step "[$transport] COWFS_IO_URING=$mode COWFS_OPEN=$open cargo test --release --features test-hooks --no-fail-fast $*"
    set +e
    COWFS_IO_URING=$mode COWFS_OPEN=$open timeout --kill-after=30s 20m \
        cargo test --release --features test-hooks --no-fail-fast "$@" 2>&1 | tee -a "$log"
    pass_rc=${PIPESTATUS[0]}
    set -e
    [ "$pass_rc" -ne 124 ] || warn "cargo test timed out after 20 minutes"
    [ "$pass_rc" -eq 0 ] || rc=$pass_rc
done

# A FUSE mount that appeared during the run and is still there is a test bug. In CI it fails the
# run and is unmounted; on a shared dev machine it may be someone else's, so only warn there.
leftover=$(comm -13 <(echo "$mounts_before") <(fuse_mounts) | sed '/^$/d')
if [ -n "$leftover" ]; then
    if [ "${CI:-}" = true ]; then
        echo "test.sh: FUSE mounts left behind by the tests (a bug; unmounting them):" >&2
        echo "$leftover" >&2
        while read -r m; do fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" || true; done <<<"$leftover"
        [ "$rc" -ne 0 ] || rc=1
    else
        warn "new FUSE mounts after the tests (left behind by a test, or made by someone else):"
        echo "$leftover" >&2
    fi
fi

# --- summary -------------------------------------------------------------------------------------
step "summary"
grep -E '^test result:|^     Running|^   Doc-tests' "$log" | sed 's/^ *//' || true
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^(passed|failed|ignored);?$/) { k = $(i); sub(/;/, "", k); n[k] += $(i - 1) }
        }
     }
     END { printf "total: %d passed, %d failed, %d ignored\n", n["passed"], n["failed"], n["ignored"] }' "$log"
if grep -q '^failures:$' "$log"; then
    echo "failed tests:"
    awk '/^failures:$/ {f = 1; next} /^---- |^test result:/ {f = 0} f && /^    [^ ]+$/ {print}' "$log" | sort -u
fi
echo "elapsed: $((SECONDS - start))s"
if [ "$rc" -ne 0 ]; then
    echo "test.sh: FAILED (cargo test exit $rc)" >&2
    exit "$rc"
fi
echo "test.sh: all checks passed"
