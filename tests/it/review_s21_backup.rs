//! Review s21: a manifest taken while unify makes a file an object, and
//! unify then takes that object out of the store again.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The object file of `store`, if one is there.
fn object_file(store: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file())
        .map(|e| e.into_path())
}

/// Guests `x` and `y` of a new store in `lab`, each with the same file F,
/// and `unify x y` under strace (each `linkat` returning 3 s late, after the
/// link is made), once in the window: one F linked into the store as its
/// object, unify's lease on it held.
struct Window {
    store: PathBuf,
    x: PathBuf,
    y: PathBuf,
    content: Vec<u8>,
    /// strace, unify its child.
    unify: std::process::Child,
    object: PathBuf,
}

fn unify_in_window(lab: &Path, seed: u64) -> Window {
    let store = lab.join("store");
    init_store(&store);
    let (x, y) = (lab.join("x"), lab.join("y"));
    let content = bytes(seed, 8000);
    for g in [&x, &y] {
        file_at(g, "F", &content, 0o644, 1_000_000);
    }
    let mut unify = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", "inject=linkat:delay_exit=3000000"])
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--no-progress"])
        .arg(&x)
        .arg(&y)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let object = loop {
        if let Some(o) = object_file(&store) {
            break o;
        }
        if Instant::now() > deadline || unify.try_wait().unwrap().is_some() {
            let _ = unify.kill();
            let out = unify.wait_with_output().unwrap();
            panic!("no object seen in the store: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Window {
        store,
        x,
        y,
        content,
        unify,
        object,
    }
}

/// A manifest taken while unify had just linked a guest's file into the
/// store as an object (its lease still held) named that object, and left
/// the file out of the private list. The guest then wrote the file, unify
/// took the object out of the store again (`undo_ingest`), and the backup
/// docs/backup.md describes (private files, then the objects) failed to
/// restore: "object … is not in the store", the file's content at manifest
/// time nowhere. A manifest now names only objects the catalog records,
/// which unify commits once an object can no longer be taken back; the
/// file is private, and the backup restores it. strace holds unify in the
/// window: each `linkat` returns 3 s late, after the link is made.
#[test]
fn review_s21_a_manifest_taken_before_unify_undoes_an_object_restores() {
    let test = "review_s21_a_manifest_taken_before_unify_undoes_an_object_restores";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    // The window: the object linked, its lease held.
    let Window {
        store,
        x,
        y,
        content,
        unify,
        object,
    } = unify_in_window(lab, 21);
    // Which guest's file became the object; the other is left to unify.
    let ino = fs::metadata(&object).unwrap().ino();
    let (first, other) = if ino == fs::metadata(x.join("F")).unwrap().ino() {
        (&x, &y)
    } else {
        (&y, &x)
    };
    assert_eq!(fs::metadata(first.join("F")).unwrap().ino(), ino);
    // The backup of `first`: manifest and private files, in the window.
    let m = lab.join("first.jsonl");
    let plist = lab.join("first.private-list");
    let o = unifs(
        &store,
        &[&"manifest", first, &"-o", &m, &"--private-list", &plist],
    );
    let from = lab.join("from");
    fs::create_dir(&from).unwrap();
    let copied = Command::new("sh")
        .arg("-c")
        .arg("tar --null -C \"$1\" -T \"$2\" -cf - | tar -C \"$3\" -xf -")
        .arg("sh")
        .arg(first)
        .arg(&plist)
        .arg(&from)
        .status()
        .unwrap();
    let still = object.exists();
    // The other file changes before unify gets to it (so it does not
    // become the object in its turn), and the guest opens `first`'s file
    // for writing: the open waits for unify's lease, which unify, seeing
    // the writer, gives up after taking the object back out.
    fs::OpenOptions::new()
        .append(true)
        .open(other.join("F"))
        .unwrap()
        .write_all(b"other\n")
        .unwrap();
    let path = first.join("F");
    let writer = std::thread::spawn(move || {
        let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(b"more\n").unwrap();
    });
    let out = unify.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = stderr(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(copied.success());
    assert!(
        still,
        "the window closed before the manifest and copy ended"
    );
    assert!(
        err.contains(&format!("{}: open for writing", first.join("F").display())),
        "unify did not take the object back: {err}"
    );
    assert!(object_file(&store).is_none(), "{err}");
    // The backup restores, with F as it was when the manifest was taken.
    let target = lab.join("restored");
    let r = restore(&store, &m, &from, &target);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(fs::read(target.join("F")).unwrap(), content);
}

/// A unify killed with an object linked but its catalog row never
/// committed: the manifest describes the guest's file as private (it names
/// no object the catalog lacks), the private list has it, and the backup
/// restores it.
#[test]
fn review_s21_a_file_of_an_object_a_killed_unify_left_unrecorded_is_private() {
    let test = "review_s21_a_file_of_an_object_a_killed_unify_left_unrecorded_is_private";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let Window {
        store,
        x,
        y,
        content,
        unify: mut strace,
        object,
    } = unify_in_window(lab, 22);
    // Kill unify itself (strace's child) in the window: the object stays
    // linked, its row uncommitted.
    let children = format!("/proc/{0}/task/{0}/children", strace.id());
    let unify: i32 = fs::read_to_string(children)
        .unwrap()
        .split_whitespace()
        .next()
        .expect("unify's pid")
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(unify),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = strace.wait();
    let ino = fs::metadata(&object).unwrap().ino();
    let first = [&x, &y]
        .into_iter()
        .find(|g| fs::metadata(g.join("F")).unwrap().ino() == ino)
        .expect("a guest file that is the object");
    let m = lab.join("first.jsonl");
    let plist = lab.join("first.private-list");
    let o = unifs(
        &store,
        &[&"manifest", first, &"-o", &m, &"--private-list", &plist],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(&m).unwrap();
    let f = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["path"] == "F")
        .unwrap();
    assert!(f.get("object").is_none(), "{f}");
    assert_eq!(f["blake3"], blake3::hash(&content).to_hex().as_str(), "{f}");
    assert_eq!(fs::read(&plist).unwrap(), b"F\0");
    let target = lab.join("restored");
    let r = restore(&store, &m, first, &target);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(fs::read(target.join("F")).unwrap(), content);
}
