//! Inode flags (`chattr`'s) in manifests: the ones users set, as lsattr's
//! letters. The filesystem's own (extents, inline data, …) are left out.

use crate::sys;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Letter and FS_*_FL bit of each flag kept (linux/fs.h).
const FLAGS: [(char, u32); 12] = [
    ('s', 0x1),     // secure deletion
    ('u', 0x2),     // undelete
    ('c', 0x4),     // compress
    ('S', 0x8),     // synchronous updates
    ('i', 0x10),    // immutable
    ('a', 0x20),    // append only
    ('d', 0x40),    // no dump
    ('A', 0x80),    // no atime updates
    ('j', 0x4000),  // data journalling
    ('t', 0x8000),  // no tail-merging
    ('D', 0x10000), // synchronous directory updates
    ('T', 0x20000), // top of directory hierarchies
];

const MASK: u32 = {
    let mut m = 0;
    let mut i = 0;
    while i < FLAGS.len() {
        m |= FLAGS[i].1;
        i += 1;
    }
    m
};

/// The letters of the kept flags in `bits`; `None` when there are none.
pub fn to_letters(bits: u32) -> Option<String> {
    let s: String = FLAGS
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(c, _)| *c)
        .collect();
    (!s.is_empty()).then_some(s)
}

/// The bits of `letters`; `None` for a letter that is not a kept flag.
pub fn from_letters(letters: &str) -> Option<u32> {
    letters.chars().try_fold(0, |bits, c| {
        FLAGS.iter().find(|(l, _)| *l == c).map(|(_, b)| bits | b)
    })
}

/// Opens a regular file or directory without following a symlink, without
/// blocking, for the flag ioctls (which need no write access).
fn open(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOATIME)
        .open(path)
}

/// The kept flags of the file or directory at `path`.
pub fn read(path: &Path) -> io::Result<u32> {
    read_fd(open(path)?.as_fd())
}

/// The kept flags of the file or directory open at `fd`.
pub fn read_fd(fd: std::os::fd::BorrowedFd) -> io::Result<u32> {
    Ok(sys::inode_flags(fd)? & MASK)
}

/// Gives the file or directory at `path` exactly the kept flags `want`,
/// leaving the filesystem's own as they are.
pub fn apply(path: &Path, want: u32) -> io::Result<()> {
    let file = open(path)?;
    let now = sys::inode_flags(file.as_fd())?;
    let next = (now & !MASK) | want;
    if next != now {
        sys::set_inode_flags(file.as_fd(), next)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip_and_system_flags_are_left_out() {
        // 0x80000: extents (e), the filesystem's own.
        assert_eq!(
            to_letters(0x10 | 0x20 | 0x40 | 0x80000).as_deref(),
            Some("iad")
        );
        assert_eq!(to_letters(0x80000), None);
        assert_eq!(from_letters("iad"), Some(0x70));
        assert_eq!(from_letters("e"), None);
        assert_eq!(from_letters(""), Some(0));
    }
}
