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
cowfs_bin=/usr/local/bin/cowfs
step_timeout=${COWFS_E2E_STEP_TIMEOUT:-300}

prog=podman-e2e.sh
# shellcheck source=scripts/podman-e2e-lib.sh
. "$repo/scripts/podman-e2e-lib.sh"
rootfs=$base/rootfs
results_dir() { echo "$base/$1/results"; }

[ "$(id -u)" -eq 0 ] || die "run as root"

# --- prerequisites, cowfs, the image, a tiny .deb (scripts/podman-e2e-lib.sh) --------------------
install_missing podman:podman runc:runc debootstrap:debootstrap fusermount3:fuse3 dpkg-deb:dpkg
build_cowfs
say "installing $cowfs_src as $cowfs_bin"
install -m 0755 "$cowfs_src" "$cowfs_bin" || die "cannot install $cowfs_bin"
"$cowfs_bin" --version
mkdir -p "$base"
ensure_rootfs
build_deb

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
# How a step is written, and the steps both flows share (import, read, append, delete, renames,
# nonroot, dpkg-install-purge, diff, commit, concurrent): scripts/podman-e2e-lib.sh.
steps=(
    import info read fstype append delete rename-file rename-dir-syscall rename-dir-mv metadata
    nonroot dpkg-install-purge create-cp named-run diff export commit layer-whiteouts
    committed-run host-mount image-mount concurrent cleanup
)

step_info() {
    pm info >"$res/info.txt" 2>&1 || return
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
for drv in "${drivers[@]}"; do
    setup_driver "$drv"
    say "driver $drv: $dir (storage.conf, containers.conf), results in $res"
    cleanup_driver # leftovers of an earlier run
    mkdir -p "$root" "$runroot" "$dir/tmp" "$dir/volumes"
    run_steps
    cleanup_driver
done

print_results
exit $status
