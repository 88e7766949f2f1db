# shellcheck shell=bash
# What the podman end-to-end scripts share (sourced by scripts/podman-e2e.sh, rootful, and
# scripts/podman-rootless-e2e.sh): output helpers, prerequisites, the cowfs build, the cached
# debootstrap image, the test .deb, the steps both flows run the same way, the step runner and the
# PASS/FAIL table.
#
# The sourcing script sets before calling into it:
#   prog       its name, for messages
#   repo       the source tree (cargo build --release runs there)
#   base       its work dir (results, the .deb)
#   rootfs     where the image is cached: debootstrap --variant=minbase of this machine's suite,
#              built once (a lock keeps two runs from building it at once)
#   cowfs_src  a cowfs binary to use, or empty to build one
#   drivers    the drivers to run, native first when it runs
#   steps      the step names, in order; only (",a,b," or empty) picks some of them
#   pm         a function running podman for the current driver D, bounded by a timeout
#   results_dir  a function printing the results dir of driver $1
# and per driver: D (native, cowfs, fuse-overlayfs) and res (that driver's results dir).
# Steps are called by name (step_*, expect_*, note_*); container scripts are single-quoted on purpose.
# shellcheck disable=SC2317,SC2016,SC2012,SC2015,SC2154,SC2094,SC2034

if [ -t 1 ]; then bold=$'\033[1m' red=$'\033[31m' green=$'\033[32m' plain=$'\033[0m'
else bold='' red='' green='' plain=''; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
die() { echo "$prog: $*" >&2; exit 2; }

# install_missing CMD:PACKAGE... installs, with apt-get, the packages of the commands not found.
install_missing() {
    local pair need=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
}

# build_cowfs: sets cowfs_src to the given --cowfs-bin, or builds the release binary of $repo.
build_cowfs() {
    if [ -n "$cowfs_src" ]; then return 0; fi
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo is missing (needed to build cowfs)"
    say "building cowfs (cargo build --release)"
    (cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"
    cowfs_src=$repo/target/release/cowfs
}

# ensure_rootfs: $rootfs holds the debootstrap minbase image (built on first use).
ensure_rootfs() {
    mkdir -p "$(dirname "$rootfs")" || die "cannot create $(dirname "$rootfs")"
    (
        flock 9 || die "cannot lock $rootfs.lock"
        [ -e "$rootfs/.e2e-complete" ] && exit 0
        local suite mirror log=$rootfs.debootstrap.log
        # shellcheck disable=SC1091
        suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        [ -n "$suite" ] || die "no VERSION_CODENAME in /etc/os-release"
        # The mirror apt uses for the release itself (not -updates / -security).
        mirror=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 2>/dev/null |
            awk -v s="$suite" '$1 == s { print $2; exit }')
        mirror=${mirror:-http://deb.debian.org/debian/}
        say "debootstrap --variant=minbase $suite $rootfs $mirror (once; cached)"
        rm -rf "$rootfs.tmp"
        debootstrap --variant=minbase "$suite" "$rootfs.tmp" "$mirror" >"$log" 2>&1 ||
            { tail -20 "$log" >&2; die "debootstrap failed (log: $log)"; }
        rm -rf "$rootfs"
        mv "$rootfs.tmp" "$rootfs" && touch "$rootfs/.e2e-complete"
    ) 9>"$rootfs.lock" || exit
    local f
    for f in etc/os-release etc/debian_version etc/issue usr/bin/dpkg usr/bin/perl usr/share/doc/apt \
        usr/share/doc/dpkg var/local; do
        [ -e "$rootfs/$f" ] || die "$rootfs/$f is missing; remove $rootfs and run again"
    done
    [ -n "$(ls -A "$rootfs/etc/apt/apt.conf.d")" ] || die "$rootfs/etc/apt/apt.conf.d is empty"
}

# image_tar: the image as a tar stream on stdout (for podman import).
image_tar() { tar -C "$rootfs" --exclude=./.e2e-complete -c .; }

# build_deb: $deb, a tiny package (a script, a data dir, a conffile, maintainer scripts) made
# from $debsrc.
build_deb() {
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
    local i
    for i in 1 2 3; do seq 1 $((i * 1000)) >"$debsrc/usr/share/e2e-hello/data/file$i"; done
    dpkg-deb --root-owner-group -Zgzip --build "$debsrc" "$deb" >/dev/null || die "dpkg-deb failed"
    chmod 0644 "$deb"
}

# --- steps both flows run the same way -----------------------------------------------------------
# A step is a function step_NAME printing its observations on stdout (stderr is kept aside); it
# runs in a subshell and each podman call in it is bounded by a timeout. expect_NAME prints what
# it must show (for every driver); `@native` means "the same as the native driver"
# (informational when native is not run). The step's exit status must be 0. note_NAME, if any,
# adds a remark to the table. RUN is `podman run --rm` with no network.
RUN=(run --rm --network=none)

step_import() {
    pm rmi -f e2e-base >/dev/null 2>&1
    image_tar | pm import -q - e2e-base >/dev/null || return
    pm images --format '{{.Repository}}:{{.Tag}}' | grep e2e-base
}
expect_import() { echo localhost/e2e-base:latest; }

step_read() {
    pm "${RUN[@]}" e2e-base sh -c 'cat /etc/os-release; cd / && md5sum usr/bin/dpkg etc/passwd; ls /usr/share/doc | wc -l'
}
expect_read() {
    cat "$rootfs/etc/os-release"
    (cd "$rootfs" && md5sum usr/bin/dpkg etc/passwd)
    ls "$rootfs/usr/share/doc" | wc -l
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

# `podman diff` of the named container e2e-c1 comes from two different algorithms: with the kernel
# driver containers/storage lists the upper dir ("Native Overlay Diff: true"); with a mount_program
# it compares the mounted trees ("naive diff"). They agree on files but not on dirs: the naive diff
# reports the parents of changed entries as changed, and a dir that was removed and made again
# (opaque) as deletions of its old entries. So "C DIR" lines for dirs of the image are dropped and
# "D DIR" of an opaque dir becomes "D DIR/ENTRY" for each image entry; the raw list is kept in
# results/diff.raw.
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

step_commit() {
    pm rmi -f e2e-committed >/dev/null 2>&1
    pm commit -q e2e-c1 e2e-committed >/dev/null || return
    pm image inspect --format '{{len .RootFS.Layers}} layers' e2e-committed
}
expect_commit() { echo "2 layers"; }

# Several containers at once on the same image, each writing its own copy of a lower file.
step_concurrent() {
    local i pids=()
    for i in 1 2 3; do
        pm "${RUN[@]}" e2e-base sh -c "for n in \$(seq 1 200); do echo c$i-\$n >>/etc/debian_version; done
            rm -r /usr/share/doc/apt; mkdir -p /w/$i; cp -a /usr/share/doc /w/$i/
            tail -n 1 /etc/debian_version; wc -l </etc/debian_version" >"$res/concurrent.$i" 2>&1 &
        pids+=($!)
    done
    local rc=0
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=1; done
    for i in 1 2 3; do cat "$res/concurrent.$i"; done
    return "$rc"
}
expect_concurrent() {
    local i n
    n=$(($(wc -l <"$rootfs/etc/debian_version") + 200))
    for i in 1 2 3; do echo "c$i-200"; echo "$n"; done
}

# --- runner and table ----------------------------------------------------------------------------
run_steps() {
    local s fn t0
    for s in "${steps[@]}"; do
        if [ -n "$only" ] && [[ $only != *",$s,"* ]]; then continue; fi
        fn=step_${s//-/_}
        printf '  %-20s ' "$s"
        t0=$SECONDS
        # The step's own stdout is its result; stderr (podman warnings, errors) is kept aside.
        ("$fn") </dev/null >"$res/$s.out" 2>"$res/$s.err"
        echo $? >"$res/$s.rc"
        "expect_${s//-/_}" >"$res/$s.expected" 2>&1
        printf 'rc=%s (%ss)\n' "$(cat "$res/$s.rc")" $((SECONDS - t0))
    done
}

# results_dir DRIVER: where that driver's step results are (set by the sourcing script).
ran() { [[ " ${drivers[*]} " == *" $1 "* ]]; }
# verdict DRIVER STEP -> PASS / FAIL / INFO / - (not run)
verdict() {
    local r s=$2 n
    r=$(results_dir "$1")
    n=$(results_dir native)
    ran "$1" && [ -f "$r/$s.rc" ] || { echo -; return; }
    local rc
    rc=$(cat "$r/$s.rc")
    if [ "$(cat "$r/$s.expected")" = @native ]; then
        if [ "$1" = native ]; then
            [ "$rc" = 0 ] && echo PASS || echo FAIL
        elif ran native && [ -f "$n/$s.rc" ]; then
            if [ "$rc" = "$(cat "$n/$s.rc")" ] && cmp -s "$r/$s.out" "$n/$s.out"; then
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
    local a b
    a=$(results_dir native)/$1 b=$(results_dir cowfs)/$1
    ran native && ran cowfs && [ -f "$a.rc" ] && [ -f "$b.rc" ] || { echo -; return; }
    [ "$(cat "$a.rc")" = "$(cat "$b.rc")" ] && cmp -s "$a.out" "$b.out" && echo same || echo differs
}

# print_results: the table (a column for native, cowfs and each further driver that ran), then the
# output of each failed step against what it should have been. Sets status: 1 if cowfs failed a
# step that native passed (without cowfs: if native failed one); other drivers don't count.
print_results() {
    local cols=(native cowfs) d s v vn vc note drv r f
    for d in "${drivers[@]}"; do [[ " ${cols[*]} " == *" $d "* ]] || cols+=("$d"); done
    color() { case "$1" in PASS) printf '%s%-7s%s' "$green" "$1" "$plain" ;; FAIL) printf '%s%-7s%s' "$red" "$1" "$plain" ;; *) printf '%-7s' "$1" ;; esac; }
    say "results"
    printf '%-20s' STEP
    for d in "${cols[@]}"; do printf ' %-7s' "${d:0:7}"; done
    printf ' %-8s %s\n' output note
    status=0
    local failed=()
    for s in "${steps[@]}"; do
        if [ -n "$only" ] && [[ $only != *",$s,"* ]]; then continue; fi
        printf '%-20s' "$s"
        for d in "${cols[@]}"; do
            v=$(verdict "$d" "$s")
            printf ' %s' "$(color "$v")"
            [ "$v" = FAIL ] && failed+=("$d/$s")
        done
        note=
        if declare -F "note_${s//-/_}" >/dev/null; then
            for drv in "${drivers[@]}"; do
                res=$(results_dir "$drv")
                note+="$drv: $("note_${s//-/_}") "
            done
        fi
        printf ' %-8s %s\n' "$(same "$s")" "$note"
        vn=$(verdict native "$s")
        vc=$(verdict cowfs "$s")
        if [ "$vc" = FAIL ] && [ "$vn" != FAIL ]; then status=1; fi
        if ! ran cowfs && [ "$vn" = FAIL ]; then status=1; fi
    done
    for f in "${failed[@]}"; do
        drv=${f%%/*} s=${f#*/}
        r=$(results_dir "$drv")
        printf '\n%s-- %s: %s failed (rc=%s)%s\n' "$bold" "$drv" "$s" "$(cat "$r/$s.rc")" "$plain"
        if [ "$(cat "$r/$s.expected")" = @native ]; then
            diff -u --label native --label "$drv" "$(results_dir native)/$s.out" "$r/$s.out" | head -40
        else
            diff -u --label expected --label "$drv" "$r/$s.expected" "$r/$s.out" | head -40
        fi
        if [ -s "$r/$s.err" ]; then echo "stderr:"; head -20 "$r/$s.err"; fi
    done
    if [ ${#failed[@]} -eq 0 ]; then echo; echo "all steps passed"; fi
}
