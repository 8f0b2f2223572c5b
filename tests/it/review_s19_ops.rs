//! Day-2 operations (review s19): backups after a killed unify, `mount -a`
//! again, guests whose root is gone, a mount whose daemon died.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// Every file under `STORE/objects`, as `store ls` names them.
fn object_files(store: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for dir in fs::read_dir(store.join("objects")).unwrap() {
        let dir = dir.unwrap();
        for f in fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap();
            found.insert(format!(
                "objects/{}/{}",
                dir.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// `store ls --since N --json`: path → added_run.
fn listed_since(store: &Path, since: i64) -> std::collections::BTreeMap<String, i64> {
    let out = unifs(
        store,
        &[&"store", &"ls", &"--since", &since.to_string(), &"--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["path"].as_str().unwrap().to_string(),
                o["added_run"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// A unify run killed after it linked objects into the store but before it
/// recorded them (docs/backup.md: "the next run records under its own
/// number any object it left unrecorded"). The next run was given another
/// guest only: it recorded nothing, yet it moved the backup mark (the last
/// run done) past the killed run, so `store ls --since MARK` never listed
/// those objects (nor `--since 0`), and an incremental backup taken as
/// documented could not be restored.
#[test]
fn review_s19_objects_of_a_killed_run_are_recorded_by_a_run_of_other_guests() {
    let name = "review_s19_objects_of_a_killed_run_are_recorded_by_a_run_of_other_guests";
    if !require_root(name) || !require_strace(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    for g in [&a, &b] {
        for j in 0..600u64 {
            file(g, &format!("d{}/f{j}", j % 20), &bytes(j, 1500), 0o644);
        }
    }
    file(&c, "x", &bytes(7777, 5000), 0o644);
    file(&c, "y", &bytes(7777, 5000), 0o644);
    // Run 1, then the full backup's mark.
    unify_json(&store, &[&c]);
    let full: BTreeSet<String> = object_files(&store);
    let mark = 1;

    // Run 2: killed as it enters its 40th renameat2 (one linking thread:
    // an exchange of a linked temp name with a file of b), long before its
    // first commit.
    let status = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .arg("--inject=renameat2:signal=SIGKILL:when=40")
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--no-progress"])
        .args([&a, &b])
        .env("UNIFS_THREADS", "1")
        .env_remove("UNIFS_TEST_LINK_MAX")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), None, "killed");
    let added: BTreeSet<String> = object_files(&store).difference(&full).cloned().collect();
    assert!(added.len() >= 10, "the killed run added objects: {added:?}");

    // Run 3: guest c alone.
    let s = unify_json(&store, &[&c]);
    assert_eq!(s["run"], 3, "{s}");
    let since = listed_since(&store, mark);
    for path in &added {
        assert_eq!(
            since.get(path),
            Some(&3),
            "{path}, added by the killed run, is listed under run 3"
        );
    }
    let all: BTreeSet<String> = listed_since(&store, 0).into_keys().collect();
    assert_eq!(
        all,
        object_files(&store),
        "--since 0 lists every object file"
    );
    assert_eq!(s["objects_recovered"], added.len() as u64, "{s}");

    // Once: with no run left unfinished since, the next run does not look
    // through objects/ again (an object whose rows are dropped by hand stays
    // unrecorded by a run of c), and a re-run stays cheap.
    let path = added.iter().next().unwrap();
    let id = path["objects/".len()..].replace('/', "");
    let db = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    for table in ["guest_links", "object_files"] {
        db.execute(&format!("DELETE FROM {table} WHERE object_id = ?1"), [&id])
            .unwrap();
    }
    db.execute("DELETE FROM objects WHERE id = ?1", [&id])
        .unwrap();
    drop(db);
    let s = unify_json(&store, &[&c]);
    assert_eq!(s["objects_recovered"], 0, "{s}");
    assert!(!listed_since(&store, 0).contains_key(path));
    // Now a and b: that object is found by the guests' markers; the others
    // are linked to, no second row for any.
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["objects_recovered"], 1, "{s}");
    let all: BTreeSet<String> = listed_since(&store, 0).into_keys().collect();
    assert_eq!(all, object_files(&store));
    assert_verify_clean(&store);

    // gc agrees: an object no guest links any more goes with its row.
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
    let out = unifs(&store, &[&"store", &"forget", &a, &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: BTreeSet<String> = listed_since(&store, 0).into_keys().collect();
    assert_eq!(all, object_files(&store));
    assert_eq!(all, full, "only c's object is left");
    assert_verify_clean(&store);
}

/// Runs `unifs guest ARGS` with its config and run dirs, killed after 30 s.
fn guest_cmd(config_dir: &Path, run_dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_CONFIG_DIR", config_dir)
        .env("UNIFS_RUN_DIR", run_dir)
        .arg("guest")
        .args(args);
    bounded(cmd)
}

/// The output of `cmd`, killed after 30 s.
fn bounded(mut cmd: Command) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A guest whose root or bind source is gone (moved, deleted): `guest
/// start` said "is not a directory" or "entity not found", naming neither
/// the config nor a fix, and `guest list` showed a plain `stopped`.
#[test]
fn review_s19_a_guest_whose_root_or_bind_source_is_gone_is_named_with_its_config() {
    if !require_root("review_s19_a_guest_whose_root_or_bind_source_is_gone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cfg, run) = (dir.path().join("cfg"), dir.path().join("run"));
    fs::create_dir(&cfg).unwrap();
    let root = dir.path().join("guests/web1");
    let web1 = cfg.join("web1.toml");
    fs::write(&web1, format!("root = {root:?}\ninit = [\"/bin/sh\"]\n")).unwrap();
    let out = guest_cmd(&cfg, &run, &["start", "web1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        format!("guest root {} does not exist", root.display()),
        web1.display().to_string(),
        "restore the guest's directory there".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} in {err}");
    }
    assert!(!err.contains("not a directory"), "{err}");
    // `unifs run --root` of it: no config to name, the same words.
    let mut run_cmd = Command::new(unifs_bin());
    run_cmd
        .args(["run", "--root"])
        .arg(&root)
        .args(["--", "/bin/true"]);
    let out = bounded(run_cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("guest root {} does not exist", root.display())),
        "{err}"
    );

    // A root that is a file is not a directory, still named with its config.
    fs::create_dir_all(root.parent().unwrap()).unwrap();
    fs::write(&root, b"").unwrap();
    let out = guest_cmd(&cfg, &run, &["start", "web1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not a directory") && err.contains(&*web1.to_string_lossy()),
        "{err}"
    );
    fs::remove_file(&root).unwrap();

    // A bind source gone.
    let root2 = dir.path().join("guests/web2");
    fs::create_dir_all(root2.join("bin")).unwrap();
    let src = dir.path().join("srv/shared");
    let web2 = cfg.join("web2.toml");
    fs::write(
        &web2,
        format!(
            "root = {root2:?}\ninit = [\"/bin/sh\"]\nbinds = [\"{}:/shared\"]\n",
            src.display()
        ),
    )
    .unwrap();
    let out = guest_cmd(&cfg, &run, &["start", "web2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        format!("bind source {} does not exist", src.display()),
        web2.display().to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} in {err}");
    }
    assert!(!err.contains("entity not found"), "{err}");

    // `list` warns of both, and still lists them as stopped.
    let out = guest_cmd(&cfg, &run, &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("web1") && listed.contains("web2"),
        "{listed}"
    );
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].contains("does not exist") && warnings[0].contains("unifs guest start web1"),
        "{err}"
    );
    assert!(
        warnings[1].contains("bind source") && warnings[1].contains("unifs guest start web2"),
        "{err}"
    );
}
