//! SQLite's default unix VFS, with one change: every region of
//! `catalog.db-shm` SQLite maps is made writable in memory at once
//! (`madvise(MADV_POPULATE_WRITE)`), which gives it its disk blocks, before
//! SQLite stores into it.
//!
//! SQLite grows the -shm file by writing one byte to each 4 KiB page, then
//! maps it. On a filesystem with smaller blocks (ext4 below 512 MB uses
//! 1 KiB) the rest of each page stays a hole, and once the filesystem is
//! full the first store into a hole kills the process with SIGBUS: every
//! command, the read-only ones too (readers write their marks there), died
//! so until space was freed. Populated first, a full filesystem is an error
//! SQLite reports ("database or disk is full"). (Not fallocate on a file
//! descriptor of our own: closing it would drop SQLite's locks on the file,
//! POSIX locks being the process's, and another process would then take
//! itself for the first user and truncate the file under our mapping.)
//!
//! A second VFS, [`TIDY`], the same but for one more change, is a reader's
//! tidy's ([`super::tidy`]): its close takes the EXCLUSIVE lock on
//! catalog.db only where the log is empty.

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// The name the wrapper is registered under (as the default VFS).
const NAME: &std::ffi::CStr = c"unifs-unix";

/// The name of the tidy's VFS (not the default).
pub(super) const TIDY: &std::ffi::CStr = c"unifs-tidy";

/// Where, in a file of the tidy's VFS, its name is kept: after the unix
/// VFS's own part (which is all it knows of).
static NAME_AT: AtomicUsize = AtomicUsize::new(0);

/// A copy of the unix VFS's I/O methods for a main database file, with
/// `xShmMap` ours, followed by the methods it copies.
#[repr(C)]
struct Methods {
    ours: ffi::sqlite3_io_methods,
    base: *const ffi::sqlite3_io_methods,
}

/// Our copies, by the base methods they copy and whether the tidy's:
/// (base, tidy, ours), both static.
static COPIES: Mutex<Vec<(usize, bool, usize)>> = Mutex::new(Vec::new());

/// Makes the wrapper SQLite's default VFS, once per process; call before
/// the first connection opens a file.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_vfs_find(NULL) gives the default VFS, a static
        // SQLite never frees (it initialises SQLite first if needed). We
        // register a copy, leaked so it lives as long as the process.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return;
            }
            let mut vfs = *base;
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = base.cast();
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open);
            let mut tidy = vfs;
            ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 1);
            let ptr = std::mem::size_of::<*const c_char>();
            let at = ((*base).szOsFile as usize).next_multiple_of(ptr);
            NAME_AT.store(at, Ordering::Relaxed);
            tidy.zName = TIDY.as_ptr();
            tidy.szOsFile = (at + ptr) as c_int;
            tidy.xOpen = Some(open_tidy);
            ffi::sqlite3_vfs_register(Box::leak(Box::new(tidy)), 0);
        }
    });
}

/// Our copy of `base` (the tidy's with `tidy`), made the first time a file
/// uses it.
fn copy_of(base: *const ffi::sqlite3_io_methods, tidy: bool) -> *const ffi::sqlite3_io_methods {
    let mut copies = COPIES.lock().unwrap_or_else(|e| e.into_inner());
    let key = (base as usize, tidy);
    if let Some(&(_, _, ours)) = copies.iter().find(|(b, t, _)| (*b, *t) == key) {
        return ours as *const _;
    }
    // SAFETY: `base` is the static methods table SQLite's unix VFS gave a
    // file; we copy it and leak the copy, which files then point to.
    let mut ours = unsafe { *base };
    ours.xShmMap = Some(shm_map);
    if tidy {
        ours.xLock = Some(lock_tidy);
    }
    let methods: &'static Methods = Box::leak(Box::new(Methods { ours, base }));
    let ptr = &methods.ours as *const ffi::sqlite3_io_methods;
    copies.push((base as usize, tidy, ptr as usize));
    ptr
}

/// xOpen: the unix VFS's; a main database file (the one with a -shm) then
/// gets our methods.
unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite's own arguments, passed on.
    unsafe { open_as(vfs, name, file, flags, out_flags, false) }
}

/// xOpen of the tidy's VFS: [`open`], and a main database file keeps its
/// name (for [`lock_tidy`]). SQLite keeps a main database file's name
/// valid until the file's xClose.
unsafe extern "C" fn open_tidy(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite's own arguments, passed on; `file` has the tidy
    // VFS's szOsFile bytes, room for the name after the unix VFS's part.
    unsafe {
        let rc = open_as(vfs, name, file, flags, out_flags, true);
        if rc == ffi::SQLITE_OK && flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            let at = file.cast::<u8>().add(NAME_AT.load(Ordering::Relaxed));
            at.cast::<*const c_char>().write_unaligned(name);
        }
        rc
    }
}

unsafe fn open_as(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
    tidy: bool,
) -> c_int {
    // SAFETY: SQLite calls this with the VFS we registered, whose pAppData
    // is the unix VFS, and a file of its szOsFile bytes (the unix VFS's).
    unsafe {
        let base = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let Some(base_open) = (*base).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        let rc = base_open(base, name, file, flags, out_flags);
        let methods = (*file).pMethods;
        if rc == ffi::SQLITE_OK
            && !methods.is_null()
            && flags & ffi::SQLITE_OPEN_MAIN_DB != 0
            && (*methods).iVersion >= 2
            && (*methods).xShmMap.is_some()
        {
            (*file).pMethods = copy_of(methods, tidy);
        }
        rc
    }
}

/// xShmMap: the unix VFS's, then the region it mapped is populated for
/// writing. Where it cannot be (no block left for a hole), SQLite gets
/// SQLITE_FULL and no mapping, so it never stores into the hole.
unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    // SAFETY: only files given our methods in `open` get here, so their
    // methods are a `Methods`; `pp` is SQLite's out pointer, and a region
    // it maps is `size` bytes, page-aligned (regions are 32 KiB).
    unsafe {
        let base = (*(*file).pMethods.cast::<Methods>()).base;
        let Some(base_map) = (*base).xShmMap else {
            return ffi::SQLITE_IOERR;
        };
        let rc = base_map(file, region, size, extend, pp);
        if rc != ffi::SQLITE_OK || (*pp).is_null() {
            return rc;
        }
        let ret = libc::madvise(*pp, size as usize, libc::MADV_POPULATE_WRITE);
        if ret != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT) {
            // (EFAULT: a store would have raised SIGBUS.) SQLite keeps
            // what it finds in *pp even on an error.
            *pp = std::ptr::null_mut();
            return ffi::SQLITE_FULL;
        }
        // Done, or a kernel before 5.14 (EINVAL): as SQLite alone has it.
        rc
    }
}

/// xLock of the tidy's main database file: the unix VFS's, but the
/// EXCLUSIVE lock (taken by a connection's close, which then checkpoints
/// and deletes the -wal and -shm) only where the log is empty: a close
/// would copy the changes of a log that holds any into catalog.db. Held,
/// the lock keeps every other connection out (each holds SHARED while
/// open), so nothing is written to the log between this look and the
/// checkpoint. Refused (SQLITE_BUSY), the close leaves both files.
unsafe extern "C" fn lock_tidy(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: only main database files of the tidy's VFS get these methods
    // (`open_tidy`), so their methods are a `Methods` and their name is
    // stored after the unix VFS's part, valid until their xClose.
    unsafe {
        let base = (*(*file).pMethods.cast::<Methods>()).base;
        let (Some(lock), Some(unlock)) = ((*base).xLock, (*base).xUnlock) else {
            return ffi::SQLITE_IOERR_LOCK;
        };
        let rc = lock(file, level);
        if rc != ffi::SQLITE_OK || level != ffi::SQLITE_LOCK_EXCLUSIVE {
            return rc;
        }
        let at = file.cast::<u8>().add(NAME_AT.load(Ordering::Relaxed));
        let name = at.cast::<*const c_char>().read_unaligned();
        if !name.is_null() && is_empty(ffi::sqlite3_filename_wal(name)) {
            return rc;
        }
        unlock(file, ffi::SQLITE_LOCK_SHARED);
        ffi::SQLITE_BUSY
    }
}

/// Whether the file named `path` (a C string, or null) is there and empty.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn is_empty(path: *const c_char) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if path.is_null() {
        return false;
    }
    // SAFETY: as the caller promises.
    let bytes = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes));
    std::fs::symlink_metadata(path).is_ok_and(|m| m.len() == 0)
}
