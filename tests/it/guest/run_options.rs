//! Options of `unifs run` for how the command runs: `--user NAME[:GROUP]`
//! (from the guest's own /etc/passwd and /etc/group, never the host's),
//! `--chdir`, `--read-only`, `--tmpfs` and `--rlimit`.

use super::harness::{can_run, ok, run_bounded, stderr, TestRoot};
use crate::common::{require_strace, unifs_bin};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// alice (1000, home /home/alice, shell /bin/ash, in adm and staff), a
/// private /private.
pub(super) fn add_users(root: &Path) {
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/ash\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nadm:x:4:syslog,alice\nalice:x:1000:\nstaff:x:50:bob,alice\n",
    )
    .unwrap();
    for (dir, owner, mode) in [
        ("home/alice", 1000, 0o700),
        ("srv", 1000, 0o755),
        ("private", 0, 0o700),
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
        std::os::unix::fs::chown(root.join(dir), Some(owner), Some(owner)).unwrap();
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn run_as_a_named_user_gets_its_ids_groups_home_and_environment() {
    if !can_run("run_as_a_named_user_gets_its_ids_groups_home_and_environment") {
        return;
    }
    let t = TestRoot::new();
    add_users(&t.root());
    let out = ok(&t.sh(
        &["--user", "alice"],
        "id -u; id -g; id -G; pwd; echo $HOME $USER $LOGNAME",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{out}");
    let mut groups: Vec<&str> = lines[2].split(' ').collect();
    groups.sort();
    assert_eq!(groups, ["1000", "4", "50"], "{out}");
    assert_eq!(lines[3], "/home/alice", "the home, as a login: {out}");
    assert_eq!(lines[4], "/home/alice alice alice", "{out}");

    // A group given replaces the primary one; numbers work too.
    let out = ok(&t.sh(&["--user", "alice:staff"], "id -u; id -g"));
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1000", "50"], "{out}");
    let out = ok(&t.sh(&["-u", "4242:4243"], "id -u; id -G; pwd; echo $HOME"));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["4242", "4243", "/", "/"],
        "{out}"
    );
}

#[test]
fn run_chdir_is_entered_as_the_user_and_refused_when_it_cannot_be() {
    if !can_run("run_chdir_is_entered_as_the_user_and_refused_when_it_cannot_be") {
        return;
    }
    let t = TestRoot::new();
    add_users(&t.root());
    assert_eq!(ok(&t.sh(&["--chdir", "/srv"], "pwd")), "/srv\n");
    assert_eq!(ok(&t.sh(&["-u", "alice", "-w", "/srv"], "pwd")), "/srv\n");
    // Root may enter /private; alice may not, and the run says so.
    assert_eq!(ok(&t.sh(&["-w", "/private"], "pwd")), "/private\n");
    for (opts, errno) in [
        (&["-u", "alice", "-w", "/private"][..], "EACCES"),
        (&["-w", "/nowhere"][..], "ENOENT"),
    ] {
        let o = t.sh(opts, "echo ran");
        assert_ne!(o.status.code(), Some(0), "{opts:?}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("ran"),
            "{opts:?}"
        );
        let e = stderr(&o);
        assert!(
            e.contains("working directory") && e.contains(errno),
            "{opts:?}: {e}"
        );
    }
    let o = t.sh(&["-w", "srv"], "true");
    assert!(stderr(&o).contains("absolute path"), "{}", stderr(&o));
}

#[test]
fn run_user_is_looked_up_in_the_guest_only() {
    if !can_run("run_user_is_looked_up_in_the_guest_only") {
        return;
    }
    let t = TestRoot::new();
    add_users(&t.root());
    // The host has `daemon`; the guest has not.
    let o = t.sh(&["--user", "daemon"], "true");
    assert_ne!(o.status.code(), Some(0));
    let e = stderr(&o);
    assert!(
        e.contains("no such user") && e.contains("etc/passwd"),
        "{e}"
    );
    // A link out of the tree resolves inside it: /etc/passwd -> /host/passwd
    // is the guest's /host/passwd, not a host file of that name.
    let host = t.dir.path().join("host-passwd");
    fs::write(&host, "eve:x:666:666::/:/bin/sh\n").unwrap();
    fs::remove_file(t.root().join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink(&host, t.root().join("etc/passwd")).unwrap();
    let e = stderr(&t.sh(&["--user", "eve"], "true"));
    assert!(e.contains("no such user"), "{e}");
    assert!(stderr(&t.sh(&["--user", "alice", "--uid", "3"], "true")).contains("cannot be used"));
}

#[test]
fn run_read_only_keeps_the_tree_unchanged_with_tmpfs_and_binds_writable() {
    if !can_run("run_read_only_keeps_the_tree_unchanged_with_tmpfs_and_binds_writable") {
        return;
    }
    let t = TestRoot::new();
    let data = t.dir.path().join("data");
    fs::create_dir(&data).unwrap();
    let bind = format!("{}:/data", data.display());
    for how in ["overlay", "bind"] {
        let out = ok(&t.sh(
            &[
                "--root-mount", how, "--read-only", "--tmpfs", "/tmp:64k", "--tmpfs", "/scratch",
                "--bind", &bind,
            ],
            "touch /x 2>&1; mkdir /etc/y 2>&1; echo > /tmp/a && echo tmp; echo > /scratch/a && echo scratch; \
             echo > /run/a && echo run; echo > /data/a && echo data; \
             dd if=/dev/zero of=/tmp/big bs=1k count=100 2>/dev/null || echo tmp full",
        ));
        assert_eq!(
            out.matches("Read-only file system").count(),
            2,
            "{how}: {out}"
        );
        for line in ["tmp", "scratch", "run", "data", "tmp full"] {
            assert!(out.lines().any(|l| l == line), "{how}: {line}: {out}");
        }
        for gone in ["x", "etc/y", "tmp/a"] {
            assert!(!t.root().join(gone).exists(), "{how}: {gone} in the tree");
        }
        assert!(data.join("a").exists());
        // The mount point was made while the tree was still writable.
        assert!(t.root().join("scratch").is_dir());
    }
    // Without it, the tree is writable.
    ok(&t.sh(&[], "touch /x"));
    assert!(t.root().join("x").exists());
    for bad in ["tmp", "/", "/proc/x", "/tmp:0", "/tmp:lots"] {
        let o = t.sh(&["--tmpfs", bad], "true");
        assert_ne!(o.status.code(), Some(0), "{bad}");
        assert!(stderr(&o).contains("invalid"), "{bad}: {}", stderr(&o));
    }
}

#[test]
fn run_bind_and_tmpfs_destinations_follow_the_guests_links_inside_its_root() {
    if !can_run("run_bind_and_tmpfs_destinations_follow_the_guests_links_inside_its_root") {
        return;
    }
    let t = TestRoot::new();
    let data = t.dir.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("hello"), "hi\n").unwrap();
    // Debian's /var/run -> /run.
    fs::create_dir_all(t.root().join("var")).unwrap();
    std::os::unix::fs::symlink("/run", t.root().join("var/run")).unwrap();
    // A link that, followed on the host, leads out of the tree to a host
    // directory; in the guest it leads to the same path inside its root.
    let host = t.dir.path().join("host-only");
    let away = format!("{}{}", "../".repeat(12), host.display());
    std::os::unix::fs::symlink(&away, t.root().join("away")).unwrap();
    let inside = t.root().join(host.strip_prefix("/").unwrap());
    let bind = format!("{}:/var/run/data:ro", data.display());
    for how in ["overlay", "bind"] {
        let out = ok(&t.sh(
            &[
                "--root-mount",
                how,
                "--bind",
                &bind,
                "--tmpfs",
                "/away/scratch:1m",
            ],
            "cat /run/data/hello; echo > /away/scratch/f && echo written; \
             awk '$2 ~ /scratch$/ {print $3}' /proc/mounts",
        ));
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["hi", "written", "tmpfs"],
            "{how}: {out}"
        );
        assert!(!host.exists(), "{how}: a host directory was made");
        assert!(
            inside.join("scratch").is_dir(),
            "{how}: not made in the tree"
        );
        assert!(
            !inside.join("scratch/f").exists(),
            "{how}: not on the tmpfs"
        );
    }
    // With --read-only too: the mount point is made before the tree is.
    fs::remove_dir_all(
        t.root()
            .join(host.strip_prefix("/").unwrap().iter().next().unwrap()),
    )
    .unwrap();
    let out = ok(&t.sh(
        &["--read-only", "--tmpfs", "/away/scratch"],
        "echo > /away/scratch/f && echo written",
    ));
    assert_eq!(out.trim(), "written");
    assert!(inside.join("scratch").is_dir());
    // Never through a link into the kernel's filesystems.
    std::os::unix::fs::symlink("/proc/sys", t.root().join("kernel")).unwrap();
    let o = t.sh(
        &["--bind", &format!("{}:/kernel/x", data.display())],
        "echo ran",
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("ran"));
    let e = stderr(&o);
    assert!(e.contains("/kernel/x") && e.contains("kernel's"), "{e}");
    assert_eq!(e.matches("setting up the guest failed").count(), 1, "{e}");
}

#[test]
fn run_rlimits_are_the_guests_and_one_the_kernel_refuses_is_an_error() {
    if !can_run("run_rlimits_are_the_guests_and_one_the_kernel_refuses_is_an_error") {
        return;
    }
    let t = TestRoot::new();
    let out = ok(&t.sh(
        &["--rlimit", "nofile=100:200", "--rlimit", "core=0", "--init"],
        "ulimit -Sn; ulimit -Hn; ulimit -c",
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["100", "200", "0"],
        "{out}"
    );
    // Above fs.nr_open: no process may have it, root included.
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let too_many = format!("nofile={}", nr_open + 1);
    let o = t.sh(&["--rlimit", &too_many], "echo ran");
    assert_ne!(o.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("ran"));
    let e = stderr(&o);
    assert!(e.contains("rlimit nofile") && e.contains("EPERM"), "{e}");
    let e = stderr(&t.sh(&["--rlimit", "files=1"], "true"));
    assert!(e.contains("unknown resource"), "{e}");
}

#[test]
fn run_read_only_holds_without_mount_setattr() {
    let test = "run_read_only_holds_without_mount_setattr";
    if !can_run(test) || !require_strace(test) {
        return;
    }
    // Before Linux 5.12 there is no mount_setattr(2): each mount is
    // remounted instead, the guest's root among them.
    let t = TestRoot::new();
    for how in ["bind", "overlay"] {
        let mut cmd = std::process::Command::new("strace");
        cmd.args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=mount_setattr:error=ENOSYS",
        ]);
        cmd.arg(unifs_bin())
            .args(["run", "--root-mount", how, "--read-only", "--root"]);
        cmd.arg(t.root()).args([
            "--",
            "/bin/sh",
            "-c",
            "touch /x 2>&1; grep ' / ' /proc/self/mounts",
        ]);
        let out = ok(&run_bounded(cmd, std::time::Duration::from_secs(60)));
        assert!(out.contains("Read-only file system"), "{how}: {out}");
        assert!(out.contains(" ro,"), "{how}: {out}");
        assert!(!t.root().join("x").exists(), "{how}");
    }
}
