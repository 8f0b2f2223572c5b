//! Review s27: unifs run from another PID namespace, a user namespace whose
//! uid 0 is not the host's root, or a chroot, and with a /dev/fuse that is
//! not the FUSE device: it must never act on the wrong processes or files,
//! and must say what is wrong before doing anything.

use crate::common::unifs_bin;
use crate::guest::harness::{
    alive, can_run, is_mounted, ok, run_bounded, stderr, stdout, TestRoot,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `unifs guest ARGS` of guest `g`, from a PID namespace of its own.
fn in_new_pid_ns(g: &Guest, args: &[&str]) -> Output {
    let mut cmd = g.command();
    cmd.args(args);
    let cmd = crate::common::wrapped(&["unshare", "--pid", "--fork", "--mount-proc"], &cmd);
    run_bounded(cmd, Duration::from_secs(30))
}

#[test]
fn s27_guest_of_another_pid_namespace_is_neither_stale_nor_touched() {
    if !can_run("s27_guest_of_another_pid_namespace_is_neither_stale_nor_touched") {
        return;
    }
    // Seen from another PID namespace, the record's init pid names another
    // process (or none): the guest was called stale, and `stop` cleaned it
    // up, unmounting the root under the running guest.
    let g = Guest::new("pidns", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.init_pid();
    let root = g.run(&g.name).join("root");

    let o = in_new_pid_ns(&g, &["status", &g.name]);
    assert_eq!(o.status.code(), Some(4), "status: {o:?}");
    assert!(
        stdout(&o).contains("running (started in another PID namespace)"),
        "status: {}",
        stdout(&o)
    );
    let o = in_new_pid_ns(&g, &["status", "--json", &g.name]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["other_pid_ns"], true, "{json}");
    assert_eq!(json["stale"], false, "{json}");
    let o = in_new_pid_ns(&g, &["list", "--json"]);
    assert!(o.status.success(), "list: {}", stderr(&o));
    assert!(
        stdout(&o).contains("\"other_pid_ns\": true"),
        "list: {}",
        stdout(&o)
    );

    for args in [
        vec!["stop", "--timeout", "0", &g.name],
        vec!["exec", &g.name, "--", "/bin/true"],
        vec!["ps", &g.name],
        vec!["start", &g.name],
    ] {
        let o = in_new_pid_ns(&g, &args);
        assert!(!o.status.success(), "{args:?} succeeded: {o:?}");
        assert!(
            stderr(&o).contains("from the PID namespace that started it"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert!(alive(pid), "init {pid} was killed from another namespace");
    assert!(is_mounted(&root), "its root was unmounted under it");
    assert!(g.run(&g.name).join("state.json").exists());
    // From its own namespace all goes on as before.
    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(0), "status: {o:?}");
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
}

#[test]
fn s27_state_of_an_older_unifs_without_pid_ns_reads_as_before() {
    if !can_run("s27_state_of_an_older_unifs_without_pid_ns_reads_as_before") {
        return;
    }
    let g = Guest::new("oldns", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let state = g.run(&g.name).join("state.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(rec["pid_ns"].is_u64(), "no pid_ns recorded: {rec}");
    rec.as_object_mut().unwrap().remove("pid_ns");
    std::fs::write(&state, serde_json::to_vec(&rec).unwrap()).unwrap();
    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(0), "status: {o:?}");
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
}

/// Runs `unifs ARGS` (store `store`, in `dir`) as uid 0 of a user namespace
/// whose uid 0 is the host's uid `host_uid`.
pub(crate) fn in_user_ns(host_uid: u32, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={host_uid}"))
        .arg(format!("--regid={host_uid}"))
        .arg("--clear-groups")
        .args(["unshare", "--user", "--map-root-user"])
        .arg(unifs_bin())
        .args(args)
        .env("UNIFS_STORE", dir.join("store"))
        .env("UNIFS_CONFIG_DIR", dir.join("config"))
        .env("UNIFS_RUN_DIR", dir.join("run"))
        .current_dir(dir);
    run_bounded(cmd, Duration::from_secs(30))
}

#[test]
fn s27_commands_that_change_things_refuse_a_user_namespace_root() {
    if !crate::common::require_root("s27_commands_that_change_things_refuse_a_user_namespace_root")
    {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("unifs-s27-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let guest = d.join("g1");
    std::fs::create_dir(&guest).unwrap();
    std::fs::write(guest.join("f"), "x").unwrap();
    let g = guest.to_str().unwrap();
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let refused: Vec<Vec<&str>> = vec![
        vec!["unify", g],
        vec!["demo"],
        vec!["mount", g, m],
        vec!["store", "init"],
        vec!["store", "verify"],
        vec!["store", "gc"],
        vec!["manifest", g],
        vec!["restore", "--manifest", "m.jsonl", "--from", g, "out"],
        vec!["run", "--root", g, "--", "/bin/true"],
        vec!["guest", "start", "x"],
        vec!["guest", "stop", "x"],
    ];
    for args in &refused {
        let o = in_user_ns(65534, d, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
        let want = format!(
            "unifs: unifs {} must run as root in the host's user namespace \
             (uid 0 here maps to uid 65534)\n",
            args[..if args[0] == "store" || args[0] == "guest" {
                2
            } else {
                1
            }]
                .join(" ")
        );
        assert_eq!(stderr(&o), want, "{args:?}");
    }
    assert!(!d.join("unifs-demo").exists(), "demo did part of its work");
    assert!(!d.join("store").exists(), "a store was made");
    // What only reads stays allowed.
    for args in [vec!["--help"], vec!["guest", "list"]] {
        let o = in_user_ns(65534, d, &args);
        assert!(
            !stderr(&o).contains("user namespace"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

/// `unifs ARGS` chrooted into a directory that is no mount point, in a
/// mount namespace of its own holding binds of the host's directories.
fn in_chroot(t: &TestRoot, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let top = t.dir.path().join("chroot");
    std::fs::create_dir_all(&top).unwrap();
    let mut script = String::from("set -e; mount --make-rprivate /\n");
    // The binary and the test's files may live anywhere (CI clones into
    // its own top-level directory): bind the top of each as well.
    let mut dirs: Vec<String> = [
        "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/tmp", "/work", "/var",
    ]
    .map(String::from)
    .to_vec();
    for path in [unifs_bin(), t.dir.path().to_path_buf()] {
        let path = path.canonicalize().unwrap();
        if let Some(std::path::Component::Normal(first)) = path.components().nth(1) {
            let top_dir = format!("/{}", first.to_str().unwrap());
            if !dirs.contains(&top_dir) {
                dirs.push(top_dir);
            }
        }
    }
    for dir in &dirs {
        let dir = dir.as_str();
        if Path::new(dir).exists() {
            script += &format!(
                "mkdir -p {0}{dir}; mount --rbind {dir} {0}{dir}\n",
                top.display()
            );
        }
    }
    for dir in ["/proc", "/sys", "/dev"] {
        script += &format!(
            "mkdir -p {0}{dir}; mount --rbind {dir} {0}{dir}\n",
            top.display()
        );
    }
    script += &format!("exec chroot {} \"$@\"", top.display());
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", &script, "sh"])
        .arg(unifs_bin())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(cmd, Duration::from_secs(30))
}

const CHROOT: &str = "/ is not a mount point (running in a chroot?): pivot_root needs one; \
                      run `mount --rbind DIR DIR` on the chroot's root first, or run unifs \
                      outside the chroot";

#[test]
fn s27_run_and_start_in_a_chroot_say_so_before_mounting() {
    if !can_run("s27_run_and_start_in_a_chroot_say_so_before_mounting") {
        return;
    }
    let t = TestRoot::new();
    let store = t.dir.path().join("no-store");
    let root = t.root();
    let o = in_chroot(
        &t,
        &[("UNIFS_STORE", &store)],
        &["run", "--root", root.to_str().unwrap(), "--", "/bin/true"],
    );
    assert_eq!(o.status.code(), Some(1), "run: {o:?}");
    assert_eq!(stderr(&o), format!("unifs: {CHROOT}\n"), "run");

    let config = t.dir.path().join("config");
    let run = t.dir.path().join("run");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("c1.toml"),
        format!("root = {root:?}\ninit = {SLEEP}\n"),
    )
    .unwrap();
    let o = in_chroot(
        &t,
        &[
            ("UNIFS_STORE", &store),
            ("UNIFS_CONFIG_DIR", &config),
            ("UNIFS_RUN_DIR", &run),
        ],
        &["guest", "start", "c1"],
    );
    assert_eq!(o.status.code(), Some(1), "start: {o:?}");
    assert_eq!(stderr(&o), format!("unifs: {CHROOT}\n"), "start");
    assert!(!run.join("c1/root").exists(), "start made its root");
    assert!(!run.join("c1/state.json").exists());
}

#[test]
fn s27_mount_names_a_dev_fuse_that_is_no_fuse_device() {
    if !crate::common::require_root("s27_mount_names_a_dev_fuse_that_is_no_fuse_device") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("unifs-s27-")
        .tempdir()
        .unwrap();
    let (guest, mnt, fake) = (
        dir.path().join("g"),
        dir.path().join("m"),
        dir.path().join("f"),
    );
    std::fs::create_dir(&guest).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(&fake, "").unwrap();
    // The bind lives only in the namespace, which ends with the command.
    let script = format!(
        "set -e; mount --make-rprivate /; mount --bind {} /dev/fuse; exec \"$@\"",
        fake.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", &script, "sh"])
        .arg(unifs_bin())
        .arg("mount")
        .args([&guest, &mnt])
        .env("UNIFS_STORE", dir.path().join("no-store"));
    let o = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(
        stderr(&o),
        "unifs: /dev/fuse is a regular file, not the FUSE device (character device 10:229); \
         remove it and make the device: `mknod /dev/fuse c 10 229`\n"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn s28_a_guest_of_a_pid_namespace_that_ended_is_cleaned_up_from_here() {
    if !can_run("s28_a_guest_of_a_pid_namespace_that_ended_is_cleaned_up_from_here") {
        return;
    }
    // Started from a PID namespace that then ended (its init, the
    // `unshare --fork` child, exits once start returns): the guest ended
    // with it, yet from here it was "running (started in another PID
    // namespace)" for good, and start and stop refused it.
    let g = Guest::new("endedns", SLEEP);
    let o = in_new_pid_ns(&g, &["start", &g.name]);
    assert!(o.status.success(), "start: {o:?}");
    let state = g.run(&g.name).join("state.json");
    assert!(state.exists(), "no record written");

    let o = g.unifs(&["status", &g.name]);
    assert!(
        !stdout(&o).contains("another PID namespace"),
        "status: {o:?}"
    );
    assert!(stdout(&o).contains("stopped"), "status: {o:?}");
    assert!(stderr(&o).contains("PID namespace that has ended"), "{o:?}");
    assert!(state.exists(), "status moved the record");
    ok(&g.unifs(&["start", &g.name]));
    assert!(g.run(&g.name).join("state.json.ended-pid-ns").exists());
    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(0), "status: {o:?}");
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
}
