//! How a link break makes its copy safe against a power cut before renaming
//! it over the old name (invariant 2: the name then holds the old file or
//! the new one, complete, never an empty or half-written one).

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

/// `f_type` of ext2/3/4 (`EXT4_SUPER_MAGIC`).
const EXT4_MAGIC: i64 = 0xEF53;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the copy, then rename it: the portable way.
    Fsync,
    /// Rename without fsync: the filesystem itself writes the data of a file
    /// renamed over another before the rename reaches its journal. ext4
    /// does so with a journal in `data=ordered` or `data=journal` mode and
    /// `auto_da_alloc` (all three the defaults): "the data blocks of the new
    /// file are forced to disk before the rename() operation is committed"
    /// (Documentation/admin-guide/ext4.rst). A power cut then leaves the old
    /// file or the complete new one, as with fsync, and the break does not
    /// wait for the disk.
    OrderedRename,
}

impl Durability {
    /// What the filesystem of the open directory `dir` allows. Anything not
    /// positively known to order a renamed file's data gets fsync.
    pub fn of(dir: BorrowedFd) -> Durability {
        match Self::ext4_options(dir) {
            Some(opts) if orders_renames(&opts) => Durability::OrderedRename,
            _ => Durability::Fsync,
        }
    }

    /// A line for the daemon's log.
    pub fn describe(self) -> &'static str {
        match self {
            Durability::Fsync => "link breaks fsync each copy before renaming it",
            Durability::OrderedRename => {
                "link breaks rely on ext4's ordered rename (journal, data=ordered, \
                 auto_da_alloc) instead of an fsync per copy; -o break_fsync to fsync anyway"
            }
        }
    }

    /// The options ext4 lists for the filesystem of `dir`
    /// (`/proc/fs/ext4/DEV/options`, one per line), if it is ext4.
    fn ext4_options(dir: BorrowedFd) -> Option<String> {
        if crate::sys::fs_type(dir).ok()? != EXT4_MAGIC {
            return None;
        }
        let st = super::sys::fstat(dir).ok()?;
        let dev = block_device_name(libc::major(st.st_dev), libc::minor(st.st_dev))?;
        std::fs::read_to_string(Path::new("/proc/fs/ext4").join(dev).join("options")).ok()
    }
}

/// The kernel's name of a block device (`vda1`, `loop0`, `dm-0`): what
/// ext4 names its `/proc/fs/ext4` entry after.
fn block_device_name(major: u32, minor: u32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    link.file_name().map(|n| PathBuf::from(n.to_os_string()))
}

/// True for ext4 options (one per line) under which a file renamed over
/// another has its data written before the rename commits. Without a
/// journal ext4 lists no `data=` mode, and nothing orders the writes.
fn orders_renames(options: &str) -> bool {
    let has = |o: &str| {
        options
            .lines()
            .any(|l| OsStr::new(l.trim()) == OsStr::new(o))
    };
    (has("data=ordered") || has("data=journal")) && has("auto_da_alloc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_journal_in_ordered_or_journal_mode_with_auto_da_alloc_orders_renames() {
        let journaled = "rw\nbarrier\nauto_da_alloc\nuser_xattr\ndata=ordered\ncommit=5\n";
        assert!(orders_renames(journaled));
        assert!(orders_renames(
            &journaled.replace("data=ordered", "data=journal")
        ));
        assert!(!orders_renames(
            &journaled.replace("data=ordered", "data=writeback")
        ));
        assert!(!orders_renames(
            &journaled.replace("auto_da_alloc", "noauto_da_alloc")
        ));
        // A filesystem without a journal lists no data= mode.
        assert!(!orders_renames("rw\nbarrier\nauto_da_alloc\nuser_xattr\n"));
    }

    #[test]
    fn a_directory_off_ext4_gets_fsync() {
        let dir = std::fs::File::open("/proc").unwrap();
        use std::os::fd::AsFd;
        assert_eq!(Durability::of(dir.as_fd()), Durability::Fsync);
    }
}
