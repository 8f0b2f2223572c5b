//! Review s32 (hostile names in what unifs prints). Names a guest chose
//! were escaped for control characters only: a bidi override (U+202E) or
//! a line separator reached the operator's terminal as it was, and the
//! escapes were ambiguous (a literal backslash was not escaped, so the
//! file `e\x1b` and the file `e<ESC>` were shown alike, and so were the
//! character U+009B and the byte 0x9b). JSON output had DEL, C1 controls
//! and bidi overrides raw: valid JSON, but the C1 CSI drives a terminal
//! that `unifs manifest` prints to.

use crate::common::{require_root, unifs_bin};
use crate::guest::harness::run_bounded;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Names that passed through raw, and pairs that were shown alike.
const NAMES: [&[u8]; 7] = [
    "bidi\u{202e}txt.exe".as_bytes(),
    "sep\u{2028}x".as_bytes(),
    "zw\u{200b}x".as_bytes(),
    "c\u{9b}".as_bytes(), // U+009B, the C1 CSI: bytes c2 9b
    b"c\x9b",             // the byte 0x9b, not UTF-8
    b"e\x1b",
    br"e\x1b", // a backslash, then `x1b`
];

fn run(store: &Path, args: &[&OsStr]) -> Output {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store).args(args);
    run_bounded(c, Duration::from_secs(60))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Characters that must not reach a terminal from a guest's name: C0 but
/// newline, DEL, C1, and those that reorder or hide text.
fn raw_hidden(out: &[u8]) -> Vec<char> {
    let t = text(out);
    t.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}')
        })
        .collect()
}

/// The second guest's directory: a guest names its store entry.
const G2: &str = "g2\u{202e}\u{9b}";

/// Guests g1 and G2 of the same files under [`NAMES`] (a content of
/// their own each), unified.
fn unified_guests(t: &Path) -> std::path::PathBuf {
    let store = t.join("store");
    for g in ["g1", G2] {
        std::fs::create_dir(t.join(g)).unwrap();
        for (i, name) in NAMES.iter().enumerate() {
            let p = t.join(g).join(OsStr::from_bytes(name));
            std::fs::write(&p, format!("content {i}\n")).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                .unwrap();
        }
    }
    let out = run(
        &store,
        &[
            "unify".as_ref(),
            t.join("g1").as_os_str(),
            t.join(G2).as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    store
}

/// `store verify` lists each guest path that links a damaged object: one
/// line each, none of them raw, no two alike.
#[test]
fn review_s32_verify_shows_every_name_escaped_and_apart() {
    if !require_root("review_s32_verify_shows_every_name_escaped_and_apart") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = unified_guests(tmp.path());
    for e in walkdir::WalkDir::new(store.join("objects")).min_depth(2) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let mut data = std::fs::read(e.path()).unwrap();
            data[0] ^= 1;
            std::fs::write(e.path(), data).unwrap();
        }
    }
    let out = run(&store, &["store".as_ref(), "verify".as_ref()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(raw_hidden(&out.stdout), [], "{}", text(&out.stdout));
    let g1 = format!("      {}/", tmp.path().join("g1").display());
    let mut shown: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&g1).map(String::from))
        .collect();
    shown.sort();
    shown.dedup();
    assert_eq!(shown.len(), NAMES.len(), "{}", text(&out.stdout));
    // As bash's $'…' reads them: the bytes of the name.
    for s in &shown {
        assert!(!s.contains('\''), "{s}");
        let mut c = Command::new("bash");
        c.arg("-c").arg(format!("printf %s $'{s}'"));
        let name = run_bounded(c, Duration::from_secs(30)).stdout;
        assert!(NAMES.contains(&&name[..]), "{s} reads as {name:?}");
    }
}

/// A manifest on stdout escapes them in JSON (`\u009b`), and still names
/// every path exactly: a restore rebuilds the same names.
#[test]
fn review_s32_json_escapes_what_a_terminal_would_act_on() {
    if !require_root("review_s32_json_escapes_what_a_terminal_would_act_on") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = unified_guests(t);
    let out = run(&store, &["manifest".as_ref(), t.join("g1").as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(raw_hidden(&out.stdout), [], "{}", text(&out.stdout));
    assert!(!out.stdout.contains(&0x7f));
    let manifest = t.join("m.jsonl");
    std::fs::write(&manifest, &out.stdout).unwrap();
    let empty = t.join("private");
    std::fs::create_dir(&empty).unwrap();
    let target = t.join("r");
    let out = run(
        &store,
        &[
            "restore".as_ref(),
            "--manifest".as_ref(),
            manifest.as_os_str(),
            "--from".as_ref(),
            empty.as_os_str(),
            target.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for (i, name) in NAMES.iter().enumerate() {
        let data = std::fs::read(target.join(OsStr::from_bytes(name))).unwrap();
        assert_eq!(data, format!("content {i}\n").as_bytes());
    }
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), NAMES.len());

    // Other --json output: the store's guest names.
    let out = run(
        &store,
        &["store".as_ref(), "stats".as_ref(), "--json".as_ref()],
    );
    assert_eq!(raw_hidden(&out.stdout), [], "{}", text(&out.stdout));
}

/// `guest stop` of a guest whose root a host process still uses warns,
/// naming that process by its comm, which is its own to choose
/// (`/proc/self/comm`, PR_SET_NAME): a newline there forged a line of the
/// log (tracing escapes ESC, not a newline).
#[test]
fn review_s32_a_busy_roots_users_are_named_escaped() {
    use crate::guest::harness::{can_run, ok, KillOnDrop};
    if !can_run("review_s32_a_busy_roots_users_are_named_escaped") {
        return;
    }
    let g = crate::guest::named::Guest::new("s32busy", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let root = g.run_dir.join(&g.name).join("root");
    let mut holder = Command::new("python3");
    holder
        .arg("-c")
        .arg(
            "import os, sys, time\n\
             open('/proc/self/comm', 'w').write('x\\nFORGED: y')\n\
             os.chdir(sys.argv[1])\n\
             print('in', flush=True)\n\
             time.sleep(60)",
        )
        .arg(&root)
        .stdout(std::process::Stdio::piped());
    let mut child = holder.spawn().unwrap();
    let mut said = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut said).unwrap();
    let _holder = KillOnDrop(Some(child));
    assert_eq!(said, "in\n");

    let out = g.unifs(&["stop", "--timeout", "1", &g.name]);
    let err = text(&out.stderr);
    assert!(err.contains("is busy (used by host processes"), "{err}");
    assert!(err.contains("(x\\nFORGED: y)"), "{err}");
    assert!(
        !err.lines().any(|l| l.starts_with("FORGED")),
        "a forged line: {err}"
    );
}
