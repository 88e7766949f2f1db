#!/usr/bin/env bash
# End-to-end test: cowfs as the containers/storage `mount_program` under podman, compared with the
# kernel's native overlay driver.
#
#   scripts/podman-e2e.sh [--driver cowfs|native|both] [--cowfs-bin PATH] [--keep]
#                         [--debug-log FILE] [--only STEP,...]
#
#   --driver D        which storage setup to test (default: both; cowfs is then compared with native)
#   --cowfs-bin PATH  install this cowfs binary instead of running cargo build --release
#   --keep            keep the private podman stores (containers, images) after the run
#   --debug-log FILE  mount through a wrapper that runs cowfs with --log-level debug --log-file FILE
#   --only STEPS      run only these steps (comma separated; see the table for names); the setup
#                     steps they depend on are NOT added automatically
#
# Run as root. Installs podman, runc, debootstrap and fuse3 with apt-get when they are missing,
# builds cowfs (cargo build --release) and installs it as /usr/local/bin/cowfs. Everything else
# lives under $COWFS_E2E_DIR (default /var/tmp/cowfs-podman):
#   rootfs/            debootstrap --variant=minbase of this machine's suite (built once, cached)
#   <driver>/          private podman store (--root/--runroot), storage.conf, containers.conf
#   <driver>/results/  per step: .out (stdout), .err (stderr), .rc (exit status)
# Each step runs the same podman commands for every driver and checks their output against what
# the image must show; with both drivers the table also says whether cowfs matched native.
# Exit status: 1 if cowfs fails a step that native passes (with --driver cowfs: any step; with
# --driver native: native fails a step), 2 on bad usage or a broken setup.
# Steps are called by name (step_*, expect_*, note_*); container scripts are single-quoted on purpose.
# shellcheck disable=SC2317,SC2016,SC2012,SC2015,SC2094
set -uo pipefail

usage() { sed -n '2,24s/^# \{0,1\}//p' "$0"; }

drivers=(native cowfs)
keep=0
cowfs_src=
debug_log=
only=
while [ $# -gt 0 ]; do
    case "$1" in
        --driver)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            case "$2" in
                cowfs) drivers=(cowfs) ;;
                native) drivers=(native) ;;
                both) drivers=(native cowfs) ;;
                *) echo "podman-e2e.sh: --driver must be cowfs, native or both" >&2; exit 2 ;;
            esac
            shift ;;
        --driver=*) set -- --driver "${1#--driver=}" "${@:2}"; continue ;;
        --keep) keep=1 ;;
        --cowfs-bin)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            cowfs_src=$(realpath "$2") || exit 2; shift ;;
        --debug-log)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            debug_log=$(realpath -m "$2"); shift ;;
        --only)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            only=",$2,"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "podman-e2e.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${COWFS_E2E_DIR:-/var/tmp/cowfs-podman}
rootfs=$base/rootfs
cowfs_bin=/usr/local/bin/cowfs
step_timeout=${COWFS_E2E_STEP_TIMEOUT:-300}

if [ -t 1 ]; then bold=$'\033[1m' red=$'\033[31m' green=$'\033[32m' plain=$'\033[0m'
else bold='' red='' green='' plain=''; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
die() { echo "podman-e2e.sh: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root"

# --- prerequisites -------------------------------------------------------------------------------
need_pkgs=()
command -v podman >/dev/null 2>&1 || need_pkgs+=(podman)
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v fusermount3 >/dev/null 2>&1 || need_pkgs+=(fuse3)
command -v dpkg-deb >/dev/null 2>&1 || need_pkgs+=(dpkg)
[ -n "$cowfs_src" ] || command -v cargo >/dev/null 2>&1 || die "cargo is missing (needed to build cowfs)"
if [ ${#need_pkgs[@]} -gt 0 ]; then
    say "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null ||
        die "apt-get install ${need_pkgs[*]} failed"
fi

if [ -z "$cowfs_src" ]; then
    say "building cowfs (cargo build --release) and installing $cowfs_bin"
    (cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"
    cowfs_src=$repo/target/release/cowfs
else
    say "installing $cowfs_src as $cowfs_bin"
fi
install -m 0755 "$cowfs_src" "$cowfs_bin" || die "cannot install $cowfs_bin"
"$cowfs_bin" --version

mkdir -p "$base"

# --- base rootfs (debootstrap minbase, cached) ---------------------------------------------------
# shellcheck disable=SC1091
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$suite" ] || die "no VERSION_CODENAME in /etc/os-release"
if [ ! -e "$rootfs/.e2e-complete" ]; then
    # The mirror apt uses for the release itself (not -updates / -security).
    mirror=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 2>/dev/null |
        awk -v s="$suite" '$1 == s { print $2; exit }')
    mirror=${mirror:-http://deb.debian.org/debian/}
    say "debootstrap --variant=minbase $suite $rootfs $mirror (once; cached)"
    rm -rf "$rootfs.tmp"
    debootstrap --variant=minbase "$suite" "$rootfs.tmp" "$mirror" >"$base/debootstrap.log" 2>&1 ||
        { tail -20 "$base/debootstrap.log" >&2; die "debootstrap failed (log: $base/debootstrap.log)"; }
    rm -rf "$rootfs"
    mv "$rootfs.tmp" "$rootfs"
    touch "$rootfs/.e2e-complete"
fi
for f in etc/os-release etc/debian_version etc/issue usr/bin/dpkg usr/bin/perl usr/share/doc/apt; do
    [ -e "$rootfs/$f" ] || die "$rootfs/$f is missing; remove $rootfs and run again"
done
[ -n "$(ls -A "$rootfs/etc/apt/apt.conf.d")" ] || die "$rootfs/etc/apt/apt.conf.d is empty"

# --- a tiny .deb ---------------------------------------------------------------------------------
deb=$base/e2e-hello_1.0_all.deb
debsrc=$base/e2e-hello-src
rm -rf "$debsrc"
mkdir -p "$debsrc/DEBIAN" "$debsrc/usr/bin" "$debsrc/usr/share/e2e-hello/data" "$debsrc/etc"
cat >"$debsrc/DEBIAN/control" <<'EOF'
Package: e2e-hello
Version: 1.0
Architecture: all
Maintainer: cowfs e2e <e2e@example.invalid>
Description: cowfs podman end-to-end test package
 Installs a script, a data dir and a conffile.
EOF
echo /etc/e2e-hello.conf >"$debsrc/DEBIAN/conffiles"
cat >"$debsrc/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
mkdir -p /var/lib/e2e-hello
echo configured >/var/lib/e2e-hello/state
EOF
cat >"$debsrc/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then rm -rf /var/lib/e2e-hello; fi
EOF
chmod 0755 "$debsrc/DEBIAN/postinst" "$debsrc/DEBIAN/postrm"
printf '#!/bin/sh\necho "hello from e2e-hello"\n' >"$debsrc/usr/bin/e2e-hello"
chmod 0755 "$debsrc/usr/bin/e2e-hello"
echo "greeting=hello" >"$debsrc/etc/e2e-hello.conf"
for i in 1 2 3; do seq 1 $((i * 1000)) >"$debsrc/usr/share/e2e-hello/data/file$i"; done
dpkg-deb --root-owner-group -Zgzip --build "$debsrc" "$deb" >/dev/null || die "dpkg-deb failed"

# --- per driver setup ----------------------------------------------------------------------------
# Sets D (driver), dir, root, runroot, res, mount_program for driver $1.
setup_vars() {
    D=$1 dir=$base/$1 root=$base/$1/root runroot=$base/$1/runroot res=$base/$1/results
    mount_program=
    if [ "$D" = cowfs ]; then
        mount_program=$cowfs_bin
        [ -n "$debug_log" ] && mount_program=$dir/cowfs-debug
    fi
}
# setup_vars, and writes the config of driver $1.
setup_driver() {
    setup_vars "$1"
    mkdir -p "$root" "$runroot" "$dir/tmp" "$dir/volumes"
    rm -rf "$res"
    mkdir -p "$res"
    local mp=$mount_program
    if [ "$D" = cowfs ]; then
        if [ -n "$debug_log" ]; then
            # podman calls `PROG --version` and `PROG -o ... MNT`; only the latter gets logging.
            cat >"$mp" <<EOF
#!/bin/sh
[ "\$1" = --version ] && exec $cowfs_bin --version
exec $cowfs_bin --log-level debug --log-file $debug_log "\$@"
EOF
            chmod 0755 "$mp"
        fi
    fi
    {
        echo '[storage]'
        echo 'driver = "overlay"'
        echo "graphroot = \"$root\""
        echo "runroot = \"$runroot\""
        echo '[storage.options.overlay]'
        [ -n "$mp" ] && echo "mount_program = \"$mp\""
    } >"$dir/storage.conf"
    cat >"$dir/containers.conf" <<EOF
[containers]
default_ulimits = []
netns = "none"
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
tmp_dir = "$dir/tmp"
volume_path = "$dir/volumes"
EOF
}

# Every podman call is bounded by $step_timeout seconds. `--root` makes podman (since 3.3) drop
# the [storage.options.overlay] settings of storage.conf, so the mount program is passed again
# with --storage-opt.
pm() {
    local opts=()
    [ -n "$mount_program" ] && opts=(--storage-opt "overlay.mount_program=$mount_program")
    CONTAINERS_STORAGE_CONF=$dir/storage.conf CONTAINERS_CONF=$dir/containers.conf \
        timeout --kill-after=10 "$step_timeout" podman --root "$root" --runroot "$runroot" \
        "${opts[@]}" --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
}

# Mounts (any fstype) below $dir, and cowfs daemons whose command line names $dir.
our_mounts() { awk -v d="$dir/" 'index($2, d) == 1 { print $2 " " $3 }' /proc/mounts; }
our_daemons() {
    local p cmd argv0
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") 2>/dev/null || continue
        argv0=${cmd%% *}
        case "${argv0##*/}" in cowfs | cowfs-debug) ;; *) continue ;; esac
        case "$cmd" in *" -o "*"$dir/"*) echo "${p#/proc/} $cmd" ;; esac
    done
}

cleanup_driver() {
    [ -d "$root" ] || return 0
    pm rm -af -t 0 >/dev/null 2>&1
    pm unmount -a >/dev/null 2>&1
    [ "$keep" = 1 ] || pm rmi -af >/dev/null 2>&1
    local pid m
    while read -r pid _; do
        [ -n "$pid" ] || continue
        echo "podman-e2e.sh: killing leftover cowfs daemon $pid" >&2
        kill -TERM "$pid" 2>/dev/null
    done < <(our_daemons)
    sleep 0.5
    while read -r pid _; do
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    done < <(our_daemons)
    # Deepest first.
    while read -r m _; do
        [ -n "$m" ] || continue
        echo "podman-e2e.sh: unmounting leftover $m" >&2
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done < <(our_mounts | sort -r)
    if [ "$keep" != 1 ] && [ -z "$(our_mounts)" ]; then
        rm -rf "$root" "$runroot" "$dir/tmp" "$dir/volumes"
    fi
}

on_exit() {
    local d
    for d in "${drivers[@]}"; do setup_vars "$d"; cleanup_driver; done
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# --- steps ---------------------------------------------------------------------------------------
# A step is a function step_NAME printing its observations on stdout (stderr is kept aside); it
# runs in a subshell and each podman call in it is bounded by a timeout. expect_NAME prints what
# it must show (for every driver); `@native` means "the same as the native driver"
# (informational when native is not run). The step's exit status must be 0. note_NAME, if any,
# adds a remark to the table.
steps=(
    import info read fstype append delete rename-file rename-dir-syscall rename-dir-mv metadata
    nonroot dpkg-install-purge create-cp named-run diff export commit layer-whiteouts
    committed-run host-mount image-mount concurrent cleanup
)

RUN=(run --rm --network=none)

step_import() {
    pm rmi -f e2e-base >/dev/null 2>&1
    tar -C "$rootfs" --exclude=./.e2e-complete -c . | pm import -q - e2e-base >/dev/null || return
    pm images --format '{{.Repository}}:{{.Tag}}' | grep e2e-base
}
expect_import() { echo localhost/e2e-base:latest; }

step_info() {
    pm info --format '{{.Store.GraphDriverName}}' || return
    local opts
    opts=$(pm info --format '{{json .Store.GraphOptions}}') || return
    if [ "$D" = cowfs ]; then
        case "$opts" in *'"overlay.mount_program"'*) echo "mount_program as configured" ;; *) echo "mount_program NOT set: $opts" ;; esac
    else
        case "$opts" in *'mount_program'*) echo "mount_program set: $opts" ;; *) echo "mount_program as configured" ;; esac
    fi
}
expect_info() { echo overlay; echo "mount_program as configured"; }

step_read() {
    pm "${RUN[@]}" e2e-base sh -c 'cat /etc/os-release; cd / && md5sum usr/bin/dpkg etc/passwd; ls /usr/share/doc | wc -l'
}
expect_read() {
    cat "$rootfs/etc/os-release"
    (cd "$rootfs" && md5sum usr/bin/dpkg etc/passwd)
    ls "$rootfs/usr/share/doc" | wc -l
}

# The container's root is the mount program's mount (fstype fuse.cowfs / overlay), the host sees
# the same files there, and `podman rm` unmounts it and ends the daemon.
step_fstype() {
    pm run -d --name e2e-probe --network=none e2e-base sleep 600 >/dev/null || return
    local merged fstype want
    merged=$(pm inspect --format '{{.GraphDriver.Data.MergedDir}}' e2e-probe) || return
    fstype=$(awk -v m="$merged" '$2 == m { print $3 }' /proc/mounts)
    want=overlay
    [ "$D" = cowfs ] && want=fuse.cowfs
    [ "$fstype" = "$want" ] && echo "fstype as expected" || echo "fstype '$fstype', want $want"
    pm exec e2e-probe sh -c 'echo from-container >/tmp/probe'
    echo "host reads: $(cat "$merged/tmp/probe" 2>&1)"
    echo "host view of /etc/os-release: $(cmp -s "$merged/etc/os-release" "$rootfs/etc/os-release" && echo same || echo DIFFERENT)"
    local n want_n=0
    [ "$D" = cowfs ] && want_n=1
    n=$(our_daemons | grep -cF " $merged")
    [ "$n" = "$want_n" ] && echo "mount daemons while running: as expected" || echo "mount daemons while running: $n, want $want_n"
    pm rm -f -t 0 e2e-probe >/dev/null || return
    sleep 0.5
    awk -v m="$merged" '$2 == m { found = 1 } END { print found ? "still mounted after rm" : "unmounted after rm" }' /proc/mounts
    echo "mount daemons after rm: $(our_daemons | grep -cF " $merged")"
}
expect_fstype() {
    echo "fstype as expected"
    echo "host reads: from-container"
    echo "host view of /etc/os-release: same"
    echo "mount daemons while running: as expected"
    echo "unmounted after rm"
    echo "mount daemons after rm: 0"
}

step_append() {
    pm "${RUN[@]}" e2e-base sh -c '
        echo e2e-appended >>/etc/debian_version && cat /etc/debian_version
        ino1=$(stat -c %i /etc/issue); echo more >>/etc/issue; ino2=$(stat -c %i /etc/issue)
        [ "$ino1" = "$ino2" ] && echo "inode kept across copy-up" || echo "inode changed $ino1 -> $ino2"
        tail -n 1 /etc/issue
        dd if=/dev/zero of=/usr/bin/dpkg bs=1 count=0 seek=100 conv=notrunc 2>/dev/null # open O_WRONLY, no change
        cd / && md5sum usr/bin/dpkg'
}
expect_append() {
    cat "$rootfs/etc/debian_version"
    echo e2e-appended
    echo "inode kept across copy-up"
    echo more
    (cd "$rootfs" && md5sum usr/bin/dpkg)
}

step_delete() {
    pm "${RUN[@]}" e2e-base sh -c '
        rm /etc/debian_version; ls /etc/debian_version 2>&1; echo "ls rc=$?"
        ls /etc | grep -c "^debian_version$"
        rm -r /usr/share/doc/apt; ls -d /usr/share/doc/apt 2>&1
        ls /usr/share/doc | grep -c "^apt$"
        mkdir /usr/share/doc/apt && ls -A /usr/share/doc/apt | wc -l'
}
expect_delete() {
    echo "ls: cannot access '/etc/debian_version': No such file or directory"
    echo "ls rc=2"
    echo 0
    echo "ls: cannot access '/usr/share/doc/apt': No such file or directory"
    echo 0
    echo 0
}

step_rename_file() {
    pm "${RUN[@]}" e2e-base sh -c '
        mv /etc/issue /etc/issue.moved && cat /etc/issue.moved && ls /etc/issue 2>&1
        mv /etc/issue.moved /etc/issue && cat /etc/issue'
}
expect_rename_file() {
    cat "$rootfs/etc/issue"
    echo "ls: cannot access '/etc/issue': No such file or directory"
    cat "$rootfs/etc/issue"
}

# rename(2) of a dir that lives in a lower layer: EXDEV (what overlayfs does without redirect_dir)
# and a real rename are both valid; the note column says which one happened. On EXDEV the step goes
# on with `mv` (copy + delete), so everything after the first line must be the same either way:
# the old name is gone and can be made again empty, the moved dir can be changed and renamed back.
step_rename_dir_syscall() {
    pm "${RUN[@]}" e2e-base sh -c '
        ren() { perl -e "rename(\$ARGV[0], \$ARGV[1]) or die qq{\$!\n}" "$1" "$2" 2>/tmp/err; }
        if ren /usr/share/doc /usr/share/doc2; then echo "rename(2): ok"
        else echo "rename(2): $(cat /tmp/err)"; mv /usr/share/doc /usr/share/doc2 || echo "mv failed"; fi
        ls -d /usr/share/doc 2>&1
        (cd /usr/share/doc2 && find . | sort | md5sum)
        mkdir /usr/share/doc && ls -A /usr/share/doc | wc -l
        rm /usr/share/doc2/apt/copyright && echo new >/usr/share/doc2/apt/new
        rmdir /usr/share/doc
        ren /usr/share/doc2 /usr/share/doc && echo "rename back: ok" || echo "rename back: $(cat /tmp/err)"
        ls -d /usr/share/doc2 2>&1
        cat /usr/share/doc/apt/new; ls /usr/share/doc/apt/copyright 2>&1
        (cd /usr/share/doc && find . | sort | md5sum)'
}
expect_rename_dir_syscall() {
    head -n 1 "$res/rename-dir-syscall.out" | grep -xE 'rename\(2\): (ok|Invalid cross-device link)' ||
        echo "rename(2): ok (or EXDEV)"
    echo "ls: cannot access '/usr/share/doc': No such file or directory"
    (cd "$rootfs/usr/share/doc" && find . | sort | md5sum)
    echo 0
    echo "rename back: ok"
    echo "ls: cannot access '/usr/share/doc2': No such file or directory"
    echo new
    echo "ls: cannot access '/usr/share/doc/apt/copyright': No such file or directory"
    (cd "$rootfs/usr/share/doc" && find . | grep -vx ./apt/copyright; echo ./apt/new) | sort | md5sum
}
note_rename_dir_syscall() { head -n 1 "$res/rename-dir-syscall.out" 2>/dev/null; }

# mv falls back to copy + delete on EXDEV, so it must work either way.
step_rename_dir_mv() {
    pm "${RUN[@]}" e2e-base sh -c '
        mv /usr/share/doc /usr/share/doc2; echo "mv rc=$?"
        ls -d /usr/share/doc 2>&1
        cd /usr/share/doc2 && find . | sort | md5sum
        find . -type f | sort | xargs md5sum | md5sum
        find . -type l | sort | xargs readlink | md5sum
        mkdir /usr/share/doc && ls -A /usr/share/doc | wc -l'
}
expect_rename_dir_mv() {
    echo "mv rc=0"
    echo "ls: cannot access '/usr/share/doc': No such file or directory"
    cd "$rootfs/usr/share/doc" || return
    find . | sort | md5sum
    find . -type f | sort | xargs md5sum | md5sum
    find . -type l | sort | xargs readlink | md5sum
    echo 0
}

# Copy-up of metadata only, special files, a big file, truncate.
step_metadata() {
    pm "${RUN[@]}" e2e-base sh -c '
        chown 65534:65534 /etc/issue && chmod 0600 /etc/issue && stat -c "%u %g %a %s" /etc/issue
        touch -d "2001-02-03 04:05:06 UTC" /etc/host.conf && stat -c %Y /etc/host.conf
        chmod 0700 /usr/share/doc/apt && stat -c "%a %U" /usr/share/doc/apt && ls /usr/share/doc/apt | wc -l
        mkfifo /tmp/fifo && stat -c %F /tmp/fifo
        ln -s /etc/os-release /tmp/sl && readlink /tmp/sl && cmp /tmp/sl /etc/os-release && echo "symlink ok"
        yes e2e-big-file | head -c 67108864 >/tmp/big && md5sum </tmp/big && stat -c %s /tmp/big
        truncate -s 100 /etc/passwd && wc -c </etc/passwd
        : >/etc/shells && wc -c </etc/shells'
}
expect_metadata() {
    echo "65534 65534 600 $(stat -c %s "$rootfs/etc/issue")"
    echo 981173106
    echo "700 root"
    ls "$rootfs/usr/share/doc/apt" | wc -l
    echo fifo
    echo /etc/os-release
    echo "symlink ok"
    yes e2e-big-file | head -c 67108864 | md5sum
    echo 67108864
    echo 100
    echo 0
}

# An unprivileged user in the container: the image's permissions must hold.
step_nonroot() {
    pm "${RUN[@]}" --user 65534:65534 e2e-base sh -c '
        id -u
        echo x >/tmp/f && cat /tmp/f
        { echo x >>/etc/passwd; } 2>/dev/null; echo "append /etc/passwd rc=$?"
        rm -f /etc/issue 2>/dev/null; echo "rm /etc/issue rc=$?"
        mkdir /usr/x 2>/dev/null; echo "mkdir /usr/x rc=$?"
        mv /etc/host.conf /tmp/ 2>/dev/null; echo "mv /etc/host.conf rc=$?"
        cat /etc/shadow >/dev/null 2>&1; echo "read /etc/shadow rc=$?"
        ls /root >/dev/null 2>&1; echo "ls /root rc=$?"
        ls /etc/issue /etc/host.conf'
}
expect_nonroot() {
    echo 65534
    echo x
    echo "append /etc/passwd rc=2"
    echo "rm /etc/issue rc=1"
    echo "mkdir /usr/x rc=1"
    echo "mv /etc/host.conf rc=1"
    echo "read /etc/shadow rc=1"
    echo "ls /root rc=2"
    echo /etc/host.conf
    echo /etc/issue
}

DPKG_CHECK='
    e2e-hello
    dpkg -s e2e-hello | grep "^Status"
    cat /etc/e2e-hello.conf /var/lib/e2e-hello/state
    dpkg -L e2e-hello | sort
    dpkg --verify e2e-hello; echo "verify rc=$?"
    dpkg --audit; echo "audit rc=$?"
    cd / && md5sum usr/share/e2e-hello/data/file3'

step_dpkg_install_purge() {
    pm "${RUN[@]}" -v "$deb:/tmp/e2e.deb:ro" e2e-base sh -c "
        dpkg -i /tmp/e2e.deb >/dev/null; echo \"dpkg -i rc=\$?\"
        $DPKG_CHECK
        dpkg -P e2e-hello >/dev/null; echo \"dpkg -P rc=\$?\"
        ls /usr/share/e2e-hello /var/lib/e2e-hello /etc/e2e-hello.conf 2>&1
        dpkg -s e2e-hello 2>&1 | head -n 1
        dpkg --audit; echo \"audit rc=\$?\""
}
expect_dpkg_lines() {
    echo "hello from e2e-hello"
    echo "Status: install ok installed"
    echo "greeting=hello"
    echo "configured"
    printf '%s\n' /. /etc /etc/e2e-hello.conf /usr /usr/bin /usr/bin/e2e-hello /usr/share \
        /usr/share/e2e-hello /usr/share/e2e-hello/data /usr/share/e2e-hello/data/file1 \
        /usr/share/e2e-hello/data/file2 /usr/share/e2e-hello/data/file3 | sort
    echo "verify rc=0"
    echo "audit rc=0"
    (cd "$debsrc" && md5sum usr/share/e2e-hello/data/file3)
}
expect_dpkg_install_purge() {
    echo "dpkg -i rc=0"
    expect_dpkg_lines
    echo "dpkg -P rc=0"
    echo "ls: cannot access '/usr/share/e2e-hello': No such file or directory"
    echo "ls: cannot access '/var/lib/e2e-hello': No such file or directory"
    echo "ls: cannot access '/etc/e2e-hello.conf': No such file or directory"
    echo "dpkg-query: package 'e2e-hello' is not installed and no information is available"
    echo "audit rc=0"
}

# A named container (upperdir without `volatile`), `podman cp` into it while it is stopped.
NAMED_SCRIPT='set -e
    rm /etc/debian_version
    rm -r /usr/share/doc/apt
    rm -rf /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d && touch /etc/apt/apt.conf.d/new
    echo appended >>/etc/issue
    ln /etc/issue /etc/issue.hardlink
    mkdir -p /newdir/sub && echo new-content >/newdir/sub/file
    ln -s ../etc/os-release /newdir/link
    perl -e "rename(q{/usr/share/doc/dpkg}, q{/usr/share/dpkg-doc}) or exit 1" || mv /usr/share/doc/dpkg /usr/share/dpkg-doc
    echo added >/usr/share/dpkg-doc/added
    dpkg -i /tmp/e2e.deb >/dev/null
    rm /tmp/e2e.deb
    echo named-run-done'
step_create_cp() {
    pm rm -f -t 0 e2e-c1 >/dev/null 2>&1
    pm create --name e2e-c1 --network=none e2e-base sh -c "$NAMED_SCRIPT" >/dev/null || return
    echo created
    pm cp "$deb" e2e-c1:/tmp/e2e.deb || return
    echo copied
}
expect_create_cp() { echo created; echo copied; }

step_named_run() { pm start -a e2e-c1; }
expect_named_run() { echo named-run-done; }

# `podman diff` comes from two different algorithms: with the kernel driver containers/storage
# lists the upper dir ("Native Overlay Diff: true"); with a mount_program it compares the mounted
# trees ("naive diff"). They agree on files but not on dirs: the naive diff reports the parents of
# changed entries as changed, and a dir that was removed and made again (opaque) as deletions of
# its old entries. So "C DIR" lines for dirs of the image are dropped and "D DIR" of an opaque dir
# becomes "D DIR/ENTRY" for each image entry; the raw list is kept in results/diff.raw.
step_diff() {
    pm diff e2e-c1 >"$res/diff.raw" || return
    local kind path
    while read -r kind path; do
        if [ "$kind" = C ] && [ -d "$rootfs$path" ] && [ ! -L "$rootfs$path" ]; then continue; fi
        if [ "$kind" = D ] && [ -d "$rootfs$path" ] && grep -q "^[ACD] $path/" "$res/diff.raw"; then
            ls -A "$rootfs$path" | sed "s|^|D $path/|"
            continue
        fi
        echo "$kind $path"
    done <"$res/diff.raw" | sort -u
}
expect_diff() { echo @native; }

# `podman export` tars the container's merged tree (through a host-side mount): names, types,
# modes, owners and sizes must match native (mtimes are left out).
step_export() {
    pm export e2e-c1 >"$dir/tmp/export.tar" || return
    tar -tvf "$dir/tmp/export.tar" --numeric-owner | awk '{ $4 = ""; $5 = ""; print }' |
        sed 's|  *| |g' | sort -k4 >"$res/export.list"
    rm -f "$dir/tmp/export.tar"
    wc -l <"$res/export.list"
    md5sum <"$res/export.list"
}
expect_export() { echo @native; }

step_commit() {
    pm rmi -f e2e-committed >/dev/null 2>&1
    pm commit -q e2e-c1 e2e-committed >/dev/null || return
    pm image inspect --format '{{len .RootFS.Layers}} layers' e2e-committed
}
expect_commit() { echo "2 layers"; }

# The committed layer in OCI form: whiteouts for deleted lower entries, an opaque marker for the
# re-created dir, nothing for the upper-only file removed in the container.
step_layer_whiteouts() {
    local t=$dir/tmp/save
    rm -rf "$t" && mkdir -p "$t" || return
    pm save --format docker-archive -o "$t/img.tar" e2e-committed >/dev/null || return
    tar -C "$t" -xf "$t/img.tar" || return
    local top
    top=$(sed -n 's/.*"Layers":\[\([^]]*\)\].*/\1/p' "$t/manifest.json" | tr ',' '\n' | tail -n 1 | tr -d '"')
    [ -n "$top" ] || { echo "no layers in manifest.json"; return 1; }
    # An opaque dir (.wh..wh..opq, kernel driver) or a whiteout for each of its image entries
    # (naive diff, mount_program): the same layer; shown in the second form.
    tar -tf "$t/$top" | sed 's|^\./||' | grep -E '(^|/)\.wh\.' | sort >"$res/layer-whiteouts.raw"
    local w d
    while read -r w; do
        case "$w" in
            */.wh..wh..opq)
                d=${w%/.wh..wh..opq}
                ls -A "$rootfs/$d" | sed "s|^|$d/.wh.|" ;;
            *) echo "$w" ;;
        esac
    done <"$res/layer-whiteouts.raw" | sort -u
    echo "---"
    # type (hard link entries shown as plain files), mode, name; then how many hard link entries
    tar -tvf "$t/$top" | awk '{ print $1 " " $6 }' | sed 's|^h|-|; s| \./| |' |
        grep -E ' (etc/issue(\.hardlink)?|etc/apt/apt.conf.d/new|newdir/sub/file|newdir/link|tmp/e2e.deb|usr/bin/e2e-hello)$' | sort -k2
    echo "hard link entries: $(tar -tvf "$t/$top" | grep -c '^h')"
    rm -rf "$t"
}
note_layer_whiteouts() {
    grep -q 'wh\.\.wh\.\.opq' "$res/layer-whiteouts.raw" 2>/dev/null && echo "opaque marker" || echo "per-entry whiteouts"
}
expect_layer_whiteouts() {
    {
        echo etc/.wh.debian_version
        ls -A "$rootfs/etc/apt/apt.conf.d" | sed 's|^|etc/apt/apt.conf.d/.wh.|'
        echo usr/share/doc/.wh.apt
        echo usr/share/doc/.wh.dpkg
    } | sort
    echo "---"
    echo "-rw-r--r-- etc/apt/apt.conf.d/new"
    echo "-rw-r--r-- etc/issue"
    echo "-rw-r--r-- etc/issue.hardlink"
    echo "lrwxrwxrwx newdir/link"
    echo "-rw-r--r-- newdir/sub/file"
    echo "-rwxr-xr-x usr/bin/e2e-hello"
    echo "hard link entries: 1"
}

step_committed_run() {
    pm "${RUN[@]}" e2e-committed sh -c "
        ls /etc/debian_version /usr/share/doc/apt 2>&1
        ls -A /etc/apt/apt.conf.d
        tail -n 1 /etc/issue; stat -c '%h links' /etc/issue
        [ /etc/issue -ef /etc/issue.hardlink ] && echo 'hardlink same file'
        cat /newdir/sub/file; readlink /newdir/link; cmp /newdir/link /etc/os-release && echo 'link ok'
        ls /tmp/e2e.deb 2>&1
        ls -d /usr/share/doc/dpkg 2>&1; cd /usr/share/dpkg-doc && find . | sort | md5sum
        $DPKG_CHECK"
}
expect_committed_run() {
    echo "ls: cannot access '/etc/debian_version': No such file or directory"
    echo "ls: cannot access '/usr/share/doc/apt': No such file or directory"
    echo new
    echo appended
    echo "2 links"
    echo "hardlink same file"
    echo new-content
    echo ../etc/os-release
    echo "link ok"
    echo "ls: cannot access '/tmp/e2e.deb': No such file or directory"
    echo "ls: cannot access '/usr/share/doc/dpkg': No such file or directory"
    (cd "$rootfs/usr/share/doc/dpkg" && { find .; echo ./added; } | sort | md5sum)
    expect_dpkg_lines
}

# `podman mount` of the (stopped) named container from the host.
step_host_mount() {
    local m
    m=$(pm mount e2e-c1) || return
    [ -d "$m/etc" ] || { echo "not a rootfs: $m"; return 1; }
    ls "$m/etc/debian_version" 2>/dev/null || echo "debian_version absent"
    ls -A "$m/etc/apt/apt.conf.d"
    echo host-write >"$m/newdir/host-file" && echo "host write ok"
    pm unmount e2e-c1 >/dev/null || return
    awk -v m="$m" '$2 == m { f = 1 } END { print f ? "still mounted" : "unmounted" }' /proc/mounts
    pm "${RUN[@]}" e2e-committed true && echo "image still runs"
    local m2
    m2=$(pm mount e2e-c1) || return
    cat "$m2/newdir/host-file"
    pm unmount e2e-c1 >/dev/null
}
expect_host_mount() {
    echo "debian_version absent"
    echo new
    echo "host write ok"
    echo unmounted
    echo "image still runs"
    echo host-write
}

# `podman image mount`: a read-only mount with no upper dir.
step_image_mount() {
    local m
    m=$(pm image mount e2e-committed) || return
    local line
    line=$(awk -v m="$m" '$2 == m { print $3 " " $4 }' /proc/mounts)
    case " ${line//,/ } " in *" ro "*) echo "mounted ro" ;; *) echo "mount options: $line" ;; esac
    cat "$m/etc/e2e-hello.conf"
    ls "$m/etc/debian_version" 2>/dev/null || echo "debian_version absent"
    touch "$m/etc/x" 2>/dev/null && echo "write succeeded" || echo "write refused"
    pm image unmount e2e-committed >/dev/null || return
    awk -v m="$m" '$2 == m { f = 1 } END { print f ? "still mounted" : "unmounted" }' /proc/mounts
}
expect_image_mount() {
    echo "mounted ro"
    echo "greeting=hello"
    echo "debian_version absent"
    echo "write refused"
    echo unmounted
}

# Several containers at once on the same image, each writing its own copy of a lower file.
step_concurrent() {
    local i pids=()
    for i in 1 2 3; do
        pm "${RUN[@]}" e2e-base sh -c "for n in \$(seq 1 200); do echo c$i-\$n >>/etc/debian_version; done
            rm -r /usr/share/doc/apt; mkdir -p /w/$i; cp -a /usr/share/doc /w/$i/
            tail -n 1 /etc/debian_version; wc -l </etc/debian_version" >"$dir/tmp/conc.$i" 2>&1 &
        pids+=($!)
    done
    local rc=0
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=1; done
    for i in 1 2 3; do cat "$dir/tmp/conc.$i"; done
    return "$rc"
}
expect_concurrent() {
    local i n
    n=$(($(wc -l <"$rootfs/etc/debian_version") + 200))
    for i in 1 2 3; do echo "c$i-200"; echo "$n"; done
}

step_cleanup() {
    pm rm -af -t 0 >/dev/null || return
    pm rmi -f e2e-committed >/dev/null || return
    pm unmount -a >/dev/null
    local m d
    m=$(our_mounts | awk '$2 ~ /^fuse|^overlay$/')
    d=$(our_daemons)
    echo "mounts left: ${m:-none}"
    echo "daemons left: ${d:-none}"
    pm "${RUN[@]}" e2e-base true && echo "base image still runs"
}
expect_cleanup() { echo "mounts left: none"; echo "daemons left: none"; echo "base image still runs"; }

# --- run -----------------------------------------------------------------------------------------
run_steps() {
    local s fn
    for s in "${steps[@]}"; do
        if [ -n "$only" ] && [[ $only != *",$s,"* ]]; then continue; fi
        fn=step_${s//-/_}
        printf '  %-20s ' "$s"
        # The step's own stdout is its result; stderr (podman warnings, errors) is kept aside.
        ("$fn") </dev/null >"$res/$s.out" 2>"$res/$s.err"
        echo $? >"$res/$s.rc"
        "expect_${s//-/_}" >"$res/$s.expected" 2>&1
        printf 'rc=%s\n' "$(cat "$res/$s.rc")"
    done
}

for drv in "${drivers[@]}"; do
    setup_driver "$drv"
    say "driver $drv: $dir (storage.conf, containers.conf), results in $res"
    cleanup_driver # leftovers of an earlier run
    mkdir -p "$root" "$runroot" "$dir/tmp" "$dir/volumes"
    run_steps
    cleanup_driver
done

# --- verdicts ------------------------------------------------------------------------------------
# verdict DRIVER STEP -> PASS / FAIL / INFO / - (not run)
ran() { [[ " ${drivers[*]} " == *" $1 "* ]]; }
verdict() {
    local r=$base/$1/results s=$2
    ran "$1" && [ -f "$r/$s.rc" ] || { echo -; return; }
    local rc
    rc=$(cat "$r/$s.rc")
    if [ "$(cat "$r/$s.expected")" = @native ]; then
        if [ "$1" = native ]; then
            [ "$rc" = 0 ] && echo PASS || echo FAIL
        elif ran native && [ -f "$base/native/results/$s.rc" ]; then
            if [ "$rc" = "$(cat "$base/native/results/$s.rc")" ] && cmp -s "$r/$s.out" "$base/native/results/$s.out"; then
                echo PASS
            else
                echo FAIL
            fi
        else
            echo INFO
        fi
        return
    fi
    [ "$rc" = 0 ] && cmp -s "$r/$s.out" "$r/$s.expected" && echo PASS || echo FAIL
}

same() {
    local a=$base/native/results/$1 b=$base/cowfs/results/$1
    ran native && ran cowfs && [ -f "$a.rc" ] && [ -f "$b.rc" ] || { echo -; return; }
    [ "$(cat "$a.rc")" = "$(cat "$b.rc")" ] && cmp -s "$a.out" "$b.out" && echo same || echo differs
}

say "results"
printf '%-20s %-7s %-7s %-8s %s\n' STEP native cowfs "output" note
status=0
failed=()
for s in "${steps[@]}"; do
    if [ -n "$only" ] && [[ $only != *",$s,"* ]]; then continue; fi
    vn=$(verdict native "$s")
    vc=$(verdict cowfs "$s")
    note=
    if declare -F "note_${s//-/_}" >/dev/null; then
        for drv in "${drivers[@]}"; do
            res=$base/$drv/results
            note+="$drv: $("note_${s//-/_}") "
        done
    fi
    color() { case "$1" in PASS) printf '%s%-7s%s' "$green" "$1" "$plain" ;; FAIL) printf '%s%-7s%s' "$red" "$1" "$plain" ;; *) printf '%-7s' "$1" ;; esac; }
    printf '%-20s %s %s %-8s %s\n' "$s" "$(color "$vn")" "$(color "$vc")" "$(same "$s")" "$note"
    for drv in "${drivers[@]}"; do
        [ "$(verdict "$drv" "$s")" = FAIL ] && failed+=("$drv/$s")
    done
    if [ "$vc" = FAIL ] && [ "$vn" != FAIL ]; then status=1; fi
    if ! ran cowfs && [ "$vn" = FAIL ]; then status=1; fi
done

for f in "${failed[@]}"; do
    drv=${f%%/*} s=${f#*/}
    r=$base/$drv/results
    printf '\n%s-- %s: %s failed (rc=%s)%s\n' "$bold" "$drv" "$s" "$(cat "$r/$s.rc")" "$plain"
    if [ "$(cat "$r/$s.expected")" = @native ]; then
        diff -u --label native --label "$drv" "$base/native/results/$s.out" "$r/$s.out" | head -40
    else
        diff -u --label expected --label "$drv" "$r/$s.expected" "$r/$s.out" | head -40
    fi
    if [ -s "$r/$s.err" ]; then echo "stderr:"; head -20 "$r/$s.err"; fi
done

if [ ${#failed[@]} -eq 0 ]; then echo; echo "all steps passed"; fi
exit $status
