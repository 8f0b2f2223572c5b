//! Review s41: parsers of input a guest or a damaged file controls, with
//! the inputs fuzzing (fuzz/) and reading them turned up.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::Path;

/// One manifest line of a `kind` at `path` (JSON, quoted as it must be),
/// `rest` its other fields; times given in `rest` replace the plain ones.
fn line(path: &str, kind: &str, rest: &str) -> String {
    let times = match rest.contains("time") {
        true => String::new(),
        false => r#","mtime":"1.000000000","atime":"1.000000000""#.into(),
    };
    format!(r#"{{"path":{path},"type":"{kind}","mode":420,"uid":0,"gid":0{times}{rest}}}"#)
}

/// Entries no system call can take as they are (a NUL in a name, a target,
/// an xattr name), or that restore read as something else than they say
/// (a `path_hex` not hex read as an empty path, `+f` read as the hex 0f, a
/// time of 1 nanosecond digit read as 5 ns, nanoseconds that are
/// utimensat's UTIME_NOW): each refused before anything is written, the
/// problem named. Before, the first two failed halfway through the build,
/// and the last three were restored as something else.
#[test]
fn s41_restore_refuses_entries_it_would_misread_before_writing() {
    if !require_root("s41_restore_refuses_entries_it_would_misread") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let g = lab.join("g");
    file(&g, "f", b"x", 0o644);
    unify_json(&store, &[&g]);
    let root = line(r#"".""#, "dir", "");
    let cases = [
        (line(r#""a\u0000b""#, "fifo", ""), "path holds a NUL byte"),
        (
            line(r#""l""#, "symlink", r#","target":"x\u0000y""#),
            "target holds a NUL byte",
        ),
        (
            line(r#"null"#, "fifo", r#","path_hex":"zz""#),
            "path_hex is not hex",
        ),
        (
            line(r#""d""#, "dir", r#","xattrs":{"user.a\u0000b":"00"}"#),
            "bad xattr",
        ),
        (
            line(r#""d""#, "dir", r#","xattrs":{"user.a":"+f"}"#),
            "bad xattr",
        ),
        (
            line(r#""p""#, "fifo", r#","mtime":"1.5","atime":"1.500000000""#),
            "bad mtime",
        ),
        (
            line(
                r#""p""#,
                "fifo",
                r#","mtime":"1.000000000","atime":"0.1073741823""#,
            ),
            "bad atime",
        ),
    ];
    let head = r#"{"unifs_manifest":1,"guest":"x","root":"/x","created":1}"#;
    for (i, (body, says)) in cases.iter().enumerate() {
        let m = lab.join(format!("bad{i}.jsonl"));
        fs::write(&m, format!("{head}\n{root}\n{body}\n")).unwrap();
        let target = lab.join(format!("t{i}"));
        let out = restore(&store, &m, lab, &target);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} restored: {body}");
        assert!(
            err.contains("damaged") && err.contains("nothing was written") && err.contains(says),
            "case {i} ({says}): {err}"
        );
        assert!(!target.exists(), "case {i}");
        let mut staging = target.into_os_string();
        staging.push(".unifs-restore");
        assert!(!Path::new(&staging).exists(), "case {i}");
    }
}
