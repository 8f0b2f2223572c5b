//! Names that are not UTF-8 in the mount table (review s25): a mount point
//! anywhere on the host whose name is not UTF-8 hid every mount from unifs,
//! and a guest directory so named was recorded lossily in its mount's
//! source. Also the names a guest may make through its mount.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A tmpfs at a mount point whose name is not UTF-8, made only in a private
/// mount namespace (every other test would see it otherwise), and in it:
/// `unifs mount` of another guest over a live mount is refused as in use,
/// `mount -a` again is "already mounted", and `unifs umount` finds the
/// mount. Every unifs call is bounded; an exit trap unmounts what is left,
/// so that the daemon ends with the namespace's last mount of it.
#[test]
fn review_s25_a_mount_point_not_utf8_elsewhere_hides_no_mount() {
    if !require_root("review_s25_a_mount_point_not_utf8_elsewhere_hides_no_mount") {
        return;
    }
    let w = World::new();
    let (a, b) = (w.dir("a"), w.dir("b"));
    fs::write(a.join("file-of-a"), "A").unwrap();
    fs::write(b.join("file-of-b"), "B").unwrap();
    w.dir("m");
    let script = r#"
set -u
U=$1; T=$2
odd=$(printf '%s/odd\377' "$T")
mkdir "$odd" && mount -t tmpfs none "$odd" || exit 9
trap 'umount -l "$T/m" 2>/dev/null; umount -l "$T/m" 2>/dev/null; umount -l "$odd"' EXIT
u() { out=$(timeout 60 "$U" --store "$T/store" "$@" 2>&1); echo "rc=$? $out"; }
echo "first: $(u mount "$T/a" "$T/m")"
echo "other: $(u mount "$T/b" "$T/m")"
echo "again: $(u mount "$T/a" "$T/m")"
echo "stacked: $(grep -a -c " $T/m rw" /proc/self/mountinfo)"
echo "umount: $(u umount "$T/m")"
echo "left: $(grep -a -c " $T/m rw" /proc/self/mountinfo)"
"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(unifs_bin())
        .arg(w.tmp.path())
        .output()
        .unwrap();
    let got = text(&out);
    let line = |key: &str| {
        got.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{got}"))
            .to_string()
    };
    assert!(line("first:").starts_with("first: rc=0"), "{got}");
    assert!(line("other:").starts_with("other: rc=1"), "{got}");
    assert!(line("other:").contains("is in use"), "{got}");
    assert!(line("again:").starts_with("again: rc=0"), "{got}");
    assert!(line("again:").contains("already mounted"), "{got}");
    assert_eq!(line("stacked:"), "stacked: 1", "{got}");
    assert!(line("umount:").starts_with("umount: rc=0"), "{got}");
    assert_eq!(line("left:"), "left: 0", "{got}");
}

/// A guest directory whose name is not UTF-8, mounted again (`mount -a`):
/// its mount's source names it exactly, so the live mount is recognised.
#[test]
fn review_s25_a_guest_not_utf8_mounted_again_is_already_mounted() {
    if !require_root("review_s25_a_guest_not_utf8_mounted_again_is_already_mounted") {
        return;
    }
    let w = World::new();
    let g = w.tmp.path().join(OsStr::from_bytes(b"g\xff%41"));
    fs::create_dir(&g).unwrap();
    fs::write(g.join("f"), "x").unwrap();
    let m = w.dir("m");
    let _unmount = UnmountAt(&m);
    let unifs = |args: &[&OsStr]| {
        Command::new(unifs_bin())
            .arg("--store")
            .arg(&w.store)
            .args(args)
            .output()
            .unwrap()
    };
    let mount = [OsStr::new("mount"), g.as_os_str(), m.as_os_str()];
    let first = unifs(&mount);
    assert!(first.status.success(), "{}", text(&first));
    let source = unifs::fs::mountinfo::read()
        .unwrap()
        .into_iter()
        .find(|x| x.point == m)
        .unwrap()
        .source;
    let want = format!("unifs:%{}/g%FF%2541", w.tmp.path().display());
    assert_eq!(source, OsStr::new(&want));
    assert_eq!(fs::read_to_string(m.join("f")).unwrap(), "x");

    let again = unifs(&mount);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already mounted"), "{}", text(&again));
    let stacked = unifs::fs::mountinfo::read().unwrap();
    assert_eq!(stacked.iter().filter(|x| x.point == m).count(), 1);

    let umount = unifs(&[OsStr::new("umount"), m.as_os_str()]);
    assert!(umount.status.success(), "{}", text(&umount));
    assert!(!is_mounted(&m));
}

/// The guest's own files named as the daemon's next break temp names
/// (`.unifs-break.<daemon pid>.<n>`, a name mount.md lets a guest make):
/// a write to a shared file there breaks its link under another name,
/// instead of failing with EEXIST once the first names tried are taken.
#[test]
fn review_s25_a_taken_break_temp_name_is_passed_over() {
    if !require_root("review_s25_a_taken_break_temp_name_is_passed_over") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(b"shared\n", &[g.join("a"), other.join("a")]);
    let m = w.mount(&g, "m", &[]);
    let pid = m.pid();
    for n in 0..300 {
        fs::write(m.path(&format!(".unifs-break.{pid}.{n}")), "mine").unwrap();
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("a"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"more\n").unwrap();
    drop(f);
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "shared\nmore\n");
    assert_eq!(fs::read_to_string(other.join("a")).unwrap(), "shared\n");
    let names = fs::read_dir(&g).unwrap().count();
    assert_eq!(
        names, 301,
        "the guest's files and a, nothing left of the break"
    );
    assert_eq!(
        fs::read_to_string(g.join(format!(".unifs-break.{pid}.7"))).unwrap(),
        "mine"
    );
}

/// Through its mount a guest makes any name that merely starts with
/// `.unifs-tmp-` (unify.md: such a file is the guest's own); only the exact
/// form unify gives its temp links, `.unifs-tmp-PID-N`, is refused.
#[test]
fn review_s25_only_unifys_exact_temp_name_form_is_refused() {
    if !require_root("review_s25_only_unifys_exact_temp_name_form_is_refused") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), "x").unwrap();
    let m = w.mount(&g, "m", &[]);
    for n in [".unifs-tmp-notes", ".unifs-tmp-", ".unifs-tmp-1-2.bak"] {
        fs::write(m.path(n), "mine").unwrap();
        fs::create_dir(m.path(&format!("{n}.d"))).unwrap();
        fs::rename(m.path("f"), m.path(&format!("{n}.mv"))).unwrap();
        fs::rename(m.path(&format!("{n}.mv")), m.path("f")).unwrap();
        assert_eq!(fs::read_to_string(g.join(n)).unwrap(), "mine", "{n}");
    }
    let eperm = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    let reserved = ".unifs-tmp-12-3";
    assert_eq!(eperm(fs::write(m.path(reserved), "x")), Some(libc::EPERM));
    assert_eq!(eperm(fs::create_dir(m.path(reserved))), Some(libc::EPERM));
    assert_eq!(
        eperm(fs::rename(m.path("f"), m.path(reserved))),
        Some(libc::EPERM)
    );
    assert!(g.join("f").exists() && !g.join(reserved).exists());
}
