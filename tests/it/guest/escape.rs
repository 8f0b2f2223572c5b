//! Guest isolation, tested as an attacker: guest root (with the default
//! capabilities) trying to reach the host or hang host-side code.

use super::harness::{can_run, ok, stderr, KillOnDrop, TestRoot};
use crate::common::unifs_bin;
use crate::tree::{ino, unify_json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Builds `src` (C) static into the guest at `/bin/NAME`; false if this
/// host cannot (no cc, no static libc), and the test is skipped.
pub(super) fn cc_into(t: &TestRoot, name: &str, src: &str) -> bool {
    let file = t.dir.path().join(format!("{name}.c"));
    std::fs::write(&file, src).unwrap();
    let built = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(t.root().join("bin").join(name))
        .arg(&file)
        .status();
    built.is_ok_and(|s| s.success())
}

/// [`cc_into`], or says `test` is skipped; under CI a missing compiler is a
/// failure (.ci/run installs gcc and libc6-dev).
pub(crate) fn cc_or_skip(t: &TestRoot, test: &str, name: &str, src: &str) -> bool {
    if cc_into(t, name, src) {
        return true;
    }
    crate::common::skip(test, "needs cc -static (gcc, libc6-dev)");
    false
}

/// Threads of the processes whose command line names `root` (a run's
/// launcher and its overlay daemon) blocked opening a FIFO.
fn threads_opening_a_fifo(root: &Path) -> Vec<String> {
    let want = root.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for (pid, cmd) in crate::fs::harness::unifs_cmdlines() {
        if !cmd.split(|b| *b == 0).any(|a| a == want) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let wchan = std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
            if wchan.contains("wait_for_partner") || wchan.contains("fifo_open") {
                found.push(format!("{} ({wchan})", t.path().display()));
            }
        }
    }
    found
}

/// Opens every FIFO directly in `dir` for writing, which lets a reader
/// blocked in open(2) go on.
fn release_fifo_readers(dir: &Path) {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().is_ok_and(|t| t.is_fifo()) {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(e.path());
        }
    }
}

/// `racer DIR NAME SECONDS`: in DIR, swaps a FIFO with the file NAME
/// (RENAME_EXCHANGE) while another process opens NAME read-only, for
/// SECONDS.
const FIFO_SWAPPER: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 4 || chdir(argv[1])) return 2;
    const char *name = argv[2];
    unlink("fifo");
    if (mkfifo("fifo", 0644)) return 2;
    pid_t opener = fork();
    if (opener == 0)
        for (;;) {
            int fd = open(name, O_RDONLY | O_NONBLOCK);
            if (fd >= 0) close(fd);
        }
    pid_t swapper = fork();
    if (swapper == 0)
        for (;;) renameat2(AT_FDCWD, "fifo", AT_FDCWD, name, RENAME_EXCHANGE);
    sleep(atoi(argv[3]));
    kill(swapper, SIGKILL);
    kill(opener, SIGKILL);
    waitpid(swapper, NULL, 0);
    waitpid(opener, NULL, 0);
    printf("done\n");
    return 0;
}
"#;

#[test]
fn escape_guest_cannot_make_the_overlay_daemon_open_a_fifo() {
    let test = "escape_guest_cannot_make_the_overlay_daemon_open_a_fifo";
    if !can_run(test) {
        return;
    }
    // The daemon opened a shared file's backing name with a blocking open
    // and checked the type afterwards: a guest that swapped a FIFO in at
    // that name (a rename racing the open) left a daemon thread waiting
    // for a writer for good, and its own process unkillable in D state.
    let (t, other) = (TestRoot::new(), TestRoot::new());
    for r in [&t, &other] {
        crate::tree::file(&r.root(), "data", b"shared\n", 0o644);
    }
    let store = t.dir.path().join("store");
    unify_json(&store, &[&t.root(), &other.root()]);
    assert_eq!(ino(&t.root().join("data")), ino(&other.root().join("data")));
    if !cc_or_skip(&t, test, "racer", FIFO_SWAPPER) {
        return;
    }
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("--store").arg(&store).arg("run").arg("--root");
    cmd.arg(t.root())
        .args(["--", "/bin/racer", "/", "data", "5"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let root: PathBuf = t.root();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut hung = Vec::new();
    loop {
        let stuck = threads_opening_a_fifo(&root);
        if !stuck.is_empty() {
            hung.extend(stuck);
            // Let the daemon go on, so the run can end.
            release_fifo_readers(&root);
        }
        if run.0.as_mut().unwrap().try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run.0.take().unwrap().wait_with_output().unwrap();
    hung.sort();
    hung.dedup();
    assert!(
        hung.is_empty(),
        "host-side threads blocked opening the guest's FIFO: {hung:?}"
    );
    assert!(ok(&out).contains("done"), "{}", stderr(&out));
}

#[test]
fn escape_a_guests_set_uid_program_is_not_reachable_by_host_users_in_the_store() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let test = "escape_a_guests_set_uid_program_is_not_reachable_by_host_users_in_the_store";
    if !can_run(test) {
        return;
    }
    // Guest root may make any program set-uid root in its own tree (as a
    // guest's package manager does); unify links it into the store, whose
    // objects/ any host user could enter: running it there made a host
    // user root (and the object stays after the guest removes its file).
    let (t, other) = (TestRoot::new(), TestRoot::new());
    std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for r in [&t, &other] {
        let prog = r.root().join("bin/rootshell");
        std::fs::copy(r.root().join("bin/busybox"), &prog).unwrap();
        crate::tree::set_mtime(&prog, crate::tree::MTIME);
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let store = t.dir.path().join("store");
    unify_json(&store, &[&t.root(), &other.root()]);
    let prog = t.root().join("bin/rootshell");
    assert_eq!(ino(&prog), ino(&other.root().join("bin/rootshell")));
    let object = walk_files(&store.join("objects"))
        .into_iter()
        .find(|p| ino(p) == ino(&prog))
        .expect("the program's object");
    // busybox runs the applet its argv[0] names.
    let ran = Command::new(&object)
        .arg0("true")
        .uid(65534)
        .gid(65534)
        .output()
        .is_ok_and(|o| o.status.success());
    let err = ran.then(|| object.display().to_string());
    assert!(
        err.is_none(),
        "uid 65534 ran the guest's set-uid root program from the store: {err:?}"
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `lifter`: in a user, mount and cgroup namespace of its own, mounts the
/// cgroup2 and the v1 pids hierarchy (where the host has them) and writes
/// `max` to pids.max at the root of each, then waits a little.
const LIMIT_LIFTER: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>
static void put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) { if (write(fd, s, strlen(s)) > 0) printf("wrote %s\n", path); close(fd); }
}
int main(void) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP)) { perror("unshare"); return 0; }
    put("/proc/self/setgroups", "deny");
    put("/proc/self/uid_map", "0 0 1");
    put("/proc/self/gid_map", "0 0 1");
    if (mount("none", "/mnt", "cgroup2", 0, NULL) == 0) { put("/mnt/pids.max", "max"); umount2("/mnt", MNT_DETACH); }
    if (mount("none", "/mnt", "cgroup", 0, "pids") == 0) { put("/mnt/pids.max", "max"); umount2("/mnt", MNT_DETACH); }
    fflush(stdout);
    sleep(2);
    return 0;
}
"#;

#[test]
fn escape_guest_root_cannot_lift_its_own_cgroup_limits() {
    let test = "escape_guest_root_cannot_lift_its_own_cgroup_limits";
    if !can_run(test) {
        return;
    }
    // The guest's cgroup namespace was rooted at the group holding its
    // limits: guest root, in a user namespace of its own (which the
    // default syscall filter now refuses), could mount that group and write
    // pids.max (or memory.max).
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "lifter", LIMIT_LIFTER) {
        return;
    }
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--syscall-filter", "allow-userns"]);
    cmd.args(["--pids", "50", "--", "/bin/lifter"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    let group = format!("unifs/run-{pid}-…");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while run.0.as_mut().unwrap().try_wait().unwrap().is_none() {
        seen.extend(
            [
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/unified",
            ]
            .iter()
            .filter_map(|h| super::harness::run_group(Path::new(h), pid))
            .filter(|g| super::harness::guest_joined(g))
            .filter_map(|g| std::fs::read_to_string(g.join("pids.max")).ok()),
        );
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run.0.take().unwrap().wait_with_output().unwrap();
    assert!(!seen.is_empty(), "no pids.max of {group} found");
    seen.dedup();
    assert_eq!(seen, ["50\n"], "the guest changed its limit: {}", ok(&out));
}
