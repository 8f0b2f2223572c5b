//! Review s37 (packaging): what an operator installing unifs expects.
//! Shell completions (`unifs completions bash|zsh|fish`, with guest names
//! for `unifs guest start|stop|…`), manual pages (`unifs man DIR`), and the
//! shipped systemd units and fstab line (contrib/systemd/), run as systemd
//! would run them, without a systemd PID 1. Before, none of it existed.

use crate::common::{skip, unifs_bin};
use crate::fs::harness::{is_mounted, UnmountAt};
use crate::guest::harness::{can_run, cgroup2_mount, ok, run_bounded, stderr, stdout, within_30s};
use crate::guest::named::Guest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// A file of the source tree (contrib/…, docs/…).
fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether `tool` runs (`tool ARG`); else skipped (failed under CI).
fn has(test: &str, tool: &str, arg: &str) -> bool {
    let found = Command::new(tool).arg(arg).output().is_ok();
    if !found {
        skip(test, &format!("needs {tool} (.ci/run installs it)"));
    }
    found
}

/// `unifs completions SHELL` written to a file in `dir`.
fn completion_script(dir: &Path, shell: &str) -> PathBuf {
    let o = run_bounded(
        {
            let mut c = Command::new(unifs_bin());
            c.args(["completions", shell]);
            c
        },
        LIMIT,
    );
    let script = ok(&o);
    let path = dir.join(format!("unifs.{shell}"));
    std::fs::write(&path, script).unwrap();
    path
}

/// A config dir holding three guests' configs (and a file that is none).
fn config_dir(dir: &Path) -> PathBuf {
    let cfg = dir.join("guests");
    std::fs::create_dir(&cfg).unwrap();
    for name in ["web1", "web2", "db1"] {
        std::fs::write(cfg.join(format!("{name}.toml")), "root = \"/x\"\n").unwrap();
    }
    std::fs::write(cfg.join("README"), "not a guest\n").unwrap();
    cfg
}

/// A completion test's start: its shell (else skipped), a temp dir with
/// the script and [`config_dir`] in it.
fn completion_setup(test: &str, shell: &str) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    if !has(test, shell, "--version") {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = completion_script(tmp.path(), shell);
    let cfg = config_dir(tmp.path());
    Some((tmp, script, cfg))
}

/// `c` run with UNIFS_CONFIG_DIR `dir`, or none.
fn with_config_dir(c: &mut Command, dir: Option<&Path>) {
    c.env_remove("UNIFS_CONFIG_DIR");
    if let Some(d) = dir {
        c.env("UNIFS_CONFIG_DIR", d);
    }
}

fn words(o: &Output) -> Vec<String> {
    let mut w: Vec<String> = stdout(o).split_whitespace().map(str::to_string).collect();
    w.sort();
    w
}

/// Bash, as it runs the script: sourced, then the function `complete -p`
/// names called with the line's words, as bash calls it on a TAB.
#[test]
fn s37_bash_completion_completes_commands_options_and_guest_names() {
    let test = "s37_bash_completion_completes_commands_options_and_guest_names";
    let Some((tmp, script, cfg)) = completion_setup(test, "bash") else {
        return;
    };
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("mail.toml"), "").unwrap();
    let complete = |line: &str, env_dir: Option<&Path>| -> Output {
        // COMP_WORDS as bash splits the line; the cursor at its end.
        let prog = r#"source "$1"; shift
            spec=$(complete -p unifs) || exit 9
            fn=${spec#*-F }; fn=${fn%% *}
            COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
            COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
            "$fn" unifs "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\n' "${COMPREPLY[@]}""#;
        let mut c = Command::new("bash");
        c.arg("-c").arg(prog).arg("bash").arg(&script);
        // A trailing space: the cursor on a new, empty word.
        let mut parts: Vec<&str> = line.split(' ').collect();
        if line.ends_with(' ') {
            parts.pop();
            parts.push("");
        }
        c.args(parts);
        with_config_dir(&mut c, env_dir);
        run_bounded(c, LIMIT)
    };

    // Loaded: `complete -p unifs` shows it.
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg("source \"$1\" && complete -p unifs")
        .arg("bash")
        .arg(&script);
    let shown = ok(&run_bounded(c, LIMIT));
    assert!(
        shown.contains("-F _unifs") && shown.trim_end().ends_with(" unifs"),
        "{shown}"
    );

    // Commands and subcommands.
    assert_eq!(words(&complete("unifs gu", None)), ["guest"]);
    assert_eq!(
        words(&complete("unifs guest st", None)),
        ["start", "status", "stop"]
    );
    assert_eq!(words(&complete("unifs ma", None)), ["man", "manifest"]);
    let opts = words(&complete("unifs guest stop --", None));
    for want in ["--timeout", "--signal", "--config-dir", "--store"] {
        assert!(opts.iter().any(|o| o == want), "{want}: {opts:?}");
    }
    // The keeper's own, hidden option is not offered.
    let opts = words(&complete("unifs guest start --", None));
    assert!(!opts.iter().any(|o| o == "--after-reboot"), "{opts:?}");

    // Guest names: from UNIFS_CONFIG_DIR, or --config-dir on the line.
    assert_eq!(
        words(&complete("unifs guest start ", Some(&cfg))),
        ["db1", "web1", "web2"]
    );
    assert_eq!(
        words(&complete("unifs guest stop we", Some(&cfg))),
        ["web1", "web2"]
    );
    let line = format!(
        "unifs --store /srv/s guest exec --config-dir {} -u root ",
        cfg.display()
    );
    assert_eq!(words(&complete(&line, None)), ["db1", "web1", "web2"]);
    let line = format!("unifs guest status --config-dir={} d", other.display());
    assert_eq!(words(&complete(&line, Some(&cfg))), Vec::<String>::new());
    let line = format!("unifs guest status --config-dir={} ", other.display());
    assert_eq!(words(&complete(&line, Some(&cfg))), ["mail"]);
    // Not where the word is no guest's name: an option's value, a second
    // positional, a command that takes none.
    let none = |line: &str| {
        let got = words(&complete(line, Some(&cfg)));
        assert!(!got.iter().any(|w| w == "web1"), "{line}: {got:?}");
    };
    none("unifs guest stop --timeout ");
    none("unifs guest exec web1 -- ");
    none("unifs guest list ");
    none("unifs store ");
}

/// zsh, driven through a pty (zsh/zpty) as a user's TAB drives it: what
/// the completion functions offer for `line`, a word each.
fn zsh_candidates(fpath: &Path, line: &str, env_dir: Option<&Path>) -> Vec<String> {
    // compadd wrapped to print what it is given; a mark once done. Split
    // ("CA""ND") so the shell's echo of these lines matches neither.
    let driver = r#"
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z '_s37_pre() { compadd() { local -a a; builtin compadd -O a "$@"; print -rl -- "CA""ND:"${^a}; builtin compadd "$@" } }'
zpty -w z '_s37_post() { print -r -- "DO""NE" }'
zpty -w z 'bindkey "^I" complete-word; compprefuncs=(_s37_pre); comppostfuncs=(_s37_post)'
zpty -n -w z "$2"$'\t'
zpty -r z out '*DONE*'
print -r -- "$out"
zpty -d z
"#;
    let mut c = Command::new("zsh");
    c.arg("-f")
        .arg("-c")
        .arg(driver)
        .arg("zsh")
        .arg(fpath)
        .arg(line);
    with_config_dir(&mut c, env_dir);
    let o = run_bounded(c, LIMIT);
    let out = stdout(&o);
    assert!(
        out.contains("DONE"),
        "{line}: no completion ran: {out}{}",
        stderr(&o)
    );
    let mut got: Vec<String> = out
        .split(['\r', '\n'])
        .filter_map(|l| l.find("CAND:").map(|i| l[i + 5..].trim().to_string()))
        .filter(|w| !w.is_empty() && !w.contains('"'))
        .collect();
    got.sort();
    got.dedup();
    got
}

#[test]
fn s37_zsh_completion_completes_commands_and_guest_names() {
    let test = "s37_zsh_completion_completes_commands_and_guest_names";
    let Some((tmp, script, cfg)) = completion_setup(test, "zsh") else {
        return;
    };
    let fpath = tmp.path().join("site-functions");
    std::fs::create_dir(&fpath).unwrap();
    std::fs::rename(&script, fpath.join("_unifs")).unwrap();
    let got = zsh_candidates(&fpath, "unifs gu", None);
    assert!(got.iter().any(|w| w == "guest"), "{got:?}");
    let got = zsh_candidates(&fpath, "unifs guest start ", Some(&cfg));
    assert_eq!(got, ["db1", "web1", "web2"]);
    let line = format!("unifs guest stop --config-dir {} w", cfg.display());
    let got = zsh_candidates(&fpath, &line, None);
    assert_eq!(got, ["web1", "web2"]);
}

#[test]
fn s37_fish_completion_completes_commands_and_guest_names() {
    let test = "s37_fish_completion_completes_commands_and_guest_names";
    let Some((tmp, script, cfg)) = completion_setup(test, "fish") else {
        return;
    };
    let complete = |line: &str, env_dir: Option<&Path>| -> Vec<String> {
        let mut c = Command::new("fish");
        c.args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"]);
        c.arg(&script).arg(line);
        // fish makes its config and data dirs: the test's, not root's.
        c.env("HOME", tmp.path())
            .env("XDG_CONFIG_HOME", tmp.path().join("config"))
            .env("XDG_DATA_HOME", tmp.path().join("data"));
        with_config_dir(&mut c, env_dir);
        let o = run_bounded(c, LIMIT);
        assert!(o.status.success(), "{line}: {}", stderr(&o));
        let mut got: Vec<String> = stdout(&o)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect();
        got.sort();
        got
    };
    assert_eq!(complete("unifs gu", None), ["guest"]);
    assert_eq!(
        complete("unifs guest start ", Some(&cfg)),
        ["db1", "web1", "web2"]
    );
    let line = format!("unifs guest stop --config-dir {} w", cfg.display());
    assert_eq!(complete(&line, None), ["web1", "web2"]);
    let opts = complete("unifs guest start --", None);
    assert!(opts.iter().any(|o| o == "--config-dir"), "{opts:?}");
    assert!(!opts.iter().any(|o| o == "--after-reboot"), "{opts:?}");
}

/// Every command's page name: unifs, unifs-guest, unifs-guest-start, …
fn page_names(cmd: &clap::Command, prefix: &str, names: &mut Vec<String>) {
    let name = match prefix {
        "" => cmd.get_name().to_string(),
        _ => format!("{prefix}-{}", cmd.get_name()),
    };
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            page_names(sub, &name, names);
        }
    }
    names.push(name);
}

/// `man -l --warnings PAGE`, 80 columns: (what it shows, its warnings).
fn man(page: &Path) -> (String, String) {
    let mut c = Command::new("man");
    c.args(["-l", "--warnings"]).arg(page);
    c.env("MANWIDTH", "80");
    c.env_remove("MANPAGER").env("PAGER", "cat");
    let o = run_bounded(c, LIMIT);
    assert!(
        o.status.success(),
        "man -l {}: {}",
        page.display(),
        stderr(&o)
    );
    (stdout(&o), stderr(&o))
}

#[test]
fn s37_man_pages_cover_every_command_and_render_without_warnings() {
    let test = "s37_man_pages_cover_every_command_and_render_without_warnings";
    if !has(test, "man", "--version") {
        return;
    }
    use clap::CommandFactory;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("share/man");
    let mut c = Command::new(unifs_bin());
    c.arg("man").arg(&dir);
    let listed = ok(&run_bounded(c, LIMIT));

    let mut names = Vec::new();
    page_names(&unifs::cli::Cli::command(), "", &mut names);
    assert!(names.len() > 25, "{names:?}");
    for want in ["unifs-guest-start", "unifs-store-gc", "unifs-completions"] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    let mut pages: Vec<PathBuf> = names
        .iter()
        .map(|n| dir.join(format!("man1/{n}.1")))
        .collect();
    pages.push(dir.join("man8/vunify.8"));
    pages.push(dir.join("man8/vfs-mount.8"));
    for page in &pages {
        assert!(page.is_file(), "no {}: {listed}", page.display());
        assert!(listed.contains(&page.display().to_string()), "{listed}");
        let (shown, warnings) = man(page);
        assert_eq!(warnings, "", "{}", page.display());
        assert!(
            shown.contains("SYNOPSIS") && shown.contains("SEE ALSO"),
            "{shown}"
        );
    }
    // Nothing else was written: no page of `help`.
    let written = std::fs::read_dir(dir.join("man1")).unwrap().count()
        + std::fs::read_dir(dir.join("man8")).unwrap().count();
    assert_eq!(written, pages.len(), "{listed}");

    // A subcommand's page has its options and says where its names come from.
    let (shown, _) = man(&dir.join("man1/unifs-guest-stop.1"));
    assert!(
        shown.contains("--timeout") && shown.contains("UNIFS_CONFIG_DIR"),
        "{shown}"
    );
    let (shown, _) = man(&dir.join("man8/vunify.8"));
    assert!(
        shown.contains("vunify [") && shown.contains("--dry-run"),
        "{shown}"
    );
    assert!(shown.contains("unifs-unify(1)"), "{shown}");

    // Without DIR: unifs(1) on stdout, for `unifs man | man -l -`.
    let mut c = Command::new(unifs_bin());
    c.arg("man");
    let page = ok(&run_bounded(c, LIMIT));
    assert!(
        page.contains("\n.TH unifs 1 "),
        "{}",
        &page[..page.len().min(200)]
    );
    assert_eq!(
        page.as_bytes(),
        std::fs::read(dir.join("man1/unifs.1")).unwrap()
    );
}

/// A unit file's `KEY=` lines: (key, value), in order.
fn unit_lines(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn unit_value(lines: &[(String, String)], key: &str) -> String {
    let found = lines.iter().find(|(k, _)| k == key);
    found
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key}= in {lines:?}"))
}

/// `systemd-analyze verify` of `unit` (its file name kept) with the
/// unifs it names replaced by the one built, and the man pages its
/// Documentation= names on MANPATH.
fn verify(test: &str, unit: &Path, dir: &Path) -> bool {
    if !has(test, "systemd-analyze", "--version") {
        return false;
    }
    let man = dir.join("man");
    let mut c = Command::new(unifs_bin());
    c.arg("man").arg(&man);
    ok(&run_bounded(c, LIMIT));
    let text = std::fs::read_to_string(unit).unwrap();
    let text = text.replace("/usr/local/bin/unifs", &unifs_bin().display().to_string());
    let copy = dir.join(unit.file_name().unwrap());
    std::fs::write(&copy, text).unwrap();
    let mut c = Command::new("systemd-analyze");
    c.arg("verify").arg(&copy).env("MANPATH", &man);
    let o = run_bounded(c, LIMIT);
    assert!(
        o.status.success() && stderr(&o).is_empty() && stdout(&o).is_empty(),
        "systemd-analyze verify {}: {}{}",
        unit.display(),
        stdout(&o),
        stderr(&o)
    );
    true
}

/// A cgroup v2 group standing in for a unit's (system.slice/X.service),
/// removed on drop once empty.
pub(crate) struct UnitGroup(pub(crate) PathBuf);

impl UnitGroup {
    pub(crate) fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// `command` run in this group, as systemd runs a unit's ExecStart=.
    fn run(&self, command: &[String], g: &Guest) -> Output {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("echo 0 > \"$1/cgroup.procs\" && shift && exec \"$@\"")
            .arg("sh")
            .arg(&self.0)
            .args(command);
        c.env("UNIFS_CONFIG_DIR", g.config().parent().unwrap());
        c.env("UNIFS_RUN_DIR", &g.run_dir);
        run_bounded(c, LIMIT)
    }
}

impl Drop for UnitGroup {
    fn drop(&mut self) {
        for pid in self.procs() {
            // SAFETY: kill(2) on a process of this test's group.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// contrib/systemd/unifs-guest@.service: it verifies, and its ExecStart=
/// and ExecStop=, run in a group of their own as systemd runs them, start
/// and stop the guest, leaving in the unit's group only the keeper (so
/// RemainAfterExit= keeps it, KillMode= finds nothing of the guest's there)
/// until the stop, and nothing after it; a reboot's new keeper stays there.
#[test]
fn s37_guest_unit_verifies_and_starts_and_stops_the_guest_from_its_group() {
    let test = "s37_guest_unit_verifies_and_starts_and_stops_the_guest_from_its_group";
    let unit = source("contrib/systemd/unifs-guest@.service");
    let lines = unit_lines(&unit);
    assert_eq!(unit_value(&lines, "Type"), "forking");
    let pid_file = unit_value(&lines, "PIDFile");
    assert_eq!(pid_file, "/run/unifs/%i/keeper.pid");
    if !can_run(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    if !verify(test, &unit, tmp.path()) {
        return;
    }
    let Some(v2) = cgroup2_mount() else {
        return skip(test, "no cgroup v2 hierarchy");
    };
    let g = crate::review_s36_reboot::rebooting_guest(
        "s37unit",
        "[ -e /rebooted ] && exec sleep 1000; \
         while [ ! -e /tmp/reboot-now ]; do sleep 1; done; touch /rebooted; reboot -f",
        "",
    );
    let group = UnitGroup(v2.join(format!("s37-unit-{}", std::process::id())));
    std::fs::create_dir(&group.0).unwrap();
    let command = |key: &str| -> Vec<String> {
        let line = unit_value(&lines, key);
        let mut words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.replace("%i", &g.name))
            .collect();
        assert_eq!(words[0], "/usr/local/bin/unifs", "{line}");
        words[0] = unifs_bin().display().to_string();
        words
    };

    let o = group.run(&command("ExecStart"), &g);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // The keeper alone, once what `start` forked has gone its way.
    let keeper_only = |group: &UnitGroup| {
        within_30s(|| {
            let procs = group.procs();
            procs.len() == 1
                && std::fs::read_to_string(format!("/proc/{}/comm", procs[0]))
                    .is_ok_and(|c| c.trim() == "unifs-keeper")
        })
    };
    assert!(keeper_only(&group), "{:?}", group.procs());
    // PIDFile= names it: the unit's main process.
    let pid_file = pid_file
        .replace("/run/unifs", &g.run_dir.display().to_string())
        .replace("%i", &g.name);
    let names_the_keeper = || {
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        group.procs() == [pid.trim().parse::<i32>().unwrap_or(-1)]
    };
    assert!(names_the_keeper(), "{pid_file}: {:?}", group.procs());
    let first = g.state()["pid"].as_i64().unwrap();
    // Its reboot: started again by a keeper in the same group.
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/reboot-now"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut st = g.state();
    while !(st["running"] == true && st["pid"].as_i64() != Some(first)) {
        assert!(Instant::now() < deadline, "not started again: {st}");
        std::thread::sleep(Duration::from_millis(50));
        st = g.state();
    }
    assert_eq!(st["reboots"], 1, "{st}");
    assert!(keeper_only(&group), "{:?}", group.procs());
    assert!(names_the_keeper(), "{pid_file}: {:?}", group.procs());

    let o = group.run(&command("ExecStop"), &g);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        within_30s(|| group.procs().is_empty()),
        "left: {:?}",
        group.procs()
    );
    let st = g.state();
    assert_eq!(st["running"], false, "{st}");
    assert!(
        !st["last_exit"].is_null(),
        "the keeper recorded its end: {st}"
    );
    assert!(!Path::new(&pid_file).exists(), "{pid_file} is left");
}

/// contrib/systemd/mnt-web1.mount verifies and mounts for real as
/// systemd mounts it (`mount WHAT WHERE -t TYPE -o OPTIONS` with its
/// Environment=, then `umount WHERE`); docs/mount.md's fstab line, with
/// its paths made the test's, mounts with `mount -a` and `mount WHERE`.
#[test]
fn s37_mount_unit_and_fstab_line_mount_the_guest_for_real() {
    let test = "s37_mount_unit_and_fstab_line_mount_the_guest_for_real";
    let unit = source("contrib/systemd/mnt-web1.mount");
    let lines = unit_lines(&unit);
    if !crate::common::require_root(test) {
        return;
    }
    if !Path::new("/usr/sbin/mount.fuse3").exists() && !Path::new("/sbin/mount.fuse3").exists() {
        return skip(test, "needs mount.fuse3 (Debian fuse3)");
    }
    let tmp = tempfile::tempdir().unwrap();
    if !verify(test, &unit, tmp.path()) {
        return;
    }
    let guest = tmp.path().join("guests/web1");
    std::fs::create_dir_all(&guest).unwrap();
    std::fs::write(guest.join("motd"), "hello\n").unwrap();
    let store = tmp.path().join("store");
    let mp = tmp.path().join("mnt/web1");
    std::fs::create_dir_all(&mp).unwrap();
    let sbin = tmp.path().join("sbin");
    std::fs::create_dir(&sbin).unwrap();
    std::os::unix::fs::symlink(unifs_bin(), sbin.join("vfs-mount")).unwrap();
    let _guard = UnmountAt(&mp);
    // The unit's and the doc's paths, made the test's.
    let ours = |text: &str| -> String {
        text.replace(
            "/usr/local/sbin/vfs-mount",
            &sbin.join("vfs-mount").display().to_string(),
        )
        .replace("/guests/web1", &guest.display().to_string())
        .replace("/mnt/web1", &mp.display().to_string())
        .replace("/var/lib/unifs", &store.display().to_string())
        .replace(
            "=/guests",
            &format!("={}", tmp.path().join("guests").display()),
        )
    };
    let mounted_and_gone = |mount: &mut Command, umount: &mut Command| {
        let o = run_bounded(std::mem::replace(mount, Command::new("true")), LIMIT);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert!(is_mounted(&mp));
        assert_eq!(std::fs::read_to_string(mp.join("motd")).unwrap(), "hello\n");
        let o = run_bounded(std::mem::replace(umount, Command::new("true")), LIMIT);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert!(!is_mounted(&mp));
    };

    // As systemd runs a mount unit.
    let (key, value) = unit_value(&lines, "Environment")
        .split_once('=')
        .map(|(k, v)| (k.to_string(), ours(v)))
        .unwrap();
    let mut mount = Command::new("mount");
    mount
        .arg(ours(&unit_value(&lines, "What")))
        .arg(ours(&unit_value(&lines, "Where")))
        .args(["-t", &unit_value(&lines, "Type")])
        .args(["-o", &unit_value(&lines, "Options")])
        .env_remove("UNIFS_STORE")
        .env(&key, &value);
    let mut umount = Command::new("umount");
    umount.arg(&mp).arg("-c");
    mounted_and_gone(&mut mount, &mut umount);

    // The fstab line of docs/mount.md.
    let doc = std::fs::read_to_string(source("docs/mount.md")).unwrap();
    let line = doc
        .lines()
        .find(|l| l.starts_with("/usr/local/sbin/vfs-mount#/guests/web1"))
        .expect("docs/mount.md's fstab line");
    let fstab = tmp.path().join("fstab");
    std::fs::write(&fstab, format!("{}\n", ours(line))).unwrap();
    let mut mount = Command::new("mount");
    mount
        .args(["-a", "-T"])
        .arg(&fstab)
        .env("UNIFS_STORE", &store);
    let mut umount = Command::new("umount");
    umount.arg(&mp);
    mounted_and_gone(&mut mount, &mut umount);
    let mut mount = Command::new("mount");
    mount
        .arg("-T")
        .arg(&fstab)
        .arg(&mp)
        .env("UNIFS_STORE", &store);
    let mut umount = Command::new("umount");
    umount.arg(&mp);
    mounted_and_gone(&mut mount, &mut umount);
}
