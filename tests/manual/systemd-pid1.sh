#!/usr/bin/env bash
# contrib/systemd's units run by a real systemd PID 1: a Debian 12 root
# booted with `systemd-nspawn -b`, unifs bind-mounted in as
# /usr/local/bin/unifs (README's Install), the units installed and driven
# with systemctl: start, status, stop, restart, a guest that halts itself,
# one that reboots itself, a start that fails, `systemctl kill` (and -s
# KILL, and a start after it), restarts and reboots in a row, an upgrade
# from the old Type=oneshot unit with the guest running, the mount unit
# and the fstab line, both units enabled at boot, and the container's
# poweroff with a guest running. Too slow for CI (a boot,
# debootstrap once);
# its output is in docs/guests.md ("Under systemd").
#
# Usage: tests/manual/systemd-pid1.sh [DIR]   (default /var/tmp/unifs-systemd-pid1)
#   Needs root, systemd-nspawn (package systemd-container), /dev/fuse and,
#   once, the network: DIR/base is made with `debootstrap --variant=minbase
#   --include=systemd,systemd-sysv,fuse3` and reused; each run boots a fresh
#   copy of it (DIR/root).
# Environment: UNIFS (default: target/release/unifs of this tree), BASE (a
#   Debian root with systemd to copy instead of DIR/base; fuse3 is added to
#   the copy if it lacks it), MIRROR (default http://deb.debian.org/debian),
#   KEEP (set: DIR/root, with the container's journal, is kept; else removed).
#
# nspawn runs without a systemd on the host too (--register=no
# --keep-unit: no bus, no scope; no --property=DeviceAllow= then, and none
# is needed: the devices group is the caller's). It is started from cgroups
# of its own (unifs-pid1-test below the caller's group in every hierarchy),
# so that the container's cgroup namespace roots there and what the guests
# make is below it; all of them are removed at the end. On a host with v1
# controllers (hybrid), nspawn mounts them read-only in the container, where
# unifs cannot make the guest's groups: a unit of the test remounts them
# writable at boot (`mount -o remount,bind,rw`), as an operator of such a
# container would.
# Prints one line per check, `ok` or `FAIL`, and exits 1 if any failed.
set -uo pipefail
[[ $(id -u) -eq 0 ]] || { echo "$0: needs root" >&2; exit 1; }
here=$(cd "$(dirname "$0")/../.." && pwd)
unifs=${UNIFS:-$here/target/release/unifs}
[[ -x $unifs ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v systemd-nspawn >/dev/null || { echo "needs systemd-nspawn: apt-get install systemd-container" >&2; exit 1; }
DIR=${1:-/var/tmp/unifs-systemd-pid1}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$DIR/debs"
DIR=$(cd "$DIR" && pwd)
ROOT=$DIR/root
TEST=unifs-pid1-test
failed=0
nspawn='' leader='' boots=0

passed=0 fails=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=1; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
until_() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do ((SECONDS < end)) || return 1; sleep 0.2; done
}
# IN CMD...: CMD in the container (all its namespaces).
IN() { nsenter -t "$leader" -a -- "$@"; }
sc() { IN systemctl "$@"; }
unit=unifs-guest@web1.service
active() { [[ $(sc is-active "$1" 2>/dev/null) == "$2" ]]; }
# field KEY...: of `unifs guest status --json web1`.
field() {
    IN unifs guest status --json web1 2>/dev/null | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except ValueError:
    v = None
for k in sys.argv[1:]:
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$@"
}
running() { [[ $(field running) == True ]]; }
stopped() { [[ $(field running) == False ]]; }
# What is in the unit's cgroup (name=systemd v1 or v2, as the container has it).
unit_procs() {
    local p
    p=$(sc show -P ControlGroup "$unit")
    [[ -n $p ]] || return 0
    IN sh -c 'cat "/sys/fs/cgroup/unified$1/cgroup.procs" || cat "/sys/fs/cgroup/systemd$1/cgroup.procs"' _ "$p" 2>/dev/null |
        while read -r pid; do IN cat "/proc/$pid/comm"; done | sort | tr '\n' ' '
}
only_keeper() { [[ $(unit_procs) == "unifs-keeper " ]]; }
# The unit's main process is the keeper in its cgroup (PIDFile=).
main_is_keeper() { local m; m=$(sc show -P MainPID "$unit"); [[ $m != 0 && $(IN cat "/proc/$m/comm" 2>/dev/null) == unifs-keeper ]]; }
guest_mounted() { IN grep -q " /run/unifs/web1/root fuse" /proc/mounts; }
fresh_pid() { running && [[ $(field pid) != "$1" ]]; }
# guest_log: what the guest's init wrote into its own tree (kept after the
# container ends).
guest_log() { cat "$ROOT/guests/web1/var/log/init.log" 2>/dev/null; }

# --- cgroups of the test's own -------------------------------------------
declare -A home
enter_groups() {
    local n names path mnt g
    while IFS=: read -r n names path; do
        if [[ -z $names ]]; then
            mnt=$(findmnt -n -o TARGET -t cgroup2 | head -n1)
        else
            mnt=$(findmnt -n -o TARGET,OPTIONS -t cgroup | awk -v w="${names#name=}" '
                { n = split($2, o, ","); for (i = 1; i <= n; i++) { sub(/^name=/, "", o[i]); if (o[i] == w) { print $1; exit } } }')
        fi
        [[ -n $mnt ]] || continue
        g=$mnt${path%/}/$TEST
        home[$g]=$mnt$path
        mkdir -p "$g" || continue
        # A v1 cpuset group takes no task until it has CPUs and memory nodes.
        [[ -e $g/cpuset.cpus ]] && cat "$mnt$path/cpuset.cpus" >"$g/cpuset.cpus" &&
            cat "$mnt$path/cpuset.mems" >"$g/cpuset.mems"
        echo $$ >"$g/cgroup.procs"
    done < <(cat /proc/self/cgroup)
}
leave_groups() {
    local g
    for g in "${!home[@]}"; do
        echo $$ >"${home[$g]}/cgroup.procs" 2>/dev/null
        [[ -d $g ]] && find "$g" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ -d $g ]] && echo "left: $g" >&2
    done
}
groups_left() {
    local g
    for g in "${!home[@]}"; do find "$g" -mindepth 1 -type d -printf "$g/%P\n"; done | grep -E '/unifs/web1(/|$)' 
}

# --- the root ---------------------------------------------------------------
base=${BASE:-$DIR/base}
if [[ ! -d $base ]]; then
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
    echo "== debootstrap $base"
    rm -rf "$DIR/.base.partial"
    debootstrap --variant=minbase --cache-dir="$DIR/debs" --include=systemd,systemd-sysv,fuse3 \
        bookworm "$DIR/.base.partial" "$MIRROR" >"$DIR/.base.log" 2>&1 ||
        { tail -n 20 "$DIR/.base.log" >&2; exit 1; }
    mv "$DIR/.base.partial" "$base"
fi
rm -rf --one-file-system "$ROOT"
cp -a "$base" "$ROOT"
if [[ ! -e $ROOT/sbin/mount.fuse3 ]]; then
    (cd "$DIR/debs" && apt-get download fuse3 libfuse3-3 >/dev/null 2>&1)
    cp "$DIR"/debs/fuse3_*.deb "$DIR"/debs/libfuse3-3_*.deb "$ROOT/tmp/"
    chroot "$ROOT" sh -c 'dpkg -i /tmp/*.deb && rm /tmp/*.deb' >/dev/null
fi
# README's Install, but the binary is bound in at boot.
mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/local/sbin" "$ROOT/etc/unifs/guests"
touch "$ROOT/usr/local/bin/unifs"
ln -sf /usr/local/bin/unifs "$ROOT/usr/local/sbin/vfs-mount"
ln -sf /usr/local/bin/unifs "$ROOT/usr/local/sbin/vunify"
install -m 0644 "$here"/contrib/systemd/* "$ROOT/etc/systemd/system/"
cat >"$ROOT/etc/systemd/system/cgroup-rw.service" <<'EOF'
# The test's: nspawn mounts a hybrid host's v1 controllers read-only.
[Unit]
DefaultDependencies=no
Before=sysinit.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for m in $(findmnt -n -o TARGET -t cgroup); do mount -o remount,bind,rw $m; done'
[Install]
WantedBy=sysinit.target
EOF
systemctl --root="$ROOT" enable cgroup-rw.service >/dev/null 2>&1
# Guest web1: a busybox init that halts or reboots itself when told to (a
# file in its /tmp), and writes what it was sent into its own tree.
g=$ROOT/guests/web1
mkdir -p "$g/bin" "$g/sbin" "$g/tmp" "$g/var/log" "$g/etc"
cp /usr/bin/busybox "$g/bin/"
for a in sh sleep echo cat touch rm date; do ln -sf busybox "$g/bin/$a"; done
cat >"$g/sbin/init" <<'EOF'
#!/bin/sh
echo "up $$" >>/var/log/init.log
trap 'echo TERM >>/var/log/init.log; exit 0' TERM
while :; do
  if [ -e /tmp/halt ]; then rm -f /tmp/halt; busybox halt -f; fi
  if [ -e /tmp/reboot ]; then rm -f /tmp/reboot; busybox reboot -f; fi
  sleep 0.2
done
EOF
chmod 755 "$g/sbin/init"
conf='root = "/guests/web1"
cap_add = ["sys_boot"]'
echo "$conf" >"$ROOT/etc/unifs/guests/web1.toml"

# --- boot and poweroff ------------------------------------------------------
boot() {
    boots=$((boots + 1))
    (cd / && exec systemd-nspawn -q -D "$ROOT" -b -M unifs-pid1 --register=no --keep-unit \
        --console=read-only --bind-ro="$unifs:/usr/local/bin/unifs" --bind=/dev/fuse \
        --capability=all) >"$DIR/nspawn-$boots.log" 2>&1 &
    nspawn=$!
    leader=''
    local end=$((SECONDS + 30))
    # The container's systemd, not nspawn's short-lived outer child (a race
    # that once made boot 2 look failed, and poweroff signal a gone pid).
    until leader=$(ps -o pid=,comm= --ppid "$nspawn" | awk '$2 == "systemd" { print $1 }') &&
        [[ -n $leader ]]; do
        ((SECONDS < end)) || { echo "nspawn did not start: $DIR/nspawn-$boots.log" >&2; return 1; }
        sleep 0.2
    done
    booted() { local s; s=$(sc is-system-running 2>/dev/null); [[ $s == running || $s == degraded ]]; }
    until_ 90 booted || { echo "no boot: $DIR/nspawn-$boots.log" >&2; return 1; }
}
# poweroff: as `machinectl poweroff` does it, SIGRTMIN+4 to the container's
# systemd; returns nspawn's exit status.
poweroff() {
    kill -s SIGRTMIN+4 "$leader"
    local end=$((SECONDS + 120))
    while kill -0 "$nspawn" 2>/dev/null; do ((SECONDS < end)) || { kill -KILL "$nspawn"; break; }; sleep 0.2; done
    wait "$nspawn"
}
cleanup() {
    [[ -n $nspawn ]] && kill -0 "$nspawn" 2>/dev/null && poweroff >/dev/null
    # A container left running (nspawn killed) must not keep its root: its
    # PID 1 ending ends every process in it.
    [[ -n $leader ]] && kill -0 "$leader" 2>/dev/null && kill -KILL "$leader" && sleep 1
    leave_groups
    # What nspawn made on a host without systemd, if empty.
    rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn/locks /run/systemd/nspawn 2>/dev/null
    [[ -n ${KEEP:-} ]] || rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT
enter_groups
echo "$("$unifs" --version); $(systemd-nspawn --version | head -n1); kernel $(uname -r)"

echo "== boot 1: nothing of unifs enabled"
boot || exit 1
IN unifs store init >/dev/null
sc daemon-reload

sc start "$unit"; rc=$?
check "systemctl start: exit $rc, active" active "$unit" active
check "  guest running" running
check "  only its keeper in the unit's cgroup ($(unit_procs))" only_keeper
check "  systemctl status says active (running)" sh -c "nsenter -t $leader -a systemctl status $unit --no-pager | grep -q 'Active: active (running)'"
check "  its main PID is the keeper ($(sc show -P MainPID "$unit"))" main_is_keeper
check "  console: init up" until_ 10 sh -c "grep -q up '$ROOT/guests/web1/var/log/init.log'"

sc stop "$unit"; rc=$?
check "systemctl stop: exit $rc, inactive" active "$unit" inactive
check "  guest stopped, init ended on TERM (exit 0)" sh -c "[ \"\$(tail -n1 '$ROOT/guests/web1/var/log/init.log')\" = TERM ]"
check "  its end recorded (code $(field last_exit code))" [ "$(field last_exit code)" = 0 ]
check "  root unmounted" eval '! guest_mounted'
check "  unit's cgroup gone ($(unit_procs))" [ -z "$(unit_procs)" ]

sc start "$unit"; first=$(field pid)
sc restart "$unit"; rc=$?
check "systemctl restart: exit $rc, active, a new init" fresh_pid "$first"
check "  only its keeper in the unit's cgroup ($(unit_procs))" only_keeper

echo "== the guest halts itself"
IN unifs guest exec web1 -- touch /tmp/halt
halted() { stopped && [[ $(field last_exit shutdown) == halt ]]; }
check "guest ended, halted" until_ 20 halted
sleep 2
check "  stays stopped" stopped
check "  unit inactive, not failed ($(sc is-active "$unit"); its cgroup: $(unit_procs))" until_ 20 active "$unit" inactive
# Left as they are until the next stop or start (not this test's to judge).
echo "info   after its halt: root $(guest_mounted && echo still mounted || echo unmounted), groups: $(IN sh -c 'ls -d /sys/fs/cgroup/*/unifs/web1 2>/dev/null | wc -l')"
sc stop "$unit"; rc=$?
check "  systemctl stop: exit $rc, inactive (not failed)" active "$unit" inactive
sc start "$unit"; rc=$?
check "  systemctl start again: exit $rc, running" running

echo "== the guest reboots itself"
first=$(field pid)
IN unifs guest exec web1 -- touch /tmp/reboot
check "started again by its keeper" until_ 20 fresh_pid "$first"
check "  reboots: 1" [ "$(field reboots)" = 1 ]
check "  unit active" active "$unit" active
check "  only the new keeper in the unit's cgroup ($(unit_procs))" until_ 5 only_keeper
check "  its main PID the new keeper ($(sc show -P MainPID "$unit"))" main_is_keeper
sc stop "$unit"; rc=$?
check "  systemctl stop: exit $rc, inactive" active "$unit" inactive
check "  stopped" stopped

echo "== a start that fails"
printf '%s\nno_such_key = 1\n' "$conf" >"$ROOT/etc/unifs/guests/web1.toml"
sc start "$unit" 2>/dev/null; rc=$?
check "systemctl start: exit $rc, failed" active "$unit" failed
check "  the error in journalctl -u" sh -c "nsenter -t $leader -a journalctl -u $unit --no-pager | grep -q 'no_such_key'"
echo "$conf" >"$ROOT/etc/unifs/guests/web1.toml"
sc start "$unit"; rc=$?
check "  mended: systemctl start: exit $rc, active" active "$unit" active
sc stop "$unit"

echo "== systemctl kill"
sc start "$unit"; gpid=$(field pid)
lines=$(wc -l <"$ROOT/guests/web1/var/log/init.log")
# SIGTERM reaches the keeper alone (the guest has cgroups of its own); the
# keeper passes it on to init, whose trap ends it, then stops the guest.
sc kill "$unit"
check "the keeper passed SIGTERM on: init (pid $gpid) ended on TERM" until_ 20 sh -c "[ \"\$(tail -n +$((lines + 1)) '$ROOT/guests/web1/var/log/init.log')\" = TERM ]"
check "  the guest stopped, its end recorded (code $(field last_exit code))" until_ 20 eval 'stopped && [ "$(field last_exit code)" = 0 ]'
check "  root unmounted, the unit's cgroup empty ($(unit_procs))" until_ 20 eval '! guest_mounted && [ -z "$(unit_procs)" ]'
check "  the unit inactive with its keeper ($(sc is-active "$unit"))" until_ 20 active "$unit" inactive
sc stop "$unit"; rc=$?
check "  systemctl stop: exit $rc, inactive" eval 'active "$unit" inactive && stopped'

echo "== systemctl kill -s KILL"
sc start "$unit"
gpid=$(field pid)
# The keeper, the main process, cannot pass SIGKILL on: it ends and the
# unit fails; systemd runs no ExecStop= after a main process that failed,
# but runs ExecStopPost=, `unifs guest stop`, which stops the guest.
sc kill -s KILL "$unit"
check "the keeper killed: the unit failed ($(sc is-active "$unit"))" until_ 30 active "$unit" failed
check "  ExecStopPost stopped the guest (init $gpid gone, root unmounted)" until_ 30 eval 'stopped && ! guest_mounted'
echo "info   after KILL: keeper.pid $(IN cat /run/unifs/web1/keeper.pid 2>/dev/null || echo gone), unit's cgroup: $(unit_procs)"
sc reset-failed "$unit"
sc start "$unit"; rc=$?
check "  then systemctl start: exit $rc, active, main PID the keeper" eval 'active "$unit" active && main_is_keeper'
sc stop "$unit"; rc=$?
check "  systemctl stop: exit $rc, inactive (ExecStopPost finds nothing to stop)" eval 'active "$unit" inactive && stopped'

echo "== restart and reboot, twice in a row"
sc start "$unit"
# follows MAIN: the unit's main PID is a keeper, not MAIN (the last one).
follows() { local m; m=$(sc show -P MainPID "$unit"); main_is_keeper && [[ $m != "$1" ]] && only_keeper; }
for round in 1 2; do
    first=$(field pid) main=$(sc show -P MainPID "$unit")
    sc restart "$unit"; rc=$?
    check "restart $round: exit $rc, a new init" fresh_pid "$first"
    check "  main PID the new keeper ($main -> $(sc show -P MainPID "$unit")), alone in the cgroup" follows "$main"
done
for round in 1 2; do
    first=$(field pid) main=$(sc show -P MainPID "$unit")
    IN unifs guest exec web1 -- touch /tmp/reboot
    check "reboot $round: started again" until_ 20 fresh_pid "$first"
    check "  reboots since the restart: $(field reboots)" [ "$(field reboots)" = "$round" ]
    check "  main PID the new keeper ($main -> $(sc show -P MainPID "$unit")), alone in the cgroup" until_ 10 follows "$main"
    check "  unit active" active "$unit" active
done
sc stop "$unit"; rc=$?
check "  systemctl stop: exit $rc, inactive, stopped" eval 'active "$unit" inactive && stopped && ! guest_mounted'

echo "== upgrade: a guest started under the old oneshot unit"
# The unit before 2026-12-05 (its [Service] as it was), and a keeper of
# then, which wrote no keeper.pid.
cp "$ROOT/etc/systemd/system/unifs-guest@.service" "$DIR/new.service"
sed -e 's/^Type=forking/Type=oneshot\nRemainAfterExit=yes/' -e '/^PIDFile=/d' "$DIR/new.service" \
    >"$ROOT/etc/systemd/system/unifs-guest@.service"
sc daemon-reload
sc start "$unit"; rc=$?
check "old unit: start exit $rc, active (exited)" sh -c "nsenter -t $leader -a systemctl status $unit --no-pager | grep -q 'Active: active (exited)'"
IN rm -f /run/unifs/web1/keeper.pid
gpid=$(field pid)
cp "$DIR/new.service" "$ROOT/etc/systemd/system/unifs-guest@.service"
sc daemon-reload
st=$(sc status "$unit" --no-pager 2>&1 | grep -E 'Active:|Main PID' | tr -s ' ' | tr '\n' '|')
echo "info   new unit, after daemon-reload: $st MainPID $(sc show -P MainPID "$unit")"
check "  new unit after daemon-reload: still active (exited), no main PID, the guest untouched" eval 'active "$unit" active && [ "$(sc show -P MainPID "$unit")" = 0 ] && [ "$(field pid)" = "$gpid" ]'
# Until its next stop the unit keeps the old behaviour: systemd does not
# follow that keeper, so a halt leaves it active (exited).
IN unifs guest exec web1 -- touch /tmp/halt
check "  the guest halts: stopped, the unit still active (exited), as before the upgrade" eval 'until_ 20 stopped && sleep 2 && active "$unit" active'
sc stop "$unit"; rc=$?
check "  systemctl stop: exit $rc, inactive" eval 'active "$unit" inactive && stopped && ! guest_mounted'
sc start "$unit"; rc=$?
check "  systemctl start: exit $rc, active (running), main PID the keeper" eval 'active "$unit" active && main_is_keeper'
sc restart "$unit"; rc=$?
check "  systemctl restart: exit $rc, main PID the keeper" eval 'active "$unit" active && main_is_keeper && only_keeper'
# The same, restarted at once (what docs/guests.md tells an operator).
sc stop "$unit"
sed -e 's/^Type=forking/Type=oneshot\nRemainAfterExit=yes/' -e '/^PIDFile=/d' "$DIR/new.service" \
    >"$ROOT/etc/systemd/system/unifs-guest@.service"
sc daemon-reload
sc start "$unit"
IN rm -f /run/unifs/web1/keeper.pid
cp "$DIR/new.service" "$ROOT/etc/systemd/system/unifs-guest@.service"
sc daemon-reload
sc restart "$unit"; rc=$?
check "old unit, upgraded, restarted at once: exit $rc, main PID the keeper" eval 'active "$unit" active && main_is_keeper && only_keeper'
sc stop "$unit"
rm -f "$DIR/new.service"

echo "== mount unit and fstab line"
mnt=mnt-web1.mount
sc start "$mnt"; rc=$?
check "systemctl start $mnt: exit $rc, active" active "$mnt" active
check "  the guest's tree at /mnt/web1" IN test -x /mnt/web1/sbin/init
check "  a unifs mount" IN sh -c 'grep -q "^unifs:/guests/web1 /mnt/web1 fuse" /proc/mounts'
sc start "$unit" 2>/dev/null; rc=$?
check "  the guest's start refused meanwhile (exit $rc): one mount at a time" eval 'active "$unit" failed && IN journalctl -u "$unit" --no-pager | grep -q "already served"'
sc reset-failed "$unit"
# The mount's daemon, as the refused start named it.
dpid=$(IN journalctl -u "$unit" --no-pager | grep -o 'its daemon: pid [0-9]*' | tail -n1 | grep -o '[0-9]*$')
daemon() { [[ -n $dpid ]] && IN test -d "/proc/$dpid"; }
check "  its daemon runs (pid ${dpid:-?})" daemon
sc stop "$mnt"; rc=$?
check "  systemctl stop: exit $rc, unmounted" eval 'active "$mnt" inactive && ! IN mountpoint -q /mnt/web1'
check "  its daemon gone" until_ 10 eval '! daemon'
IN sh -c 'cp /etc/fstab /etc/fstab.orig; echo "/usr/local/sbin/vfs-mount#/guests/web1  /mnt/web1  fuse  nodev,nofail,x-systemd.requires-mounts-for=/guests  0  0" >>/etc/fstab'
IN mount -a; rc=$?
check "fstab line, mount -a: exit $rc, mounted" IN sh -c 'grep -q "^unifs:/guests/web1 /mnt/web1 fuse" /proc/mounts'
IN mount -a; rc=$?
check "  mount -a again: exit $rc" [ "$rc" = 0 ]
IN umount /mnt/web1; rc=$?
check "  umount: exit $rc" eval '! IN mountpoint -q /mnt/web1'
IN sh -c 'mv /etc/fstab.orig /etc/fstab'

echo "== boot 2: unifs-guest@web1 enabled"
sc enable "$unit" 2>/dev/null
poweroff; rc=$?
check "poweroff (guest stopped): nspawn exit $rc" [ "$rc" = 0 ]
boot || exit 1
check "the guest started at boot" until_ 20 running
check "  unit active, only its keeper in its cgroup ($(unit_procs))" eval 'active "$unit" active && only_keeper'
check "  after local-fs.target" sh -c "nsenter -t $leader -a systemctl show -P After $unit | grep -q local-fs.target"
gpid=$(field pid)
lines=$(wc -l <"$ROOT/guests/web1/var/log/init.log")
poweroff; rc=$?
echo "== poweroff with the guest running"
check "nspawn exit $rc" [ "$rc" = 0 ]
check "  init ended on its stop signal (TERM), not killed" [ "$(tail -n +"$((lines + 1))" "$ROOT/guests/web1/var/log/init.log")" = TERM ]
j() { journalctl -D "$ROOT/var/log/journal" -b -0 --no-pager -o cat "$@" 2>/dev/null; }
check "  the unit stopped cleanly" sh -c "journalctl -D '$ROOT/var/log/journal' -b -0 --no-pager -o cat -u $unit | grep -q 'Deactivated successfully'"
check "  its ExecStop said so" sh -c "journalctl -D '$ROOT/var/log/journal' -b -0 --no-pager -o cat -u $unit | grep -q 'guest web1 stopped'"
check "  nothing failed at shutdown" eval '! j -p err | grep -i unifs'
# (The empty unifs/ above them stays, as on any host: other guests' parent.)
left=$(groups_left)
check "  no group of the guest left (${left:-none})" [ -z "$left" ]

echo "== left over"
cleanup; trap - EXIT
nspawn=''
check "no cgroup of the test" eval '! ls -d /sys/fs/cgroup/*/'"$TEST"' 2>/dev/null | grep -q .'
check "no process on the root" sh -c "! ps -eo args | grep -v grep | grep -q '$ROOT'"
echo "== $passed ok, $fails FAIL"
exit $failed
