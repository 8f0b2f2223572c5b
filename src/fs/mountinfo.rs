//! /proc/*/mountinfo, read as bytes: a mount point or source need not be
//! UTF-8, and one such mount anywhere on the host must not hide the others.
//! Also the source a unifs mount is given (`unifs:GUEST`) and its reading.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One line of a mountinfo file, its fields unescaped.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The mount's id (`mnt_id` in /proc/PID/fdinfo of a file in it).
    pub id: u64,
    /// The id of the mount it is mounted on (itself for the namespace's
    /// root).
    pub parent: u64,
    /// The filesystem's device, `major:minor`.
    pub dev: String,
    /// The directory of its filesystem the mount shows.
    pub root: PathBuf,
    pub point: PathBuf,
    pub fstype: String,
    pub source: OsString,
    /// The filesystem's own options.
    pub super_opts: String,
}

impl Mount {
    /// The guest directory this mount serves, when it is a unifs mount.
    pub fn unifs_guest(&self) -> Option<PathBuf> {
        self.fstype
            .starts_with("fuse")
            .then(|| unifs_source_guest(&self.source))
            .flatten()
    }
}

/// Where the kernel's fusectl shows the connection of a FUSE mount whose
/// device is `dev` (`major:minor`): `/sys/fs/fuse/connections/N`, N the
/// kernel's own number for the device, `major << 20 | minor` (the minor
/// alone for the anonymous devices `fuse` mounts get; `fuseblk` has a
/// block device's).
pub fn fuse_connection_dir(dev: &str) -> Option<PathBuf> {
    let (major, minor) = dev.split_once(':')?;
    let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
    let n = (major << 20) | minor;
    Some(PathBuf::from(format!("/sys/fs/fuse/connections/{n}")))
}

/// The mounts of this mount namespace, in the kernel's order (of mounts
/// stacked on one point, the top one last). Inside [`with_one_read`], the
/// table that scope read first.
pub fn read() -> io::Result<Vec<Mount>> {
    ONE_READ.with(|one| match &mut *one.borrow_mut() {
        None => read_at(Path::new("/proc/self/mountinfo")),
        Some(Some(mounts)) => Ok(mounts.clone()),
        Some(kept) => {
            let mounts = read_at(Path::new("/proc/self/mountinfo"))?;
            *kept = Some(mounts.clone());
            Ok(mounts)
        }
    })
}

thread_local! {
    /// This thread's [`with_one_read`] scope: `Some(None)` until its first
    /// read, then the table read.
    static ONE_READ: std::cell::RefCell<Option<Option<Vec<Mount>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with every [`read`] of this thread in it answered by one read
/// of the table: for a look at many guests at once (`guest list`), where
/// each guest's few reads of a table that grows with the guests running
/// made the whole look grow with their square. Only for code that mounts
/// and unmounts nothing, as it would not see its own changes.
pub fn with_one_read<T>(f: impl FnOnce() -> T) -> T {
    struct Scope(bool);
    impl Drop for Scope {
        fn drop(&mut self) {
            if self.0 {
                ONE_READ.with(|one| *one.borrow_mut() = None);
            }
        }
    }
    // An inner scope leaves the outer one's table in place.
    let outer = ONE_READ.with(|one| {
        let mut one = one.borrow_mut();
        let fresh = one.is_none();
        if fresh {
            *one = Some(None);
        }
        fresh
    });
    let _scope = Scope(outer);
    f()
}

/// [`with_one_read`] with `mounts` for its table: for a thread that shares
/// the look of the thread that read it (`guest list`'s threads), so that
/// the look reads the table once whatever the threads.
pub fn with_table<T>(mounts: Vec<Mount>, f: impl FnOnce() -> T) -> T {
    with_one_read(|| {
        ONE_READ.with(|one| {
            if let Some(table @ None) = &mut *one.borrow_mut() {
                *table = Some(mounts);
            }
        });
        f()
    })
}

/// The mounts a mountinfo file (`/proc/PID/mountinfo`) lists.
pub fn read_at(file: &Path) -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read(file)?))
}

/// The mounts a mountinfo text lists; a line that is not one is skipped.
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            // id parent dev root point opts [optional…] - fstype source super
            let dash = 6 + f.get(6..)?.iter().position(|x| *x == b"-")?;
            let text = |b: &[u8]| String::from_utf8_lossy(&unescape(b)).into_owned();
            Some(Mount {
                id: text(f.first()?).parse().ok()?,
                parent: text(f.get(1)?).parse().ok()?,
                dev: text(f.get(2)?),
                root: PathBuf::from(OsString::from_vec(unescape(f.get(3)?))),
                point: PathBuf::from(OsString::from_vec(unescape(f.get(4)?))),
                fstype: text(f.get(dash + 1)?),
                source: OsString::from_vec(unescape(f.get(dash + 2)?)),
                super_opts: f.get(dash + 3).map(|b| text(b)).unwrap_or_default(),
            })
        })
        .collect()
}

/// Mountinfo escapes space, tab, newline and backslash as octal (`\040`).
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')));
        match octal {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The source a mount of the absolute `guest` is given (fuser takes it as
/// a String): `unifs:GUEST`, GUEST as it is when it is UTF-8; otherwise
/// `unifs:%GUEST` with `%` and each byte that is not UTF-8 written `%HH`
/// (a path of the first form starts with `/`, so the two never meet).
pub fn unifs_source(guest: &Path) -> String {
    let bytes = guest.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) if s.starts_with('/') => format!("unifs:{s}"),
        _ => {
            let mut out = String::from("unifs:%");
            for chunk in bytes.utf8_chunks() {
                out.push_str(&chunk.valid().replace('%', "%25"));
                for b in chunk.invalid() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
    }
}

/// The guest directory a unifs mount's `source` names ([`unifs_source`];
/// a daemon of an older build wrote it `unifs:GUEST`, not UTF-8 bytes
/// replaced by U+FFFD: that path is returned as it is).
pub fn unifs_source_guest(source: &OsStr) -> Option<PathBuf> {
    let rest = source.as_bytes().strip_prefix(b"unifs:")?;
    let Some(escaped) = rest.strip_prefix(b"%") else {
        return Some(PathBuf::from(OsStr::from_bytes(rest)));
    };
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let hex = escaped
            .get(i + 1..i + 3)
            .filter(|_| escaped[i] == b'%')
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(escaped[i]);
                i += 1;
            }
        }
    }
    Some(PathBuf::from(OsString::from_vec(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_mount_point_that_is_not_utf8() {
        let text = b"22 1 0:5 / /proc rw - proc proc rw\n\
            30 22 0:40 /a\\040b /mnt/x\\377\\134y rw shared:1 - fuse unifs:%/g%FF rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].point.as_os_str().as_bytes(), b"/mnt/x\xff\\y");
        assert_eq!(m[1].root, Path::new("/a b"));
        assert_eq!(m[1].fstype, "fuse");
        assert_eq!(
            m[1].unifs_guest().unwrap().as_os_str().as_bytes(),
            b"/g\xff"
        );
        assert_eq!(m[0].unifs_guest(), None);
    }

    #[test]
    fn a_source_names_its_guest_again() {
        for g in [
            &b"/plain"[..],
            b"/g\xff%41",
            b"/a\\b\xc3",
            b"/\xe2\x82\xac%",
        ] {
            let g = Path::new(OsStr::from_bytes(g));
            let s = unifs_source(g);
            assert_eq!(
                unifs_source_guest(OsStr::new(&s)).as_deref(),
                Some(g),
                "{s}"
            );
        }
        assert_eq!(unifs_source(Path::new("/a%b")), "unifs:/a%b");
        // An older daemon's lossy source, taken as it is.
        let old = OsStr::new("unifs:/g\u{FFFD}");
        assert_eq!(unifs_source_guest(old), Some(PathBuf::from("/g\u{FFFD}")));
    }
}
