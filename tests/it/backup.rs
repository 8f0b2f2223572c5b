//! The store as a backup source: manifests, tar and restic round trips,
//! independent object-id check, corruption, catalog snapshots.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether an external tool is installed; outside CI a test skips without
/// it, under CI it must be there (.ci/run installs it).
pub(crate) fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        crate::common::skip(test, &format!("{tool} is not installed"));
    }
    found
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three guests with a bit of everything a root tree has.
fn build_guests(dir: &Path) -> Vec<PathBuf> {
    let guests: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("g{i}"))).collect();
    for (i, g) in guests.iter().enumerate() {
        for j in 0..15u64 {
            file(
                g,
                &format!("usr/lib/lib{j}.so"),
                &bytes(j, 3000 + j as usize * 100),
                0o644,
            );
        }
        file(g, "usr/bin/su", &bytes(40, 9000), 0o4755);
        std::os::unix::fs::chown(g.join("usr/bin/su"), Some(0), Some(0)).unwrap();
        // chown clears set-uid: set the mode again, as a package manager does.
        fs::set_permissions(
            g.join("usr/bin/su"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4755),
        )
        .unwrap();
        file(g, "usr/share/odd mode", &bytes(41, 500), 0o640);
        std::os::unix::fs::chown(g.join("usr/share/odd mode"), Some(33), Some(4)).unwrap();
        set_xattr(&g.join("usr/lib/lib2.so"), "user.pkg", b"libc6");
        set_xattr(&g.join("usr/lib/lib3.so"), "trusted.overlay.x", b"y");
        file(g, "usr/bin/perl", &bytes(42, 20_000), 0o755);
        fs::hard_link(g.join("usr/bin/perl"), g.join("usr/bin/perl5.36")).unwrap();
        std::os::unix::fs::symlink("../lib/lib1.so", g.join("usr/bin/link")).unwrap();
        file(g, "etc/hostname", format!("g{i}\n").as_bytes(), 0o644);
        file(g, "var/lib/data", &bytes(100 + i as u64, 7000), 0o600);
        file(g, "usr/share/empty", b"", 0o644);
        fs::create_dir_all(g.join("dev")).unwrap();
        unifs::sys::mknod(&g.join("dev/null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
        unifs::sys::mknod(&g.join("dev/fifo"), libc::S_IFIFO | 0o600, 0, 0).unwrap();
        fs::create_dir_all(g.join("srv/ro")).unwrap();
        fs::set_permissions(
            g.join("srv/ro"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
    }
    guests
}

pub(crate) fn manifest(store: &Path, guest: &Path, out: &Path) {
    let o = unifs(store, &[&"manifest", &guest, &"-o", &out]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn private_paths(store: &Path, guest: &Path) -> Vec<u8> {
    let o = unifs(
        store,
        &[&"manifest", &guest, &"--format", &"private-paths", &"-0"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn tar_round_trip_restores_every_guest_exactly() {
    if !require_root("tar_round_trip") || !have("tar", "tar_round_trip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    let before: Vec<Snapshot> = guests.iter().map(|g| snapshot_for_restore(g)).collect();
    unify_json(&store, &[&guests[0], &guests[1], &guests[2]]);
    let backup = lab.join("backup");
    fs::create_dir_all(&backup).unwrap();
    for (i, g) in guests.iter().enumerate() {
        manifest(&store, g, &backup.join(format!("g{i}.jsonl")));
        let list = backup.join(format!("g{i}.private"));
        fs::write(&list, private_paths(&store, g)).unwrap();
        run(Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--null", "-cf"])
            .arg(backup.join(format!("g{i}.tar")))
            .arg("-C")
            .arg(g)
            .arg("-T")
            .arg(&list));
    }
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-cf"])
        .arg(backup.join("store.tar"))
        .arg("-C")
        .arg(lab)
        .arg("store"));
    for g in &guests {
        fs::set_permissions(
            g.join("srv/ro"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        fs::remove_dir_all(g).unwrap();
    }
    fs::remove_dir_all(&store).unwrap();

    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(backup.join("store.tar"))
        .arg("-C")
        .arg(lab));
    assert_verify_clean(&store);
    for (i, g) in guests.iter().enumerate() {
        let private = lab.join(format!("private{i}"));
        fs::create_dir_all(&private).unwrap();
        run(Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(backup.join(format!("g{i}.tar")))
            .arg("-C")
            .arg(&private));
        let m = backup.join(format!("g{i}.jsonl"));
        let o = unifs(
            &store,
            &[
                &"restore",
                &"--json",
                &"--manifest",
                &m,
                &"--from",
                &private,
                g,
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(report["objects_linked"].as_u64().unwrap() >= 16, "{report}");
        assert_invisible(
            &before[i],
            &snapshot_for_restore(g),
            &format!("restored g{i}"),
        );
    }
    // Restored guests link the store again: one inode for a shared file.
    assert_eq!(
        ino(&guests[0].join("usr/lib/lib4.so")),
        ino(&guests[2].join("usr/lib/lib4.so"))
    );
    assert_verify_clean(&store);
}

#[test]
fn restic_round_trip_restores_a_guest() {
    if !require_root("restic_round_trip") || !have("restic", "restic_round_trip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    let before = snapshot_for_restore(&guests[1]);
    unify_json(&store, &[&guests[0], &guests[1], &guests[2]]);
    let backup = lab.join("backup");
    fs::create_dir_all(backup.join("private")).unwrap();
    manifest(&store, &guests[1], &backup.join("g1.jsonl"));
    // The private files, copied at their guest paths.
    let list = private_paths(&store, &guests[1]);
    for rel in list.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).unwrap());
        let dest = backup.join("private").join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(guests[1].join(rel))
            .arg(&dest));
    }
    let repo = lab.join("repo");
    let restic = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "test")
            .arg("-q")
            .arg("-r")
            .arg(&repo);
        for a in args {
            c.arg(a.as_ref());
        }
        run(&mut c);
    };
    restic(&[&"init"]);
    restic(&[&"backup", &store, &backup]);
    fs::remove_dir_all(&guests[1]).unwrap_or_else(|_| {
        fs::set_permissions(
            guests[1].join("srv/ro"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        fs::remove_dir_all(&guests[1]).unwrap();
    });
    let out = lab.join("out");
    restic(&[&"restore", &"latest", &"--target", &out]);
    let rstore = out.join(store.strip_prefix("/").unwrap());
    let rbackup = out.join(backup.strip_prefix("/").unwrap());
    assert_verify_clean(&rstore);
    let o = unifs(
        &rstore,
        &[
            &"restore",
            &"--manifest",
            &rbackup.join("g1.jsonl"),
            &"--from",
            &rbackup.join("private"),
            &guests[1],
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_invisible(
        &before,
        &snapshot_for_restore(&guests[1]),
        "restored from restic",
    );
}

#[test]
fn an_independent_script_recomputes_object_ids() {
    if !require_root("an_independent_script_recomputes_object_ids") {
        return;
    }
    let py = Command::new("python3")
        .args(["-c", "import blake3"])
        .status();
    if !py.is_ok_and(|s| s.success()) {
        let test = "an_independent_script_recomputes_object_ids";
        crate::common::skip(test, "python3's blake3 module is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests = build_guests(dir.path());
    unify_json(&store, &[&guests[0], &guests[1]]);
    let objects: Vec<PathBuf> = walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    assert!(objects.len() >= 17);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/object-id.py");
    let out = Command::new("python3")
        .arg(script)
        .args(&objects)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let (id, path) = line.split_once("  ").unwrap();
        let path = Path::new(path);
        let name = format!(
            "{}{}",
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            path.file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(id, name, "python disagrees for {}", path.display());
        checked += 1;
    }
    assert_eq!(checked, objects.len());
    // The odd ones are among them: set-uid, another owner, xattrs.
    for rel in [
        "usr/bin/su",
        "usr/share/odd mode",
        "usr/lib/lib2.so",
        "usr/lib/lib3.so",
    ] {
        let id = unifs::store::read_marker_path(&guests[0].join(rel))
            .unwrap()
            .unwrap();
        assert!(text.contains(&id.to_hex()), "{rel} not checked");
    }
}

#[test]
fn a_corrupted_object_fails_restore_and_verify() {
    if !require_root("a_corrupted_object_fails_restore_and_verify") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let m = lab.join("g0.jsonl");
    manifest(&store, &guests[0], &m);
    let private = lab.join("private");
    for rel in [
        "etc/hostname",
        "var/lib/data",
        "usr/share/empty",
        "usr/bin/perl",
    ] {
        let dest = private.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(guests[0].join(rel), dest).unwrap();
    }
    // Someone flips a byte of a shared object around the store.
    let victim = guests[1].join("usr/lib/lib5.so");
    let f = fs::OpenOptions::new().write(true).open(&victim).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"\xff", 10).unwrap();
    drop(f);
    assert_eq!(unifs(&store, &[&"store", &"verify"]).status.code(), Some(1));
    let target = lab.join("restored");
    let o = restore(&store, &m, &private, &target);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lib5.so") && err.contains("does not match"),
        "{err}"
    );
    assert!(!target.exists(), "a partial tree was left at the target");

    // A missing private file is reported before anything is written.
    fs::remove_file(private.join("var/lib/data")).unwrap();
    let o = restore(&store, &m, &private, &target);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("var/lib/data") && err.contains("nothing was written"),
        "{err}"
    );
}

#[test]
fn manifests_describe_links_devices_and_objects_and_mtree_reads_in_bsdtar() {
    if !require_root("manifests_describe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests = build_guests(dir.path());
    unify_json(&store, &[&guests[0], &guests[1]]);
    let m = dir.path().join("g0.jsonl");
    manifest(&store, &guests[0], &m);
    let text = fs::read_to_string(&m).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["unifs_manifest"], 1);
    assert_eq!(lines[0]["guest"], "g0");
    let entry = |p: &str| lines.iter().find(|l| l["path"] == p).unwrap().clone();
    assert_eq!(entry("usr/bin/perl5.36")["link"], "usr/bin/perl");
    assert_eq!(entry("usr/bin/link")["target"], "../lib/lib1.so");
    assert_eq!(entry("dev/null")["type"], "char");
    assert_eq!(entry("dev/null")["rdev_minor"], 3);
    assert_eq!(entry("usr/bin/su")["mode"], 0o4755);
    assert_eq!(entry("usr/lib/lib2.so")["xattrs"]["user.pkg"], "6c69626336");
    let lib = entry("usr/lib/lib4.so");
    let marker = unifs::store::read_marker_path(&guests[0].join("usr/lib/lib4.so")).unwrap();
    assert_eq!(lib["object"], marker.unwrap().to_hex());
    assert_eq!(
        lib["blake3"],
        blake3::hash(&fs::read(guests[0].join("usr/lib/lib4.so")).unwrap())
            .to_hex()
            .as_str()
    );
    assert!(entry("etc/hostname").get("object").is_none());
    assert!(
        !text.contains("trusted.unifs"),
        "store xattrs leaked into the manifest"
    );

    if !have("bsdtar", "manifests_describe (mtree part)") {
        return;
    }
    let mt = dir.path().join("g0.mtree");
    let o = unifs(
        &store,
        &[&"manifest", &guests[0], &"--format", &"mtree", &"-o", &mt],
    );
    assert!(o.status.success());
    let listing = Command::new("bsdtar")
        .arg("-tvf")
        .arg(&mt)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("usr/share/odd mode"), "{listing}");
    assert!(
        listing.contains("usr/bin/link -> ../lib/lib1.so"),
        "{listing}"
    );
    assert_eq!(listing.lines().count(), lines.len() - 1);
}

/// A mistyped store path gave a manifest (exit 0) with every shared file
/// private.
#[test]
fn manifest_without_the_store_is_an_error() {
    if !require_root("manifest_without_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let guests = build_guests(dir.path());
    unify_json(&dir.path().join("store"), &[&guests[0], &guests[1]]);
    let typo = dir.path().join("stroe");
    let m = dir.path().join("g0.jsonl");
    let o = unifs(&typo, &[&"manifest", &guests[0], &"-o", &m]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!("no store at {}", typo.display())),
        "{err}"
    );
    assert!(!m.exists());
    assert!(!typo.exists());
}

/// A manifest made after an object was damaged around the store took the
/// file's content hash from the catalog: it claimed bytes that were no
/// longer there, and a restore from that backup (the damaged object in it)
/// failed, saying to extract the object from that same backup. A linked
/// file whose object's size or mtime is not as recorded is read now; one
/// whose content is not the object's is described as a private file, with
/// a warning naming it and `store verify`, and that backup restores it.
#[test]
fn a_manifest_describes_a_damaged_objects_content_as_it_is() {
    if !require_root("a_manifest_describes_a_damaged_objects_content_as_it_is") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    unify_json(&store, &[&guests[0], &guests[1]]);
    // Written into around the store (through another guest's path).
    let f = fs::OpenOptions::new()
        .write(true)
        .open(guests[1].join("usr/lib/lib5.so"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"\xff", 10).unwrap();
    drop(f);
    let (m, list) = (lab.join("g0.jsonl"), lab.join("g0.list"));
    let o = unifs(
        &store,
        &[&"manifest", &guests[0], &"-o", &m, &"--private-list", &list],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("usr/lib/lib5.so") && err.contains("unifs store verify"),
        "{err}"
    );
    let text = fs::read_to_string(&m).unwrap();
    let entry: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["path"] == "usr/lib/lib5.so")
        .unwrap();
    let now = fs::read(guests[0].join("usr/lib/lib5.so")).unwrap();
    assert_eq!(
        entry["blake3"],
        blake3::hash(&now).to_hex().as_str(),
        "{entry}"
    );
    assert!(entry.get("object").is_none(), "{entry}");
    // Untouched objects still come from the catalog.
    assert!(text.contains("\"object\""), "{text}");
    // The private files as the list names them: the restore gives the
    // guest's bytes back.
    let private = lab.join("private");
    for rel in fs::read(&list)
        .unwrap()
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
    {
        let rel = std::str::from_utf8(rel).unwrap();
        let dest = private.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(guests[0].join(rel))
            .arg(&dest));
    }
    assert!(private.join("usr/lib/lib5.so").exists());
    let target = lab.join("restored");
    let o = restore(&store, &m, &private, &target);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(target.join("usr/lib/lib5.so")).unwrap(), now);
}

/// A store on another filesystem than the guest (a wrong UNIFS_STORE) gave
/// a manifest, exit 0, with every shared file taken for private and the
/// header naming the guest by its directory's name, whichever guest of that
/// catalog has it. unify and mount refuse that pair; manifest does now too.
#[test]
fn manifest_with_a_store_on_another_filesystem_is_an_error() {
    if !require_root("manifest_with_a_store_on_another_filesystem") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    if fs::metadata(shm.path()).unwrap().dev() == fs::metadata(dir.path()).unwrap().dev() {
        crate::common::skip(
            "manifest_with_a_store_on_another_filesystem",
            "/dev/shm is on the temp dir's filesystem",
        );
        return;
    }
    let guests = build_guests(dir.path());
    unify_json(&dir.path().join("store"), &[&guests[0], &guests[1]]);
    // A guest of that name elsewhere, as `cp -a` of one leaves it.
    let copy = shm.path().join(guests[0].file_name().unwrap());
    run(Command::new("cp").arg("-a").arg(&guests[0]).arg(&copy));
    let m = dir.path().join("copy.jsonl");
    let o = unifs(&dir.path().join("store"), &[&"manifest", &copy, &"-o", &m]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is on another filesystem"), "{err}");
    assert!(err.contains(&*copy.to_string_lossy()), "{err}");
    assert!(err.contains("check --store and UNIFS_STORE"), "{err}");
    assert!(!m.exists());
}

/// mtree has no socket type: bsdtar warned "Unrecognized file type socket".
#[test]
fn mtree_leaves_sockets_out_as_comments() {
    if !require_root("mtree_leaves_sockets_out") || !have("bsdtar", "mtree_leaves_sockets_out") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = dir.path().join("g");
    file(&g, "etc/motd", b"hello\n", 0o644);
    fs::create_dir_all(g.join("run")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(g.join("run/my sock")).unwrap();
    unify_json(&store, &[&g]);
    let mt = dir.path().join("g.mtree");
    let o = unifs(
        &store,
        &[&"manifest", &g, &"--format", &"mtree", &"-o", &mt],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = fs::read_to_string(&mt).unwrap();
    assert!(!text.contains("type=socket"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "# socket left out: ./run/my\\040sock"),
        "{text}"
    );
    let listing = Command::new("bsdtar").arg("-tf").arg(&mt).output().unwrap();
    assert!(listing.status.success());
    assert_eq!(String::from_utf8_lossy(&listing.stderr), "");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("etc/motd"), "{listing}");
    assert!(!listing.contains("sock"), "{listing}");
}

#[test]
fn store_ls_since_lists_only_new_objects_and_snapshots_survive_a_running_unify() {
    if !require_root("store_ls_since") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests = build_guests(dir.path());
    let first = unify_json(&store, &[&guests[0], &guests[1]]);
    let run1 = first["run"].as_i64().unwrap();
    let extra = dir.path().join("g9");
    for g in [&extra, &guests[2]] {
        file(g, "opt/new", &bytes(777, 5000), 0o644);
    }
    unify_json(&store, &[&guests[2], &extra]);
    let o = unifs(&store, &[&"store", &"ls", &"--since", &run1.to_string()]);
    let new: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(store.join(new[0]).is_file());
    let all = unifs(&store, &[&"store", &"ls"]);
    assert!(std::str::from_utf8(&all.stdout).unwrap().lines().count() > 10);

    // Snapshots while a big unify writes to the catalog.
    let big: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("big{i}"))).collect();
    for g in &big {
        for j in 0..1500u64 {
            file(
                g,
                &format!("d{}/f{j}", j % 30),
                &bytes(j + 5000, 1500),
                0o644,
            );
        }
    }
    let mut child = Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .arg("unify")
        .args(&big)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut taken = 0;
    let mut during = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let running = child.try_wait().unwrap().is_none();
        let dest = dir.path().join(format!("snap{taken}.db"));
        let o = unifs(&store, &[&"store", &"snapshot", &dest]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let conn = rusqlite::Connection::open(&dest).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM guest_files", [], |r| r.get(0))
            .unwrap();
        assert!(n > 0);
        taken += 1;
        if running {
            during += 1;
        } else {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "unify did not finish");
    }
    assert!(child.wait().unwrap().success());
    assert!(during >= 1, "no snapshot was taken while unify ran");
}

#[test]
fn restore_onto_another_filesystem_copies_objects() {
    if !require_root("restore_onto_another_filesystem") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shm = Path::new("/dev/shm");
    use std::os::unix::fs::MetadataExt;
    if fs::metadata(shm).map(|m| m.dev()).ok() == Some(fs::metadata(dir.path()).unwrap().dev()) {
        crate::common::skip(
            "restore_onto_another_filesystem",
            "/dev/shm is on the temp dir's filesystem",
        );
        return;
    }
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    let before = snapshot_for_restore(&guests[0]);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let m = lab.join("g0.jsonl");
    manifest(&store, &guests[0], &m);
    let private = lab.join("private");
    for rel in [
        "etc/hostname",
        "var/lib/data",
        "usr/share/empty",
        "usr/bin/perl",
    ] {
        let dest = private.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(guests[0].join(rel))
            .arg(&dest));
    }
    let elsewhere = tempfile::tempdir_in(shm).unwrap();
    let target = elsewhere.path().join("g0");
    let o = unifs(
        &store,
        &[
            &"restore",
            &"--json",
            &"--manifest",
            &m,
            &"--from",
            &private,
            &target,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["objects_linked"], 0, "{report}");
    assert!(report["objects_copied"].as_u64().unwrap() >= 16, "{report}");
    assert_invisible(
        &before,
        &snapshot_for_restore(&target),
        "restored onto tmpfs",
    );
    assert_eq!(
        fs::metadata(target.join("usr/lib/lib4.so"))
            .unwrap()
            .nlink(),
        1
    );
}

/// The `sh` code blocks of docs/backup.md, in order, with its example paths
/// moved into `lab` (store, backups, guests, scratch) and `unifs` first on
/// PATH. `set -e` and the store and backup variables come first, so that a
/// block can be run on its own as the page shows it.
fn doc_blocks(lab: &Path) -> Vec<String> {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/backup.md")).unwrap();
    let l = lab.display();
    let subst = [
        ("/srv/unifs", format!("{l}/store")),
        ("/backup/$(date +%F)", format!("{l}/backup")),
        ("/backup/restic", format!("{l}/restic")),
        ("/backup/", format!("{l}/marks/")),
        ("/root/.restic-pass", format!("{l}/restic-pass")),
        ("/var/backups/unifs", format!("{l}/S")),
        ("/var/tmp/unifs-restore", format!("{l}/unifs-restore")),
        ("/tmp/web1.private", format!("{l}/web1.private")),
        ("/vservers/", format!("{l}/vservers/")),
    ];
    let mut blocks = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + 6..];
        let end = body.find("```").unwrap();
        let mut text = body[..end].to_string();
        for (from, to) in &subst {
            text = text.replace(from, to);
        }
        blocks.push(format!(
            "set -e\nexport PATH={}:$PATH\nexport UNIFS_STORE={l}/store\nB={l}/backup\n{text}",
            crate::common::unifs_bin().parent().unwrap().display()
        ));
        rest = &body[end + 3..];
    }
    blocks
}

/// Every directory the recipes make is root's alone (`install -d -m 0700`
/// or `mktemp -d`): a `mkdir` made them with the umask (0755), and a guest's
/// set-uid-root program copied into one was runnable by any host user.
#[test]
fn backup_recipes_make_directories_only_root_can_enter() {
    let dir = tempfile::tempdir().unwrap();
    for block in doc_blocks(dir.path()) {
        for line in block.lines() {
            let code = line.split('#').next().unwrap();
            assert!(
                !code.contains("mkdir"),
                "docs/backup.md makes a directory with the umask: {line}"
            );
            if code.contains("install -d") {
                assert!(code.contains("install -d -m 0700"), "{line}");
            }
        }
    }
}

/// The backup recipes stop at the first step that fails: without `set -e`
/// the tar recipe went on past a guest whose manifest failed and exited 0,
/// a backup without that guest. (The tests run every block under `set -e`
/// of their own; this checks the page's.)
#[test]
fn backup_recipes_stop_at_a_failed_step() {
    let dir = tempfile::tempdir().unwrap();
    for block in doc_blocks(dir.path()) {
        // After the 4 lines doc_blocks puts first.
        let page: Vec<&str> = block.lines().skip(4).collect();
        if ["unifs manifest", "restic backup", "objects-new.tar"]
            .iter()
            .any(|step| block.contains(step))
        {
            assert!(
                page[0].starts_with("set -e"),
                "docs/backup.md: a backup recipe without set -e:\n{}",
                page.join("\n")
            );
        }
    }
}

fn doc_block<'a>(blocks: &'a [String], containing: &str) -> &'a str {
    let found: Vec<_> = blocks.iter().filter(|b| b.contains(containing)).collect();
    assert_eq!(
        found.len(),
        1,
        "docs/backup.md: one block with {containing:?}"
    );
    found[0]
}

fn sh(script: &str) {
    run(Command::new("bash").arg("-c").arg(script));
}

/// Guests web1, web2 and db1 under `lab/vservers`, unified into
/// `lab/store`; each has a file whose name is a cp option at its root.
/// web1 and db1 share a sparse file (`SPARSE_SHARED`, an object), and
/// web1 has one of its own (`SPARSE_PRIVATE`).
fn named_guests(lab: &Path) -> Vec<PathBuf> {
    let built = build_guests(lab);
    for g in [&built[0], &built[2]] {
        sparse_file(&g.join(SPARSE_SHARED), SPARSE_LEN);
        set_mtime(&g.join(SPARSE_SHARED), 1_700_000_000);
    }
    let own = built[0].join(SPARSE_PRIVATE);
    sparse_file(&own, SPARSE_LEN);
    std::os::unix::fs::FileExt::write_all_at(
        &fs::OpenOptions::new().write(true).open(&own).unwrap(),
        b"web1's own",
        4096,
    )
    .unwrap();
    fs::create_dir_all(lab.join("vservers")).unwrap();
    let guests: Vec<PathBuf> = ["web1", "web2", "db1"]
        .iter()
        .zip(built)
        .map(|(name, g)| {
            let to = lab.join("vservers").join(name);
            fs::rename(&g, &to).unwrap();
            file(
                &to,
                "--attributes-only",
                b"a guest chose this name\n",
                0o644,
            );
            to
        })
        .collect();
    unify_json(&lab.join("store"), &[&guests[0], &guests[1], &guests[2]]);
    guests
}

const SPARSE_SHARED: &str = "usr/share/disk.img";
const SPARSE_PRIVATE: &str = "var/lib/sparse.db";
const SPARSE_LEN: u64 = 64 << 20;

/// The file takes no more room than its data (192 KiB), not its size.
fn assert_sparse(path: &Path) {
    let used = allocated(path);
    assert!(
        used < 1 << 20,
        "{} lost its holes: {used} bytes allocated",
        path.display()
    );
}

fn remove_guest(g: &Path) {
    fs::set_permissions(
        g.join("srv/ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::remove_dir_all(g).unwrap();
}

/// web2's shared files are still the store's inodes.
fn assert_still_unified(store: &Path, guest: &Path) {
    let id = unifs::store::read_marker_path(&guest.join("usr/lib/lib4.so"))
        .unwrap()
        .unwrap()
        .to_hex();
    let object = store.join("objects").join(&id[..2]).join(&id[2..]);
    assert_eq!(
        ino(&object),
        ino(&guest.join("usr/lib/lib4.so")),
        "restoring another guest replaced the object file web2 links"
    );
}

#[test]
fn documented_tar_backup_restores_one_guest_into_the_live_store() {
    if !require_root("documented_tar_backup") || !have("tar", "documented_tar_backup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = named_guests(lab);
    let before = snapshot(&guests[0]);
    let blocks = doc_blocks(lab);
    sh(doc_block(&blocks, "-cf $B/objects.tar objects"));
    for tar in ["objects.tar", "web1.private.tar"] {
        let len = fs::metadata(lab.join("backup").join(tar)).unwrap().len();
        assert!(len < 8 << 20, "{tar} holds the holes: {len} bytes");
    }
    remove_guest(&guests[0]);
    sh(doc_block(&blocks, "--skip-old-files"));
    sh(doc_block(&blocks, "unifs restore"));
    assert_invisible(&before, &snapshot(&guests[0]), "web1 restored by the docs");
    assert_sparse(&guests[0].join(SPARSE_PRIVATE));
    assert_still_unified(&store, &guests[1]);
    assert_eq!(
        ino(&guests[0].join("usr/lib/lib4.so")),
        ino(&guests[1].join("usr/lib/lib4.so"))
    );
    assert_verify_clean(&store);
}

/// The recipes took the guest root from the manifest header's `root`,
/// which has U+FFFD for bytes that are not UTF-8: tar could not enter the
/// guest, or, where a directory of that spelling exists, backed up its
/// files as the guest's. They take `root_hex` where it is there.
#[test]
fn documented_recipes_back_up_a_guest_whose_directory_name_is_not_utf8() {
    if !require_root("documented_recipes_back_up_a_guest_whose_directory_name_is_not_utf8")
        || !have(
            "tar",
            "documented_recipes_back_up_a_guest_whose_directory_name",
        )
        || !have(
            "python3",
            "documented_recipes_back_up_a_guest_whose_directory_name",
        )
    {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let v = lab.join("vservers");
    let guest = v.join(std::ffi::OsStr::from_bytes(b"web\xe9"));
    let other = v.join("web2");
    for g in [&guest, &other] {
        file(g, "usr/lib/shared", &bytes(1, 5000), 0o644);
    }
    file(&guest, "own", b"the guest's own\n", 0o644);
    // The name `root` gives it, spelt in UTF-8: not the guest.
    let name = "web\u{fffd}";
    file(&v.join(name), "own", b"another directory's\n", 0o644);
    unify_json(&lab.join("store"), &[&guest, &other]);
    let blocks = doc_blocks(lab);
    let only_it =
        |block: &str| block.replace("for g in web1 web2 db1", &format!("for g in {name}"));
    sh(&only_it(doc_block(&blocks, "-cf $B/objects.tar objects")));
    let out = lab.join("out");
    fs::create_dir(&out).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(lab.join(format!("backup/{name}.private.tar")))
        .arg("-C")
        .arg(&out));
    assert_eq!(fs::read(out.join("own")).unwrap(), b"the guest's own\n");
    // The restic recipe's copy of the private files (restic itself left out).
    let restic = doc_block(&blocks, "restic backup").replace("restic backup", "true");
    sh(&only_it(&restic));
    assert_eq!(
        fs::read(lab.join(format!("S/private/{name}/own"))).unwrap(),
        b"the guest's own\n"
    );
}

#[test]
fn documented_restic_backup_keeps_private_files_whatever_their_names() {
    if !require_root("documented_restic_backup") || !have("restic", "documented_restic_backup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = named_guests(lab);
    let before = snapshot(&guests[0]);
    fs::write(lab.join("restic-pass"), "test\n").unwrap();
    let repo = lab.join("restic");
    let restic = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "test")
            .arg("-q")
            .arg("-r")
            .arg(&repo);
        for a in args {
            c.arg(a.as_ref());
        }
        run(&mut c);
    };
    restic(&[&"init"]);
    let blocks = doc_blocks(lab);
    sh(doc_block(&blocks, "restic backup"));
    // The copies of the guests' private files (set-uid programs among
    // them) lie where only root can enter.
    for d in ["S", "S/private", "S/private/web1"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(lab.join(d)).unwrap().permissions(),
        ) & 0o7777;
        assert_eq!(mode, 0o700, "{d}: mode {mode:o}");
    }
    remove_guest(&guests[0]);
    // The object only web1 and db1 linked goes, to come back from restic.
    fs::remove_file(guests[2].join(SPARSE_SHARED)).unwrap();
    let gc = unifs(&store, &[&"store", &"gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let scratch_restore = doc_block(&blocks, "restic restore");
    sh(&format!(
        "export RESTIC_REPOSITORY={} RESTIC_PASSWORD=test\n{scratch_restore}",
        repo.display()
    ));
    assert_still_unified(&store, &guests[1]);
    // The manifests and private files, from the same snapshot.
    let out = lab.join("out");
    restic(&[
        &"restore",
        &"latest",
        &"--target",
        &out,
        &"--include",
        &lab.join("S"),
    ]);
    let s = out.join(lab.join("S").strip_prefix("/").unwrap());
    // restic (0.14) writes holes out: copied as the page says, they are
    // holes again.
    let private = lab.join("web1.private");
    run(Command::new("cp")
        .arg("-a")
        .arg("--sparse=always")
        .arg(s.join("private/web1"))
        .arg(&private));
    let o = unifs(
        &store,
        &[
            &"restore",
            &"--manifest",
            &s.join("web1.jsonl"),
            &"--from",
            &private,
            &guests[0],
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_invisible(&before, &snapshot(&guests[0]), "web1 restored from restic");
    assert_sparse(&guests[0].join(SPARSE_SHARED));
    assert_sparse(&guests[0].join(SPARSE_PRIVATE));
    assert_verify_clean(&store);
}

#[test]
fn the_private_list_is_the_manifests_own_while_unify_runs() {
    if !require_root("the_private_list_is_the_manifests_own") || !have("tar", "private_list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    file_at(&guests[0], "opt/own", &bytes(555, 6000), 0o644, 1_000_000);
    let before = snapshot(&guests[0]);
    unify_json(&store, &[&guests[0], &guests[1]]);
    // A file of g0's own, until a unify (running during the backup) finds
    // its twin in g2.
    let m = lab.join("g0.jsonl");
    let list = lab.join("g0.private-list");
    let o = unifs(
        &store,
        &[&"manifest", &guests[0], &"-o", &m, &"--private-list", &list],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = fs::read(&list).unwrap();
    assert!(
        listed.split(|b| *b == 0).any(|p| p == b"opt/own"),
        "{listed:?}"
    );
    file_at(&guests[2], "opt/own", &bytes(555, 6000), 0o644, 1_000_000);
    unify_json(&store, &[&guests[0], &guests[2]]);
    assert!(
        !private_paths(&store, &guests[0])
            .split(|b| *b == 0)
            .any(|p| p == b"opt/own"),
        "the test needs opt/own unified now"
    );
    let tar = lab.join("g0.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--null", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&guests[0])
        .arg("-T")
        .arg(&list));
    let private = lab.join("private");
    fs::create_dir_all(&private).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&private));
    let target = lab.join("restored");
    let o = restore(&store, &m, &private, &target);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_invisible(&before, &snapshot(&target), "g0 restored");
}

#[test]
fn restore_keeps_the_root_and_non_utf8_hardlinks() {
    if !require_root("restore_keeps_the_root_and_non_utf8_hardlinks") {
        return;
    }
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    let g = &guests[0];
    let odd = g.join("usr").join(OsStr::from_bytes(b"caf\xe9"));
    fs::write(&odd, b"latin-1 name\n").unwrap();
    fs::hard_link(&odd, g.join("usr/second")).unwrap();
    fs::set_permissions(g, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(g, Some(0), Some(4)).unwrap();
    set_xattr(g, "user.root", b"kept");
    set_dir_mtimes(g, 1_000_000);
    let before = snapshot(g);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let m = lab.join("g0.jsonl");
    let list = lab.join("g0.list");
    let o = unifs(
        &store,
        &[&"manifest", g, &"-o", &m, &"--private-list", &list],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let private = lab.join("private");
    for rel in fs::read(&list)
        .unwrap()
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
    {
        let dest = private.join(OsStr::from_bytes(rel));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(g.join(OsStr::from_bytes(rel)))
            .arg(&dest));
    }
    let target = lab.join("restored");
    let o = restore(&store, &m, &private, &target);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_invisible(&before, &snapshot(&target), "g0 restored");
}

#[test]
fn restore_refuses_a_manifest_that_leads_out_of_the_target() {
    if !require_root("restore_refuses_a_manifest_that_leads_out") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let outside = lab.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"host file\n").unwrap();
    let hash = blake3::hash(b"host file\n").to_hex();
    let o = |p: &str, rest: &str| {
        format!(r#"{{"path":"{p}","mode":420,"uid":0,"gid":0,"mtime":"1.0","atime":"1.0",{rest}}}"#)
    };
    let head = r#"{"unifs_manifest":1,"guest":"x","root":"/x","created":1}"#;
    let cases = [
        o("../escaped", r#""type":"dir""#),
        o(
            &format!("{}/escaped", outside.display()),
            r#""type":"fifo""#,
        ),
        format!(
            "{}\n{}",
            o(
                "lnk",
                &format!(r#""type":"symlink","target":"{}""#, outside.display())
            ),
            o("lnk/escaped", r#""type":"fifo""#)
        ),
        // A hardlink to a host file (same filesystem).
        o(
            "stolen",
            &format!(
                r#""type":"file","size":10,"blake3":"{hash}","link":"{}""#,
                outside.join("secret").display()
            ),
        ),
        o("x", r#""type":"fiel""#),
    ];
    for (i, body) in cases.iter().enumerate() {
        let m = lab.join(format!("bad{i}.jsonl"));
        fs::write(&m, format!("{head}\n{body}\n")).unwrap();
        let target = lab.join(format!("t{i}"));
        let out = restore(&store, &m, lab, &target);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} restored");
        assert!(
            err.contains("damaged") && err.contains("nothing was written"),
            "case {i}: {err}"
        );
        assert!(!target.exists(), "case {i}");
        let mut staging = target.into_os_string();
        staging.push(".unifs-restore");
        assert!(!Path::new(&staging).exists(), "case {i}");
    }
    assert!(!lab.join("escaped").exists());
    let left: Vec<_> = fs::read_dir(&outside).unwrap().collect();
    assert_eq!(left.len(), 1, "something was written outside the target");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
}

#[test]
fn store_ls_since_lists_extra_copies_added_later() {
    if !require_root("store_ls_since_lists_extra_copies") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests: Vec<PathBuf> = (0..4).map(|i| lab.join(format!("h{i}"))).collect();
    for g in &guests {
        file_at(g, "usr/f", &bytes(9, 4000), 0o644, 1_000_000);
    }
    let unify_limited = |gs: &[&PathBuf]| {
        let mut c = Command::new(crate::common::unifs_bin());
        c.arg("--store").arg(&store).args(["unify", "--json"]);
        c.args(gs).env("UNIFS_TEST_LINK_MAX", "3");
        unify_summary(&c.output().unwrap())
    };
    let run1 = unify_limited(&[&guests[0], &guests[1]])["run"]
        .as_i64()
        .unwrap();
    unify_limited(&[&guests[2], &guests[3]]);
    let copies: Vec<_> = walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some())
        .map(|e| e.path().strip_prefix(&store).unwrap().to_path_buf())
        .collect();
    assert_eq!(copies.len(), 1, "the test needs a copy .1 from run 2");
    let o = unifs(&store, &[&"store", &"ls", &"--since", &run1.to_string()]);
    let listed = String::from_utf8(o.stdout).unwrap();
    assert!(
        listed.lines().any(|l| Path::new(l) == copies[0]),
        "an incremental backup after run {run1} misses {}: {listed:?}",
        copies[0].display()
    );
}

/// A manifest cut short at a line boundary (a copy interrupted, a disk
/// full) is refused, not restored as a partial guest: its header counts
/// the entries. `-o` writes it whole or not at all (no temp file stays).
#[test]
fn a_manifest_cut_short_is_refused() {
    if !require_root("a_manifest_cut_short_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let m = lab.join("m.jsonl");
    manifest(&store, &guests[0], &m);
    let names: Vec<_> = fs::read_dir(lab)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("m.jsonl"))
        .collect();
    assert_eq!(names, vec!["m.jsonl"], "a temp file was left");
    let text = fs::read_to_string(&m).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 4, "{text}");
    let cut = lab.join("cut.jsonl");
    fs::write(&cut, format!("{}\n", lines[..3].join("\n"))).unwrap();
    let target = lab.join("restored");
    let out = unifs(
        &store,
        &[
            &"restore",
            &"--manifest",
            &cut,
            &"--from",
            &guests[0],
            &target,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a cut manifest restored");
    assert!(err.contains("cut short"), "{err}");
    assert!(!target.exists());
    // The whole one restores.
    let out = unifs(
        &store,
        &[
            &"restore",
            &"--manifest",
            &m,
            &"--from",
            &guests[0],
            &target,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `-o` and `--private-list` into a pipe (a shell's `>(…)`, a FIFO) or a
/// symlink: the temp-and-rename of complete files must not replace the
/// pipe (the reader got nothing; `>(…)`'s /dev/fd/N cannot have a file
/// beside it, and `/dev/stdout` would be replaced on the host), nor a
/// symlink by a file.
#[test]
fn manifest_output_into_a_pipe_or_through_a_symlink() {
    if !require_root("manifest_output_into_a_pipe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = build_guests(lab);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let want_m = lab.join("want.jsonl");
    manifest(&store, &guests[0], &want_m);
    let want_lines = fs::read_to_string(&want_m).unwrap().lines().count();
    // The shell's process substitution, for both files.
    let script = format!(
        "set -e; {bin} --store {s} manifest {g} -o >(wc -l > {l}/m.count) \
         --private-list >(tr '\\0' '\\n' | wc -l > {l}/p.count)",
        bin = crate::common::unifs_bin().display(),
        s = store.display(),
        g = guests[0].display(),
        l = lab.display()
    );
    sh(&script);
    // The substitutions run on after bash: a count once `wc` wrote it (a
    // fixed pause was too short on a loaded machine).
    let count = |f: &str| {
        let mut text = String::new();
        let written = crate::fs::harness::wait_until(std::time::Duration::from_secs(30), || {
            text = fs::read_to_string(lab.join(f)).unwrap_or_default();
            text.ends_with('\n')
        });
        assert!(written, "no count in {f}");
        text.trim().parse::<usize>().unwrap()
    };
    assert_eq!(count("m.count"), want_lines);
    let private = private_paths(&store, &guests[0]);
    assert_eq!(
        count("p.count"),
        private.iter().filter(|b| **b == 0).count()
    );
    // A FIFO stays a FIFO and its reader gets the manifest.
    let fifo = lab.join("fifo");
    nix_mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read_to_string(fifo).unwrap())
    };
    let o = unifs(&store, &[&"manifest", &guests[0], &"-o", &fifo]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(reader.join().unwrap().lines().count(), want_lines);
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    // A symlink to a file: the file is replaced, the link stays.
    let real = lab.join("real.jsonl");
    fs::write(&real, "old\n").unwrap();
    let link = lab.join("link.jsonl");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    manifest(&store, &guests[0], &link);
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(
        fs::read_to_string(&real).unwrap().lines().count(),
        want_lines
    );
}

fn nix_mkfifo(p: &Path) {
    unifs::sys::mknod(p, libc::S_IFIFO | 0o600, 0, 0).unwrap();
}

/// The documented incremental backup, run as written after a full one:
/// it archives exactly the objects a later unify added, and moves its mark.
#[test]
fn documented_incremental_backup_takes_the_new_objects() {
    if !require_root("documented_incremental_backup") || !have("tar", "documented_incremental") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = named_guests(lab);
    fs::create_dir_all(lab.join("marks")).unwrap();
    let blocks = doc_blocks(lab);
    sh(doc_block(&blocks, "-cf $B/objects.tar objects"));
    sh(doc_block(&blocks, "objects-new.tar"));
    let mark = || fs::read_to_string(lab.join("marks/last-run")).unwrap();
    assert_eq!(mark().trim(), "1", "the mark after the first run");
    // A new object, in a second run.
    for g in &guests[..2] {
        file(g, "usr/new", b"added after the full backup\n", 0o644);
    }
    unify_json(&store, &[&guests[0], &guests[1]]);
    sh(doc_block(&blocks, "objects-new.tar"));
    assert_eq!(mark().trim(), "2");
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(lab.join("backup/objects-new.tar"))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listed.stdout);
    let id = unifs::store::read_marker_path(&guests[0].join("usr/new"))
        .unwrap()
        .unwrap()
        .to_hex();
    let want = format!("objects/{}/{}", &id[..2], &id[2..]);
    assert_eq!(names.trim(), want, "the incremental archive");
}

/// A run killed or stopped by an error (a full disk) after it began stays
/// unfinished in `store runs` for good. The documented mark stopped at the
/// first run not done, so it never moved past such a run again: every later
/// "incremental" backup took every object added since. Runs hold the store's
/// lock one at a time, so a run not done that a later run followed is over;
/// the mark now goes up to the last run that is done.
#[test]
fn review_s9_documented_incremental_backup_moves_past_a_stopped_run() {
    if !require_root("review_s9_incremental_backup_moves_past_a_stopped_run")
        || !have("tar", "review_s9_incremental_backup")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests = named_guests(lab);
    fs::create_dir_all(lab.join("marks")).unwrap();
    let blocks = doc_blocks(lab);
    sh(doc_block(&blocks, "-cf $B/objects.tar objects"));
    sh(doc_block(&blocks, "objects-new.tar"));
    let mark = || fs::read_to_string(lab.join("marks/last-run")).unwrap();
    assert_eq!(mark().trim(), "1");
    // What a run killed (or stopped by an error) after it began leaves: its
    // row, as `Catalog::begin_run` writes it, never finished.
    rusqlite::Connection::open(store.join("catalog.db"))
        .unwrap()
        .execute(
            "INSERT INTO runs(command, started_at) VALUES ('unify x', unixepoch())",
            [],
        )
        .unwrap();
    for g in &guests[..2] {
        file(g, "usr/new", b"added after the stopped run\n", 0o644);
    }
    let s = unify_json(&store, &[&guests[0], &guests[1]]);
    assert_eq!(s["run"], 3, "{s}");
    sh(doc_block(&blocks, "objects-new.tar"));
    assert_eq!(mark().trim(), "3", "the mark stayed before the stopped run");
    // The next incremental backup takes only what is new since then.
    sh(doc_block(&blocks, "objects-new.tar"));
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(lab.join("backup/objects-new.tar"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "");
}
