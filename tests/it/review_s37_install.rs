//! Review s37 (install): README.md's Install section, followed as written by
//! an operator on a fresh Debian host, under a temp prefix standing in for
//! `/`; and the install lines `--help` prints agree with it.

use crate::common::unifs_bin;
use crate::guest::harness::{ok, run_bounded, stdout};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The lines of README.md's first `sh` block under "## Install".
fn install_block() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("\n## Install\n").nth(1).expect("## Install");
    let block = section.split("```sh\n").nth(1).expect("a sh block");
    let block = block.split("```").next().unwrap();
    block.lines().map(str::to_owned).collect()
}

/// A line of a shell block without its `# comment`.
fn command_of(line: &str) -> &str {
    line.split(" #").next().unwrap().trim()
}

/// `unifs ARGS` output.
fn unifs(args: &[&str]) -> String {
    let mut c = Command::new(unifs_bin());
    c.args(args);
    ok(&run_bounded(c, LIMIT))
}

#[test]
fn s37_help_install_lines_are_the_readmes() {
    let block: Vec<String> = install_block()
        .iter()
        .map(|l| command_of(l).to_owned())
        .collect();
    for sub in ["completions", "man"] {
        let help = unifs(&[sub, "--help"]);
        let lines = help
            .lines()
            .skip_while(|l| !l.contains("Install (README.md"));
        let lines: Vec<&str> = lines.skip(1).take_while(|l| l.starts_with("  ")).collect();
        assert!(
            !lines.is_empty(),
            "no install lines in {sub} --help:\n{help}"
        );
        for l in lines {
            assert!(
                block.iter().any(|b| b == l.trim()),
                "`unifs {sub} --help` says `{}`, README.md's Install does not:\n{}",
                l.trim(),
                block.join("\n")
            );
        }
    }
}

/// The directories a fresh Debian 12 with unifs's packages has (base-files:
/// /usr/local/*; zsh-common: site-functions; fish: /etc/fish/completions);
/// not bash-completion's /usr/local one.
const STOCK_DIRS: [&str; 6] = [
    "usr/local/bin",
    "usr/local/sbin",
    "usr/local/share/man",
    "usr/local/share/zsh/site-functions",
    "etc/fish/completions",
    "etc/systemd/system",
];

/// README.md's Install block as a script run under `root`: its paths moved
/// below it, `cargo install` by a copy of the built binary, and what needs a
/// booted systemd or the host's man database (`systemctl`, `mandb`) left out.
fn install_script(root: &Path) -> String {
    let r = root.display();
    let mut script = String::from("set -eu\n");
    for line in install_block() {
        let cmd = command_of(&line);
        if cmd.starts_with("cargo install") {
            script += &format!("cp {} {r}/usr/local/bin/unifs\n", unifs_bin().display());
            continue;
        }
        if cmd.starts_with("systemctl") || cmd.is_empty() {
            continue;
        }
        let cmd = cmd
            .replace(" && mandb -q", "")
            .replace("/usr/local/", &format!("{r}/usr/local/"))
            .replace(" /etc/", &format!(" {r}/etc/"));
        let cmd = match cmd.strip_prefix("unifs ") {
            Some(rest) => format!("{r}/usr/local/bin/unifs {rest}"),
            None => cmd,
        };
        script += &cmd;
        script.push('\n');
    }
    script
}

/// The value of `key=` in a unit file.
fn unit_value(unit: &str, key: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(unit)).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{key}=")));
    line.unwrap_or_else(|| panic!("no {key}= in {unit}"))[key.len() + 1..].to_owned()
}

#[test]
fn s37_readme_install_steps_run_on_a_fresh_host_and_match_the_units() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for d in STOCK_DIRS {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let script = install_script(root);
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let o = run_bounded(c, LIMIT);
    assert!(
        o.status.success(),
        "README.md's Install steps failed:\n{script}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let under = |p: &str| -> PathBuf { root.join(p.trim_start_matches('/')) };
    for f in [
        "/usr/local/share/man/man1/unifs.1",
        "/usr/local/share/man/man1/unifs-guest-start.1",
        "/usr/local/share/man/man8/vunify.8",
        "/usr/local/share/man/man8/vfs-mount.8",
        "/usr/local/share/bash-completion/completions/unifs",
        "/usr/local/share/zsh/site-functions/_unifs",
        "/etc/fish/completions/unifs.fish",
        "/etc/systemd/system/unifs-guest@.service",
    ] {
        let len = std::fs::metadata(under(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} not installed (or empty):\n{script}");
    }
    // The programs the units and the fstab line run are where the steps put
    // them; the alias links point at the installed binary.
    let exec = unit_value("contrib/systemd/unifs-guest@.service", "ExecStart");
    let what = unit_value("contrib/systemd/mnt-web1.mount", "What");
    let programs = [
        exec.split(' ').next().unwrap(),
        what.split('#').next().unwrap(),
    ];
    for p in programs {
        assert!(
            under(p).exists(),
            "{p} (contrib/systemd) is not where README.md installs it"
        );
    }
    for (alias, usage) in [
        ("vunify", "Usage: vunify"),
        ("vfs-mount", "Usage: vfs-mount"),
    ] {
        let link = under(&format!("/usr/local/sbin/{alias}"));
        let target = std::fs::read_link(&link).unwrap();
        assert_eq!(target, under("/usr/local/bin/unifs"), "{alias}");
        let o = run_bounded(
            {
                let mut c = Command::new(&link);
                c.arg("--help");
                c
            },
            LIMIT,
        );
        assert!(stdout(&o).contains(usage), "{alias} --help: {}", stdout(&o));
    }
}
