//! Review s24: a file read and closed, then at once opened for writing (a
//! break), got a new inode number through the mount when the close's
//! release came late (a busy machine: the kernel sends it after close()
//! returns). The daemon took the read's handle for one still open, the
//! documented case of a break under an open fd, and split the path off
//! it. Invariant 5: a file keeps its number across a break.

use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::io::Write;

/// Each release reaches the daemon 50 ms late (a test hook), well within
/// the daemon's wait for releases on their way. A shared file is read and
/// closed, then opened for writing (the break) at once: its number holds,
/// the write lands, and the other guest's file is untouched.
#[test]
fn a_file_closed_just_before_its_break_keeps_its_number() {
    if !require_root("review_s24_a_file_closed_just_before_its_break_keeps_its_number") {
        return;
    }
    let w = World::new();
    let guest = w.dir("g");
    let other = w.dir("o");
    let names: Vec<String> = (0..4).map(|i| format!("f{i}")).collect();
    for n in &names {
        w.shared(
            format!("shared {n}\n").as_bytes(),
            &[guest.join(n), other.join(n)],
        );
    }
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_RELEASE_PAUSE_MS=50"];
    let m = Mount::start_under(&env, &w.store, &guest, &w.dir("m"), &[], log);
    for n in &names {
        let p = m.path(n);
        let before = ino(&p);
        assert_eq!(fs::read(&p).unwrap(), format!("shared {n}\n").as_bytes());
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"mine\n").unwrap();
        drop(f);
        assert_eq!(
            ino(&p),
            before,
            "{n}: a break right after a close gave the file a new number"
        );
        assert_eq!(
            fs::read(&p).unwrap(),
            format!("shared {n}\nmine\n").as_bytes()
        );
        assert_eq!(
            fs::read(other.join(n)).unwrap(),
            format!("shared {n}\n").as_bytes()
        );
    }
    drop(m);
}
