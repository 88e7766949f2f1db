#!/usr/bin/env bash
# Build cowfs, create two example layers, mount them and show copy-on-write at work.
#
#   scripts/demo.sh [--keep] [DIR]      (DIR defaults to /tmp/cowfs-demo; run as root)
#
# Layers built under DIR:
#   base/   bottom lower: etc/, app/, docs/, old/, cache/
#   top/    top lower: overrides etc/motd and app/config.txt, hides etc/hostname with a 0/0 char
#           device whiteout, hides old/ and docs/readme.txt with OCI `.wh.` files, makes cache/
#           opaque with `.wh..wh..opq`
#   upper/  empty writable layer; mnt/ the mount point
#
# The filesystem is unmounted on exit (also on failure) unless --keep is given.
set -euo pipefail

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

keep=0
dir=/tmp/cowfs-demo
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) keep=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "demo.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) dir=$1 ;;
    esac
    shift
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/target/release/cowfs
export PATH="$repo/target/release:$PATH"

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
die() { echo "demo.sh: $*" >&2; exit 1; }
# Print a command (quoted where needed; `sh -c CMD` as CMD), then run it.
show() {
    local line='$' a
    if [ "$1" = sh ] && [ "$2" = -c ]; then
        line+=" $3"
    else
        for a in "$@"; do
            if [[ $a =~ ^[][A-Za-z0-9_./:=+,@%-]+$ ]]; then line+=" $a"; else line+=" '$a'"; fi
        done
    fi
    printf '%s\n' "$line"
    "$@"
}

[ "$(id -u)" -eq 0 ] || die "run as root (whiteouts are 0/0 char devices, opaque dirs use trusted.* xattrs)"

# --- prerequisites -------------------------------------------------------------------------------
if ! command -v fusermount3 >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "fusermount3 is missing; install fuse3"
    say "installing fuse3"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq fuse3 >/dev/null
fi
if [ ! -c /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    [ -c /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse failed)"
fi
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup"

say "building cowfs (release)"
(cd "$repo" && cargo build --release --bin cowfs)

# --- example layers ------------------------------------------------------------------------------
is_mounted() { grep -q " $(realpath -m "$1") fuse" /proc/self/mounts 2>/dev/null; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
if [ -e "$dir/mnt" ] && is_mounted "$dir/mnt"; then
    "$bin" umount "$dir/mnt" 2>/dev/null || fusermount3 -u "$dir/mnt" 2>/dev/null || umount -l "$dir/mnt"
fi
if [ -n "$(ls -A "$dir")" ]; then
    # Only ever delete a directory this script made.
    [ -f "$dir/.cowfs-demo" ] || die "$dir is not empty and was not made by demo.sh; pick another DIR"
    rm -rf "${dir:?}"/base "${dir:?}"/top "${dir:?}"/upper "${dir:?}"/mnt "${dir:?}"/.upper.cowfs-work
fi
touch "$dir/.cowfs-demo"
cd "$dir"

say "creating example layers in $dir"
mkdir -p base/etc base/app/data base/docs base/old base/cache
echo "NAME=cowfs-demo-base" >base/etc/os-release
echo "welcome from the base layer" >base/etc/motd
echo "base-host" >base/etc/hostname
echo "color=blue" >base/app/config.txt
echo "alpha" >base/app/data/a.txt
echo "beta" >base/app/data/b.txt
echo "base docs" >base/docs/readme.txt
echo "base license" >base/docs/license.txt
echo "stale" >base/old/stale.txt
echo "cached" >base/cache/x.tmp
echo "cached" >base/cache/y.tmp

mkdir -p top/etc top/app top/docs top/cache
echo "welcome from the top layer" >top/etc/motd   # overrides base/etc/motd
echo "color=green" >top/app/config.txt            # overrides base/app/config.txt
echo "added by top" >top/app/extra.txt            # app/ is merged from both layers
mknod top/etc/hostname c 0 0                      # kernel overlayfs whiteout: hides etc/hostname
: >top/.wh.old                                    # OCI whiteout: hides old/
: >top/docs/.wh.readme.txt                        # OCI whiteout: hides docs/readme.txt
: >top/cache/.wh..wh..opq                         # OCI opaque marker: base/cache/* hidden
echo "fresh" >top/cache/fresh.txt
mkdir -p upper mnt

show find base top -printf '%M %p\n'

# --- mount ---------------------------------------------------------------------------------------
cleanup() {
    local rc=$?
    if is_mounted "$dir/mnt"; then
        if [ "$keep" -eq 1 ] && [ "$rc" -eq 0 ]; then
            say "left mounted (--keep)"
            echo "merged view: $dir/mnt"
            echo "unmount with: $bin umount $dir/mnt   (or: fusermount3 -u $dir/mnt)"
        else
            say "unmounting"
            cd /
            "$bin" umount "$dir/mnt" || fusermount3 -u "$dir/mnt" || umount -l "$dir/mnt"
        fi
    fi
    [ "$rc" -eq 0 ] || echo "demo.sh: failed (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "mounting: top over base, writes go to upper"
show cowfs mount top:base upper mnt
is_mounted mnt || die "mnt is not mounted after 'cowfs mount' returned"
show grep " $dir/mnt " /proc/self/mountinfo

say "merged view (etc/hostname, old/, docs/readme.txt and cache/*.tmp are whited out)"
show ls -la mnt
show ls -la mnt/etc mnt/app mnt/docs mnt/cache
show cat mnt/etc/motd mnt/app/config.txt mnt/etc/os-release

say "write: appending to app/config.txt copies it up into upper/"
show sh -c 'echo "size=large" >>mnt/app/config.txt'
show cat mnt/app/config.txt
show ls -la upper upper/app
show cat upper/app/config.txt
echo "# the lower layer is unchanged:"
show cat top/app/config.txt

say "delete: removing a lower file leaves a 0/0 char device whiteout in upper/"
show rm mnt/etc/os-release
show ls -la mnt/etc
show stat -c '%n: %F, device %t:%T' upper/etc/os-release
show ls -la base/etc

say "rmdir + mkdir of a lower dir: the new dir is opaque"
show rm -r mnt/app/data
show mkdir mnt/app/data
show ls -la mnt/app/data
if command -v getfattr >/dev/null 2>&1; then
    show getfattr -n trusted.overlay.opaque upper/app/data
fi

say "done"
