//! `unifs demo`: builds a few sample guests in a local folder, unifies them
//! into a local store and prints what was saved. Needs no configuration.

use super::output::{self, bytes, count};
use super::print::outln;
use super::Global;
use anyhow::Context;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where to build the sample guests and the store, DIR/store (--store
    /// is not used); replaced if it holds an earlier demo.
    #[arg(long, default_value = "unifs-demo", value_name = "DIR")]
    pub dir: PathBuf,
    /// Number of sample guests, 2 to 6.
    #[arg(
        long,
        default_value_t = 4,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(2..=GUEST_NAMES.len() as i64)
    )]
    pub guests: u32,
}

const MARK: &str = ".unifs-demo";
const GUEST_NAMES: [&str; 6] = ["web1", "web2", "db1", "mail1", "web3", "db2"];

pub fn run(_g: &Global, a: DemoArgs) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("the demo runs unify, which must run as root: try `sudo unifs demo`");
    }
    // As `unify` does: under a limit on threads, an error naming it (a
    // first use of the pool would panic).
    crate::unify::start_workers()?;
    let n = a.guests as usize;
    prepare_dir(&a.dir)?;
    let guests_dir = a.dir.join("guests");
    let mut roots = Vec::new();
    for (i, name) in GUEST_NAMES[..n].iter().enumerate() {
        let root = guests_dir.join(name);
        build_guest(&root, i as u64, name)
            .with_context(|| format!("building {}", output::path(&root)))?;
        roots.push(root);
    }
    let before = du(&guests_dir)?;
    outln!(
        "built {n} sample guests in {} ({} in {} files)",
        output::path(&guests_dir),
        bytes(before.1),
        count(before.0)
    );
    let store = a.dir.join("store");
    let opts = crate::unify::Options {
        guests: roots.clone(),
        all: false,
        min_size: 1,
        excludes: crate::unify::Excludes::new([(
            "the default list".to_string(),
            crate::unify::exclude::DEFAULT_EXCLUDES,
        )])?,
        dry_run: false,
        paranoid: false,
        ignore_mtime: None,
        link_max: None,
        progress: std::io::stderr().is_terminal(),
        move_from_other_store: false,
    };
    let s = crate::unify::unify(&store, &opts)?;
    outln!(
        "unified into {}: {} files scanned, {} hashed, {} linked to {} objects in {:.2} s",
        output::path(&store),
        count(s.files_scanned),
        bytes(s.bytes_hashed),
        count(s.files_linked),
        count(s.objects_added),
        s.seconds
    );
    let store_h = crate::store::Store::open(&store)?;
    let usage = store_h.usage()?;
    outln!(
        "saved {} of {} ({:.0}%); the store holds {} in {} objects",
        bytes(s.bytes_saved),
        bytes(before.1),
        100.0 * s.bytes_saved as f64 / before.1.max(1) as f64,
        bytes(usage.bytes_stored),
        count(usage.objects)
    );
    let again = crate::unify::unify(
        &store,
        &crate::unify::Options {
            progress: false,
            ..opts
        },
    )?;
    outln!(
        "a second run read {} and {} of {} directories, and took {:.3} s (unchanged files \
         and directories are not read again)",
        bytes(again.bytes_hashed),
        count(again.dirs_read),
        count(again.dirs_read + again.dirs_from_cache),
        again.seconds
    );
    outln!(
        "try: ls -li {0}/*/usr/bin/demo-tool; {1} --store {2} store stats",
        output::path(&guests_dir),
        unifs_command(),
        output::path(&store)
    );
    Ok(ExitCode::SUCCESS)
}

/// How to call this unifs again in a line the user pastes: `unifs` when
/// PATH finds this very program, else its own path (`cargo run`,
/// ./target/release/unifs, an older unifs on PATH).
fn unifs_command() -> String {
    let real = |p: PathBuf| p.canonicalize().ok();
    let Some(me) = std::env::current_exe().ok().and_then(real) else {
        return "unifs".to_string();
    };
    let on_path = std::env::var_os("PATH").and_then(|dirs| {
        std::env::split_paths(&dirs)
            .map(|d| d.join("unifs"))
            .find(|p| p.is_file())
            .and_then(real)
    });
    match on_path == Some(me.clone()) {
        true => "unifs".to_string(),
        false => output::path(&me),
    }
}

/// Empties `dir` if it is an earlier demo; refuses anything else.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.join(MARK).exists() {
            anyhow::bail!(
                "{} exists and is not an earlier unifs demo; pass --dir with a new folder",
                output::path(dir)
            );
        }
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", output::path(dir)))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", output::path(dir)))?;
    fs::write(dir.join(MARK), "made by `unifs demo`; safe to delete\n")?;
    Ok(())
}

/// A deterministic byte stream (xorshift), so every guest gets the same "packages".
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(rel);
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(&path, data)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    // Packages ship fixed mtimes; identical files agree on them.
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    fs::File::options()
        .write(true)
        .open(&path)?
        .set_modified(mtime)?;
    Ok(())
}

fn build_guest(root: &Path, index: u64, name: &str) -> anyhow::Result<()> {
    // The shared "distribution": same in every guest.
    let mut rng = Bytes(0x9e37_79b9_7f4a_7c15);
    for i in 0..120 {
        let size = 2_000 + (i * 7_919) % 180_000;
        write(
            root,
            &format!("usr/lib/demo/lib{i}.so"),
            &rng.fill(size),
            0o644,
        )?;
    }
    for i in 0..200 {
        let text = format!("Package: demo-{i}\nLicense: MIT\n").repeat(20);
        write(
            root,
            &format!("usr/share/doc/demo-{i}/copyright"),
            text.as_bytes(),
            0o644,
        )?;
    }
    write(root, "usr/bin/demo-tool", &rng.fill(400_000), 0o755)?;
    // A "newer package" in every third guest: same path, other content.
    let mut own = Bytes(0x1234 + index / 3);
    write(
        root,
        "usr/lib/demo/libversioned.so",
        &own.fill(150_000),
        0o644,
    )?;
    // Private files: configuration and data the guest keeps for itself.
    write(root, "etc/hostname", format!("{name}\n").as_bytes(), 0o644)?;
    write(
        root,
        "etc/shadow",
        format!("root:*:{index}:0:99999:7:::\n").as_bytes(),
        0o640,
    )?;
    let mut data = Bytes(0xabcd + index);
    write(root, "var/lib/app/data.db", &data.fill(300_000), 0o600)?;
    fs::create_dir_all(root.join("tmp"))?;
    Ok(())
}

/// (files, bytes) under `dir`, counting each inode once.
fn du(dir: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut files, mut total) = (0, 0);
    for e in walkdir::WalkDir::new(dir) {
        let e = e?;
        if e.file_type().is_file() {
            let m = e.metadata()?;
            files += 1;
            if seen.insert((m.dev(), m.ino())) {
                total += m.size();
            }
        }
    }
    Ok((files, total))
}
