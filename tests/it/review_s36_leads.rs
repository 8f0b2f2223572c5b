//! Review s36 (leads): session 35's leftovers. A config's bad setting said
//! with its key and file; a veth run's host end named on a terminal; an
//! empty keeper report without its first line; `run --user root` without
//! CAP_SETUID.

use crate::guest::harness::{can_run, stderr};
use crate::guest::review_s11_life::{Guest, SLEEP};
use std::process::Output;

/// `g`'s config: its root, a sleeping init, and `extra` (tables too).
fn configure(g: &Guest, extra: &str) -> std::path::PathBuf {
    let path = g.config_dir().join(format!("{}.toml", g.name));
    let toml = format!("root = {:?}\ninit = {SLEEP}\n{extra}\n", g.t.root());
    std::fs::write(&path, toml).unwrap();
    path
}

/// A refusal that says each of `words` and none of `not`.
fn refused_saying(o: &Output, words: &[&str], not: &[&str], what: &str) {
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
        let run = crate::review_s34_caps::run_as(&g, &[], &args);
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
