#!/bin/bash
# Guest start-up, side by side: `unifs run --root R -- /bin/true` (root
# through the overlay, the default, and with --root-mount bind) against
# `bwrap --unshare-all --bind R / --proc /proc --dev /dev /bin/true` on the
# same busybox root, and `unifs guest start` to init running. Root needed;
# bwrap from Debian's bubblewrap, the root from busybox-static.
#
#   benches/guest-bench.sh [RUNS]     (default 200; prints medians in ms)
set -euo pipefail
runs=${1:-200}
here=$(cd "$(dirname "$0")/.." && pwd)
unifs=${UNIFS:-$here/target/release/unifs}
[ -x "$unifs" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v bwrap >/dev/null || { echo "needs bwrap (apt-get install bubblewrap)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
# `unifs run` passes a Ctrl-C on to its guest and exits as the guest does,
# so bash, seeing no child killed by SIGINT, would go on with the next run:
# with a trap it stops after the command in progress.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'UNIFS_CONFIG_DIR=$work/cfg UNIFS_RUN_DIR=$work/run "$unifs" guest stop --timeout 0 bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,proc,dev,sys,run,tmp,etc}
cp /bin/busybox "$root/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done

# The cases run interleaved (A B C A B C …), so drift of the machine (e.g.
# the kernel's asynchronous clean-up of dead network namespaces) hits all alike.
us() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000)); }
median() { sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f\n", m / 1000 }'; }

echo "runs per case: $runs; kernel $(uname -r); $(nproc) CPUs"
: >"$work/u"; : >"$work/d"; : >"$work/b"; : >"$work/h"
for ((i = 0; i < runs; i++)); do
    us "$unifs" run --root "$root" -- /bin/true >>"$work/u"
    us "$unifs" run --root-mount bind --root "$root" -- /bin/true >>"$work/d"
    us bwrap --unshare-all --bind "$root" / --proc /proc --dev /dev /bin/true >>"$work/b"
    us "$unifs" run --net host --root-mount bind --root "$root" -- /bin/true >>"$work/h"
done
echo "unifs run (net none, overlay)    median $(median <"$work/u") ms"
echo "unifs run --root-mount bind      median $(median <"$work/d") ms"
echo "bwrap --unshare-all              median $(median <"$work/b") ms"
echo "unifs run --net host (bind)      median $(median <"$work/h") ms"

# guest start: config with a bind root, so the time is ours, not the mount's.
mkdir -p "$work/cfg"
cat >"$work/cfg/bench.toml" <<TOML
root = "$root"
root_mount = "bind"
init = ["/bin/sleep", "1000"]
init_reaper = true
TOML
export UNIFS_CONFIG_DIR=$work/cfg UNIFS_RUN_DIR=$work/run
times=()
for ((i = 0; i < 20; i++)); do
    times+=($(us "$unifs" guest start bench))
    "$unifs" guest stop --timeout 2 bench >/dev/null
done
s=$(printf '%s\n' "${times[@]}" | median)
echo "unifs guest start (bind root)    median ${s} ms (mount + cgroups + init running)"
