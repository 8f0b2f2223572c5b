//! pjdfstest (the POSIX filesystem test suite, Rust rewrite from crates.io)
//! on the mount and on a plain directory of the host filesystem: every case
//! that passes natively passes on the mount, with and without passthrough.
//! .ci/run installs it in target/pjdfstest; `PJDFSTEST` names another.

use super::harness::*;
use crate::common::require_root;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Cases a FUSE mount cannot run: glibc's pathconf(_PC_LINK_MAX) knows the
/// limit only of the filesystem types it lists, and FUSE is not one.
const SKIPPED_ON_FUSE: &[&str] = &["link::link_count_max"];

const CONFIG: &str = r#"
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
# above the kernel's coarse timestamp tick, so time checks see a change
naptime = 0.02
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
"#;

fn pjdfstest(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PJDFSTEST") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{test}: PJDFSTEST={} is not a file",
            p.display()
        );
        return Some(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pjdfstest/bin/pjdfstest");
    if p.is_file() {
        return Some(p);
    }
    crate::common::skip(
        test,
        "no pjdfstest (.ci/run installs it: cargo install --root target/pjdfstest pjdfstest)",
    );
    None
}

/// Runs the suite in `dir` (and `secondary`, another filesystem, for the
/// EXDEV cases); the outcome of each case by name.
fn run(bin: &Path, config: &Path, dir: &Path, secondary: &Path) -> BTreeMap<String, String> {
    let out = dir.with_extension("pjdfstest.log");
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(config)
        .arg("-p")
        .arg(dir)
        .arg("-s")
        .arg(secondary)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pjdfstest");
    let end = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pjdfstest in {} ran over 300 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = fs::read_to_string(&out).unwrap();
    let cases: BTreeMap<String, String> = log
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, outcome) = (words.next()?, words.next()?);
            let known = matches!(outcome, "ok" | "FAILED" | "skipped");
            (known && words.next().is_none() && name.contains("::"))
                .then(|| (name.to_string(), outcome.to_string()))
        })
        .collect();
    assert!(
        cases.values().filter(|o| *o == "ok").count() > 300,
        "pjdfstest in {} ran too few cases:\n{log}",
        dir.display()
    );
    cases
}

#[test]
fn pjdfstest_passes_on_the_mount_where_it_passes_natively() {
    let test = "pjdfstest_passes_on_the_mount_where_it_passes_natively";
    if !require_root(test) {
        return;
    }
    let Some(bin) = pjdfstest(test) else {
        return;
    };
    let w = World::new();
    let config = w.tmp.path().join("pjdfstest.toml");
    fs::write(&config, CONFIG).unwrap();
    let secondary = tempfile::Builder::new()
        .prefix("unifs-pjd-other-")
        .tempdir_in("/dev/shm")
        .unwrap();

    let native = run(&bin, &config, &w.dir("native"), secondary.path());
    assert!(native.len() > 350, "{native:?}");
    for (opts, name) in [
        (&[][..], "mnt"),
        (&["nopassthrough", "threads=1"][..], "mnt-np"),
    ] {
        let guest = w.dir(&format!("guest-{name}"));
        let m = w.mount(&guest, name, opts);
        let mounted = run(&bin, &config, &m.dir, secondary.path());
        let differ: Vec<String> = native
            .iter()
            .filter(|(case, outcome)| *outcome == "ok" && mounted.get(*case) != Some(outcome))
            .filter(|(case, _)| !SKIPPED_ON_FUSE.contains(&case.as_str()))
            .map(|(case, _)| format!("{case}: {:?}", mounted.get(case)))
            .collect();
        assert!(
            differ.is_empty(),
            "-o {opts:?}: cases that pass natively but not on the mount: {differ:#?}\n{}",
            fs::read_to_string(m.dir.with_extension("pjdfstest.log")).unwrap_or_default()
        );
        let failed: Vec<&String> = mounted
            .iter()
            .filter(|(_, o)| *o == "FAILED")
            .map(|(c, _)| c)
            .collect();
        assert!(
            failed.is_empty(),
            "-o {opts:?}: failed on the mount: {failed:?}"
        );
    }
}
