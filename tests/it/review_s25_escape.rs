//! Review s25 (names): a manifest that exits 0 with paths of 4076..4095
//! bytes could not be restored (restore built by full path, its staging
//! tree's in front); the mtree header wrote the guest's path raw (a newline
//! injected an entry); text outputs printed paths and names raw; the
//! `.unifs-tmp-*` warning's shell command named another file; `store forget`
//! and `manifest` refused a guest name in the form `store stats` shows it.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::wait_until;
use crate::guest::harness::run_bounded;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `unifs --store STORE ARGS…`, killed after a minute.
fn run(store: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store);
    for a in args {
        c.arg(a.as_ref());
    }
    c.env_remove("UNIFS_TEST_LINK_MAX");
    run_bounded(c, Duration::from_secs(60))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(b.to_vec()))
}

/// Output a name cannot have forged a line of, nor reach the terminal
/// through: no ESC, no line starting with `FORGED`.
fn assert_clean(what: &str, out: &[u8]) {
    let t = text(out);
    assert!(!out.contains(&0x1b), "{what}: an escape sequence: {t:?}");
    assert!(
        !t.lines().any(|l| l.starts_with("FORGED")),
        "{what}: a forged line: {t:?}"
    );
}

/// `names` nested in `root`, made and opened a level at a time from the
/// parent's fd (the whole path is too long for one call).
fn make_nested(root: &Path, names: &[Vec<u8>]) -> OwnedFd {
    let mut fd = unifs::sys::open_dir(root).unwrap();
    for n in names {
        let n = OsStr::from_bytes(n);
        match unifs::sys::mkdir_at(fd.as_fd(), n, 0o755) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            r => r.unwrap(),
        }
        fd = unifs::sys::open_at(fd.as_fd(), n, libc::O_DIRECTORY, 0).unwrap();
    }
    fd
}

fn write_at(dir: &OwnedFd, name: &[u8], data: &[u8]) {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let fd = unifs::sys::open_at(dir.as_fd(), OsStr::from_bytes(name), flags, 0o644).unwrap();
    let mut f = fs::File::from(fd);
    std::io::Write::write_all(&mut f, data).unwrap();
    let t = unifs::sys::Timestamp {
        sec: 1_700_000_000,
        nsec: 0,
    };
    unifs::sys::futimens(f.as_fd(), t, t).unwrap();
}

fn read_at(dir: &OwnedFd, name: &[u8]) -> Vec<u8> {
    let fd = unifs::sys::open_at(dir.as_fd(), OsStr::from_bytes(name), libc::O_RDONLY, 0).unwrap();
    let mut data = Vec::new();
    fs::File::from(fd).read_to_end(&mut data).unwrap();
    data
}

/// A manifest of paths of 4090 and 4095 bytes in the guest exits 0; its
/// restore was refused ("too long … nothing was written") into any target,
/// as the staging tree beside it (TARGET.unifs-restore) was in front of
/// every path. It is made relative to the staging tree and --from now.
#[test]
fn review_s25_a_manifest_of_paths_near_4096_bytes_is_restored_under_a_long_target() {
    if !require_root(
        "review_s25_a_manifest_of_paths_near_4096_bytes_is_restored_under_a_long_target",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    // 15 levels of 255-byte names: 3840 bytes with their slashes.
    let dirs: Vec<Vec<u8>> = (0..15)
        .map(|i| {
            let mut n = format!("d{i}").into_bytes();
            n.resize(255, b'x');
            n
        })
        .collect();
    let shared = vec![b'f'; 255]; // a path of 4095 bytes
    let private = vec![b'p'; 250]; // 4090 bytes
    for g in ["g1", "g2"] {
        fs::create_dir(t.join(g)).unwrap();
        let d = make_nested(&t.join(g), &dirs);
        write_at(&d, &shared, b"shared data\n");
    }
    write_at(
        &make_nested(&t.join("g1"), &dirs),
        &private,
        b"private data\n",
    );
    let out = run(&store, &[&"unify", &t.join("g1"), &t.join("g2")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (m, list) = (t.join("m.jsonl"), t.join("p.lst"));
    let out = run(
        &store,
        &[
            &"manifest",
            &t.join("g1"),
            &"-o",
            &m,
            &"--private-list",
            &list,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed = fs::read(&list).unwrap();
    assert!(
        listed.windows(250).any(|w| w == private),
        "{}",
        text(&listed)
    );

    // The private files, from a directory of a long name too.
    let from = t.join("p".repeat(200));
    fs::create_dir(&from).unwrap();
    write_at(&make_nested(&from, &dirs), &private, b"private data\n");
    let target = t.join("r".repeat(200));
    let out = run(
        &store,
        &[&"restore", &"--manifest", &m, &"--from", &from, &target],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d = make_nested(&target, &dirs);
    assert_eq!(read_at(&d, &shared), b"shared data\n");
    assert_eq!(read_at(&d, &private), b"private data\n");
}

/// The mtree header wrote the guest's directory raw: a newline in it ended
/// the comment and the rest was read as an entry.
#[test]
fn review_s25_the_mtree_header_escapes_the_guest_path() {
    if !require_root("review_s25_the_mtree_header_escapes_the_guest_path") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    let g = t.join("guest\n./INJECTED type=file mode=04755 uid=0 size=0\n#");
    fs::create_dir_all(&g).unwrap();
    fs::write(g.join("real-file"), b"data\n").unwrap();
    let out = run(&store, &[&"store", &"init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = t.join("m.mtree");
    let out = run(&store, &[&"manifest", &g, &"--format", &"mtree", &"-o", &m]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mtree = fs::read_to_string(&m).unwrap();
    let lines: Vec<&str> = mtree.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "#mtree, the header, . and ./real-file: {mtree}"
    );
    assert!(
        lines[1].starts_with("# unifs manifest of guest "),
        "{mtree}"
    );
    assert!(lines[1].contains("guest\\012./INJECTED"), "{mtree}");
    assert!(lines[2].starts_with(". ") && lines[3].starts_with("./real-file "));
}

/// Text outputs printed guest, store and target paths raw: a newline forged
/// a line, an escape sequence reached the terminal.
#[test]
fn review_s25_text_outputs_escape_paths_and_names() {
    if !require_root("review_s25_text_outputs_escape_paths_and_names") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join(bytes_path(b"store\nFORGED LINE\xff"));
    let g1 = t.join("g\nFORGED: 99  done  0 files linked");
    let g2 = t.join("h\x1b[7mINVERSE\x1b[0m");
    for g in [&g1, &g2] {
        fs::create_dir(g).unwrap();
        let d = unifs::sys::open_dir(g).unwrap();
        write_at(&d, b"f", b"a\n");
    }
    let out = run(&store, &[&"unify", &g1, &g2]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = run(&store, &[&"store", &"runs"]);
    assert_clean("store runs", &out.stdout);
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );
    // --json: the command names each guest as one shell word, bytes exact.
    let out = run(&store, &[&"store", &"runs", &"--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let command = runs[0]["command"].as_str().unwrap().to_string();
    let mut words = Command::new("bash");
    words
        .arg("-c")
        .arg(r#"eval "set -- $1"; printf '%s\0' "$@""#)
        .arg("bash")
        .arg(&command);
    let words = run_bounded(words, Duration::from_secs(30));
    let mut words: Vec<&[u8]> = words.stdout.split(|b| *b == 0).collect();
    words.pop();
    assert_eq!(words[0], b"unify", "{command}");
    let mut got: Vec<&[u8]> = words[1..].to_vec();
    got.sort();
    let mut want = vec![g1.as_os_str().as_bytes(), g2.as_os_str().as_bytes()];
    want.sort();
    assert_eq!(got, want, "{command}");

    let out = run(&store, &[&"store", &"stats"]);
    assert_clean("store stats", &out.stdout);
    let out = run(&store, &[&"store", &"forget", &"nosuchguest"]);
    assert_eq!(out.status.code(), Some(1));
    assert_clean("store forget", &out.stderr);
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );

    // An object lost: gc gives it back from a guest, saying so.
    for e in walkdir::WalkDir::new(store.join("objects")).min_depth(2) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let out = run(&store, &[&"store", &"gc"]);
    assert!(
        text(&out.stdout).contains("restored missing"),
        "{}",
        text(&out.stdout)
    );
    assert_clean("store gc", &out.stdout);

    let (m, list) = (t.join("m.jsonl"), t.join("p.lst"));
    let out = run(
        &store,
        &[&"manifest", &g2, &"-o", &m, &"--private-list", &list],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let target = t.join("r\nFORGED");
    let out = run(
        &store,
        &[&"restore", &"--manifest", &m, &"--from", &t, &target],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_clean("restore", &out.stdout);
    assert!(
        text(&out.stdout).starts_with("restored guest h\\x1b[7mINVERSE\\x1b[0m into "),
        "{}",
        text(&out.stdout)
    );

    // A config file's name in guest list's warning.
    let (cfg, rund) = (t.join("cfg"), t.join("run"));
    fs::create_dir(&cfg).unwrap();
    fs::create_dir(&rund).unwrap();
    fs::write(
        cfg.join("x\nFORGED 2026-01-01T00:00:00Z  WARN forged.toml"),
        "root = \"/nonexistent\"\n",
    )
    .unwrap();
    let mut c = Command::new(unifs_bin());
    c.args(["guest", "list", "--config-dir"])
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&rund);
    let out = run_bounded(c, Duration::from_secs(30));
    assert!(
        text(&out.stderr).contains("is not listed"),
        "{}",
        text(&out.stderr)
    );
    assert_clean("guest list", &out.stderr);
}

/// Unmounts (lazily) on drop, and waits until no mount is left there
/// (mountinfo writes a newline in a mount point as `\012`, which
/// the harness's `UnmountAt` does not read back).
struct Detach<'a>(&'a Path);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_bytes()).unwrap();
        let gone = || {
            // SAFETY: `c` is a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) != 0 }
        };
        wait_until(Duration::from_secs(5), gone);
    }
}

/// `unifs mount` run again: "already mounted at X" printed both paths raw.
#[test]
fn review_s25_mount_messages_escape_paths() {
    if !require_root("review_s25_mount_messages_escape_paths") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    let g = t.join("h\x1b[7mINVERSE\x1b[0m");
    fs::create_dir(&g).unwrap();
    fs::write(g.join("f"), b"x\n").unwrap();
    let mp = t.join("mnt\nFORGED");
    fs::create_dir(&mp).unwrap();
    let _guard = Detach(&mp);
    let out = run(&store, &[&"mount", &g, &mp]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&store, &[&"mount", &g, &mp]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already mounted"),
        "{}",
        text(&out.stderr)
    );
    assert_clean("mount again", &out.stderr);
}

/// The `.unifs-tmp-*` warning's command wrote a newline as `\n` inside
/// '…' and a byte that is not UTF-8 as U+FFFD: pasted, it named no file.
#[test]
fn review_s25_the_temp_name_warning_command_names_the_file() {
    if !require_root("review_s25_the_temp_name_warning_command_names_the_file") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let g = t.join("g1");
    for dir in [&b"d\nnl"[..], b"e\xff", b"plain"] {
        fs::create_dir_all(g.join(bytes_path(dir))).unwrap();
        fs::write(g.join(bytes_path(dir)).join(".unifs-tmp-1-1"), b"x\n").unwrap();
    }
    let out = run(&t.join("store"), &[&"unify", &g]);
    let err = text(&out.stderr);
    let cmds: Vec<&str> = err
        .split("`f=")
        .skip(1)
        .filter_map(|s| s.split("; getfattr").next())
        .collect();
    assert_eq!(cmds.len(), 3, "{err}");
    for word in cmds {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(r#"eval "f=$1"; test -f "$f""#)
            .arg("bash")
            .arg(word);
        let out = run_bounded(c, Duration::from_secs(30));
        assert!(out.status.success(), "f={word} names no file: {err}");
    }
}

/// `store stats` shows a guest whose directory is not UTF-8 as `g\xff2`;
/// forget and manifest took only the catalog's U+FFFD form, shown nowhere.
#[test]
fn review_s25_a_guest_name_as_stats_shows_it_is_accepted() {
    if !require_root("review_s25_a_guest_name_as_stats_shows_it_is_accepted") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    let (odd, plain) = (t.join(bytes_path(b"g\xff2")), t.join("g1"));
    for g in [&odd, &plain] {
        fs::create_dir(g).unwrap();
        write_at(&unifs::sys::open_dir(g).unwrap(), b"f", b"x\n");
    }
    let out = run(&store, &[&"unify", &plain, &odd]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats = text(&run(&store, &[&"store", &"stats"]).stdout);
    assert!(stats.contains("guest g\\xff2 "), "{stats}");

    let out = run(
        &store,
        &[&"manifest", &"g\\xff2", &"-o", &t.join("m.jsonl")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = fs::read_to_string(t.join("m.jsonl")).unwrap();
    assert!(m.lines().next().unwrap().contains("\"root_hex\""), "{m}");

    // A directory named with a backslash as text shows the same: refused,
    // both named, rather than either taken.
    let same = t.join("g\\xff2");
    fs::create_dir(&same).unwrap();
    write_at(&unifs::sys::open_dir(&same).unwrap(), b"f", b"x\n");
    let out = run(&store, &[&"unify", &same]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let elsewhere = t.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let mut c = Command::new(unifs_bin());
    c.current_dir(&elsewhere)
        .arg("--store")
        .arg(&store)
        .args(["store", "forget", "g\\xff2"]);
    let out = run_bounded(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("more than one guest"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&store, &[&"store", &"forget", &same]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&store, &[&"store", &"forget", &"g\\xff2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats = text(&run(&store, &[&"store", &"stats"]).stdout);
    assert!(!stats.contains("xff2"), "{stats}");
    assert!(stats.contains("guest g1 "), "{stats}");
}
