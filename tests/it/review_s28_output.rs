//! Review s28: output that cannot be written. `println!` panicked when
//! stdout failed (a full disk, /dev/full): `unifs store stats > full-disk`
//! ended with exit 101 and a backtrace, and `--help` or `--version` that
//! wrote nothing exited 0. A failed stderr (`2>/dev/full`) panicked the
//! command on its first warning or error message.

use crate::common::unifs_bin;
use std::process::{Command, Output, Stdio};

/// `unifs --store STORE ARGS` with stdout, or stderr, to /dev/full.
fn to_full(store: &std::path::Path, args: &[&str], stdout: bool) -> Output {
    let full = || Stdio::from(std::fs::File::create("/dev/full").unwrap());
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::null());
    if stdout {
        cmd.stdout(full()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped()).stderr(full());
    }
    cmd.output().unwrap()
}

const SAID: &str = "unifs: cannot write to standard output: No space left on device";

#[test]
fn help_and_version_that_reach_no_stdout_fail() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["store", "stats", "--help"],
    ] {
        let o = to_full(&store, &args, true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(SAID), "{args:?}: {err}");
    }
}

#[test]
fn a_command_whose_output_fails_says_so_once_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let g = d.path().join("g");
    std::fs::create_dir(&g).unwrap();
    std::fs::write(g.join("f"), b"data").unwrap();
    for args in [
        vec!["store", "init"],
        vec!["unify", "--dry-run", g.to_str().unwrap()],
        vec!["store", "stats"],
        vec!["store", "stats", "--json"],
    ] {
        let o = to_full(&store, &args, true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.matches(SAID).count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // What a command does is done even where its report is lost.
    assert!(store.join("catalog.db").is_file());
}

#[test]
fn a_failed_stderr_does_not_panic_a_refused_command() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("no-store");
    let o = to_full(&store, &["store", "stats"], false);
    // Refused (no store) with exit 1, as with a working stderr, not 101.
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

#[test]
fn no_color_keeps_colour_codes_off_a_terminal() {
    // `script` gives unifs a terminal for its stderr, where it colours its
    // log lines, unless NO_COLOR (no-color.org) is set.
    let d = tempfile::tempdir().unwrap();
    let run = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{} guest list", unifs_bin().display())])
            .arg("/dev/null")
            .env("UNIFS_CONFIG_DIR", d.path().join("no-config"))
            .env("UNIFS_RUN_DIR", d.path().join("run"))
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let o = cmd.output().expect("script (util-linux)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let coloured = run(None);
    assert!(coloured.contains("no guest configs read"), "{coloured:?}");
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    // An empty NO_COLOR is unset, as no-color.org says.
    assert!(run(Some("")).contains("\x1b["));
    let plain = run(Some("1"));
    assert!(plain.contains("no guest configs read"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
}

/// `unifs --store STORE ARGS` with `input` on stdin: its output.
fn with_stdin(store: &std::path::Path, args: &[&std::ffi::OsStr], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_dash_names_stdin_or_stdout_as_in_other_tools() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let data = vec![7u8; 8192];
    let (g1, g2) = (d.path().join("g1"), d.path().join("g2"));
    // One mtime for all: files that differ in it are not the same.
    let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for g in [&g1, &g2] {
        std::fs::create_dir_all(g.join("var/log")).unwrap();
        for f in [g.join("f"), g.join("var/log/x.log")] {
            std::fs::write(&f, &data).unwrap();
            let file = std::fs::File::options().write(true).open(&f).unwrap();
            file.set_modified(when).unwrap();
        }
    }
    let os = |s: &str| std::ffi::OsString::from(s);
    // --exclude-from -: the rules come from stdin.
    let o = with_stdin(
        &store,
        &[
            os("unify").as_os_str(),
            os("--json").as_os_str(),
            os("--no-default-excludes").as_os_str(),
            os("--exclude-from").as_os_str(),
            os("-").as_os_str(),
            g1.as_os_str(),
            g2.as_os_str(),
        ],
        b"*.log\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::MetadataExt;
    let ino = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(g1.join("f")), ino(g2.join("f")));
    assert_ne!(ino(g1.join("var/log/x.log")), ino(g2.join("var/log/x.log")));

    // manifest -o -: stdout, the same as without -o.
    let manifest = |extra: &[&str]| {
        let o = Command::new(unifs_bin())
            .arg("--store")
            .arg(&store)
            .arg("manifest")
            .args(extra)
            .arg(&g1)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let plain = manifest(&[]);
    assert!(!plain.is_empty());
    // The header's "created" second differs between two runs that
    // straddle a second (it failed CI once so).
    let undated = |m: &[u8]| {
        let text = String::from_utf8_lossy(m).into_owned();
        let at = text.find("\"created\":").unwrap();
        let end = at + text[at..].find(',').unwrap();
        format!("{}{}", &text[..at], &text[end..])
    };
    assert_eq!(undated(&manifest(&["-o", "-"])), undated(&plain));
    assert!(!std::path::Path::new("-").exists());

    // restore --manifest -: the manifest comes from stdin.
    let private = d.path().join("private");
    std::fs::create_dir_all(private.join("var/log")).unwrap();
    std::fs::write(private.join("var/log/x.log"), &data).unwrap();
    let target = d.path().join("restored");
    let o = with_stdin(
        &store,
        &[
            os("restore").as_os_str(),
            os("--manifest").as_os_str(),
            os("-").as_os_str(),
            os("--from").as_os_str(),
            private.as_os_str(),
            target.as_os_str(),
        ],
        &plain,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(target.join("f")).unwrap(), data);
    assert_eq!(ino(target.join("f")), ino(g1.join("f")));
}
