//! /proc/self/mountinfo (mount points a guest with CAP_SYS_ADMIN names) and
//! the `unifs:GUEST` source: never a panic; a point escaped as the kernel
//! escapes it reads back as it was; a guest path named by its source reads
//! back as it was.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use unifs::fs::mountinfo;

/// As the kernel's show_mountinfo (seq_path, mangle): space, tab, newline
/// and backslash as `\ooo`.
fn kernel_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b" \t\n\\".contains(&b) {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = mountinfo::parse(data);
    for m in mountinfo::parse(data) {
        let _ = m.unifs_guest();
        let _ = mountinfo::fuse_connection_dir(&m.dev);
    }
    let mut line = b"30 22 0:40 / ".to_vec();
    line.extend(kernel_escape(data));
    line.extend_from_slice(b" rw shared:1 - fuse ");
    line.extend(kernel_escape(data));
    line.extend_from_slice(b" rw\n");
    let m = mountinfo::parse(&line);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].point.as_os_str().as_bytes(), data);
    assert_eq!(m[0].source.as_bytes(), data);
    if !data.contains(&0) {
        let guest = Path::new(OsStr::from_bytes(data));
        let source = mountinfo::unifs_source(guest);
        let back = mountinfo::unifs_source_guest(OsStr::new(&source));
        assert_eq!(back.as_deref(), Some(guest), "{source}");
    }
});
