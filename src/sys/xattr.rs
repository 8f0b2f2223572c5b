//! Extended attributes on open files and on host paths (never following a
//! symlink in the last component).

use super::{check, cstr};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// xfs shows an inode's POSIX ACLs to root twice: as `system.posix_acl_*`
/// and under these `trusted.` names (its on-disk format). They are the same
/// ACL, not xattrs of their own: removing one removes the ACL, and set on
/// another filesystem they would be junk `trusted.*` xattrs. Copies of a
/// file's xattrs (manifests, restore) leave them out and never remove them.
pub const ACL_ALIASES: [&[u8]; 2] = [b"trusted.SGI_ACL_FILE", b"trusted.SGI_ACL_DEFAULT"];

/// Whether `name` is one of xfs' names for an ACL ([`ACL_ALIASES`]).
pub fn is_acl_alias(name: &[u8]) -> bool {
    ACL_ALIASES.contains(&name)
}

/// The most bytes listxattr returns (the kernel's XATTR_LIST_MAX): the
/// names of a file's xattrs, each with its NUL. xfs lets a file have more,
/// and then listxattr fails with E2BIG for everyone (getfattr, tar, rsync,
/// unifs), so nothing of ours may take a list past it.
pub const LIST_MAX: usize = 65536;

/// The length of the name list of the open file's xattrs, as listxattr
/// returns it (each name with its NUL; more than [`LIST_MAX`] if the
/// filesystem let them be set).
pub fn list_len(fd: BorrowedFd) -> io::Result<usize> {
    // SAFETY: a null buffer of length 0 asks for the size only.
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), std::ptr::null_mut(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The names of a file's xattrs are longer together than listxattr may
/// return: no tool can list them.
#[derive(Debug, thiserror::Error)]
#[error(
    "its xattr names add up to more than the 64 KiB listxattr can return (XATTR_LIST_MAX), \
     so no tool can list them (getfattr, tar and rsync fail on it too); remove some of its \
     xattrs (`setfattr -x NAME`)"
)]
pub struct ListTooLong;

/// The names of the xattrs that `call` (a listxattr) gives, an E2BIG
/// said as [`ListTooLong`] (kind `ArgumentListTooLong`).
fn list_names(call: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    read_growing(call).map_err(|e| match e.raw_os_error() {
        Some(libc::E2BIG) => io::Error::new(io::ErrorKind::ArgumentListTooLong, ListTooLong),
        _ => e,
    })
}

/// The attributes of an open file, sorted by name.
pub fn list_fd(fd: BorrowedFd) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    list_fd_where(fd, |_| true)
}

/// The attributes of an open file whose names `keep` accepts, sorted by
/// name; the others' values are never read (a syscall each).
pub fn list_fd_where(
    fd: BorrowedFd,
    keep: impl Fn(&[u8]) -> bool,
) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let names = list_names(|buf| {
        // SAFETY: `buf` is a valid writable buffer of the length we pass.
        unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    let mut out = Vec::new();
    for name in names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && keep(n))
    {
        let name = OsStr::from_bytes(name);
        match get_fd(fd, name)? {
            Some(value) => out.push((name.to_owned(), value)),
            None => continue, // removed between list and get
        }
    }
    out.sort();
    Ok(out)
}

/// One attribute of an open file, `None` when it does not exist.
pub fn get_fd(fd: BorrowedFd, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let cname = cstr(name)?;
    absent_is_none(read_growing(|buf| {
        // SAFETY: `cname` is NUL-terminated; `buf` is valid for its length.
        unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    }))
}

/// ENODATA (no such attribute) as `None`.
fn absent_is_none(read: io::Result<Vec<u8>>) -> io::Result<Option<Vec<u8>>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn set_fd(fd: BorrowedFd, name: &OsStr, value: &[u8]) -> io::Result<()> {
    set_fd_flags(fd, name, value, 0)
}

/// `fsetxattr` with `XATTR_CREATE` / `XATTR_REPLACE` as `flags`.
pub fn set_fd_flags(fd: BorrowedFd, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let cname = cstr(name)?;
    // SAFETY: `cname` is NUL-terminated; `value` is valid for its length.
    super::retry(|| unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

pub fn remove_fd(fd: BorrowedFd, name: &OsStr) -> io::Result<()> {
    let cname = cstr(name)?;
    // SAFETY: `cname` is NUL-terminated.
    super::retry(|| unsafe { libc::fremovexattr(fd.as_raw_fd(), cname.as_ptr()) })?;
    Ok(())
}

/// One attribute of a host path, not following a symlink at its end.
pub fn get_path(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    get_cpath(&cstr(path.as_os_str())?, name)
}

/// One attribute of the file a NUL-terminated path names, not following a
/// symlink at its end; `None` when it does not exist.
pub fn get_cpath(cpath: &std::ffi::CStr, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let cname = cstr(name)?;
    absent_is_none(read_growing(|buf| {
        // SAFETY: both strings are NUL-terminated; `buf` is valid for its length.
        unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    }))
}

/// The attributes of a host path (symlinks included, not followed), sorted.
pub fn list_path(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let cpath = cstr(path.as_os_str())?;
    let names = list_names(|buf| {
        // SAFETY: `cpath` is NUL-terminated; `buf` is valid for its length.
        unsafe { libc::llistxattr(cpath.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        if let Some(v) = get_path(path, name)? {
            out.push((name.to_owned(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// The attributes of the entry `name` of the directory open at `dir`, not
/// followed if a symlink: for entries that cannot be opened to read them
/// (symlinks, device nodes, FIFOs). `name` is one component; the path
/// goes through `dir`'s own fd, so nothing above it is looked up by name.
pub fn list_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    if name.as_bytes().contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut path = std::ffi::OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
    path.push(name);
    list_path(Path::new(&path))
}

/// Removes an attribute of a host path, not following a symlink at its end.
pub fn remove_path(path: &Path, name: &OsStr) -> io::Result<()> {
    let cpath = cstr(path.as_os_str())?;
    let cname = cstr(name)?;
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::lremovexattr(cpath.as_ptr(), cname.as_ptr()) })?;
    Ok(())
}

/// Calls a size-probing xattr syscall until the buffer is large enough
/// (the value can grow between the probe and the read: ERANGE → retry).
pub(crate) fn read_growing(mut call: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
        let need = call(&mut []);
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        buf = vec![0u8; (need as usize).max(buf.len() * 2)];
    }
}

/// Sets an attribute on a host path, not following a symlink at its end.
pub fn set_path(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let cpath = cstr(path.as_os_str())?;
    let cname = cstr(name)?;
    // SAFETY: both strings are NUL-terminated; `value` is valid for its length.
    check(unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}
