//! A JSON-lines manifest (`unifs restore` reads it): never a panic, and
//! what is read is read again the same once written.
#![no_main]
use libfuzzer_sys::fuzz_target;
use unifs::backup::{manifest, mtree};

fuzz_target!(|data: &[u8]| {
    let Ok((header, entries)) = manifest::read_jsonl_from(data) else {
        return;
    };
    let mut out = Vec::new();
    manifest::write_jsonl(&mut out, &header, &entries).unwrap();
    let again = manifest::read_jsonl_from(&out[..]).expect("a written manifest reads");
    assert_eq!(again, (header.clone(), entries.clone()));
    // Each entry one line of mtree (two for the header), whatever its names
    // (mtree is written of walks only: their types and times are unifs').
    let kinds = ["file", "dir", "symlink", "char", "block", "fifo", "socket"];
    let walked: Vec<_> = entries
        .iter()
        .filter(|e| kinds.contains(&e.kind.as_str()) && manifest::parse_time(&e.mtime).is_some())
        .cloned()
        .collect();
    let mut text = Vec::new();
    mtree::write(&mut text, &header, &walked).unwrap();
    let lines = text.iter().filter(|b| **b == b'\n').count();
    assert_eq!(lines, walked.len() + 2);
    for e in &entries {
        let _ = manifest::parse_time(&e.mtime);
        let _ = e.object_id();
        let _ = (e.rel_path(), e.target_path(), e.link_path());
    }
});
