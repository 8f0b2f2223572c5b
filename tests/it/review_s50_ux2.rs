//! Session 50 (ux2): what a new user still tripped on in the messages.

use crate::common::{require_root, unifs_bin};
use crate::guest::harness::{can_run, ok, stdout, within_30s};
use crate::guest::named::Guest;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

fn unifs(args: &[&str]) -> Output {
    Command::new(unifs_bin())
        .args(args)
        .env_remove("UNIFS_STORE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `dir/rel` holding `content`, its mtime `secs` after the epoch.
fn file(dir: &Path, rel: &str, content: &[u8], secs: u64) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A config dir, a run dir and a guest root, in a temporary directory.
struct Configs {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    run: PathBuf,
    root: PathBuf,
}

impl Configs {
    fn new() -> Configs {
        let dir = tempfile::tempdir().unwrap();
        let [cfg, run, root] = ["cfg", "run", "root"].map(|d| dir.path().join(d));
        for d in [&cfg, &root] {
            fs::create_dir(d).unwrap();
        }
        Configs {
            _dir: dir,
            cfg,
            run,
            root,
        }
    }

    /// `unifs guest ARGS` with these dirs.
    fn guest(&self, args: &[&str]) -> Output {
        Command::new(unifs_bin())
            .arg("guest")
            .args(args)
            .env("UNIFS_CONFIG_DIR", &self.cfg)
            .env("UNIFS_RUN_DIR", &self.run)
            .output()
            .unwrap()
    }
}

/// Two guests whose identical files differ only in mtime (a copy made
/// without `cp -p`) shared nothing, and the summary said nothing of why:
/// such files are never hashed, each alone in its size, mode, owner and
/// mtime. It now counts the files another guest has a file of the same
/// path and size to, and says what keeps them apart. (Before: no line of
/// the summary, and no such field in --json.)
#[test]
fn s50_unify_says_how_many_files_metadata_kept_apart() {
    if !require_root("s50_unify_says_how_many_files_metadata_kept_apart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (g1, g2) = (dir.path().join("g1"), dir.path().join("g2"));
    let content = vec![7u8; 5000];
    // Only the mtime differs.
    file(&g1, "usr/lib/a.so", &content, 1_000_000);
    file(&g2, "usr/lib/a.so", &content, 2_000_000);
    // Only the mode differs.
    file(&g1, "usr/bin/b", b"#!/bin/sh\necho b\n", 1_000_000);
    file(&g2, "usr/bin/b", b"#!/bin/sh\necho b\n", 1_000_000);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(g2.join("usr/bin/b"), fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    let run = |json: bool| {
        let mut args = vec!["--store", store.to_str().unwrap(), "unify", "--no-progress"];
        if json {
            args.push("--json");
        }
        args.extend([g1.to_str().unwrap(), g2.to_str().unwrap()]);
        unifs(&args)
    };
    let out = run(false);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains("0 files linked"), "{said}");
    assert!(
        said.contains(
            "left apart: 4 files with another guest's path and size but not its mtime, mode or \
             owner (one inode has one of each); 2 only in mtime (a store made with \
             --ignore-mtime links those whose content matches: docs/unify.md)"
        ),
        "{said}"
    );
    let out = run(true);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["files_apart_by_metadata"], 4, "{json}");
    assert_eq!(json["files_apart_by_mtime"], 2, "{json}");
    assert_eq!(json["files_linked"], 0, "{json}");
}

/// A guest config with `memory = "64M"` above its `[limits]` line (or a
/// top-level key written below it) was refused with TOML's bare "unknown
/// field `memory`, expected one of …" (the top level's keys). It now says
/// which table the key belongs to.
#[test]
fn s50_a_config_key_in_the_wrong_table_is_said_where_it_belongs() {
    if !require_root("s50_a_config_key_in_the_wrong_table_is_said_where_it_belongs") {
        return;
    }
    let t = Configs::new();
    let (cfg, root) = (&t.cfg, &t.root);
    let cases = [
        (
            "s50-top",
            format!("root = {root:?}\nmemory = \"64M\"\n[limits]\npids = 64\n"),
            "key memory belongs under [limits], not at the top: write it below a [limits] line",
        ),
        (
            "s50-under",
            format!("root = {root:?}\n[limits]\npids = 64\nhostname = \"web\"\n"),
            "key hostname belongs at the top, not under [limits]: write it above the first \
             [table] line",
        ),
        (
            "s50-net",
            format!("root = {root:?}\n[limits]\nip = \"10.0.3.2/24\"\n"),
            "key ip belongs under [net], not under [limits]: write it below a [net] line",
        ),
    ];
    for (name, toml, want) in cases {
        let path = cfg.join(format!("{name}.toml"));
        fs::write(&path, toml).unwrap();
        let out = t.guest(&["start", name]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(want), "{name}: {err}");
    }
    // A key no table has is still TOML's word.
    fs::write(
        cfg.join("s50-typo.toml"),
        format!("root = {root:?}\nhostnam = \"x\"\n"),
    )
    .unwrap();
    let out = t.guest(&["start", "s50-typo"]);
    let err = text(&out.stderr);
    assert!(err.contains("unknown field `hostnam`"), "{err}");
}

/// A bad tmpfs size was said as `invalid size "16Q"`, naming neither the
/// option nor the config key, nor the entry (as memory sizes were before
/// 3146c92). (Before: `unifs: bad guest config …/s50-tmpfs.toml: invalid
/// size "16Q": expected a number …`.)
#[test]
fn s50_a_bad_tmpfs_size_is_named_by_its_option_or_key() {
    if !require_root("s50_a_bad_tmpfs_size_is_named_by_its_option_or_key") {
        return;
    }
    let t = Configs::new();
    let (cfg, root) = (&t.cfg, &t.root);
    let path = cfg.join("s50-tmpfs.toml");
    fs::write(&path, format!("root = {root:?}\ntmpfs = [\"/tmp:16Q\"]\n")).unwrap();
    let start = t.guest(&["start", "s50-tmpfs"]);
    let run_cmd = Command::new(unifs_bin())
        .args(["run", "--tmpfs", "/tmp:16Q", "--root"])
        .arg(root)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    for (out, name) in [(start, "tmpfs"), (run_cmd, "--tmpfs")] {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "invalid {name} \"/tmp:16Q\": size \"16Q\": expected a number (1.5 too) with \
                 an optional k, M, G or T suffix, as DIR:64M"
            )),
            "not named {name}: {err}"
        );
    }
    let err = text(&t.guest(&["start", "s50-tmpfs"]).stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
}

/// The summaries said "1 new objects", "1 guest(s)", "0 problem(s)":
/// counts now take the word for their number.
#[test]
fn s50_counts_in_summaries_take_the_word_for_their_number() {
    if !require_root("s50_counts_in_summaries_take_the_word_for_their_number") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (g1, g2) = (dir.path().join("g1"), dir.path().join("g2"));
    file(&g1, "usr/lib/a.so", &[5u8; 3000], 1_000_000);
    file(&g2, "usr/lib/a.so", &[5u8; 3000], 1_000_000);
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let out = unifs(&[
        "--store",
        s,
        "unify",
        "--no-progress",
        g1.to_str().unwrap(),
        g2.to_str().unwrap(),
    ]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    for want in [
        "unify: 2 guests (",
        ", 2 files scanned (",
        "hashed 2 files (",
        "  1 file linked, 1 new object: ",
    ] {
        assert!(said.contains(want), "{want:?} not in: {said}");
    }
    let verify = text(&unifs(&["--store", s, "store", "verify"]).stdout);
    assert!(verify.contains("verified 1 object file ("), "{verify}");
    assert!(verify.contains("): 0 problems"), "{verify}");
    let stats = text(&unifs(&["--store", s, "store", "stats"]).stdout);
    assert!(stats.contains("  1 object in 1 file, "), "{stats}");
}

/// `guest list --json` and `status --json` gave `"root": null` for a
/// stopped guest, where the text status and a start know its configured
/// root. They now give that root.
#[test]
fn s50_a_stopped_guests_json_names_its_configured_root() {
    if !require_root("s50_a_stopped_guests_json_names_its_configured_root") {
        return;
    }
    let t = Configs::new();
    let (cfg, root) = (&t.cfg, &t.root);
    let name = format!("s50-root-{}", std::process::id());
    fs::write(
        cfg.join(format!("{name}.toml")),
        format!("root = {root:?}\n"),
    )
    .unwrap();
    let guest = |args: &[&str]| {
        let out = t.guest(args);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
    };
    let want = serde_json::json!(root.to_str().unwrap());
    let list = guest(&["list", "--json"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not listed: {list}"));
    assert_eq!(entry["running"], false, "{entry}");
    assert_eq!(entry["root"], want, "{entry}");
    let status = guest(&["status", "--json", &name]);
    assert_eq!(status["root"], want, "{status}");
}

/// A guest whose init does not catch SIGTERM (sh as init, a PID 1 the
/// kernel sends no signal it does not catch) was stopped with "processes
/// killed after the timeout", and nothing of why nor what to do. The stop
/// now says so and names stop_signal; an init that took the signal and
/// did not end is told apart (give it longer).
#[test]
fn s50_a_stop_killed_after_the_timeout_says_why_and_what_to_do() {
    if !can_run("s50_a_stop_killed_after_the_timeout_says_why_and_what_to_do") {
        return;
    }
    // Ready once its trap (if any) is set: before, the signal's default
    // action would end it.
    let deaf = "[\"/bin/sh\", \"-c\", \"echo > /ready; while :; do sleep 0.05; done\"]";
    let stubborn = "[\"/bin/sh\", \"-c\", \"trap 'echo no' TERM; echo > /ready; \
                    while :; do sleep 0.05; done\"]";
    for (test, init, want) in [
        (
            "s50deaf",
            deaf,
            "killed after the timeout: its init does not catch SIGTERM, and a PID 1 ignores a \
             signal it does not catch: set stop_signal in its config to one it ends on \
             (docs/guests.md), or stop it with --signal",
        ),
        (
            "s50stubborn",
            stubborn,
            "killed after the timeout: its init took SIGTERM but did not end within 1 s: give \
             it longer (--timeout), or set stop_signal in its config to one it ends on",
        ),
    ] {
        let g = Guest::new(test, init, false);
        ok(&g.unifs(&["start", &g.name]));
        let ready = g.t.root().join("ready");
        assert!(within_30s(|| ready.exists()), "{test}: init never ran");
        let out = g.unifs(&["stop", "--timeout", "1", &g.name]);
        let said = stdout(&out);
        assert!(out.status.success(), "{test}: {said}");
        assert!(said.contains(want), "{test}: {said}");
    }
}
