//! Review s40-createrev: the daemon makes a guest user's new entries with
//! the user's filesystem ids but keeps its capabilities meanwhile. What
//! the kernel decides by the caller (sticky directories, protected hard
//! links, set-ID bits of a new entry, `trusted.`/`security.` xattrs, an
//! ACL's set-group-ID) must still come out as for the user's own syscalls
//! on ext4: the kernel checks them on the mount with the caller's
//! credentials before the daemon is asked, and the daemon's capabilities
//! must not add or take away anything after.

use crate::common::require_root;
use crate::fs::harness::World;
use crate::review_s39_fsidrev::{sh_as, GROUP};
use crate::review_s39_fsuid::{user_dir, USER};
use crate::tree::stderr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A group `USER` is not in (`sh_as` gives it `USER` and `GROUP`).
const OTHER_GROUP: u32 = 50;

fn owned(p: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// In `root`: `sticky` (1777, root's, with root's files `roots` and
/// `roots_ro`), `setgid` (2777, a group the user is not in), `member`
/// (2777, the user's supplementary group) and `own` (the user's, with
/// `sg`: the user's, set-group-ID, a group it is not in).
fn rule_dirs(root: &Path) {
    let sticky = root.join("sticky");
    fs::create_dir(&sticky).unwrap();
    owned(&sticky, 0, 0, 0o1777);
    for (name, mode) in [("roots", 0o666), ("roots_ro", 0o644)] {
        fs::write(sticky.join(name), "root's").unwrap();
        owned(&sticky.join(name), 0, 0, mode);
    }
    for (dir, gid) in [("setgid", OTHER_GROUP), ("member", GROUP)] {
        fs::create_dir(root.join(dir)).unwrap();
        owned(&root.join(dir), 0, gid, 0o2777);
    }
    user_dir(&root.join("own"));
    fs::write(root.join("own/sg"), "").unwrap();
    owned(&root.join("own/sg"), USER, OTHER_GROUP, 0o2775);
}

/// Each step `USER` takes under `root`, with whether it worked and, for a
/// new entry, its mode and ids.
const STEPS: &str = r#"
s() { what=$1; shift; if "$@" 2>/dev/null; then echo "$what: ok"; else echo "$what: refused"; fi; }
st() { echo "$1: $(stat -c '%a %u:%g' "$1")"; }
mk() { python3 -c "import os,stat,sys; os.umask(0); m=int(sys.argv[2],8)
if sys.argv[3]=='f': os.close(os.open(sys.argv[1], os.O_CREAT|os.O_EXCL|os.O_WRONLY, m))
elif sys.argv[3]=='p': os.mknod(sys.argv[1], m|stat.S_IFIFO)
else: os.mkdir(sys.argv[1], m)" "$@"; }
s "new file in sticky" touch sticky/mine
s "unlink root's in sticky" rm -f sticky/roots
s "rename root's in sticky" mv sticky/roots sticky/moved
s "rename own over root's in sticky" mv -f sticky/mine sticky/roots
s "rename own in sticky" mv sticky/mine sticky/mine2
s "hard link root's read-only" ln sticky/roots_ro sticky/link_ro
s "hard link root's writable" ln sticky/roots sticky/link_rw
for d in setgid member own; do
  mk $d/f 2755 f; st $d/f
  mk $d/u 6755 f; st $d/u
  mk $d/p 2755 p; st $d/p
  mk $d/d 0755 d; st $d/d
done
s "trusted xattr" setfattr -n trusted.t -v 1 own/f
s "security xattr" setfattr -n security.t -v 1 own/f
s "file capability" setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= own/f
s "user xattr" setfattr -n user.t -v 1 own/f
s "ACL on root's file" setfacl -m u:0:r sticky/roots_ro
s "ACL on own set-group-ID file" setfacl -m u:0:r own/sg
st own/sg
"#;

fn steps_of_the_user(root: &Path) -> Vec<String> {
    let out = sh_as(USER, &format!("cd {} && {STEPS}", root.display()));
    assert!(out.status.success(), "{}: {}", root.display(), stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A guest user's steps through the mount are allowed, refused and leave
/// modes and ids as the same steps on the backing filesystem itself (ext4
/// where the tests run): the daemon's kept capabilities grant nothing the
/// kernel refused the caller, and strip no set-ID bit it left. (With
/// the capabilities not kept while the ids are switched, strace making
/// capset a no-op, the supplementary group's member lost the set-group-ID
/// bit of its new file and node; with the ids never switched, setfsuid and
/// setfsgid no-ops, the chown fallback came out the same.)
#[test]
fn s40_a_guest_users_steps_meet_the_kernels_rules_as_locally() {
    if !require_root("s40_a_guest_users_steps_meet_the_kernels_rules_as_locally") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    rule_dirs(&g);
    let m = w.mount(&g, "m", &[]);
    let local = w.dir("local");
    rule_dirs(&local);
    let expected = steps_of_the_user(&local);
    // The rules are in force here, or the comparison says little.
    for line in [
        "unlink root's in sticky: refused",
        "rename own in sticky: ok",
        "hard link root's read-only: refused",
        "setgid/f: 755 1000:50",
        "member/f: 2755 1000:3000",
        "own/u: 6755 1000:1000",
        "setgid/d: 2755 1000:50",
        "trusted xattr: refused",
        "file capability: refused",
        "own/sg: 775 1000:50",
    ] {
        assert!(expected.iter().any(|l| l == line), "{line}: {expected:#?}");
    }
    assert_eq!(steps_of_the_user(&m.path("")), expected);
}
