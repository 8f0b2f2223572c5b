//! Review s37 (smalls): leftovers of session 37.
//!
//! - `manifest -o FILE` renamed its file into place without syncing the
//!   directory: a power cut right after it left no FILE (or the old one).

use crate::review_s37_powercut::{runnable, unified, Disk, KINDS};

/// A manifest written with `-o`, then the power cut (nothing committed the
/// journal since): the file is there after it, whole.
#[test]
fn s37_a_manifest_written_with_o_is_on_disk_when_it_returns() {
    let test = "s37_a_manifest_written_with_o_is_on_disk_when_it_returns";
    if !runnable(test) {
        return;
    }
    for kind in KINDS {
        let disk = Disk::new(kind);
        let (store, a, _b) = unified(&disk, false);
        let m = disk.root().join("a.manifest");
        crate::backup::manifest(&store, &a, &m);
        disk.cut(false);
        disk.power_on();
        let text = std::fs::read_to_string(&m)
            .unwrap_or_else(|e| panic!("{kind:?}: {}: {e}", m.display()));
        assert!(text.ends_with('\n'), "{kind:?}: cut short: {text:?}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{kind:?}: {e}: {l}")))
            .collect();
        let entries = lines[0]["entries"].as_u64().expect("a header with entries");
        assert_eq!(entries as usize, lines.len() - 1, "{kind:?}: {text}");
    }
}
