//! `--user USER[:GROUP]` (a config's `user`): a user of the guest, looked
//! up in the guest's own /etc/passwd and /etc/group (as nspawn's `--user`
//! and Docker's `-u` do), never the host's. Its errors name no option: a
//! config's `user` gets them too.

use super::{Error, Result};
use std::os::fd::AsFd;
use std::path::Path;

/// What the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group of /etc/group that lists the user
    /// by name (initgroups(3)), the primary one too.
    pub groups: Vec<u32>,
    /// From /etc/passwd, if the user has an entry there.
    pub name: Option<String>,
    pub home: Option<String>,
    /// Its login shell (the passwd entry's last field), if it names one.
    pub shell: Option<String>,
}

/// Password and group files are small; a bigger one is not what it seems.
const MAX_FILE: u64 = 16 << 20;

/// Resolves `user` (`NAME`, `UID`, `NAME:GROUP`, `UID:GID`, …) in the tree
/// at `root` (the guest's `/`).
pub fn resolve(root: &Path, user: &str) -> Result<Account> {
    let dir = std::fs::File::open(root).map_err(|e| Error::io("opening", root, e))?;
    resolve_in(&dir, root, user)
}

/// [`resolve`] in the tree open as `dir`, named `root` in messages.
pub fn resolve_in(dir: &std::fs::File, root: &Path, user: &str) -> Result<Account> {
    let bad = |reason: String| Error::Invalid {
        what: "user",
        value: user.to_string(),
        reason,
    };
    let (who, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if who.is_empty() || group == Some("") {
        return Err(bad(
            "expected USER or USER:GROUP (a name or a number each)".into()
        ));
    }
    let passwd = read_table(dir, root, "etc/passwd").map_err(&bad)?;
    let entry = passwd.as_deref().and_then(|t| find_user(t, who));
    let (uid, passwd_gid, name, home, shell) = match (entry, who.parse::<u32>()) {
        (Some(e), _) => (e.uid, Some(e.gid), Some(e.name), Some(e.home), e.shell),
        (None, Ok(uid)) => (uid, None, None, None, None),
        (None, Err(_)) => {
            return Err(bad(format!(
                "no such user in {} (the guest's own user database)",
                root.join("etc/passwd").display()
            )))
        }
    };
    let groups_file = match (&name, group) {
        (None, None) => None,
        _ => read_table(dir, root, "etc/group").map_err(&bad)?,
    };
    let gid = match group {
        Some(g) => match groups_file.as_deref().and_then(|t| find_group(t, g)) {
            Some(gid) => gid,
            None => g.parse::<u32>().map_err(|_| {
                bad(format!(
                    "no such group in {}",
                    root.join("etc/group").display()
                ))
            })?,
        },
        None => passwd_gid.ok_or_else(|| {
            bad(format!(
                "uid {uid} has no entry in {}, so its group is unknown: \
                 name its group too (\"{uid}:GID\")",
                root.join("etc/passwd").display()
            ))
        })?,
    };
    if uid == u32::MAX || gid == u32::MAX {
        // To setresuid(2) and setresgid(2), -1 means "leave it as it is":
        // root.
        return Err(bad("uid and gid 4294967295 (-1) are no ids".into()));
    }
    let mut groups = vec![gid];
    if let (Some(name), Some(table)) = (&name, &groups_file) {
        for gid in member_of(table, name) {
            if !groups.contains(&gid) {
                groups.push(gid);
            }
        }
    }
    Ok(Account {
        uid,
        gid,
        groups,
        name,
        home,
        shell,
    })
}

/// The gid of the `tty` group of the tree at `root` (the guest's `/`), if
/// its /etc/group has one.
pub fn tty_group(root: &Path) -> Option<u32> {
    let dir = std::fs::File::open(root).ok()?;
    let table = read_table(&dir, root, "etc/group").ok()??;
    find_group(&table, "tty")
}

/// The file at `rel` in the tree open as `dir` (named `root` in
/// messages), if there is one: read as [`crate::sys::read_regular_in_root`]
/// allows a privileged process to.
fn read_table(
    dir: &std::fs::File,
    root: &Path,
    rel: &str,
) -> std::result::Result<Option<String>, String> {
    let path = root.join(rel);
    match crate::sys::read_regular_in_root(dir.as_fd(), Path::new(rel), MAX_FILE) {
        // Only names and numbers are compared; a GECOS field in Latin-1
        // must not make every other line unreadable.
        Ok(bytes) => Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(format!("{} is {e}", path.display()))
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: Option<String>,
}

/// The first entry named `who`, or else the first with uid `who`, as
/// getpwnam(3)/getpwuid(3) read the files.
fn find_user(table: &str, who: &str) -> Option<PasswdEntry> {
    let entries = || {
        table.lines().filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: Some(f[6].trim())
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            })
        })
    };
    entries().find(|e| e.name == who).or_else(|| {
        let uid: u32 = who.parse().ok()?;
        entries().find(|e| e.uid == uid)
    })
}

/// (name, gid, members) of each well-formed line of /etc/group.
fn group_lines(table: &str) -> impl Iterator<Item = (&str, u32, &str)> {
    table.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
            return None;
        }
        Some((f[0], f[2].parse().ok()?, f[3]))
    })
}

fn find_group(table: &str, group: &str) -> Option<u32> {
    group_lines(table)
        .find(|(name, _, _)| *name == group)
        .map(|(_, gid, _)| gid)
}

fn member_of<'a>(table: &'a str, user: &'a str) -> impl Iterator<Item = u32> + 'a {
    group_lines(table)
        .filter(move |(_, _, members)| members.split(',').any(|m| m.trim() == user))
        .map(|(_, gid, _)| gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(passwd: &str, group: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(d.path().join("etc/group"), group).unwrap();
        d
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nadm:x:4:syslog,alice\n\
        alice:x:1000:\nstaff:x:50:bob, alice\nbroken line\n";

    #[test]
    fn a_name_gets_its_ids_home_and_groups() {
        let d = root(PASSWD, GROUP);
        let a = resolve(d.path(), "alice").unwrap();
        assert_eq!((a.uid, a.gid), (1000, 1000));
        assert_eq!(a.groups, [1000, 4, 50]);
        assert_eq!(a.home.as_deref(), Some("/home/alice"));
        assert_eq!(a.name.as_deref(), Some("alice"));
        assert_eq!(a.shell.as_deref(), Some("/bin/bash"));
    }

    #[test]
    fn a_group_given_replaces_the_primary_one() {
        let d = root(PASSWD, GROUP);
        let a = resolve(d.path(), "alice:www-data").unwrap();
        assert_eq!((a.uid, a.gid), (1000, 33));
        assert_eq!(a.groups, [33, 4, 50]);
        let a = resolve(d.path(), "www-data:7").unwrap();
        assert_eq!((a.uid, a.gid, a.groups), (33, 7, vec![7]));
    }

    #[test]
    fn numbers_find_their_entry_or_need_a_group() {
        let d = root(PASSWD, GROUP);
        let a = resolve(d.path(), "33").unwrap();
        assert_eq!(
            (a.uid, a.gid, a.name.as_deref()),
            (33, 33, Some("www-data"))
        );
        let a = resolve(d.path(), "4242:4242").unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups, a.home),
            (4242, 4242, vec![4242], None)
        );
        let e = resolve(d.path(), "4242").unwrap_err().to_string();
        assert!(e.contains("name its group too (\"4242:GID\")"), "{e}");
    }

    #[test]
    fn unknown_names_and_bad_forms_are_refused_naming_the_file() {
        let d = root(PASSWD, GROUP);
        let e = resolve(d.path(), "mallory").unwrap_err().to_string();
        assert!(
            e.contains("no such user") && e.contains("etc/passwd"),
            "{e}"
        );
        let e = resolve(d.path(), "alice:nogroup").unwrap_err().to_string();
        assert!(
            e.contains("no such group") && e.contains("etc/group"),
            "{e}"
        );
        for bad in ["", ":", "alice:", ":0"] {
            assert!(resolve(d.path(), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_spoils_only_itself() {
        let mut passwd = PASSWD.as_bytes().to_vec();
        passwd.extend_from_slice(b"bob:x:1001:1001:Jos\xe9:/home/bob:/bin/sh\n");
        let d = root("", GROUP);
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        assert_eq!(resolve(d.path(), "alice").unwrap().uid, 1000);
        assert_eq!(resolve(d.path(), "bob").unwrap().uid, 1001);
    }

    #[test]
    fn minus_one_is_no_id() {
        let d = root(
            "svc:x:4294967295:0::/:/bin/sh\nsvg:x:5:4294967295::/:/bin/sh\n",
            GROUP,
        );
        for user in ["svc", "svg", "7:4294967295", "4294967295:0"] {
            let e = resolve(d.path(), user).unwrap_err().to_string();
            assert!(e.contains("no ids"), "{user}: {e}");
        }
    }

    #[test]
    fn the_hosts_files_are_never_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        // An absolute link resolves inside the guest's tree: to nothing
        // here, so the host file it names is not read.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), PASSWD).unwrap();
        let link = d.path().join("etc/passwd");
        std::os::unix::fs::symlink(host.path().join("passwd"), &link).unwrap();
        let e = resolve(d.path(), "root").unwrap_err().to_string();
        assert!(e.contains("no such user"), "{e}");
        // A link to itself is a loop there, not the host's file.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let e = resolve(d.path(), "root").unwrap_err().to_string();
        assert!(
            e.contains("etc/passwd") && e.contains("symbolic links"),
            "{e}"
        );
        std::fs::remove_file(&link).unwrap();
        nix::unistd::mkfifo(&d.path().join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = resolve(d.path(), "root").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A kernel file is not opened at all: /dev/tty would fail to open
        // without a terminal ("No such device"), before any type check.
        std::fs::remove_file(&link).unwrap();
        nix::sys::stat::mknod(
            &link,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::S_IRUSR,
            nix::sys::stat::makedev(5, 0),
        )
        .unwrap();
        let e = resolve(d.path(), "root").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
