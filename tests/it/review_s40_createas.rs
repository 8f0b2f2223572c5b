//! Review s40-createas: the daemon makes a guest user's new entries
//! (files, directories, symlinks, device nodes, hard links, xattrs) with
//! the user's filesystem ids, so that what ext4 grants by the creator's
//! fsuid (the blocks reserved for root) is a guest user's as it is a
//! local user's; and the new entries still come out as on ext4 (owner,
//! set-group-ID directory's group, default ACL), for a writer allowed in
//! by a supplementary group too.

use crate::fs::harness::World;
use crate::review_s18_fs::run;
use crate::review_s39_fsidrev::{sh_as, GROUP};
use crate::review_s39_fsuid::{fill_to_the_reserve, reserved_ext4, user_dir, USER};
use crate::tree::stderr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// At most this many entries per count: before the fix a guest user made
/// all of them through the mount, from root's reserve.
const TRIES: u32 = 1500;

/// How many entries `USER` makes in `dir` with `make` (a shell command
/// with `$i` the entry's number) before the disk is full, up to `TRIES`.
/// (The error is kept in a variable: a file for it on the full disk
/// would get no block.)
fn count_until_full(dir: &Path, make: &str) -> u32 {
    let script = format!(
        "cd {} || exit 9; i=0; while [ $i -lt {TRIES} ]; do e=$({{ {make}; }} 2>&1) || break; i=$((i+1)); done; echo \"$e\" >&2; echo $i",
        dir.display()
    );
    let out = sh_as(USER, &script);
    let made: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{make}: {:?} {}", out.status, stderr(&out)));
    assert!(
        made == TRIES || stderr(&out).contains("No space left on device"),
        "{make} in {}: stopped after {made} by {}",
        dir.display(),
        stderr(&out)
    );
    made
}

/// Makes entries with `make` as the guest user on the disk itself and then
/// through the mount, each from the disk filled to root's reserve: the
/// mount's count must stop about where the local one does. Guest root
/// then still makes one (into the reserve).
fn entries_stop_at_the_reserve(test: &str, make: &str) {
    let Some(fs) = reserved_ext4(test) else {
        return;
    };
    let w = World::new_in(&fs.path(""));
    let g = w.dir("g");
    user_dir(&g.join("www"));
    let m = w.mount(&g, "m", &[]);
    fill_to_the_reserve(&fs);
    user_dir(&fs.path("local/made"));
    let local = count_until_full(&fs.path("local/made"), make);
    fs::remove_dir_all(fs.path("local/made")).unwrap();
    run("sync", &[]);
    let through = count_until_full(&m.path("www"), make);
    eprintln!("{make}: uid {USER} made {local} locally, {through} through the mount");
    assert!(
        through < TRIES && through <= local + 100,
        "{make}: uid {USER} made {through} through the mount, {local} locally"
    );
    fs::create_dir(m.path("rootdir")).expect("guest root makes a directory in the reserve");
}

#[test]
fn s40_a_guest_users_new_directories_stop_at_roots_reserve() {
    entries_stop_at_the_reserve(
        "s40_a_guest_users_new_directories_stop_at_roots_reserve",
        "mkdir d$i",
    );
}

/// A symlink longer than fits in its inode takes a block.
#[test]
fn s40_a_guest_users_long_symlinks_stop_at_roots_reserve() {
    let target = "t".repeat(200);
    entries_stop_at_the_reserve(
        "s40_a_guest_users_long_symlinks_stop_at_roots_reserve",
        &format!("ln -s {target}$i s$i"),
    );
}

/// An xattr too big for its inode takes a block of its own (ext4 shares
/// one only between equal values: each differs here).
#[test]
fn s40_a_guest_users_xattr_blocks_stop_at_roots_reserve() {
    let value = "v".repeat(400);
    entries_stop_at_the_reserve(
        "s40_a_guest_users_xattr_blocks_stop_at_roots_reserve",
        &format!("touch x$i && setfattr -n user.big -v {value}$i x$i"),
    );
}

/// Hard links grow their directory: a block each so many names.
#[test]
fn s40_a_guest_users_hard_links_stop_at_roots_reserve() {
    entries_stop_at_the_reserve(
        "s40_a_guest_users_hard_links_stop_at_roots_reserve",
        "{ [ -e f ] || touch f; } && ln f hard-link-with-a-name-long-enough-to-fill-blocks-soon-$i",
    );
}

/// Owner, group, mode and ACLs of `name` in `dir`, as text to compare.
fn described(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    let md = fs::symlink_metadata(&p).unwrap();
    let mut d = format!(
        "{name}: uid {} gid {} mode {:o}",
        md.uid(),
        md.gid(),
        md.mode()
    );
    if !md.file_type().is_symlink() {
        d += &run("getfacl", &[&"-cp", &p]);
    }
    d
}

/// In `root`: `team`, root's, group `GROUP`, set-group-ID, with a default
/// ACL; `club`, group `GROUP` only; and `own`, `USER`'s.
fn shared_dirs(root: &Path) {
    for (dir, uid, gid, mode) in [
        ("team", 0, GROUP, 0o2775),
        ("club", 0, GROUP, 0o770),
        ("own", USER, USER, 0o755),
    ] {
        let d = root.join(dir);
        fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
    }
    run(
        "setfacl",
        &[&"-m", &"d:u:2000:rwx,d:g::rwx", &root.join("team")],
    );
}

/// What `USER` (in `GROUP` by a supplementary group only) makes in the
/// directories of `shared_dirs` under `root`, described.
fn made_by_the_user(root: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for dir in ["team", "club", "own"] {
        let d = root.join(dir);
        let out = sh_as(
            USER,
            &format!(
                "cd {} && umask 022 && touch f && mkdir d && ln -s f l && mkfifo p && ln f h",
                d.display()
            ),
        );
        assert!(out.status.success(), "{}: {}", d.display(), stderr(&out));
        for name in ["f", "d", "l", "p"] {
            all.push(format!("{dir}/{}", described(&d, name)));
        }
    }
    all
}

/// New entries come out as on ext4: a set-group-ID directory's group (and
/// set-group-ID bit, for a directory), the default ACL, the primary group
/// elsewhere; and a writer let in by a supplementary group can create.
#[test]
fn s40_new_entries_are_owned_as_on_ext4() {
    let Some(fs) = reserved_ext4("s40_new_entries_are_owned_as_on_ext4") else {
        return;
    };
    let w = World::new_in(&fs.path(""));
    let g = w.dir("g");
    shared_dirs(&g);
    let m = w.mount(&g, "m", &[]);
    let local = fs.path("local");
    fs::create_dir(&local).unwrap();
    shared_dirs(&local);
    let expected = made_by_the_user(&local);
    assert!(
        expected[1].contains(&format!("gid {GROUP} mode 42775")),
        "{expected:?}"
    );
    assert!(expected[0].contains("user:2000:rwx"), "{expected:?}");
    assert_eq!(made_by_the_user(&m.path("")), expected);
    for name in ["team/f", "club/d", "own/l"] {
        let md = fs::symlink_metadata(g.join(name)).unwrap();
        assert_eq!(md.uid(), USER, "{name} on the backing filesystem");
    }
}
