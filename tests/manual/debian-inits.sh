#!/usr/bin/env bash
# Real Debian 12 inits as unifs guests: systemd 252 and sysvinit 3.06, each
# booted as a named guest on the overlay with `cap_add = ["sys_boot"]`, and
# their own reboot, halt and power-off, `guest stop` (at boot and running),
# `guest restart`, `on_reboot = "stop"`, `[net] mode = "veth"`, `unifs run`
# of systemd, and apt inside a running guest followed by `unifs unify`.
# Too slow and too networked for CI (debootstrap); tests/it/review_s37_sysinit.rs
# imitates what it can with busybox inits. Its output is in docs/guests.md.
#
# Usage: tests/manual/debian-inits.sh [DIR]   (default /var/tmp/unifs-debian-inits)
#   Needs root, cgroup v2 mounted somewhere (systemd), iproute2, python3, and
#   the network once: DIR/systemd and DIR/sysvinit are built with
#   `debootstrap --variant=minbase` (+systemd-sysv / +sysvinit-core, and
#   iproute2) and reused; each check copies them into DIR/g-NAME afresh.
# Environment: UNIFS (default: target/release/unifs of this tree), MIRROR
#   (default http://deb.debian.org/debian), GETTY_SECS (default 60: how long
#   the sysvinit guest's getty respawns are watched; 0 skips).
# Prints one line per check, `ok` or `FAIL`, and exits 1 if any failed.
set -uo pipefail
[[ $(id -u) -eq 0 ]] || { echo "$0: needs root" >&2; exit 1; }
here=$(cd "$(dirname "$0")/../.." && pwd)
unifs=${UNIFS:-$here/target/release/unifs}
[[ -x $unifs ]] || { echo "build first: cargo build --release" >&2; exit 1; }
DIR=${1:-/var/tmp/unifs-debian-inits}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
GETTY_SECS=${GETTY_SECS:-60}
mkdir -p "$DIR/cfg" "$DIR/debs"
DIR=$(cd "$DIR" && pwd)
export UNIFS_CONFIG_DIR=$DIR/cfg UNIFS_RUN_DIR=/run/unifs-debian-inits UNIFS_STORE=$DIR/store
GUESTS=(di-sd di-sdnet di-sv di-apt)
failed=0

u() { "$unifs" "$@"; }
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; failed=1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# checkt WHAT CMD...: check, saying the time since $t once CMD is done.
checkt() { local what=$1; shift; if "$@"; then ok "$what ($(since "$t"))"; else bad "$what ($(since "$t"))"; fi; }
now() { date +%s.%N; }
since() { printf '%.2f s' "$(echo "$(now) - $1" | bc)"; }
# field G KEY...: a field of `guest status --json G` (python-style path).
field() {
    local g=$1; shift
    u guest status --json "$g" 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$@"
}
# until_ SECS CMD...: runs CMD every 0.2 s until it succeeds or SECS pass.
until_() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do ((SECONDS < end)) || return 1; sleep 0.2; done
}
is_running() { [[ $(field "$1" running) == True ]]; }
ended() { [[ $(field "$1" running) == False && -n $(field "$1" last_exit signal)$(field "$1" last_exit code) ]]; }
booted_systemd() {
    local s; s=$(u guest exec "$1" -- systemctl is-system-running 2>/dev/null)
    [[ $s == running || $s == degraded ]]
}
booted_sysv() { [[ $(u guest exec "$1" -- runlevel 2>/dev/null) == *" 2" ]]; }
veth_index() { cat "/sys/class/net/ve-$1/ifindex" 2>/dev/null; }

build_root() { # NAME INCLUDE
    [[ -d $DIR/$1 ]] && return
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
    echo "== debootstrap $1 (--include=$2)"
    rm -rf "$DIR/.$1.partial"
    debootstrap --variant=minbase --cache-dir="$DIR/debs" --include="$2" bookworm \
        "$DIR/.$1.partial" "$MIRROR" >"$DIR/.$1.log" 2>&1 ||
        { tail -n 20 "$DIR/.$1.log" >&2; exit 1; }
    mv "$DIR/.$1.partial" "$DIR/$1"
}
# guest NAME BASE [CONFIG LINES...]: a fresh copy of BASE and its config.
guest() {
    local g=$1 base=$2; shift 2
    u guest stop --timeout 0 "$g" >/dev/null 2>&1
    rm -rf --one-file-system "${DIR:?}/g-$g"
    cp -a "$DIR/$base" "$DIR/g-$g"
    printf 'root = "%s"\ncap_add = ["sys_boot"]\n' "$DIR/g-$g" >"$DIR/cfg/$g.toml"
    printf '%s\n' "$@" >>"$DIR/cfg/$g.toml"
}
cleanup() { for g in "${GUESTS[@]}"; do u guest stop --timeout 2 "$g" >/dev/null 2>&1; done; }
trap cleanup EXIT
# A store of its own, made anew: the guests are fresh copies each run.
cleanup
rm -rf --one-file-system "${UNIFS_STORE:?}" && "$unifs" store init >/dev/null

build_root systemd systemd-sysv,iproute2
build_root sysvinit sysvinit-core,iproute2
echo "$(u --version); kernel $(uname -r); $(nproc) CPUs"

echo "== systemd guest (di-sd)"
guest di-sd systemd
u guest start di-sd >/dev/null; t=$(now)
checkt "boots to running" until_ 60 booted_systemd di-sd
first=$(field di-sd pid)
u guest exec di-sd -- systemctl reboot >/dev/null 2>&1; t=$(now)
again() { is_running di-sd && [[ $(field di-sd pid) != "$first" ]] && booted_systemd di-sd; }
checkt "systemctl reboot: started again, running" until_ 60 again
check "  reboots: 1" [ "$(field di-sd reboots)" = 1 ]
check "  console.log says so" grep -aq "started again after its reboot (1 so far)" "$UNIFS_RUN_DIR/di-sd/console.log"
for how in poweroff halt; do
    is_running di-sd || { u guest start di-sd >/dev/null; until_ 60 booted_systemd di-sd; }
    u guest exec di-sd -- systemctl $how >/dev/null 2>&1; t=$(now)
    checkt "systemctl $how: ended" until_ 30 ended di-sd
    sleep 3
    check "  stays stopped, halted by SIGINT" [ "$(field di-sd running)/$(field di-sd last_exit shutdown)/$(field di-sd last_exit signal)" = False/halt/INT ]
done
u guest stop di-sd >/dev/null 2>&1
for i in 1 2 3 4 5; do
    u guest start di-sd >/dev/null; t=$(now)
    u guest stop --timeout 10 di-sd >/dev/null; took=$(since "$t")
    check "stop right after start #$i: halted, not killed ($took)" [ "$(field di-sd last_exit signal)" = INT ]
done
u guest start di-sd >/dev/null; until_ 60 booted_systemd di-sd; t=$(now)
u guest stop di-sd >/dev/null; took=$(since "$t")
check "stop when running: halted ($took)" [ "$(field di-sd last_exit shutdown)" = halt ]
u guest start di-sd >/dev/null; until_ 60 booted_systemd di-sd
first=$(field di-sd pid); t=$(now)
u guest restart di-sd >/dev/null
checkt "restart: running again" until_ 60 again
echo 'on_reboot = "stop"' >>"$DIR/cfg/di-sd.toml"
u guest restart di-sd >/dev/null; until_ 60 booted_systemd di-sd
u guest exec di-sd -- systemctl reboot >/dev/null 2>&1
check "on_reboot = \"stop\": systemctl reboot leaves it stopped" until_ 30 ended di-sd
sleep 3
check "  rebooted, not started again" [ "$(field di-sd running)/$(field di-sd last_exit shutdown)" = False/reboot ]
u guest stop di-sd >/dev/null 2>&1

echo "== systemd guest with [net] mode = \"veth\" (di-sdnet)"
guest di-sdnet systemd '[net]' 'mode = "veth"' 'ip = "10.237.37.2/24"' 'host_ip = "10.237.37.1/24"'
u guest start di-sdnet >/dev/null
check "boots to running" until_ 60 booted_systemd di-sdnet
idx=$(veth_index di-sdnet); first=$(field di-sdnet pid)
u guest exec di-sdnet -- systemctl reboot >/dev/null 2>&1; t=$(now)
again_net() { is_running di-sdnet && [[ $(field di-sdnet pid) != "$first" ]] && booted_systemd di-sdnet; }
checkt "systemctl reboot: running again" until_ 60 again_net
check "  ve-di-sdnet made anew (index $idx -> $(veth_index di-sdnet))" [ "$(veth_index di-sdnet)" != "$idx" ]
check "  eth0 has its address" sh -c "'$unifs' guest exec di-sdnet -- ip -br addr show eth0 | grep -q 10.237.37.2/24"
check "  the host reaches it" sh -c "ip -br addr show ve-di-sdnet | grep -q 10.237.37.1/24"
check "  one host end" [ "$(ip -br link | grep -c '^ve-di-sdnet')" = 1 ]
idx=$(veth_index di-sdnet); first=$(field di-sdnet pid)
u guest restart di-sdnet >/dev/null
check "restart: running again" until_ 60 again_net
check "  ve-di-sdnet made anew (index $idx -> $(veth_index di-sdnet))" [ "$(veth_index di-sdnet)" != "$idx" ]
u guest exec di-sdnet -- systemctl poweroff >/dev/null 2>&1
check "systemctl poweroff: ended" until_ 30 ended di-sdnet
check "  no ve-di-sdnet left" until_ 5 sh -c "! ip link show ve-di-sdnet >/dev/null 2>&1"
u guest start di-sdnet >/dev/null; u guest stop di-sdnet >/dev/null
gone_net() { [[ $(field di-sdnet last_exit signal) == INT ]] && ! ip link show ve-di-sdnet >/dev/null 2>&1; }
check "start, stop at once: halted, no ve-di-sdnet left" gone_net

echo "== sysvinit guest (di-sv)"
guest di-sv sysvinit
u guest start di-sv >/dev/null; t=$(now)
checkt "boots to runlevel 2" until_ 60 booted_sysv di-sv
first=$(field di-sv pid)
u guest exec di-sv -- reboot >/dev/null 2>&1; t=$(now)
again_sv() { is_running di-sv && [[ $(field di-sv pid) != "$first" ]] && booted_sysv di-sv; }
checkt "reboot: runlevel 6 ran, started again, runlevel 2" until_ 60 again_sv
check "  reboots: 1" [ "$(field di-sv reboots)" = 1 ]
u guest exec di-sv -- halt >/dev/null 2>&1; t=$(now)
checkt "halt: runlevel 0 ran, ended" until_ 30 ended di-sv
check "  halted" [ "$(field di-sv last_exit shutdown)" = halt ]
u guest start di-sv >/dev/null; until_ 60 booted_sysv di-sv; t=$(now)
u guest stop di-sv >/dev/null; took=$(since "$t")
check "stop (SIGINT: ctrlaltdel, shutdown -r): ended ($took)" [ "$(field di-sv last_exit shutdown)" = reboot ]
sleep 3
check "  stays stopped (the stop wins over its reboot)" [ "$(field di-sv running)" = False ]
check "  not_restarted said" [ -n "$(field di-sv last_exit not_restarted)" ]
u guest start di-sv >/dev/null; t=$(now); u guest stop di-sv >/dev/null; took=$(since "$t")
check "stop right after start: ended by its own shutdown ($took)" [ "$(field di-sv last_exit shutdown)" = reboot ]
if ((GETTY_SECS > 0)); then
    : >"$DIR/g-di-sv/var/log/wtmp"
    u guest start di-sv >/dev/null; sleep "$GETTY_SECS"
    size=$(stat -c %s "$DIR/g-di-sv/var/log/wtmp")
    fast=$(grep -ac "respawning too fast" "$UNIFS_RUN_DIR/di-sv/console.log")
    echo "info getty on tty1-6: wtmp grew $size bytes in $GETTY_SECS s; 'respawning too fast' $fast times"
    u guest stop di-sv >/dev/null
fi

echo "== unifs run of systemd"
for how in reboot poweroff; do
    rm -rf --one-file-system "$DIR/g-run" && cp -a "$DIR/systemd" "$DIR/g-run"
    unit=$DIR/g-run/etc/systemd/system/di-end.service
    printf '[Unit]\nAfter=multi-user.target\n[Service]\nType=oneshot\nExecStart=/bin/systemctl --no-block %s\n' "$how" >"$unit"
    ln -s ../di-end.service "$DIR/g-run/etc/systemd/system/multi-user.target.wants/di-end.service"
    t=$(now)
    timeout 120 "$unifs" run --cap-add sys_boot --root "$DIR/g-run" -- /sbin/init >"$DIR/run-$how.log" 2>&1
    rc=$?
    want=$([[ $how == reboot ]] && echo 133 || echo 0)
    checkt "systemctl $how in \`unifs run\`: exit $rc, want $want" [ "$rc" = "$want" ]
done
rm -rf --one-file-system "$DIR/g-run"

echo "== apt in a running systemd guest, then unify (di-apt)"
guest di-apt systemd
[[ -n $(ls "$DIR"/debs/hello_*.deb 2>/dev/null) ]] || (cd "$DIR/debs" && apt-get download hello >/dev/null 2>&1)
deb=$(ls "$DIR"/debs/hello_*.deb | head -n1)
u guest start di-apt >/dev/null; until_ 60 booted_systemd di-apt
# Into apt's own cache (the guest has no network; debootstrap left its
# lists): `apt-get install ./FILE.deb` would copy it there, which
# --no-download forbids.
u guest exec di-apt -- sh -c "cat > /var/cache/apt/archives/${deb##*/}" <"$deb"
check "apt-get install --no-download hello" sh -c "'$unifs' guest exec di-apt -- apt-get install -y --no-download hello >'$DIR/apt.log' 2>&1"
check "  hello runs" sh -c "'$unifs' guest exec di-apt -- hello | grep -q 'Hello, world'"
u guest start di-sd >/dev/null 2>&1
# Exit 23: files the running guests hold open were left as they were.
unify() { "$unifs" unify --no-progress "$DIR/g-di-apt" "$DIR/g-di-sd" >"$DIR/unify.log" 2>&1; local rc=$?; [[ $rc == 0 || $rc == 23 ]]; }
t=$(now)
checkt "unify of di-apt and di-sd, both running" unify
grep -E '^unify:|linked|in-use' "$DIR/unify.log" | sed 's/^ */info /'

check "store verify clean" sh -c "'$unifs' store verify >'$DIR/verify.log' 2>&1"
check "  both still run" sh -c "'$unifs' guest exec di-apt -- hello >/dev/null && '$unifs' guest exec di-sd -- true"
first=$(field di-apt pid)
u guest restart di-apt >/dev/null
again_apt() { is_running di-apt && [[ $(field di-apt pid) != "$first" ]] && booted_systemd di-apt; }
check "di-apt restarted after the unify: running" until_ 60 again_apt
check "  hello still installed" sh -c "'$unifs' guest exec di-apt -- dpkg -s hello | grep -q 'Status: install ok installed'"
u guest exec di-apt -- systemctl reboot >/dev/null 2>&1; first=$(field di-apt pid)
check "  and reboots" until_ 60 again_apt

echo "== left over"
cleanup; trap - EXIT
sleep 1
check "no ve-di-* interface" sh -c "! ip -br link | grep -q '^ve-di-'"
check "no cgroup" sh -c "! find /sys/fs/cgroup/*/unifs -maxdepth 1 -name 'di-*' 2>/dev/null | grep -q ."
check "no fuse mount" sh -c "! mount | grep -q 'unifs:$DIR'"
check "no process on the roots" sh -c "! ps -eo args | grep -v grep | grep -q '$DIR/g-'"
exit $failed
