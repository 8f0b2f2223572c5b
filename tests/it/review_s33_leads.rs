//! Session 33's review of doubts the last review left open: SQLite's
//! locks dropped by a plain close of the catalog file.

use crate::common::require_root;
use crate::review_s11_fault::two_guests;
use crate::review_s18_store::root_page;
use crate::tree::{bytes, stderr, unifs, unify_json};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The POSIX read locks this process holds on `file`'s inode, as
/// /proc/locks lists them (`1: POSIX  ADVISORY  READ PID MAJ:MIN:INO START END`).
fn my_read_locks(file: &Path) -> usize {
    let ino = std::fs::metadata(file).unwrap().ino().to_string();
    let me = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| {
            f.len() >= 6
                && f[1] == "POSIX"
                && f[3] == "READ"
                && f[4] == me
                && f[5].rsplit(':').next() == Some(ino.as_str())
        })
        .count()
}

/// Writes `data` over page `page` (4 KiB pages) of `file` from another
/// process: a descriptor of our own, closed, would drop the locks this
/// test watches.
fn write_page_elsewhere(file: &Path, page: u64, data: &[u8]) {
    use std::io::Write;
    let mut dd = Command::new("dd")
        .arg(format!("of={}", file.display()))
        .args(["bs=4096", "conv=notrunc,fsync", "status=none"])
        .arg(format!("seek={}", page - 1))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    dd.stdin.take().unwrap().write_all(data).unwrap();
    assert!(dd.wait().unwrap().success(), "dd over {}", file.display());
}

/// When a catalog read failed, unifs re-read catalog.db and its log
/// through a plain file to tell a failing disk from damage, and closed it
/// while its SQLite connection was still open. POSIX locks are the
/// process's: that close dropped SQLite's SHARED lock on catalog.db (found
/// by strace of `store verify` on a damaged page: fcntl F_RDLCK on SQLite's
/// descriptor, then open, pread to the end and close of another). A writer
/// closing its connection then took itself for the last user of the
/// catalog, checkpointed and deleted catalog.db-wal and catalog.db-shm
/// under the connection still open (SQLite's "How To Corrupt An SQLite
/// Database File", 2.2), while unifs went on reading through it (the full
/// integrity check that follows, unify's walk beside its failed check).
/// The re-read now goes through a descriptor kept open.
#[test]
fn a_failed_catalog_read_keeps_sqlites_lock_on_the_file() {
    if !require_root("a_failed_catalog_read_keeps_sqlites_lock_on_the_file") {
        return;
    }
    let (_dir, store, a, b) = two_guests();
    unify_json(&store, &[&a, &b]);
    let catalog = store.join("catalog.db");
    // Bytes over the objects table's page, before the open (which reads
    // only the schema): the check below reads the page and fails.
    let page = root_page(&store, "objects");
    let good = std::fs::read(&catalog).unwrap()[(page as usize - 1) * 4096..][..4096].to_vec();
    write_page_elsewhere(&catalog, page, &bytes(page + 7, 4096));
    let cat = unifs::catalog::Catalog::open_readonly(&catalog).unwrap();
    assert_eq!(
        my_read_locks(&catalog),
        1,
        "SQLite's SHARED lock, once open"
    );
    let err = cat.check_integrity(false).unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(
        my_read_locks(&catalog),
        1,
        "the connection is open: SQLite's SHARED lock must still be held after the error"
    );

    // The page put back, a writer comes and goes: it must leave the log
    // of the connection still open here in place (emptied into catalog.db
    // since s35, but there).
    write_page_elsewhere(&catalog, page, &good);
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let wal = store.join("catalog.db-wal");
    assert!(
        std::fs::symlink_metadata(&wal).is_ok(),
        "a writer deleted {} under a connection still open",
        wal.display()
    );
    drop(cat);
}

/// `path` given exactly by a JSON object's `key_hex` (hex of its bytes).
fn hex_is(obj: &serde_json::Value, key: &str, path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    obj[format!("{key}_hex")]
        .as_str()
        .and_then(unifs::backup::manifest::from_hex)
        .is_some_and(|b| b == path.as_os_str().as_bytes())
}

/// The path a JSON object's `key_hex` gives.
fn from_hex_field(obj: &serde_json::Value, key: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let hex = obj[format!("{key}_hex")].as_str();
    let bytes = hex.and_then(unifs::backup::manifest::from_hex);
    std::ffi::OsString::from_vec(bytes.unwrap_or_else(|| panic!("no {key}_hex in {obj}"))).into()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            stderr(out),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `--json` output gave a path whose bytes are not UTF-8 as text with
/// U+FFFD for them: the guests `g\xff1` and `g\xfe2` (and the files
/// `c\xff` and `c\xfe`) came out alike, and a tool reading the JSON could
/// not get a path back (manifests alone had `*_hex` fields). Every path
/// field now has, where not UTF-8, a `FIELD_hex` beside it (a list of
/// paths a `FIELD_hex` list, null for the UTF-8 ones): unify's problems,
/// stats' store and guests, verify's problems, gc's lists, restore's
/// times not kept.
#[test]
fn json_output_gives_paths_that_are_not_utf8_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    if !require_root("json_output_gives_paths_that_are_not_utf8_exactly") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join(OsStr::from_bytes(b"st\xffore"));
    let guests = [b"g\xff1".as_slice(), b"g\xfe2"].map(|g| t.join(OsStr::from_bytes(g)));
    let names = [b"c\xff".as_slice(), b"c\xfe", b"plain"];
    for g in &guests {
        std::fs::create_dir_all(g.join("usr")).unwrap();
        for name in names {
            let data = format!("{name:?}\n");
            let p = g.join("usr").join(OsStr::from_bytes(name));
            std::fs::write(&p, data).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
                .unwrap();
        }
    }
    // A link out of the guests: unify leaves it, and says so (a problem).
    let plain = guests[0].join("usr/plain");
    std::fs::hard_link(&plain, t.join("outside")).unwrap();
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"unify", &"--json"];
    args.extend(guests.iter().map(|g| g as &dyn AsRef<OsStr>));
    let out = unifs(&store, &args);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    let summary = json_of(&out);
    let problems = summary["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{summary}");
    assert!(hex_is(&problems[0], "path", &plain), "{summary}");

    let stats = json_of(&unifs(&store, &[&"store", &"stats", &"--json"]));
    assert!(hex_is(&stats, "store", &store), "{stats}");
    let mut listed: Vec<_> = stats["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| from_hex_field(g, "path"))
        .collect();
    listed.sort();
    let mut want = guests.to_vec();
    want.sort();
    assert_eq!(listed, want, "{stats}");

    // Both guests' `c\xff` gone, their object is unused: gc lists it.
    for g in &guests {
        std::fs::remove_file(g.join("usr").join(OsStr::from_bytes(b"c\xff"))).unwrap();
    }
    let gc = json_of(&unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]));
    let paths = gc["paths_hex"].as_array().unwrap_or_else(|| panic!("{gc}"));
    assert_eq!(paths.len(), 1, "{gc}");
    let object = from_hex_field(&serde_json::json!({ "p_hex": paths[0] }), "p");
    assert!(
        object.starts_with(store.join("objects")) && object.is_file(),
        "{gc}"
    );

    // Every object damaged: verify names each object file exactly.
    std::fs::write(&object, "changed\n").unwrap();
    let out = unifs(&store, &[&"store", &"verify", &"--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let verify = json_of(&out);
    let bad: Vec<_> = verify["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| from_hex_field(p, "path"))
        .collect();
    assert_eq!(bad, [object], "{verify}");

    // Restore's report of a time its target did not keep.
    let kept = unifs::backup::restore::TimeNotKept {
        path: Path::new(OsStr::from_bytes(b"usr/c\xff")).into(),
        which: "mtime",
        wanted: "1.5".into(),
        got: "1.0".into(),
    };
    let kept = serde_json::to_value(&kept).unwrap();
    assert!(
        hex_is(&kept, "path", Path::new(OsStr::from_bytes(b"usr/c\xff"))),
        "{kept}"
    );
}
