//! xattr changes that fail on ext4 change nothing there; through the mount
//! they broke a shared file's link first (a private copy, and a new inode
//! number for a reader holding it), then failed.

use super::harness::*;
use crate::common::require_root;
use std::ffi::CString;
use std::path::Path;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// The errno of `setxattr(path, name, value, flags)`, 0 on success.
fn set(path: &Path, name: &str, flags: i32) -> i32 {
    let (p, n) = (c(path), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and a valid 1-byte buffer.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"x".as_ptr().cast(), 1, flags) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// The errno of `removexattr(path, name)`, 0 on success.
fn remove(path: &Path, name: &str) -> i32 {
    let (p, n) = (c(path), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings.
    let r = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

#[test]
fn an_xattr_change_that_fails_leaves_a_shared_file_shared() {
    if !require_root("review_s10_an_xattr_change_that_fails_leaves_a_shared_file_shared") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    // `share` gives it user.origin.
    let obj = w.shared(b"shared content\n", &[g.join("a")]);
    let m = w.mount(&g, "m", &[]);
    let a = m.path("a");
    let seen = ino(&a);
    let cases: [(&str, i32, i32); 3] = [
        (
            "replace a missing name",
            set(&a, "user.nope", libc::XATTR_REPLACE),
            libc::ENODATA,
        ),
        (
            "create an existing name",
            set(&a, "user.origin", libc::XATTR_CREATE),
            libc::EEXIST,
        ),
        (
            "remove a missing name",
            remove(&a, "user.nope"),
            libc::ENODATA,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
        assert_eq!(
            ino(&g.join("a")),
            ino(&obj),
            "{what}: the failed change broke the link"
        );
    }
    assert_eq!(ino(&a), seen);
    // A change that works still breaks it, and the guest's number stays.
    assert_eq!(set(&a, "user.origin", libc::XATTR_REPLACE), 0);
    assert_ne!(ino(&g.join("a")), ino(&obj));
    assert_eq!(ino(&a), seen);
    assert_eq!(
        xattrs(&obj)
            .iter()
            .find(|(n, _)| n == "user.origin")
            .unwrap()
            .1,
        b"package"
    );
    drop(m);
}
