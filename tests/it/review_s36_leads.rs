//! Review s36 (leads): session 35's leftovers. A config's bad setting said
//! with its key and file; a veth run's host end named on a terminal; an
//! empty keeper report without its first line; `run --user root` without
//! CAP_SETUID.

use crate::common::unifs_bin;
use crate::guest::harness::{
    can_run, has_ip, ok, run_bounded, spawn_on_a_terminal, stderr, stdout, wait_for_output,
    TestRoot,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s33_nonroot::assert_refused;
use crate::review_s34_caps::{run_as, without};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// `g`'s config: its root, a sleeping init, and `extra` (tables too).
fn configure(g: &Guest, extra: &str) -> std::path::PathBuf {
    let path = g.config_dir().join(format!("{}.toml", g.name));
    let toml = format!("root = {:?}\ninit = {SLEEP}\n{extra}\n", g.t.root());
    std::fs::write(&path, toml).unwrap();
    path
}

/// A refusal that says each of `words` and none of `not`.
pub(crate) fn refused_saying(o: &Output, words: &[&str], not: &[&str], what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{what}: {o:?}");
    for w in words {
        assert!(err.contains(w), "{what}: no {w:?} in {err}");
    }
    for n in not {
        assert!(!err.contains(n), "{what}: {n:?} in {err}");
    }
}

/// A bad network or limit in a guest's config is said with its key and
/// the config file, and the same value on `unifs run`'s command line with
/// its option. Before, both said the option (`--host-ip …`, `--pids`),
/// which the config's user never wrote, and a bad network was found only
/// once the root was mounted (`guest list` did not warn of it).
#[test]
fn s36_a_configs_bad_setting_is_named_by_its_key_and_file() {
    if !can_run("s36_a_configs_bad_setting_is_named_by_its_key_and_file") {
        return;
    }
    let g = Guest::new("s36keys", SLEEP);
    // (config, the same as options, what the config's error says, the option's)
    let cases: &[(&str, &[&str], &str, &str)] = &[
        (
            "[net]\nmode = \"veth\"\nip = \"10.0.3.2/24\"\nhost_ip = \"10.0.3.2/24\"",
            &[
                "--net",
                "veth",
                "--ip",
                "10.0.3.2/24",
                "--host-ip",
                "10.0.3.2/24",
            ],
            "[net] host_ip 10.0.3.2/24 is the guest's own address ([net] ip 10.0.3.2/24)",
            "--host-ip 10.0.3.2/24 is the guest's own address (--ip 10.0.3.2/24)",
        ),
        (
            "[net]\nmode = \"veth\"\nip = \"10.0.3.2/24\"\ngateway = \"10.0.3.1/24\"",
            &[
                "--net",
                "veth",
                "--ip",
                "10.0.3.2/24",
                "--gateway",
                "10.0.3.1/24",
            ],
            "[net] gateway 10.0.3.1/24: expected an address alone",
            "--gateway 10.0.3.1/24: expected an address alone",
        ),
        (
            "[limits]\ncpus = 0.0",
            &["--cpus", "0"],
            "invalid [limits] cpus \"0\"",
            "invalid --cpus \"0\"",
        ),
        (
            "[limits]\npids = 3",
            &["--pids", "3"],
            "cannot apply [limits] pids: 3 tasks leave the guest no room",
            "cannot apply --pids: 3 tasks leave the guest no room",
        ),
    ];
    for &(extra, options, key_said, option_said) in cases {
        let path = configure(&g, extra);
        let file = path.to_string_lossy();
        let file = file.as_ref();
        let o = g.unifs(&["start", &g.name]);
        let what = format!("start with {extra:?}");
        refused_saying(&o, &[key_said, file], &[option_said], &what);
        assert!(!crate::review_s34_caps::mounted(&g), "{what}: left mounted");
        let args = [options, &["--", "/bin/true"]].concat();
        let run = run_as(&g, &[], &args);
        refused_saying(
            &run,
            &[option_said],
            &[key_said, "[net]", "[limits]"],
            &format!("run {options:?}"),
        );
    }
    // A stopped guest whose config would fail its start: `list` says so.
    configure(&g, cases[0].0);
    let (_, o) = g.list();
    let err = stderr(&o);
    assert!(
        err.contains(cases[0].2) && err.contains("would fail"),
        "{err}"
    );
}

/// `unifs run --net veth` on a terminal names its host end on it (`ve-`
/// and a digest of its generated name, the interface there while the
/// guest runs), before the command's own output; off a terminal and
/// without -v it says nothing (a script's stderr is left alone). The -v
/// case is s35_run_names_its_host_end's.
#[test]
fn s36_a_veth_run_on_a_terminal_names_its_host_end() {
    let test = "s36_a_veth_run_on_a_terminal_names_its_host_end";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let t = TestRoot::new();
    // Clear of the other veth tests' 10.213 to 10.224.
    let ip = format!("10.226.{}.2/24", std::process::id() % 200 + 20);
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--net", "veth", "--ip", &ip, "--"]);
    cmd.args(["/bin/sh", "-c", "echo s36-$((6*7)); exec sleep 20"]);
    let (master, run) = spawn_on_a_terminal(cmd);
    let seen = wait_for_output(&master, "s36-42");
    let line = seen
        .lines()
        .find(|l| l.starts_with("unifs: guest network: host end "))
        .unwrap_or_else(|| panic!("no host end named before the command's output: {seen:?}"));
    let name = line
        .trim_start_matches("unifs: guest network: host end ")
        .split_whitespace()
        .next()
        .unwrap();
    let digest = name.strip_prefix("ve-").unwrap_or("");
    assert!(
        digest.len() == 12 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(
        std::path::Path::new("/sys/class/net").join(name).exists(),
        "{name} is not a host interface"
    );
    drop(run);
    let o = t.sh(&["--net", "veth", "--ip", &ip], "echo in-guest");
    assert_eq!(stdout(&o), "in-guest\n", "{o:?}");
    assert!(!stderr(&o).contains("host end"), "{}", stderr(&o));
}

/// A keeper report that is empty, without its first line (`# unifs-keeper
/// PID`), is a keeper that made it and has not locked it yet: at work for
/// its first 10 s (by its mtime), then a keeper killed in that moment,
/// which `guest list` says and the next run shows and removes. The report
/// is aged by its mtime, not by waiting.
#[test]
fn s36_an_empty_keeper_report_is_at_work_then_a_killed_keeper() {
    if !can_run("s36_an_empty_keeper_report_is_at_work_then_a_killed_keeper") {
        return;
    }
    let t = TestRoot::new();
    let (config_dir, run_dir) = (t.dir.path().join("config"), t.dir.path().join("run"));
    for d in [&config_dir, &run_dir] {
        std::fs::create_dir(d).unwrap();
    }
    let report = run_dir.join("run-4242-0000abcd.keeper");
    let file = std::fs::File::create(&report).unwrap();
    let list = || {
        let mut cmd = Command::new(unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", &config_dir)
            .env("UNIFS_RUN_DIR", &run_dir);
        cmd.args(["guest", "list"]);
        run_bounded(cmd, Duration::from_secs(30))
    };
    let keeper = "the keeper of the killed `unifs run` (pid 4242, groups unifs/run-4242-0000abcd)";
    file.set_modified(SystemTime::now()).unwrap();
    let err = stderr(&list());
    assert!(
        err.contains(&format!("{keeper} is at work on what the run left")),
        "just made: {err}"
    );
    file.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let err = stderr(&list());
    assert!(
        err.contains(&format!("{keeper} ended before it was done (killed?)")),
        "a minute old: {err}"
    );
    assert!(report.exists(), "`list` leaves it");
    let run = t.sh(
        &[
            "--root-mount",
            "bind",
            "--run-dir",
            &run_dir.to_string_lossy(),
        ],
        "true",
    );
    let err = stderr(&run);
    assert!(run.status.success(), "{run:?}");
    assert!(
        err.contains(&format!("{keeper} ended before it was done (killed?)")),
        "run: {err}"
    );
    assert!(!report.exists(), "the run removes it");
}

/// `run --user root` (or another name of uid 0) needs no CAP_SETUID, as
/// `--uid 0` needs none: the name is looked up in the guest's /etc/passwd
/// before the check. A user other than root still needs it, and is
/// refused before anything changes (a keeper report in the run dir is left
/// for the next run). Before, any `--user` asked for it.
#[test]
fn s36_run_as_a_named_root_needs_no_cap_setuid() {
    if !can_run("s36_run_as_a_named_root_needs_no_cap_setuid") {
        return;
    }
    let g = Guest::new("s36root", SLEEP);
    std::fs::write(
        g.t.root().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\nweb:x:1234:1234::/:/bin/sh\n",
    )
    .unwrap();
    let no_setuid = without("setuid");
    let id = |user: &'static str| ["--user", user, "--", "/bin/id", "-u"];
    for user in ["root", "toor", "0", "root:0"] {
        let o = run_as(&g, &no_setuid, &id(user));
        assert_eq!(ok(&o), "0\n", "--user {user}");
    }
    let run_dir = g.t.dir.path().join("reports");
    std::fs::create_dir(&run_dir).unwrap();
    let report = run_dir.join("run-4242-0000abcd.keeper");
    std::fs::File::create(&report)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let run_dir = run_dir.to_string_lossy();
    let id_web = id("web");
    let web = [&["--run-dir", &run_dir][..], &id_web[..]].concat();
    let o = run_as(&g, &no_setuid, &web);
    assert_refused(&o, &["CAP_SETUID", "lacks"], "--user web");
    assert!(
        report.exists(),
        "refused after the keeper's report was shown"
    );
    assert_eq!(ok(&run_as(&g, &[], &web)), "1234\n");
    assert!(!report.exists(), "the run shows and removes it");
    // A user who is not root is told when --user needs it.
    let nobody = ["--reuid", "65534", "--regid", "65534", "--clear-groups"].map(String::from);
    let o = run_as(&g, &nobody, &id("root"));
    assert_refused(
        &o,
        &[
            "needs root (uid 65534",
            "CAP_SETUID when --user names a user other than root",
        ],
        "--user root as nobody",
    );
}
