#!/usr/bin/env bash
# Time and size of `cowfs export` after a `dpkg -i`-like change, against `tar` of the whole merged
# tree (what an image builder without a diff of its own has to do: walk the merged view).
#
#   scripts/bench-export.sh [LAYERS_DIR]
#
# LAYERS_DIR holds the layers L1 (top), L2, L3 (bottom); default: the full data set scripts/bench
# builds under /var/tmp/cowfs-bench (~112k entries, 2.6 GB), else a generated one (30k files).
# Runs as root; everything it mounts is unmounted on exit. Prints a markdown table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REPS=${REPS:-3}
cargo build --release -q
COWFS=$PWD/target/release/cowfs

LAYERS=${1:-$(ls -d /var/tmp/cowfs-bench/data-full-* 2>/dev/null | head -1 || true)}
if [ -z "$LAYERS" ] || [ ! -d "$LAYERS/L3" ]; then
    LAYERS=/var/tmp/cowfs-export-bench-layers
    if [ ! -d "$LAYERS/L3" ]; then
        echo "bench-export: generating $LAYERS" >&2
        mkdir -p "$LAYERS/L1/etc" "$LAYERS/L2" "$LAYERS/L3"
        for p in $(seq -w 0 299); do
            for s in 0 1 2 3; do
                d="$LAYERS/L3/usr/lib/pkg0$p/sub$s"
                mkdir -p "$d"
                for f in $(seq -w 0 24); do head -c $((RANDOM % 8192)) /dev/urandom > "$d/file0$f"; done
            done
        done
    fi
fi

W=$(mktemp -d /var/tmp/cowfs-export-bench.XXXXXX)
cleanup() {
    for m in "$W/mnt" "$W/kmnt"; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/upper" "$W/work" "$W/mnt" "$W/kmnt" "$W/kwork"
LOWERS="$LAYERS/L1:$LAYERS/L2:$LAYERS/L3"

"$COWFS" mount "$LOWERS" "$W/upper" "$W/mnt" --workdir "$W/work"
# The change a `dpkg -i` of one package upgrade makes: new files unpacked as NAME.dpkg-new and
# renamed into place (a new version of an existing package: 100 files replaced, 200 added), a
# conffile, docs, a few files of the old version removed, its symlinks and a maintainer script's
# chmod.
M=$W/mnt
mkdir -p "$M/usr/lib/pkg0042/new" "$M/usr/share/doc/pkg0042" "$M/etc/pkg0042" "$M/var/lib/dpkg/info"
n=0
for f in "$M"/usr/lib/pkg0042/sub*/file*; do
    [ $n -lt 100 ] || break
    head -c 4096 /dev/urandom > "$f.dpkg-new" && mv "$f.dpkg-new" "$f"
    n=$((n + 1))
done
for i in $(seq -w 0 199); do
    head -c $((RANDOM % 16384)) /dev/urandom > "$M/usr/lib/pkg0042/new/lib$i.so.dpkg-new"
    mv "$M/usr/lib/pkg0042/new/lib$i.so.dpkg-new" "$M/usr/lib/pkg0042/new/lib$i.so"
done
for i in $(seq -w 0 19); do echo "doc $i" > "$M/usr/share/doc/pkg0042/doc$i"; done
echo "setting=1" > "$M/etc/pkg0042/pkg.conf"
ls "$M"/usr/lib/pkg0043/sub0/file* | head -20 | xargs rm -f
for i in $(seq 0 9); do ln -sf "new/lib00$i.so" "$M/usr/lib/pkg0042/lib$i.so"; done
chmod 0700 "$M/usr/lib/pkg0042/sub0"
printf 'Package: pkg0042\nVersion: 2\n' > "$M/var/lib/dpkg/info/pkg0042.list"
"$COWFS" umount "$M"

changed=$("$COWFS" diff "$LOWERS" "$W/upper" --workdir "$W/work" | wc -l)
entries=$(find "$LAYERS/L1" "$LAYERS/L2" "$LAYERS/L3" | wc -l)

# Median of REPS runs of a command (warm caches), in seconds.
median() {
    local times=()
    for _ in $(seq "$REPS"); do
        local t0 t1
        t0=$(date +%s.%N)
        "$@" > /dev/null
        t1=$(date +%s.%N)
        times+=("$(echo "$t1 - $t0" | bc)")
    done
    printf '%.3f\n' "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (REPS + 1) / 2 ))p")"
}
cold() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > /dev/null
    t1=$(date +%s.%N)
    printf '%.3f\n' "$(echo "$t1 - $t0" | bc)"
}

exp() { "$COWFS" export "$LOWERS" "$W/upper" --workdir "$W/work" -o "$W/layer.tar" "$@" 2>/dev/null; }
exp_zstd() { exp --compress zstd; }
exp_gzip() { exp --compress gzip; }
diff_run() { "$COWFS" diff "$LOWERS" "$W/upper" --workdir "$W/work"; }
tar_cowfs() { tar -C "$W/mnt" -cf "$W/whole.tar" .; }
tar_kernel() { tar -C "$W/kmnt" -cf "$W/whole-k.tar" .; }

exp
layer_size=$(stat -c %s "$W/layer.tar")
exp_zstd; zstd_size=$(stat -c %s "$W/layer.tar")
exp_gzip; gzip_size=$(stat -c %s "$W/layer.tar")
t_exp=$(median exp); c_exp=$(cold exp)
t_zstd=$(median exp_zstd)
t_gzip=$(median exp_gzip)
t_diff=$(median diff_run); c_diff=$(cold diff_run)

"$COWFS" mount "$LOWERS" "$W/upper" "$W/mnt" --workdir "$W/work"
tar_cowfs; whole_size=$(stat -c %s "$W/whole.tar")
t_tar=$(median tar_cowfs); c_tar=$(cold tar_cowfs)
"$COWFS" umount "$W/mnt"
mount -t overlay overlay -o "lowerdir=$LOWERS,upperdir=$W/upper,workdir=$W/kwork" "$W/kmnt"
t_ktar=$(median tar_kernel); c_ktar=$(cold tar_kernel)
umount "$W/kmnt"

mib() { echo "scale=1; $1 / 1048576" | bc; }
cat <<EOF
Layers: $LAYERS ($entries entries in L1:L2:L3); the change: $changed paths in \`cowfs diff\`.
Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Times: median of $REPS warm runs / one cold run (caches dropped).

| what | time warm | time cold | output size |
|---|---:|---:|---:|
| \`cowfs diff\` | ${t_diff} s | ${c_diff} s | $changed lines |
| \`cowfs export\` (tar) | ${t_exp} s | ${c_exp} s | $(mib "$layer_size") MiB |
| \`cowfs export --compress zstd\` | ${t_zstd} s | | $(mib "$zstd_size") MiB |
| \`cowfs export --compress gzip\` | ${t_gzip} s | | $(mib "$gzip_size") MiB |
| \`tar -cf\` of the merged tree, cowfs mount | ${t_tar} s | ${c_tar} s | $(mib "$whole_size") MiB |
| \`tar -cf\` of the merged tree, kernel overlayfs | ${t_ktar} s | ${c_ktar} s | $(mib "$whole_size") MiB |
EOF
