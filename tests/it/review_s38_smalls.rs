//! Review s38 (smalls): `unifs run`'s signal watcher wakes on the signal
//! (no poll while idle); chattr's retry on a directory that a break races;
//! the log line of a break under an open reader; `unifs demo`'s "try:" lines.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, stderr, wait_bounded, wait_for_descendant, KillOnDrop};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The voluntary context switches of all of `pid`'s threads so far.
fn context_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// `unifs run`'s watcher for a second signal (and for a held one's init)
/// woke every 20 ms to look, so a held signal reached init up to 20 ms
/// late and an idle run woke 50 times a second. It now sleeps until a
/// signal comes; a signal still ends the run (init takes it).
#[test]
fn s38_an_idle_run_does_not_wake_to_poll_for_signals() {
    let test = "s38_an_idle_run_does_not_wake_to_poll_for_signals";
    if !can_run(test) {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args([
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    wait_for_descendant(pid, "sleep");
    // Settled: the start's own waits are over.
    std::thread::sleep(Duration::from_millis(300));
    let before = context_switches(pid);
    std::thread::sleep(Duration::from_secs(2));
    let woke = context_switches(pid) - before;
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = wait_bounded(child, Duration::from_secs(30));
    // Polling every 20 ms is ~100 wakes in 2 s; a loaded machine may
    // stretch the pauses, never to under 10.
    assert!(woke < 10, "{woke} wake-ups in 2 s of an idle run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `chattr +i` on a directory through the mount breaks its shared files,
/// sets the flag, and looks again: a shared file put there meanwhile, by
/// unify (in the backing tree; the guest cannot, the kernel locks the
/// directory through the ioctl), takes the flag off and is broken too, up
/// to 4 tries, then EBUSY. Here a thread renames shared files into it in
/// the backing tree all through the chattr, for real. Either the flag is on
/// and no shared file is in it, or EBUSY with the flag off; no file is
/// lost either way.
#[test]
fn s38_chattr_i_on_a_directory_that_shared_files_are_renamed_into() {
    use crate::fs::harness::{ino, World};
    use crate::review_s36_attrflags::letters;
    use crate::tree::Unflag;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    if !crate::common::require_root(
        "s38_chattr_i_on_a_directory_that_shared_files_are_renamed_into",
    ) {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    let (held, moved) = (200, 2000);
    let name = |i: usize| format!("f{i}");
    for d in ["d", "src"] {
        std::fs::create_dir(g.join(d)).unwrap();
        std::fs::create_dir(h.join(d)).unwrap();
    }
    let mut objects = Vec::new();
    for i in 0..held + moved {
        let d = if i < held { "d" } else { "src" };
        let paths = [g.join(d).join(name(i)), h.join(d).join(name(i))];
        objects.push(ino(&w.shared(format!("{i}\n").as_bytes(), &paths)));
    }
    let _unflag = Unflag(vec![g.join("d")]);
    let m = w.mount(&g, "m", &[]);
    let (stop, renamed) = (AtomicBool::new(false), AtomicUsize::new(0));
    let (during, out) = std::thread::scope(|s| {
        s.spawn(|| {
            for i in held..held + moved {
                let to = g.join("d").join(name(i));
                if stop.load(Ordering::SeqCst)
                    || std::fs::rename(g.join("src").join(name(i)), to).is_err()
                {
                    break;
                }
                renamed.fetch_add(1, Ordering::SeqCst);
                // Paced, as unify's links come: some land in each try.
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        // The renames are under way when chattr starts.
        while renamed.load(Ordering::SeqCst) < 5 {
            std::thread::yield_now();
        }
        let at_start = renamed.load(Ordering::SeqCst);
        let out = Command::new("chattr")
            .arg("+i")
            .arg(m.path("d"))
            .output()
            .unwrap();
        let during = renamed.load(Ordering::SeqCst) - at_start;
        stop.store(true, Ordering::SeqCst);
        (during, out)
    });
    assert!(during > 0, "no rename landed while chattr ran: no race");
    let shared_in_d: Vec<String> = std::fs::read_dir(g.join("d"))
        .unwrap()
        .flatten()
        .filter(|e| objects.contains(&e.metadata().unwrap().ino()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let said = String::from_utf8_lossy(&out.stderr);
    eprintln!("{during} renames during chattr; {}", said.trim());
    if out.status.success() {
        // (`I`: ext4 indexes a directory this big.)
        assert!(letters(&g.join("d")).contains('i'));
        let n = shared_in_d.len();
        assert!(
            n == 0,
            "{n} shared in the +i dir: {:?}",
            &shared_in_d[..n.min(5)]
        );
    } else {
        assert!(said.contains("Device or resource busy"), "{said}");
        assert!(!letters(&g.join("d")).contains('i'));
    }
    for i in 0..held + moved {
        let (d, s) = (g.join("d").join(name(i)), g.join("src").join(name(i)));
        let text = std::fs::read_to_string(&d).or_else(|_| std::fs::read_to_string(&s));
        assert_eq!(text.unwrap(), format!("{i}\n"), "{}", name(i));
        assert_eq!(
            std::fs::read_to_string(h.join(if i < held { "d" } else { "src" }).join(name(i)))
                .unwrap(),
            format!("{i}\n")
        );
    }
}

/// A write open of a shared file that another process holds open for
/// reading gives its path a new node; the reader's locks and inotify
/// watches stay on the old inode (docs/mount.md). The daemon now says so
/// once in its log (info: -v), with the path; not for a break nobody
/// holds open.
#[test]
fn s38_a_break_under_an_open_reader_is_logged_with_its_path() {
    use crate::fs::harness::{wait_until, World};
    if !crate::common::require_root("s38_a_break_under_an_open_reader_is_logged_with_its_path") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    for d in [&g, &h] {
        std::fs::create_dir(d.join("sub")).unwrap();
    }
    for f in ["held", "free"] {
        let paths = [g.join("sub").join(f), h.join("sub").join(f)];
        w.shared(format!("{f}\n").as_bytes(), &paths);
    }
    let m = w.mount(&g, "m", &[]);
    let reader = std::fs::File::open(m.path("sub/held")).unwrap();
    let rw = |p: &str| {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path(p));
        drop(f.unwrap());
    };
    rw("sub/held");
    rw("sub/free");
    let said = "a write open gave this shared file a private copy while other processes held it";
    let lines = || -> Vec<String> {
        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(said))
            .map(str::to_string)
            .collect()
    };
    wait_until(Duration::from_secs(30), || !lines().is_empty());
    drop(reader);
    let lines = lines();
    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
    assert_eq!(lines.len(), 1, "{lines:?}\n{log}");
    assert!(lines[0].contains("INFO"), "{}", lines[0]);
    assert!(lines[0].contains("/sub/held: "), "{}", lines[0]);
    assert!(
        lines[0].contains("locks and inotify watches"),
        "{}",
        lines[0]
    );
}

/// `unifs demo`'s last line, "try: … unifs --store …", for a unifs that
/// PATH finds; one run by its path (`cargo run`, ./target/release/unifs)
/// gets its own path there, so that the line can be pasted.
#[test]
fn s38_demo_names_the_unifs_that_ran_when_path_has_none() {
    if !crate::common::require_root("s38_demo_names_the_unifs_that_ran_when_path_has_none") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(unifs_bin(), bin.join("unifs")).unwrap();
    let exe = std::fs::canonicalize(unifs_bin()).unwrap();
    let try_line = |path: &str| {
        let o = Command::new(unifs_bin())
            .args(["demo", "--guests", "2", "--dir"])
            .arg(tmp.path().join("demo"))
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = out
            .lines()
            .find(|l| l.starts_with("try: "))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("no try: line in {out}"))
    };
    let bare = try_line("/usr/sbin:/usr/bin:/sbin:/bin");
    let want = format!("; {} --store ", exe.display());
    assert!(bare.contains(&want), "{bare}");
    let on_path = try_line(&format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()));
    assert!(on_path.contains("; unifs --store "), "{on_path}");
}

/// README's bash completion goes to /usr/local/share/bash-completion/
/// completions/unifs, which bash-completion loads lazily, at the first TAB
/// on `unifs` (its `complete -D` loader looks in each XDG_DATA_DIRS entry):
/// checked only by hand until now. Here that loader, not a `source` of our
/// script, finds it under a temp /usr/local/share and completes `unifs gu`.
#[test]
fn s38_bash_completion_loads_unifs_completion_lazily() {
    let lib = std::path::Path::new("/usr/share/bash-completion/bash_completion");
    if !lib.exists() {
        return crate::common::skip(
            "s38_bash_completion_loads_unifs_completion_lazily",
            "no bash-completion (the Debian package)",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("usr/local/share");
    let dir = share.join("bash-completion/completions");
    std::fs::create_dir_all(&dir).unwrap();
    let o = Command::new(unifs_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(dir.join("unifs"), &o.stdout).unwrap();
    let script = format!(
        r#"source {lib}
complete -p unifs >/dev/null 2>&1 && echo "loaded before the TAB"
COMP_WORDS=(unifs gu); COMP_CWORD=1; COMP_LINE="unifs gu"; COMP_POINT=8
_completion_loader unifs
spec=$(complete -p unifs) || exit 1
f=${{spec##*-F }}; f=${{f%% *}}
"$f" unifs gu unifs
printf '%s\n' "${{COMPREPLY[@]}}""#,
        lib = lib.display()
    );
    let mut c = Command::new("bash");
    c.args(["--norc", "--noprofile", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("XDG_DATA_DIRS", format!("{}:/usr/share", share.display()));
    let o = crate::guest::harness::run_bounded(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "guest\n",
        "{}",
        stderr(&o)
    );
}
