#!/usr/bin/env bash
# End-to-end test: rootless podman (an unprivileged user, overlay driver) with cowfs as the
# `mount_program` of ~/.config/containers/storage.conf, compared with podman's native rootless
# overlay (the kernel's overlayfs with userxattr, mounted in the user namespace).
#
#   scripts/podman-rootless-e2e.sh [--driver cowfs|native|both|fuse-overlayfs] [--cowfs-bin PATH]
#                                  [--keep] [--debug-log FILE] [--only STEP,...]
#
#   --driver D        which storage setup to test (default: both; cowfs is then compared with
#                     native). fuse-overlayfs runs native, cowfs and fuse-overlayfs as a third
#                     column (for comparison; it does not change the exit status)
#   --cowfs-bin PATH  use this cowfs binary instead of running cargo build --release
#   --keep            leave the user, its stores (containers, images), configs and runtime dir
#                     behind for debugging; a later run without --keep removes them
#   --debug-log FILE  mount through a wrapper that runs cowfs with --log-level debug --log-file FILE
#   --only STEPS      run only these steps (comma separated; see the table for names); the setup
#                     steps they depend on are NOT added automatically
#
# Run as root; the podman commands run as the user $COWFS_E2E_USER (default cowfs-e2e) through
# runuser. Sets up what rootless podman needs and takes it all down again on exit (also on failure
# or ^C): installs podman, runc, uidmap, slirp4netns, debootstrap, fuse3, acl and attr when missing;
# creates the user (home in $COWFS_E2E_DIR, default /var/tmp/cowfs-podman-rootless) with
# subuid/subgid ranges; makes XDG_RUNTIME_DIR=/run/user/UID; gives the user read-write access to
# /dev/fuse with an ACL; copies cowfs to /usr/local/libexec/cowfs-e2e/cowfs (a path the user can
# run); writes ~/.config/containers/storage.conf and containers.conf (cgroupfs and the file events
# logger when there is no systemd user session). Whatever existed before (user, runtime dir, ACL,
# configs) is kept. The image is the debootstrap minbase image the rootful podman-e2e.sh uses
# (cached in /var/tmp/cowfs-podman/rootfs, or $COWFS_E2E_ROOTFS), imported from a tar stream.
# Results per step in $COWFS_E2E_DIR/results/<driver>/: .out, .err, .rc, .expected.
# Exit status: 1 if cowfs fails a step that native passes (with --driver cowfs: any step; with
# --driver native: native fails a step), 2 on bad usage or a broken setup.
# shellcheck disable=SC2317,SC2016,SC2012,SC2015,SC2094,SC2030,SC2031
set -uo pipefail

usage() { sed -n '2,32s/^# \{0,1\}//p' "$0"; }

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
                fuse-overlayfs) drivers=(native cowfs fuse-overlayfs) ;;
                *) echo "podman-rootless-e2e.sh: --driver must be cowfs, native, both or fuse-overlayfs" >&2; exit 2 ;;
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
        *) echo "podman-rootless-e2e.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${COWFS_E2E_DIR:-/var/tmp/cowfs-podman-rootless}
rootfs=${COWFS_E2E_ROOTFS:-/var/tmp/cowfs-podman/rootfs}
user=${COWFS_E2E_USER:-cowfs-e2e}
libexec=/usr/local/libexec/cowfs-e2e
cowfs_bin=$libexec/cowfs
step_timeout=${COWFS_E2E_STEP_TIMEOUT:-300}
prog=podman-rootless-e2e.sh
# shellcheck source=scripts/podman-e2e-lib.sh
. "$repo/scripts/podman-e2e-lib.sh"
results_dir() { echo "$base/results/$1"; }
# What the script made, so that on exit it removes that and nothing else.
marks=$base/made

[ "$(id -u)" -eq 0 ] || die "run as root (the podman commands run as $user)"
case "$base" in /*) ;; *) die "COWFS_E2E_DIR must be an absolute path" ;; esac

# --- prerequisites, cowfs, the image, a tiny .deb ------------------------------------------------
want=(podman:podman runc:runc newuidmap:uidmap slirp4netns:slirp4netns debootstrap:debootstrap
    fusermount3:fuse3 dpkg-deb:dpkg setfacl:acl getfattr:attr runuser:util-linux)
ran fuse-overlayfs && want+=(fuse-overlayfs:fuse-overlayfs)
install_missing "${want[@]}"
build_cowfs
mkdir -p "$base" "$marks" && chmod 0755 "$base" || die "cannot create $base"
ensure_rootfs
build_deb

# --- helpers, per driver setup, cleanup on exit -------------------------------------------------
# made NAME: a mark that the script made NAME (kept across --keep runs, so a later run removes it).
made() { [ -e "$marks/$1" ]; }
mark() { touch "$marks/$1"; }

# next_subid_start FILE: the first id after every range in FILE (at least 100000).
next_subid_start() {
    awk -F: 'BEGIN { n = 100000 } NF == 3 && $2 + $3 > n { n = $2 + $3 } END { print n }' "$1"
}
# The user runs every command through this: a login-like environment, in its home.
as_user() {
    runuser -u "$user" -- env -i -C "$home" HOME="$home" USER="$user" LOGNAME="$user" \
        XDG_RUNTIME_DIR="$xdg" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 \
        TMPDIR="$home/e2e/tmp" "$@"
}
# setup_vars DRIVER: D, res, store (graphroot), runroot, mount_program of that driver.
setup_vars() {
    D=$1 res=$(results_dir "$1")
    store=$home/e2e/$1/storage runroot=$xdg/cowfs-e2e-$1
    case "$D" in
        native) mount_program= ;;
        cowfs) mount_program=$cowfs_bin; [ -n "$debug_log" ] && mount_program=$libexec/cowfs-debug ;;
        fuse-overlayfs) mount_program=$(command -v fuse-overlayfs) ;;
    esac
}
# write_config DRIVER: the user's storage.conf and containers.conf for that driver.
write_config() {
    setup_vars "$1"
    {
        echo '[storage]'
        echo 'driver = "overlay"'
        echo "graphroot = \"$store\""
        echo "runroot = \"$runroot\""
        if [ -n "$mount_program" ]; then
            echo
            echo '[storage.options.overlay]'
            echo "mount_program = \"$mount_program\""
        fi
    } >"$confdir/storage.conf"
    {
        echo '[containers]'
        echo 'netns = "none"'
        echo 'log_driver = "k8s-file"'
        echo
        echo '[engine]'
        # crun refuses cgroup v1/hybrid hosts rootless; runc runs there (without cgroups).
        echo 'runtime = "runc"'
        echo "tmp_dir = \"$runroot/libpod-tmp\""
        if [ ! -S "$xdg/bus" ]; then
            # No systemd user session (no D-Bus): no systemd cgroup manager, no journald.
            echo 'cgroup_manager = "cgroupfs"'
            echo 'events_logger = "file"'
            echo "events_logfile_path = \"$runroot/events.log\""
        fi
    } >"$confdir/containers.conf"
    chown "$uid:$gid" "$confdir/storage.conf" "$confdir/containers.conf"
}

pm() { as_user timeout --kill-after=10 "$step_timeout" podman "$@"; }

# pids of the processes of the user and of its subordinate ids (its containers), and the mount
# daemons (cowfs, fuse-overlayfs) among them whose command line names the driver's store.
user_pids() {
    local p u
    for p in /proc/[0-9]*; do
        u=$(awk '/^Uid:/ { print $2; exit }' "$p/status" 2>/dev/null) || continue
        [ -n "$u" ] || continue
        if [ "$u" = "$uid" ] || { [ "$u" -ge "$subuid_start" ] && [ "$u" -lt $((subuid_start + subuid_count)) ]; }; then
            echo "${p#/proc/}"
        fi
    done
}
our_daemons() {
    local p cmd argv0
    for p in $(user_pids); do
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
        argv0=${cmd%% *}
        case "${argv0##*/}" in cowfs | cowfs-debug | fuse-overlayfs) ;; *) continue ;; esac
        case "$cmd" in *"$store/"*) echo "$p $cmd" ;; esac
    done
}

# cleanup_driver DRIVER: takes down that driver's containers, images and store.
cleanup_driver() {
    write_config "$1"
    [ -d "$store" ] || return 0
    pm rm -af -t 0 >/dev/null 2>&1
    pm unmount -a >/dev/null 2>&1
    pm system reset -f >/dev/null 2>&1
    local pid
    for pid in $(our_daemons | cut -d' ' -f1); do
        echo "$prog: killing leftover mount daemon $pid" >&2
        kill -TERM "$pid" 2>/dev/null
    done
    rm -rf "$store" "$runroot"
}

on_exit() {
    local d pid f
    if [ "$keep" != 1 ] && [ -n "$uid" ] && [ -n "$confdir" ] && [ -d "$confdir" ]; then
        for d in "${drivers[@]}"; do cleanup_driver "$d"; done
    fi
    if [ "$keep" = 1 ]; then
        echo "$prog: --keep: user $user, $home/e2e, $xdg and $libexec left; run again without --keep to remove them" >&2
        return
    fi
    if [ -n "$uid" ] && [ -n "$home" ]; then
        # The pause process that holds the user namespace, conmon, leftovers: only processes of
        # this user (made by this script, its own user when it created it) are ended, by pid.
        as_user podman system migrate >/dev/null 2>&1
        if made user; then
            for pid in $(user_pids); do kill -TERM "$pid" 2>/dev/null; done
            sleep 0.5
            for pid in $(user_pids); do kill -KILL "$pid" 2>/dev/null; done
        fi
        rm -rf "$home/e2e"
        for f in storage.conf containers.conf; do
            if made "conf-$f"; then
                rm -f "$confdir/$f"
                [ -e "$marks/$f.saved" ] && mv "$marks/$f.saved" "$confdir/$f"
                rm -f "$marks/conf-$f"
            fi
        done
        if made runtime-dir; then rm -rf "$xdg" && rm -f "$marks/runtime-dir"; fi
        if made run-user; then rmdir /run/user && rm -f "$marks/run-user"; fi
        if made fuse-acl; then
            if made fuse-acl-bare; then setfacl -b /dev/fuse; else setfacl -x "u:$user" /dev/fuse; fi
            rm -f "$marks/fuse-acl" "$marks/fuse-acl-bare"
        fi
        for kind in uid gid; do
            if [ -e "$marks/sub$kind" ] && ! made user; then
                usermod "--del-sub${kind}s" "$(cat "$marks/sub$kind")" "$user"
            fi
            rm -f "$marks/sub$kind"
        done
        if made user; then
            userdel "$user" || echo "$prog: userdel $user failed" >&2
            rm -rf "$home" && rm -f "$marks/user"
        fi
    fi
    if made libexec; then rm -rf "$libexec" && rm -f "$marks/libexec"; fi
    rmdir "$marks" 2>/dev/null
}
# Set by the setup below; on_exit copes with a setup that stopped half way.
uid='' gid='' home='' confdir='' xdg='' subuid_start=0 subuid_count=0
trap on_exit EXIT
trap 'exit 130' INT TERM

# --- the user and what rootless podman needs ------------------------------------------------------
if ! id -u "$user" >/dev/null 2>&1; then
    say "creating user $user (home $base/home)"
    useradd --create-home --home-dir "$base/home" --shell /bin/sh --user-group "$user" ||
        die "useradd $user failed"
    mark user
fi
uid=$(id -u "$user") gid=$(id -g "$user")
home=$(getent passwd "$user" | cut -d: -f6)
[ -d "$home" ] || die "home of $user ($home) is missing"
for kind in uid gid; do
    if ! grep -q "^$user:" "/etc/sub$kind" 2>/dev/null && ! grep -q "^$uid:" "/etc/sub$kind" 2>/dev/null; then
        start=$(next_subid_start "/etc/sub$kind")
        usermod "--add-sub${kind}s" "$start-$((start + 65535))" "$user" || die "usermod --add-sub${kind}s failed"
        echo "$start-$((start + 65535))" >"$marks/sub$kind"
    fi
done
subuid_start=$(awk -F: -v u="$user" -v n="$uid" '$1 == u || $1 == n { print $2; exit }' /etc/subuid)
subuid_count=$(awk -F: -v u="$user" -v n="$uid" '$1 == u || $1 == n { print $3; exit }' /etc/subuid)
[ "${subuid_count:-0}" -ge 65536 ] || die "$user needs at least 65536 subuids (has ${subuid_count:-0})"

xdg=/run/user/$uid
if [ ! -d "$xdg" ]; then
    [ -d /run/user ] || { mkdir /run/user && mark run-user; } || die "cannot create /run/user"
    install -d -m 0700 -o "$uid" -g "$gid" "$xdg" || die "cannot create $xdg"
    mark runtime-dir
fi

if ! as_user sh -c 'exec 3<>/dev/fuse' 2>/dev/null; then
    # Only this user gets access; the mode of /dev/fuse stays as it is.
    if [ -z "$(getfacl --skip-base --absolute-names /dev/fuse 2>/dev/null)" ]; then mark fuse-acl-bare; fi
    setfacl -m "u:$user:rw" /dev/fuse || die "setfacl on /dev/fuse failed"
    mark fuse-acl
    as_user sh -c 'exec 3<>/dev/fuse' || die "$user still cannot open /dev/fuse"
fi

if [ ! -d "$libexec" ]; then install -d -m 0755 "$libexec" || die "cannot create $libexec"; mark libexec; fi
install -m 0755 "$cowfs_src" "$cowfs_bin" || die "cannot install $cowfs_bin"
as_user "$cowfs_bin" --version || die "$user cannot run $cowfs_bin"
if [ -n "$debug_log" ]; then
    # podman calls `PROG --version` and `PROG -o ... MNT`; only the latter gets logging.
    install -m 0644 -o "$uid" -g "$gid" /dev/null "$debug_log" || die "cannot create $debug_log"
    cat >"$libexec/cowfs-debug" <<EOF
#!/bin/sh
[ "\$1" = --version ] && exec $cowfs_bin --version
exec $cowfs_bin --log-level debug --log-file $debug_log "\$@"
EOF
    chmod 0755 "$libexec/cowfs-debug"
fi

confdir=$home/.config/containers
as_user mkdir -p "$confdir" "$home/e2e/tmp" || die "cannot create $confdir"
for f in storage.conf containers.conf; do
    if [ -e "$confdir/$f" ] && ! made "conf-$f"; then
        mv "$confdir/$f" "$marks/$f.saved" || die "cannot set aside $confdir/$f"
    fi
    mark "conf-$f"
done

# --- steps ---------------------------------------------------------------------------------------
# How a step is written, and the steps both podman scripts share (import, read, append, delete,
# renames, nonroot, dpkg-install-purge, diff, commit, concurrent): scripts/podman-e2e-lib.sh.
steps=(
    import info read fstype append chown delete rename-file rename-dir-syscall rename-dir-mv
    owners nonroot dpkg-install-purge create-cp named-run stop-start diff commit committed-run
    build concurrent unshare-upper kernel-userxattr cleanup
)
# shellcheck source=scripts/podman-rootless-e2e-steps.sh
. "$repo/scripts/podman-rootless-e2e-steps.sh"

# --- run -----------------------------------------------------------------------------------------
for drv in "${drivers[@]}"; do
    setup_vars "$drv"
    say "driver $drv as $user (uid $uid): store $store, results in $res"
    cleanup_driver "$drv" # leftovers of an earlier run
    rm -rf "$res" && mkdir -p "$res"
    cp "$confdir/storage.conf" "$confdir/containers.conf" "$res/"
    as_user mkdir -p "$store" "$home/e2e/$drv/tmp"
    run_steps
    [ "$keep" = 1 ] || cleanup_driver "$drv"
done

print_results
exit "$status"
