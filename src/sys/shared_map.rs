//! A range of a file mapped shared, read-write, and used as 64-bit words.
//! A store into the mapping is in the page cache as soon as it is made: a
//! process killed right after it still leaves it for the next one to read,
//! without a write syscall per store.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

pub struct SharedMap {
    ptr: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is plain shared memory and every access to it goes
// through `AtomicU64`, which may be used from any thread.
unsafe impl Send for SharedMap {}
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Maps `words` 64-bit words of the file `fd` (open for reading and
    /// writing) from byte `offset` (a multiple of the page size), which must
    /// already be that long. The range gets its disk blocks first: a store
    /// into a hole of a full filesystem raises SIGBUS, which killed unify
    /// on a nearly full disk (its directory journal); out of space is an
    /// error here instead. (A file someone else truncates later still faults
    /// when the words past its new end are touched: SIGBUS.)
    pub fn new(fd: BorrowedFd, offset: u64, words: usize) -> io::Result<SharedMap> {
        let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
        let len = words
            .checked_mul(8)
            .filter(|&l| l > 0)
            .ok_or_else(invalid)?;
        let end = offset.checked_add(len as u64).ok_or_else(invalid)?;
        if super::fstat(fd)?.size < end {
            return Err(invalid());
        }
        let populate = match allocate(fd, offset, len as u64) {
            Ok(()) => false,
            // Not on this filesystem: each page made writable once mapped.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => true,
            Err(e) => return Err(e),
        };
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address), of
        // a file we hold open; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let map = SharedMap { ptr, words };
        if populate {
            map.populate()?;
        }
        Ok(map)
    }

    /// Makes every page of the mapping writable now
    /// (`MADV_POPULATE_WRITE`), which gives a hole its block: ENOSPC where
    /// that would have raised SIGBUS. Before Linux 5.14 (EINVAL) nothing is
    /// done.
    fn populate(&self) -> io::Result<()> {
        // SAFETY: the range is this mapping, which lives as long as `self`;
        // populating changes no byte of it.
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr().cast(),
                self.words * 8,
                libc::MADV_POPULATE_WRITE,
            )
        };
        let e = match rc {
            0 => return Ok(()),
            _ => io::Error::last_os_error(),
        };
        match e.raw_os_error() {
            Some(libc::EINVAL) => Ok(()),
            Some(libc::EFAULT) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            _ => Err(e),
        }
    }

    pub fn words(&self) -> usize {
        self.words
    }

    /// Word `i` of the mapping.
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "word {i} of a {}-word mapping", self.words);
        // SAFETY: `i` is within the mapping, which is page-aligned (so every
        // word is 8-aligned) and stays mapped for as long as `self` lives;
        // all access to it is atomic.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }
}

/// `fallocate` of `len` bytes of `fd` from `offset`, within its size:
/// blocks for its holes, the size unchanged.
fn allocate(fd: BorrowedFd, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    let rc =
        unsafe { libc::fallocate(fd.as_raw_fd(), 0, offset as libc::off_t, len as libc::off_t) };
    super::check(rc).map(drop)
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once; no reference to it
        // outlives `self` (`word` borrows `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.words * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    #[test]
    fn stores_reach_the_file_at_once() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let m = SharedMap::new(f.as_fd(), 0, 512).unwrap();
        m.word(1).store(0x0102_0304_0506_0708, Ordering::Relaxed);
        m.word(511).store(u64::MAX, Ordering::Relaxed);
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes[8..16], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(bytes[4088..], [0xff; 8]);
        assert!(bytes[..8].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_file_too_short_is_not_mapped() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let e = SharedMap::new(f.as_fd(), 0, 513).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    #[should_panic(expected = "word 512 of a 512-word mapping")]
    fn a_word_past_the_end_is_refused() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let m = SharedMap::new(f.as_fd(), 0, 512).unwrap();
        m.word(512);
    }
}
