//! Review (session 45) of "timeedge"'s times whose nanoseconds pass a
//! second (a damaged ext4 inode: 30 bits of them decoded). Such a time is
//! written, copied and restored as the instant it stands for, and no
//! utimensat can give a file the raw pair: an object id over the raw pair
//! was an id no copy of the object could have (a copy into the store, a
//! restored file) and that scripts/object-id.py, which reads the instant
//! (`divmod(st_mtime_ns, 10**9)`), did not compute.

use crate::common::require_root;
use crate::fs::review_s18_fuse::times_of;
use crate::review_s45_timeedge::{instant, Mounted, PAST_A_SECOND};
use crate::tree::{assert_verify_clean, init_store, stderr, unify_json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// g1/NAME and g2/NAME, the same content, with each `PAST_A_SECOND` raw
/// mtime; NAME is the raw word's label.
fn crafted() -> Mounted {
    let mut files = Vec::new();
    for (name, extra) in PAST_A_SECOND {
        let content = format!("the content of {name}, past a second\n").into_bytes();
        files.push((format!("g1/{name}"), content.clone(), extra));
        files.push((format!("g2/{name}"), content, extra));
    }
    Mounted::ext4_crafted(&[], &files)
}

/// The store's object files, each with the id its path names (copy 0).
fn object_files(store: &Path) -> Vec<(String, PathBuf)> {
    walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let p = e.into_path();
            let dir = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
            (
                format!("{dir}{}", p.file_name().unwrap().to_str().unwrap()),
                p,
            )
        })
        .collect()
}

/// A file open for writing is copied into the store; the copy's mtime is
/// the instant (no utimensat writes the raw nanoseconds), and the object's
/// id must be the copy's: `store verify` passes. Before, the id hashed the
/// raw pair, and verify reported each copied object as changed.
#[test]
fn s45_an_object_copied_from_a_file_whose_mtime_nanoseconds_pass_a_second_verifies() {
    let test = "s45_an_object_copied_from_a_file_whose_mtime_nanoseconds_pass_a_second_verifies";
    if !require_root(test) {
        return;
    }
    let img = crafted();
    let root = img.root();
    let store = root.join("store");
    init_store(&store);
    let (g1, g2) = (root.join("g1"), root.join("g2"));
    // Open for writing in both guests: no lease, each object is a copy.
    let writers: Vec<fs::File> = PAST_A_SECOND
        .iter()
        .flat_map(|(name, _)| [g1.join(name), g2.join(name)])
        .map(|p| fs::OpenOptions::new().append(true).open(p).unwrap())
        .collect();
    let s = unify_json(&store, &[&g1, &g2]);
    assert_eq!(s["objects_copied"], 3, "{s}");
    drop(writers);
    let objects = object_files(&store);
    assert_eq!(objects.len(), 3, "{objects:?}");
    for (name, extra) in PAST_A_SECOND {
        // The copy has the instant the guest's file stands for.
        let content = fs::read(g1.join(name)).unwrap();
        let (_, object) = objects
            .iter()
            .find(|(_, p)| fs::read(p).unwrap() == content)
            .unwrap();
        assert_eq!(times_of(object)[1], instant(extra), "{name}'s object");
    }
    assert_verify_clean(&store);
}

/// scripts/object-id.py (docs/store-format.md's independent check) gives
/// each object file the id it is named by, for an object that is a guest's
/// inode with such a raw time too. Before, unifs hashed the raw pair and
/// the script the instant: another id for every one.
#[test]
fn s45_object_id_py_agrees_on_an_object_whose_mtime_nanoseconds_pass_a_second() {
    let test = "s45_object_id_py_agrees_on_an_object_whose_mtime_nanoseconds_pass_a_second";
    if !require_root(test) || !crate::backup::have("python3", test) {
        return;
    }
    let img = crafted();
    let root = img.root();
    let store = root.join("store");
    init_store(&store);
    let s = unify_json(&store, &[&root.join("g1"), &root.join("g2")]);
    assert_eq!(s["objects_added"], 3, "{s}");
    assert_eq!(s["objects_copied"], 0, "{s}");
    let objects = object_files(&store);
    assert_eq!(objects.len(), 3, "{objects:?}");
    for (_, p) in &objects {
        // Linked: the object is the guest's inode, its raw time kept.
        let raw = times_of(p)[1];
        assert!(raw.1 >= 1_000_000_000, "{} has {raw:?}", p.display());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/object-id.py");
    let out = Command::new("python3")
        .arg(script)
        .args(objects.iter().map(|(_, p)| p))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for (id, p) in &objects {
        let line = format!("{id}  {}", p.display());
        assert!(
            text.lines().any(|l| l == line),
            "{line}\nobject-id.py:\n{text}"
        );
    }
    assert_verify_clean(&store);
}
