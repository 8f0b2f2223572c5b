//! Session 30's review of real applications on a guest's files: sqlite3
//! (WAL, two writers, VACUUM), git (gc, clone --local), rsync -aHAX,
//! tar, make and gcc, python's venv and byte-compiling, and the system
//! calls such programs use, run through a mount of one of two guests
//! unified against one store and compared with the same steps on a plain
//! directory. Each test here keeps a defect that review met.

use crate::common::require_root;
use crate::fs::harness::{look, World};
use std::fs::{self, File};
use std::os::fd::AsRawFd;

/// `poll` of a file as a program's event loop or `bash`'s `read -t 0 <
/// FILE` makes it: what the kernel answers for a file of a local
/// filesystem, readable and writable at once.
fn poll_now(f: &File) -> i16 {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    assert_eq!(n, 1, "poll: {}", std::io::Error::last_os_error());
    p.revents
}

/// A guest's `read -t 0 x < FILE` (bash asks with select whether input
/// waits) left `WARN [Not Implemented] poll(ino: …)` in the mount's log,
/// six lines of debug output, and `guest status` then told the operator
/// that the guest's overlay daemon had logged warnings. The kernel asks the
/// daemon once per mount whether it polls files itself; a filesystem that
/// does not (no file of the mount ever blocks) answers ENOSYS, and the
/// kernel answers every poll as for a local file from then on.
#[test]
fn polling_a_file_leaves_no_warning_in_the_mount_log() {
    if !require_root("polling_a_file_leaves_no_warning_in_the_mount_log") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(b"shared\n", &[g.join("shared"), other.join("shared")]);
    fs::write(g.join("own"), b"own\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    for name in ["shared", "own"] {
        let local = File::open(other.join("shared")).unwrap();
        let through = File::open(m.path(name)).unwrap();
        assert_eq!(poll_now(&through), poll_now(&local), "{name}");
    }
    let log = fs::read_to_string(&m.log).unwrap();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "polling a file left a warning in the mount's log:\n{log}"
    );
}

/// A connection through the mount, as an application opens its database.
fn connect(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    c
}

/// What review checked and found right, kept as a guard: a SQLite
/// database that two guests share (so its file is a store object) used
/// through one guest's mount in WAL mode, with two writers at once (the
/// first open breaks the link; both must then be on the one private copy,
/// and the `-shm` file, mapped by both, must be one), then checkpointed and
/// vacuumed (a rename of a new file over the database). It must come out
/// whole, with every row, and the other guest's copy and the store object
/// must not change.
#[test]
fn a_shared_sqlite_database_takes_two_wal_writers_and_stays_private() {
    if !require_root("a_shared_sqlite_database_takes_two_wal_writers_and_stays_private") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let db = g.join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2000)
         INSERT INTO t(v) SELECT printf('%0100d', i) FROM n;",
    )
    .unwrap();
    drop(c);
    let object = w.share(&[db, other.join("app.db")]);
    let before = (look(&other.join("app.db")), fs::read(&object).unwrap());
    let m = w.mount(&g, "m", &[]);
    let path = m.path("app.db");
    let mode: String = connect(&path)
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let c = connect(&path);
                for k in 0..200 {
                    c.execute("INSERT INTO t(v) VALUES (?1)", [format!("{i}-{k}")])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let c = connect(&path);
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); DELETE FROM t WHERE id % 2 = 0; VACUUM;")
        .unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let rows: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!((check.as_str(), rows), ("ok", 1200));
    drop(c);
    assert_eq!(
        (look(&other.join("app.db")), fs::read(&object).unwrap()),
        before,
        "the other guest's database or the store object changed"
    );
    let log = fs::read_to_string(&m.log).unwrap();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}
