//! Review s44 (hooks): the tests' hooks, environment variables named
//! `UNIFS_TEST_*`, were read by every build: a root who set one (or
//! inherited it from a script) changed what a production daemon did
//! (`UNIFS_TEST_NO_CLAIM`: a mount that takes no lock on its guest, so a
//! second mount or a restore goes ahead over it; a `*_STOP`: a daemon that
//! stops itself dead). They now exist only with the cargo feature
//! `test-hooks` (src/sys/test_hooks.rs), which these tests are built with.
//!
//! What a build without the feature does is shown on one:
//! `target/release/unifs-nohooks`, which .ci/run builds before the suite
//! (at opt-level 0, 20 s on CI's 2 cores, where an optimized build of the
//! crate takes minutes: the same source, hook-free by what the macros
//! expand to, not by the optimizer). Without it these tests skip (and fail
//! under CI). They show that binary names no hook, so that it can read
//! none, and ignores the hooks a run of `unify` and of `mount` would
//! otherwise obey; not what the optimized binary of `cargo install` holds
//! (checked by hand: no name either), nor every hook's path.

use crate::common::{require_root, skip, unifs_bin};
use crate::fs::harness::{is_mounted, UnmountAt, World};
use crate::guest::harness::{run_bounded, stderr, KillOnDrop};
use crate::review_s31_doubts::stopped;
use crate::tree::{file, ino, unify_summary};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const LIMIT: Duration = Duration::from_secs(60);

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect()
}

/// Where `text` has a literal `"UNIFS_TEST_…` out of `//` comments.
fn hook_literals(text: &str) -> Vec<usize> {
    let line_start = |at: usize| text[..at].rfind('\n').map_or(0, |n| n + 1);
    text.match_indices("\"UNIFS_TEST_")
        .map(|(at, _)| at)
        .filter(|&at| !text[line_start(at)..at].contains("//"))
        .collect()
}

/// The source's hook names: each `"UNIFS_TEST_…"` in src/'s code.
fn hook_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for path in rust_files(&src_dir()) {
        let text = std::fs::read_to_string(&path).unwrap();
        for at in hook_literals(&text) {
            let name = &text[at + 1..];
            let end = name.find(|c: char| c != '_' && !c.is_ascii_uppercase());
            let name = &name[..end.unwrap_or(name.len())];
            if name.len() > "UNIFS_TEST_".len() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The hook-free build .ci/run makes, if there and not older than src/
/// and Cargo.toml; else `None`, the test skipped (failed under CI).
fn hook_free_bin(test: &str) -> Option<PathBuf> {
    let bin = unifs_bin().with_file_name("unifs-nohooks");
    let build = "build it as .ci/run does: cargo build --release --bins --benches --config \
                 'profile.release.package.unifs.opt-level=0' && cp target/release/unifs \
                 target/release/unifs-nohooks";
    let Ok(built) = std::fs::metadata(&bin).and_then(|m| m.modified()) else {
        skip(test, &format!("no {} ({build})", bin.display()));
        return None;
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let newest = rust_files(&src_dir())
        .into_iter()
        .chain([manifest])
        .map(|p| std::fs::metadata(&p).unwrap().modified().unwrap())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if built < newest {
        skip(
            test,
            &format!("{} is older than src/ ({build})", bin.display()),
        );
        return None;
    }
    Some(bin)
}

/// A literal `"UNIFS_TEST_…"` at byte `at` of `text` is a hook's name
/// where it is what a hook macro of src/sys/test_hooks.rs gets, or sits in
/// an attribute applied only with the feature.
fn read_through_the_hooks(text: &str, at: usize) -> bool {
    let before = text[..at].trim_end();
    let macro_call = before.strip_suffix('(').is_some_and(|b| {
        ["test_hook!", "test_stop!", "test_pause!", "test_bound!"]
            .iter()
            .any(|m| b.ends_with(m))
    });
    let attribute = before.rfind("#[").is_some_and(|a| {
        let attr: String = text[a..at].split_whitespace().collect();
        attr.starts_with("#[cfg_attr(feature=\"test-hooks\",") && !attr.contains(']')
    });
    macro_call || attribute
}

/// Every hook's name in src/ is read through src/sys/test_hooks.rs, the one
/// place that reads none without the feature (a hook added later the old
/// way, `std::env::var("UNIFS_TEST_…")`, would be read by every build).
/// Before: 9 names were read by `std::env` or clap (`UNIFS_TEST_NO_CLAIM`,
/// `UNIFS_TEST_COARSE_CTIME`, `UNIFS_TEST_LINK_MAX`, …), and the others
/// through `sys::test_stop`/`test_pause`, which read them in any build.
#[test]
fn s44_every_hook_in_the_source_is_read_through_sys_test_hooks() {
    let central = src_dir().join("sys/test_hooks.rs");
    let mut outside = Vec::new();
    for path in rust_files(&src_dir()) {
        if path == central {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for at in hook_literals(&text) {
            if !read_through_the_hooks(&text, at) {
                let line = text[..at].lines().count();
                let shown = text[at..].lines().next().unwrap();
                outside.push(format!("{}:{line}: {shown}", path.display()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "hooks read outside src/sys/test_hooks.rs, so by every build (use its macros):\n{}",
        outside.join("\n")
    );
    assert!(hook_names().len() >= 30, "{:?}", hook_names());
}

/// A build without the feature holds none of the hooks' names, so that no
/// code of it can read one; the tests' build holds them all (the scan
/// finds what is there). Before, every build held them all.
#[test]
fn s44_a_build_without_the_feature_names_no_hook() {
    let Some(bin) = hook_free_bin("s44_a_build_without_the_feature_names_no_hook") else {
        return;
    };
    let contains = |bytes: &[u8], s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    let tests_build = std::fs::read(unifs_bin()).unwrap();
    for name in hook_names() {
        assert!(
            contains(&tests_build, &name),
            "the tests' build lacks {name}"
        );
    }
    let free = std::fs::read(&bin).unwrap();
    let named: Vec<String> = hook_names()
        .into_iter()
        .filter(|n| contains(&free, n))
        .collect();
    assert!(
        named.is_empty() && !contains(&free, "UNIFS_TEST_"),
        "{} (built without the feature) names hooks: {named:?}",
        bin.display()
    );
}

/// `bin --store STORE unify --json ARGS GUESTS` with `envs` (its output in
/// files under `dir`); fails if it stops itself (SIGSTOP) or outlives a
/// minute.
fn unify(
    bin: &Path,
    store: &Path,
    args: &[&str],
    guests: &[PathBuf],
    envs: &[(&str, &str)],
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(bin);
    cmd.arg("--store")
        .arg(store)
        .args(["unify", "--json", "--no-progress"])
        .args(args)
        .args(guests)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
            child.0.take();
            break status;
        }
        assert!(
            !stopped(pid),
            "{} unify stopped itself ({envs:?})",
            bin.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} unify ran past {LIMIT:?}",
            bin.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Three guests in `w` with one file of one content, named `tag`.
fn three_guests(w: &World, tag: &str) -> Vec<PathBuf> {
    (0..3)
        .map(|i| {
            let g = w.dir(&format!("{tag}{i}"));
            file(
                &g,
                "usr/lib/shared.so",
                b"one content, three guests\n",
                0o644,
            );
            g
        })
        .collect()
}

/// The inodes of `guests`' shared file.
fn inodes(guests: &[PathBuf]) -> BTreeSet<u64> {
    guests
        .iter()
        .map(|g| ino(&g.join("usr/lib/shared.so")))
        .collect()
}

/// `unify` of a build without the feature obeys none of its hooks: not
/// `UNIFS_TEST_HASH_STOP` (it stopped itself between its walk and its
/// hashing) nor `UNIFS_TEST_LINK_MAX` (objects full at 2 links: three
/// guests' file became two objects), and has no `--link-max`. The tests'
/// build obeys `UNIFS_TEST_LINK_MAX` here (the check can see it). Before:
/// "unify stopped itself", and the guests linked two inodes.
#[test]
fn s44_unify_of_a_build_without_the_feature_ignores_the_hooks() {
    let test = "s44_unify_of_a_build_without_the_feature_ignores_the_hooks";
    if !require_root(test) {
        return;
    }
    let Some(free) = hook_free_bin(test) else {
        return;
    };
    let w = World::new();
    let store = |tag: &str| w.tmp.path().join(format!("{tag}-store"));

    let hooked = three_guests(&w, "s44-hooked");
    let link_max = [("UNIFS_TEST_LINK_MAX", "2")];
    let s = unify_summary(&unify(
        &unifs_bin(),
        &store("s44-hooked"),
        &[],
        &hooked,
        &link_max,
    ));
    assert!(
        inodes(&hooked).len() >= 2,
        "the tests' build obeys UNIFS_TEST_LINK_MAX: {s}"
    );

    let guests = three_guests(&w, "s44-free");
    let envs = [("UNIFS_TEST_HASH_STOP", "1"), ("UNIFS_TEST_LINK_MAX", "2")];
    let s = unify_summary(&unify(&free, &store("s44-free"), &[], &guests, &envs));
    assert_eq!(
        inodes(&guests).len(),
        1,
        "UNIFS_TEST_LINK_MAX=2 was obeyed: {s}"
    );

    let o = unify(
        &free,
        &store("s44-free"),
        &["--link-max", "2"],
        &guests,
        &[],
    );
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unexpected argument '--link-max'"),
        "{}",
        stderr(&o)
    );
}

/// The mount daemon of a build without the feature takes its lock on the
/// guest (its claim) though `UNIFS_TEST_NO_CLAIM` is set: a second mount of
/// the guest is refused naming that daemon, not as one "of an older unifs,
/// which takes no lock". Before: that daemon took no lock, and the second
/// `unifs mount` (UNIFS_TEST_NO_CLAIM set for it too) was made: two daemons
/// serving one guest.
#[test]
fn s44_mount_of_a_build_without_the_feature_claims_its_guest_whatever_the_hooks() {
    let test = "s44_mount_of_a_build_without_the_feature_claims_its_guest_whatever_the_hooks";
    if !require_root(test) {
        return;
    }
    let Some(free) = hook_free_bin(test) else {
        return;
    };
    let w = World::new();
    let g = std::fs::canonicalize(w.dir("s44-g")).unwrap();
    std::fs::write(g.join("file"), b"data\n").unwrap();
    let (m1, m2) = (
        std::fs::canonicalize(w.dir("s44-m1")).unwrap(),
        std::fs::canonicalize(w.dir("s44-m2")).unwrap(),
    );
    let _guards = (UnmountAt(&m2), UnmountAt(&m1));
    let mount = |mp: &Path| {
        let mut c = Command::new(&free);
        c.arg("--store").arg(&w.store).arg("mount").arg(&g).arg(mp);
        c.env("UNIFS_TEST_NO_CLAIM", "1");
        run_bounded(c, Duration::from_secs(30))
    };
    let o = mount(&m1);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_mounted(&m1));
    let o = mount(&m2);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already served by another unifs mount"),
        "{err}"
    );
    assert!(
        !err.contains("older unifs"),
        "the daemon obeyed UNIFS_TEST_NO_CLAIM and took no lock: {err}"
    );
    assert!(!is_mounted(&m2));
    assert_eq!(std::fs::read(m1.join("file")).unwrap(), b"data\n");
}
