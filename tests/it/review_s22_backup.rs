//! Review s22: what `manifest` says of marked files that are no object of
//! the store.

use crate::common::require_root;
use crate::tree::*;
use std::collections::BTreeMap;
use std::fs;

/// A `cp -a` copy of a unified guest (as root: the store's marker and the
/// links among the copies kept) has marked inodes that are no object of
/// the store. Its mount shows each of their paths as a file of its own (a
/// write to one leaves the other), but `manifest` described the later
/// path as a hardlink of the first, and `restore` made a real pair of
/// them: in the restored guest a write to one path changed the other.
#[test]
fn review_s22_marked_copies_that_are_no_object_restore_as_separate_files() {
    if !require_root("review_s22_marked_copies_that_are_no_object_restore_as_separate_files") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let at = |p: &str| lab.path().join(p);
    let (store, a, c, m, r) = (at("store"), at("a"), at("c"), at("c.jsonl"), at("r"));
    for p in ["p1", "p2"] {
        file_at(
            &a,
            &format!("doc/{p}/copyright"),
            b"GPL text\n",
            0o644,
            1_700_000_000,
        );
    }
    let s = unify_json(&store, &[&a]);
    assert_eq!(s["objects_added"], 1, "{s}");
    let a2 = a.join("doc/p2/copyright");
    assert_eq!(ino(&a.join("doc/p1/copyright")), ino(&a2), "{s}");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&c)
        .status()
        .unwrap();
    assert!(copied.success());
    let (c1, c2) = (c.join("doc/p1/copyright"), c.join("doc/p2/copyright"));
    assert_eq!(ino(&c1), ino(&c2), "cp -a keeps the pair");
    assert!(unifs::store::read_marker_path(&c1).unwrap().is_some());

    let o = unifs(&store, &[&"manifest", &c, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(&m).unwrap();
    let by_path: BTreeMap<String, serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| (e["path"].as_str().unwrap().to_string(), e))
        .collect();
    for p in ["doc/p1/copyright", "doc/p2/copyright"] {
        let e = &by_path[p];
        assert!(e.get("link").is_none(), "{p}: {e}");
        assert!(e.get("object").is_none(), "{p}: {e}");
        assert_eq!(e["nlink"], 1, "{p}: {e}");
        assert_eq!(
            e["blake3"].as_str(),
            Some(blake3::hash(b"GPL text\n").to_hex().as_str()),
            "{p}: {e}"
        );
    }

    let o = restore(&store, &m, &c, &r);
    assert!(o.status.success(), "{}", stderr(&o));
    let (r1, r2) = (r.join("doc/p1/copyright"), r.join("doc/p2/copyright"));
    assert_ne!(ino(&r1), ino(&r2), "restore made a hardlink pair");
    fs::write(&r1, b"changed\n").unwrap();
    assert_eq!(fs::read(&r2).unwrap(), b"GPL text\n");
    assert_eq!(fs::read(&a2).unwrap(), b"GPL text\n");
}
