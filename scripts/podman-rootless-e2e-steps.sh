# shellcheck shell=bash
# The steps of scripts/podman-rootless-e2e.sh that only the rootless flow has (sourced by it; the
# shared ones are in scripts/podman-e2e-lib.sh). Globals from the sourcing script: D, res, store,
# mount_program, home, uid, gid, deb, rootfs, pm, as_user, our_daemons.
# Container scripts are single-quoted on purpose.
# shellcheck disable=SC2317,SC2016,SC2012,SC2015,SC2154

# What the mount program's mount shows as fstype, by driver.
want_fstype() {
    case "$D" in native) echo overlay ;; cowfs) echo fuse.cowfs ;; *) echo "fuse.$D" ;; esac
}

step_info() {
    pm info >"$res/info.txt" 2>&1 || return
    pm info --format '{{.Store.GraphDriverName}}' || return
    pm info --format 'rootless: {{.Host.Security.Rootless}}' || return
    local opts
    opts=$(pm info --format '{{json .Store.GraphOptions}}') || return
    if [ -n "$mount_program" ]; then
        case "$opts" in
            *"\"overlay.mount_program\":{\"Executable\":\"$mount_program\""*) echo "mount_program as configured" ;;
            *) echo "mount_program NOT as configured: $opts" ;;
        esac
    else
        case "$opts" in *mount_program*) echo "mount_program set: $opts" ;; *) echo "mount_program as configured" ;; esac
    fi
}
expect_info() { echo overlay; echo "rootless: true"; echo "mount_program as configured"; }
note_info() { grep -o 'Native Overlay Diff: "[a-z]*"' "$res/info.txt" 2>/dev/null | tr -d '"'; }

# The container's root is the mount program's mount (or the kernel's overlay), in the user's mount
# namespace; the daemon runs as the user, and `podman rm` unmounts it and ends the daemon.
step_fstype() {
    pm rm -f -t 0 e2e-probe >/dev/null 2>&1
    pm run -d --name e2e-probe e2e-base sleep 600 >/dev/null || return
    local merged fstype want n want_n=0 pid
    merged=$(pm inspect --format '{{.GraphDriver.Data.MergedDir}}' e2e-probe) || return
    fstype=$(pm exec e2e-probe awk '$2 == "/" { print $3 }' /proc/mounts)
    want=$(want_fstype)
    [ "$fstype" = "$want" ] && echo "fstype as expected" || echo "fstype '$fstype', want $want"
    pm exec e2e-probe sh -c 'echo from-container >/tmp/probe'
    echo "podman unshare reads: $(pm unshare cat "$merged/tmp/probe" 2>&1)"
    [ -n "$mount_program" ] && want_n=1
    n=$(our_daemons | grep -cF " $merged")
    pid=$(our_daemons | grep -F " $merged" | head -n 1 | cut -d' ' -f1)
    if [ -n "$pid" ]; then
        our_daemons | grep -F " $merged" | cut -d' ' -f2- >"$res/fstype.cmdline"
        [ "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")" = "$uid" ] || n="$n (not as uid $uid)"
    fi
    [ "$n" = "$want_n" ] && echo "mount daemons running as the user: as expected" || echo "mount daemons running as the user: $n, want $want_n"
    pm rm -f -t 0 e2e-probe >/dev/null || return
    sleep 0.5
    pm unshare awk -v m="$merged" '$2 == m { found = 1 } END { print found ? "still mounted after rm" : "unmounted after rm" }' /proc/self/mounts
    echo "mount daemons after rm: $(our_daemons | grep -cF " $merged")"
}
expect_fstype() {
    echo "fstype as expected"
    echo "podman unshare reads: from-container"
    echo "mount daemons running as the user: as expected"
    echo "unmounted after rm"
    echo "mount daemons after rm: 0"
}
# The -o options podman gave the mount program (paths left out).
note_fstype() {
    [ -s "$res/fstype.cmdline" ] || { echo "no mount program"; return 0; }
    sed -n 's/.* -o \([^ ]*\) .*/\1/p' "$res/fstype.cmdline" | tr ',' '\n' | sed '/^$/d; s/=.*//' | paste -sd, | sed 's/^/-o /'
}

# chown inside the user namespace: ids of the container (mapped to subordinate ids on the host),
# metadata-only copy-up keeps data, an unmapped id is refused, chown drops setuid.
step_chown() {
    pm "${RUN[@]}" e2e-base sh -c '
        chown 1000:1000 /etc/issue && stat -c "%n %u %g %a" /etc/issue
        chown -R 1000:100 /usr/share/doc/apt && stat -c "%n %u %g" /usr/share/doc/apt /usr/share/doc/apt/copyright
        md5sum </usr/share/doc/apt/copyright
        echo x >/tmp/new && chown 65534:65534 /tmp/new && stat -c "%n %u %g" /tmp/new
        chown 70000 /tmp/new 2>&1; echo "chown to an unmapped id rc=$?"
        chgrp 42 /etc/issue && stat -c "%n %u %g" /etc/issue
        ln -s /etc/issue /tmp/sl && chown -h 7:7 /tmp/sl && stat -c "%n %u %g" /tmp/sl
        chmod 4755 /tmp/new && chown 1:1 /tmp/new && stat -c "%n %a" /tmp/new'
}
expect_chown() {
    echo "/etc/issue 1000 1000 644"
    echo "/usr/share/doc/apt 1000 100"
    echo "/usr/share/doc/apt/copyright 1000 100"
    md5sum <"$rootfs/usr/share/doc/apt/copyright"
    echo "/tmp/new 65534 65534"
    echo "chown: changing ownership of '/tmp/new': Invalid argument"
    echo "chown to an unmapped id rc=1"
    echo "/etc/issue 1000 42"
    echo "/tmp/sl 7 7"
    echo "/tmp/new 755"
}

# Owners and modes seen from inside: copy-up under umask 077 keeps the image's modes, a lower
# setgid dir keeps its bit on copy-up and passes its group on, a non-root creator (setpriv, and a
# container run with --user) owns what it makes.
step_owners() {
    pm "${RUN[@]}" e2e-base sh -c '
        stat -c "%n %a %U %G" /var/local /var/mail
        umask 077
        echo more >>/etc/issue && stat -c "%n %a" /etc/issue
        touch /usr/share/doc/dpkg/new && stat -c "%n %a" /usr/share/doc/dpkg /usr/share/doc/dpkg/new
        touch /var/local/by-root && stat -c "%n %a %U %G" /var/local /var/local/by-root
        umask 022
        mkdir /var/local/dir-by-root && stat -c "%n %a %G" /var/local/dir-by-root
        setpriv --reuid 1000 --regid 1000 --groups 50 sh -c "
            touch /var/local/by-user && mkdir /var/local/dir-by-user /var/local/dir-by-user/sub
            stat -c \"%n %u %g %a\" /var/local/by-user /var/local/dir-by-user /var/local/dir-by-user/sub"
        mkdir /home/u && chown 1000:1000 /home/u
        setpriv --reuid 1000 --regid 1000 --clear-groups sh -c "
            id -u; echo x >/home/u/f; mkdir /home/u/d; stat -c \"%n %u %g %a\" /home/u/f /home/u/d
            touch /etc/x 2>&1; true"' || return
    pm "${RUN[@]}" --user 1000:1000 e2e-base sh -c '
        id -u; id -g; echo x >/tmp/f; mkdir /tmp/d; stat -c "%n %u %g %a" /tmp/f /tmp/d'
}
expect_owners() {
    echo "/var/local 2775 root staff"
    echo "/var/mail 2775 root mail"
    echo "/etc/issue 644"
    echo "/usr/share/doc/dpkg 755"
    echo "/usr/share/doc/dpkg/new 600"
    echo "/var/local 2775 root staff"
    echo "/var/local/by-root 600 root staff"
    echo "/var/local/dir-by-root 2755 staff"
    echo "/var/local/by-user 1000 50 644"
    echo "/var/local/dir-by-user 1000 50 2755"
    echo "/var/local/dir-by-user/sub 1000 50 2755"
    echo 1000
    echo "/home/u/f 1000 1000 644"
    echo "/home/u/d 1000 1000 755"
    echo "touch: cannot touch '/etc/x': Permission denied"
    echo 1000
    echo 1000
    echo "/tmp/f 1000 1000 644"
    echo "/tmp/d 1000 1000 755"
}

# A named container (upperdir kept, looked at later by diff, commit, unshare-upper and
# kernel-userxattr); `podman cp` into it while it is stopped. Two dirs with lower content are
# renamed (one to another parent, one in its own), the rest are the changes a package manager makes.
NAMED_SCRIPT='set -e
    ren() { perl -e "rename(\$ARGV[0], \$ARGV[1]) or exit 1" "$1" "$2" || mv "$1" "$2"; }
    umask 077
    rm /etc/debian_version
    rm -r /usr/share/doc/apt
    rm -rf /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d && touch /etc/apt/apt.conf.d/new
    echo appended >>/etc/issue
    chown 1000:1000 /etc/host.conf
    touch /var/local/by-root
    setpriv --reuid 1000 --regid 1000 --groups 50 sh -c "umask 022; touch /var/local/by-user; mkdir /var/local/dir-by-user"
    umask 022
    mkdir -p /newdir/sub && echo new-content >/newdir/sub/file
    ln -s ../etc/os-release /newdir/link
    ren /usr/share/doc/dpkg /usr/share/dpkg-doc
    ren /usr/share/doc/debconf /usr/share/doc/debconf.renamed
    echo added >/usr/share/dpkg-doc/added
    dpkg -i /tmp/e2e.deb >/dev/null
    rm /tmp/e2e.deb
    echo named-run-done'
step_create_cp() {
    pm rm -f -t 0 e2e-c1 >/dev/null 2>&1
    pm create --name e2e-c1 e2e-base sh -c "$NAMED_SCRIPT" >/dev/null || return
    echo created
    pm cp "$deb" e2e-c1:/tmp/e2e.deb || return
    echo copied
}
expect_create_cp() { echo created; echo copied; }

step_named_run() { pm start -a e2e-c1; }
expect_named_run() { echo named-run-done; }

# A long-running container stopped and started twice: its changes (a renamed dir with lower
# content among them) are there after each start, and a stop ends the mount daemon.
step_stop_start() {
    pm rm -f -t 0 e2e-long >/dev/null 2>&1
    pm run -d --name e2e-long e2e-base sh -c 'echo run >>/var/log/e2e-runs; exec sleep 600' >/dev/null || return
    pm exec e2e-long sh -c '
        echo one >/root/state
        perl -e "rename(q{/usr/share/doc/dpkg}, q{/srv/dpkg-doc}) or exit 1" 2>/dev/null || mv /usr/share/doc/dpkg /srv/dpkg-doc
        chown 1000:50 /etc/issue && rm /etc/host.conf' || return
    local merged
    merged=$(pm inspect --format '{{.GraphDriver.Data.MergedDir}}' e2e-long) || return
    pm stop -t 0 e2e-long >/dev/null || return
    sleep 0.5
    echo "mount daemons after stop: $(our_daemons | grep -cF " $merged")"
    pm start e2e-long >/dev/null || return
    pm exec e2e-long sh -c '
        cat /var/log/e2e-runs /root/state
        ls -d /usr/share/doc/dpkg 2>&1; cd /srv/dpkg-doc && find . | sort | md5sum
        stat -c "%u %g" /etc/issue; ls /etc/host.conf 2>&1
        echo two >>/root/state' || return
    pm stop -t 0 e2e-long >/dev/null && pm start e2e-long >/dev/null || return
    pm exec e2e-long cat /root/state /var/log/e2e-runs
    pm rm -f -t 0 e2e-long >/dev/null || return
    sleep 0.5
    echo "mount daemons after rm: $(our_daemons | grep -cF " $merged")"
}
expect_stop_start() {
    echo "mount daemons after stop: 0"
    echo run
    echo run
    echo one
    echo "ls: cannot access '/usr/share/doc/dpkg': No such file or directory"
    (cd "$rootfs/usr/share/doc/dpkg" && find . | sort | md5sum)
    echo "1000 50"
    echo "ls: cannot access '/etc/host.conf': No such file or directory"
    echo one
    echo two
    echo run
    echo run
    echo run
    echo "mount daemons after rm: 0"
}

step_committed_run() {
    pm "${RUN[@]}" e2e-committed sh -c "
        ls /etc/debian_version /usr/share/doc/apt 2>&1
        ls -A /etc/apt/apt.conf.d
        tail -n 1 /etc/issue; stat -c '%n %a' /etc/issue
        stat -c '%n %u %g %a' /etc/host.conf /var/local /var/local/by-root /var/local/by-user /var/local/dir-by-user
        cat /newdir/sub/file; readlink /newdir/link
        ls /tmp/e2e.deb 2>&1
        ls -d /usr/share/doc/dpkg /usr/share/doc/debconf 2>&1
        (cd /usr/share/dpkg-doc && find . | sort | md5sum)
        (cd /usr/share/doc/debconf.renamed && find . | sort | md5sum)
        $DPKG_CHECK"
}
expect_committed_run() {
    echo "ls: cannot access '/etc/debian_version': No such file or directory"
    echo "ls: cannot access '/usr/share/doc/apt': No such file or directory"
    echo new
    echo appended
    echo "/etc/issue 644"
    echo "/etc/host.conf 1000 1000 644"
    echo "/var/local 0 50 2775"
    echo "/var/local/by-root 0 50 600"
    echo "/var/local/by-user 1000 50 644"
    echo "/var/local/dir-by-user 1000 50 2755"
    echo new-content
    echo ../etc/os-release
    echo "ls: cannot access '/tmp/e2e.deb': No such file or directory"
    echo "ls: cannot access '/usr/share/doc/dpkg': No such file or directory"
    echo "ls: cannot access '/usr/share/doc/debconf': No such file or directory"
    (cd "$rootfs/usr/share/doc/dpkg" && { find .; echo ./added; } | sort | md5sum)
    (cd "$rootfs/usr/share/doc/debconf" && find . | sort | md5sum)
    expect_dpkg_lines
}

# podman build: a Containerfile with COPY and RUN steps (a package install, deletes, a dir
# rename, a setgid dir, a non-root creator), each step a layer; then a container of the result.
step_build() {
    local ctx=$home/e2e/$D/build
    as_user rm -rf "$ctx" && as_user mkdir -p "$ctx" || return
    install -m 0644 -o "$uid" -g "$gid" "$deb" "$ctx/e2e-hello.deb" || return
    cat >"$ctx/Containerfile" <<'EOF'
FROM localhost/e2e-base:latest
COPY e2e-hello.deb /tmp/e2e-hello.deb
RUN dpkg -i /tmp/e2e-hello.deb >/dev/null && rm /tmp/e2e-hello.deb
RUN rm -r /usr/share/doc/apt /etc/debian_version && \
    (perl -e 'rename(q{/usr/share/doc/dpkg}, q{/usr/share/dpkg-doc}) or exit 1' || mv /usr/share/doc/dpkg /usr/share/dpkg-doc) && \
    echo built >/usr/share/dpkg-doc/built
RUN mkdir -m 2775 /srv/shared && chgrp 50 /srv/shared && \
    setpriv --reuid 1000 --regid 1000 --groups 50 touch /srv/shared/by-user && chown 1000:1000 /etc/host.conf
EOF
    chown "$uid:$gid" "$ctx/Containerfile"
    pm rmi -f e2e-built >/dev/null 2>&1
    pm build -q --network=none -t e2e-built -f "$ctx/Containerfile" "$ctx" >"$res/build.log" 2>&1 ||
        { cat "$res/build.log" >&2; return 1; }
    pm image inspect --format '{{len .RootFS.Layers}} layers' e2e-built
    pm "${RUN[@]}" e2e-built sh -c "
        ls /etc/debian_version /usr/share/doc/apt /usr/share/doc/dpkg /tmp/e2e-hello.deb 2>&1
        (cd /usr/share/dpkg-doc && find . | sort | md5sum); cat /usr/share/dpkg-doc/built
        stat -c '%n %u %g %a' /srv/shared /srv/shared/by-user /etc/host.conf
        $DPKG_CHECK"
}
expect_build() {
    echo "5 layers"
    echo "ls: cannot access '/etc/debian_version': No such file or directory"
    echo "ls: cannot access '/usr/share/doc/apt': No such file or directory"
    echo "ls: cannot access '/usr/share/doc/dpkg': No such file or directory"
    echo "ls: cannot access '/tmp/e2e-hello.deb': No such file or directory"
    (cd "$rootfs/usr/share/doc/dpkg" && { find .; echo ./built; } | sort | md5sum)
    echo built
    echo "/srv/shared 0 50 2775"
    echo "/srv/shared/by-user 1000 50 644"
    echo "/etc/host.conf 1000 1000 644"
    expect_dpkg_lines
}

# The named container's upper as the user sees it in `podman unshare` (root there is the user):
# owners, setgid kept, whiteouts as 0/0 character devices, the re-made dir opaque by xattr, and no
# OCI-style `.wh.` files (no `.wh..wh..opq`).
step_unshare_upper() {
    local upper
    upper=$(pm inspect --format '{{.GraphDriver.Data.UpperDir}}' e2e-c1) || return
    getfattr -R --absolute-names -d -m '^user\.overlay\.redirect$' "$upper" 2>/dev/null |
        grep '^user' >"$res/unshare-upper.redirects"
    pm unshare sh -c '
        cd "$1" || exit 1
        stat -c "%n %u %g %a" etc/host.conf etc/issue var/local var/local/by-root var/local/by-user \
            var/local/dir-by-user newdir/sub/file usr/bin/e2e-hello
        stat -c "%n %F %t:%T" etc/debian_version usr/share/doc/apt
        echo "etc/apt/apt.conf.d opaque: $(getfattr --only-values --absolute-names -n user.overlay.opaque etc/apt/apt.conf.d 2>&1)"
        ls -A etc/apt/apt.conf.d
        echo ".wh. files: $(find . -name ".wh.*" | wc -l)"' sh "$upper"
}
expect_unshare_upper() {
    echo "etc/host.conf 1000 1000 644"
    echo "etc/issue 0 0 644"
    echo "var/local 0 50 2775"
    echo "var/local/by-root 0 50 600"
    echo "var/local/by-user 1000 50 644"
    echo "var/local/dir-by-user 1000 50 2755"
    echo "newdir/sub/file 0 0 644"
    echo "usr/bin/e2e-hello 0 0 755"
    echo "etc/debian_version character special file 0:0"
    echo "usr/share/doc/apt character special file 0:0"
    echo "etc/apt/apt.conf.d opaque: y"
    echo new
    echo ".wh. files: 0"
}
note_unshare_upper() { echo "$(wc -l <"$res/unshare-upper.redirects" 2>/dev/null || echo 0) user.overlay.redirect"; }

# The kernel's rootless overlay (userxattr, mounted by the user in a user and mount namespace)
# over the named container's upper reads the same tree as the driver's own mount of it, the two
# renamed dirs with lower content included: no EPERM, no "refusing to follow redirect" in dmesg.
# The kernel never follows redirects with userxattr, so an upper that stores a renamed lower dir
# as a user.overlay.redirect fails here.
TREE_LISTING='find . -printf "%y %m %U:%G %p\n" 2>&1 | LC_ALL=C sort
    find usr/share/dpkg-doc usr/share/doc/debconf.renamed etc -type f -exec md5sum {} + 2>&1 | LC_ALL=C sort'
step_kernel_userxattr() {
    local upper lower kt before after m
    upper=$(pm inspect --format '{{.GraphDriver.Data.UpperDir}}' e2e-c1) || return
    lower=$(pm inspect --format '{{.GraphDriver.Data.LowerDir}}' e2e-c1) || return
    # Beside the upper: the kernel wants the work dir on the same mount (containers/storage
    # bind-mounts its overlay dir onto itself in the user's mount namespace).
    kt=$(dirname "$upper")/e2e-kernel
    # The driver's view first, unmounted again before the kernel mounts the same upper.
    m=$(pm unshare podman mount e2e-c1) || return
    pm unshare sh -c "cd '$m' && $TREE_LISTING" >"$res/kernel-userxattr.driver-view" || return
    pm unshare podman unmount e2e-c1 >/dev/null || return
    before=$(dmesg 2>/dev/null | grep -c 'refusing to follow redirect')
    pm unshare unshare -m sh -c '
        up=$1 low=$2 kt=$3
        rm -rf "$kt" && mkdir -p "$kt/work" "$kt/mnt" || exit 1
        mount -t overlay overlay -o "userxattr,lowerdir=$low,upperdir=$up,workdir=$kt/work" "$kt/mnt" 2>&1 ||
            { echo "kernel mount failed"; exit 1; }
        echo "kernel mount: ok"
        cd "$kt/mnt" && eval "$4" >"$kt/listing"
        for d in usr/share/dpkg-doc usr/share/doc/debconf.renamed; do
            echo "$d: $(ls -A "$d" 2>/dev/null | wc -l) entries"
        done
        cd / && umount "$kt/mnt"' sh "$upper" "$lower" "$kt" "$TREE_LISTING" || return
    pm unshare sh -c 'cat "$1/listing" && rm -rf "$1"' sh "$kt" >"$res/kernel-userxattr.kernel-view"
    after=$(dmesg 2>/dev/null | grep -c 'refusing to follow redirect')
    echo "EPERM while reading: $(grep -c 'Operation not permitted' "$res/kernel-userxattr.kernel-view")"
    if cmp -s "$res/kernel-userxattr.driver-view" "$res/kernel-userxattr.kernel-view"; then
        echo "tree: same as the driver's mount"
    else
        diff "$res/kernel-userxattr.driver-view" "$res/kernel-userxattr.kernel-view" >"$res/kernel-userxattr.diff"
        echo "tree: differs from the driver's mount in $(grep -c '^[<>]' "$res/kernel-userxattr.diff") lines (results/$D/kernel-userxattr.diff)"
    fi
    echo "new 'refusing to follow redirect' in dmesg: $((after - before))"
}
expect_kernel_userxattr() {
    echo "kernel mount: ok"
    echo "usr/share/dpkg-doc: $(($(ls -A "$rootfs/usr/share/doc/dpkg" | wc -l) + 1)) entries"
    echo "usr/share/doc/debconf.renamed: $(ls -A "$rootfs/usr/share/doc/debconf" | wc -l) entries"
    echo "EPERM while reading: 0"
    echo "tree: same as the driver's mount"
    echo "new 'refusing to follow redirect' in dmesg: 0"
}

step_cleanup() {
    pm rm -af -t 0 >/dev/null || return
    pm rmi -f e2e-committed e2e-built >/dev/null || return
    pm unmount -a >/dev/null
    sleep 0.5
    local m d
    m=$(pm unshare awk -v s="$store/" 'index($2, s) == 1 && $3 ~ /^fuse|^overlay$/ { print $2 }' /proc/self/mounts)
    d=$(our_daemons)
    echo "mounts left: ${m:-none}"
    echo "mount daemons left: ${d:-none}"
    pm "${RUN[@]}" e2e-base true && echo "base image still runs"
}
expect_cleanup() { echo "mounts left: none"; echo "mount daemons left: none"; echo "base image still runs"; }
