//! Review s44 (docaudit): README.md, docs/*.md and `--help` against what
//! the binary does, as a new operator meets them.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::Mount;
use crate::guest::harness::{can_run, stderr};
use crate::guest::named::Guest;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// README.md and every docs/*.md: (file name, text).
fn doc_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(root.join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

/// Where a command line of the docs ends: a comment, a pipe, a list, a
/// redirection, the end of a command substitution.
fn cut(line: &str) -> &str {
    let mut quote = None;
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'#') if i > 0 && b[i - 1] == b' ' => return &line[..i],
            (None, b'|' | b';' | b'&' | b'>' | b'<' | b')' | b'`') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The words of `line` as a shell splits them (quotes, no expansion), with
/// `$VAR` and `${VAR}` standing for `1` (a number, a name and a path).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => out.extend(word.take()),
            (q, '$') if q != Some('\'') => {
                if chars.peek() == Some(&'{') {
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                } else {
                    while chars
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        chars.next();
                    }
                }
                word.get_or_insert_with(String::new).push('1');
            }
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    out
}

/// Every `unifs …`, `vunify …` and `vfs-mount …` command line the docs
/// give: in `sh` blocks wherever a command starts, in other blocks at the
/// start of a line, and in inline code. Each as (where, the line as
/// written).
fn doc_command_lines() -> Vec<(String, String, bool)> {
    let starts = ["unifs ", "vunify ", "vfs-mount "];
    let mut found = Vec::new();
    for (name, text) in doc_files() {
        let mut fence: Option<String> = None;
        let mut joined = String::new();
        for (n, raw) in text.lines().enumerate() {
            let at = format!("{name}:{}", n + 1);
            let trimmed = raw.trim_start();
            if let Some(info) = trimmed.strip_prefix("```") {
                fence = match fence {
                    Some(_) => None,
                    None => Some(info.trim().to_string()),
                };
                continue;
            }
            match fence.as_deref() {
                Some(info) => {
                    // A line continued with `\`.
                    if let Some(head) = trimmed.strip_suffix('\\') {
                        joined.push_str(head);
                        continue;
                    }
                    let line = std::mem::take(&mut joined) + trimmed;
                    let line = line.strip_prefix("$ ").unwrap_or(&line).to_string();
                    let mut at_start: Vec<usize> = Vec::new();
                    if starts.iter().any(|s| line.starts_with(s)) {
                        at_start.push(0);
                    }
                    if info == "sh" {
                        for sep in ["| ", "&& ", "; ", "$(", "then ", "do ", "|| "] {
                            for (i, _) in line.match_indices(sep) {
                                let from = i + sep.len();
                                let rest = line[from..].trim_start();
                                if starts.iter().any(|s| rest.starts_with(s)) {
                                    at_start.push(line.len() - rest.len());
                                }
                            }
                        }
                    }
                    // (A version line of a tool's output: `unifs 0.1.0; …`.)
                    at_start.retain(|&i| {
                        !line[i..]
                            .split_whitespace()
                            .nth(1)
                            .is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                    });
                    for i in at_start {
                        found.push((at.clone(), cut(&line[i..]).trim().to_string(), true));
                    }
                }
                None => {
                    let mut rest = raw;
                    while let Some(i) = rest.find('`') {
                        let after = &rest[i + 1..];
                        let Some(end) = after.find('`') else { break };
                        let span = &after[..end];
                        // (Not a message quoted: `unifs mount needs root (uid N here`.)
                        let message = span.split_whitespace().any(|w| w.starts_with('('));
                        if starts.iter().any(|s| span.starts_with(s)) && !message {
                            found.push((at.clone(), cut(span).trim().to_string(), false));
                        }
                        rest = &after[end + 1..];
                    }
                }
            }
        }
    }
    found
}

/// `line` as the arguments clap is given: `vunify`/`vfs-mount` as the
/// binary takes them (`unifs unify`, `unifs mount`), a synopsis' optional
/// `[…]` parts in, `…` out, and its placeholders given a value of their kind.
fn as_args(line: &str) -> Vec<String> {
    let mut args = vec!["unifs".to_string()];
    for (i, w) in words(line).into_iter().enumerate() {
        if i == 0 {
            match w.as_str() {
                "vunify" => args.push("unify".into()),
                "vfs-mount" => args.push("mount".into()),
                _ => {}
            }
            continue;
        }
        let w = w
            .trim_matches(|c| c == '[' || c == ']')
            .replace(['…'], "")
            .replace("...", "");
        let w = match w.as_str() {
            "" | "OPTIONS" | "ARGS" => continue,
            "N" | "SECS" | "W" => "2".to_string(),
            "SIZE" => "1G".to_string(),
            "SIG" => "SIGTERM".to_string(),
            _ => w,
        };
        args.push(w);
    }
    args
}

/// A guard: every command line README.md and docs/*.md give parses (clap
/// accepts its command, options and values), so a renamed or removed option
/// cannot stay in the docs.
#[test]
fn s44_every_command_line_of_the_docs_parses() {
    use clap::Parser;
    let lines = doc_command_lines();
    assert!(
        lines.len() > 100,
        "found only {} command lines",
        lines.len()
    );
    let mut wrong = Vec::new();
    for (at, line, whole) in &lines {
        use clap::error::ErrorKind as K;
        let args = as_args(line);
        match unifs::cli::Cli::try_parse_from(&args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    K::DisplayHelp
                        | K::DisplayVersion
                        | K::DisplayHelpOnMissingArgumentOrSubcommand
                ) => {}
            // Prose names a command (`unifs mount`, `--since`) without its
            // arguments; a code block gives it whole.
            Err(e)
                if !whole
                    && matches!(e.kind(), K::MissingRequiredArgument | K::MissingSubcommand)
                    || e.to_string().contains("a value is required") => {}
            Err(e) => {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default().to_string();
                wrong.push(format!("{at}: `{line}`: {:?} {first}", e.kind()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// README.md's Mount example was `unifs mount /vservers/web1
/// /run/unifs/web1`, and its Guests example `unifs guest start web1`:
/// /run/unifs/web1 is guest web1's runtime directory (the default
/// --run-dir). A start with a tree mounted there wrote through the mount:
/// the tree's root became mode 0700 (no user of the guest could enter it)
/// and the guest's `lock` and `mount.log` were left in it, though the start
/// failed. Now it is refused before anything is written, naming the
/// directory and what to do.
#[test]
fn s44_guest_start_refuses_a_run_dir_with_a_tree_mounted_over_it() {
    if !can_run("s44_guest_start_refuses_a_run_dir_with_a_tree_mounted_over_it") {
        return;
    }
    let g = Guest::new("s44rundir", "[\"/bin/sleep\", \"1000\"]", false);
    let tree = g.t.root();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = names(&tree);
    // The README's order: the tree mounted by hand at /run/unifs/NAME …
    let at = g.run_dir.join(&g.name);
    std::fs::create_dir_all(&at).unwrap();
    let m = Mount::start(&g.t.dir.path().join("store"), &tree, &at, &[]);
    // … then the guest started.
    let out = g.unifs(&["start", &g.name]);
    let err = stderr(&out);
    assert_eq!(mode(&tree), 0o755, "the tree's root changed mode: {err}");
    assert_eq!(names(&tree), before, "files left in the tree: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the runtime directory of guest {}", g.name))
            && err.contains(&*at.to_string_lossy())
            && err.contains("unmount it first"),
        "{err}"
    );
    // stop and update are refused alike, changing nothing.
    for args in [&["stop"][..], &["update", "--pids", "50"]] {
        let args: Vec<&str> = args.iter().copied().chain([&*g.name]).collect();
        let out = g.unifs(&args);
        let e = stderr(&out);
        assert!(!out.status.success() || e.is_empty(), "{args:?}: {e}");
        assert_eq!(mode(&tree), 0o755, "{args:?} changed the tree's mode: {e}");
        assert_eq!(names(&tree), before, "{args:?} left files in the tree: {e}");
    }
    drop(m);
    // Unmounted, the guest starts.
    let out = g.unifs(&["start", &g.name]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The names in `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// README.md's and docs/mount.md's first mount is of a mount point that a
/// fresh host lacks (`/mnt/web1`): the error named it, but said nothing of
/// what to do (mount(8) makes none, nor does unifs).
#[test]
fn s44_a_missing_mount_point_is_said_with_how_to_make_it() {
    if !require_root("s44_a_missing_mount_point_is_said_with_how_to_make_it") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let guest = d.path().join("web1");
    std::fs::create_dir(&guest).unwrap();
    let mp = d.path().join("mnt/web1");
    let out = Command::new(unifs_bin())
        .arg("--store")
        .arg(d.path().join("store"))
        .arg("mount")
        .arg(&guest)
        .arg(&mp)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("mkdir -p {}", mp.display())),
        "no way out said: {err}"
    );
    assert!(!mp.exists());
}

/// A guard: every command and subcommand answers `--help` and `help CMD`
/// (exit 0, its usage on stdout), and `vunify`/`vfs-mount` name themselves.
#[test]
fn s44_every_command_answers_help() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: Vec<String>, all: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            all.push(p.clone());
            walk(sub, p, all);
        }
    }
    let mut all = Vec::new();
    walk(&unifs::cli::Cli::command(), Vec::new(), &mut all);
    assert!(all.len() > 25, "{all:?}");
    for path in &all {
        let asked: [Vec<String>; 2] = [
            path.iter().cloned().chain(["--help".into()]).collect(),
            ["help".to_string()]
                .into_iter()
                .chain(path.iter().cloned())
                .collect(),
        ];
        for args in asked {
            let out = Command::new(unifs_bin()).args(&args).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(&format!("Usage: unifs {}", path.join(" "))),
                "unifs {args:?}: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let d = tempfile::tempdir().unwrap();
    for (alias, usage) in [
        ("vunify", "Usage: vunify "),
        ("vfs-mount", "Usage: vfs-mount "),
    ] {
        let link = d.path().join(alias);
        std::os::unix::fs::symlink(unifs_bin(), &link).unwrap();
        let out = Command::new(&link).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(usage),
            "{alias}: {text}"
        );
    }
}

/// A guard: docs/guests.md's example config (its `toml` block) is a config
/// unifs takes as written: `guest start` gets past reading it to its
/// `root`, which this host lacks.
#[test]
fn s44_the_example_config_of_the_docs_is_read() {
    if !require_root("s44_the_example_config_of_the_docs_is_read") {
        return;
    }
    let (_, text) = doc_files()
        .into_iter()
        .find(|(n, _)| n == "docs/guests.md")
        .unwrap();
    let block: String = text
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .to_string();
    assert!(block.contains("[limits]"), "{block}");
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let root = d.path().join("nowhere");
    let toml = block.replace("\"/srv/guests/web1\"", &format!("{:?}", root));
    std::fs::write(conf.join("s44docex.toml"), toml).unwrap();
    let out = Command::new(unifs_bin())
        .args(["guest", "start", "--config-dir"])
        .arg(&conf)
        .arg("--run-dir")
        .arg(d.path().join("run"))
        .arg("s44docex")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("guest root {} does not exist", root.display())),
        "{err}"
    );
}

/// docs/backup.md's recipes write `store snapshot $B/catalog.db`: run a
/// second time into the same directory (the next night's backup without its
/// clean-up), the error named the file but not what to do.
#[test]
fn s44_a_snapshot_over_an_existing_file_says_what_to_do() {
    if !require_root("s44_a_snapshot_over_an_existing_file_says_what_to_do") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    crate::tree::init_store(&store);
    let dest = d.path().join("catalog.db");
    std::fs::write(&dest, b"last night's").unwrap();
    let out = Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["store", "snapshot"])
        .arg(&dest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&*dest.to_string_lossy()) && err.contains("remove it first, or name another"),
        "{err}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"last night's");
}
