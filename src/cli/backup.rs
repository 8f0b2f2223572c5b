//! `unifs manifest` and `unifs restore`.

use super::output::{bytes, count, counted, path, word};
use super::print::{errln, outln};
use super::Global;
use crate::backup::{manifest, mtree, restore};
use crate::catalog::Catalog;
use crate::store::Store;
use anyhow::Context;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line; the first line is a header.
    Jsonl,
    /// BSD mtree, as libarchive's bsdtar reads it.
    Mtree,
    /// Only the paths (relative) of files whose content is the guest's own:
    /// what a backup must copy besides the store. One a line unless -0; a
    /// name with a newline or a backslash, or starting with `-`, is refused
    /// then (tar -T would read another path, or an option): use -0.
    PrivatePaths,
}

/// Describe a guest tree completely: every path with type, mode, owner,
/// times, xattrs, symlink target, device numbers, hardlink groups, and the
/// object id of every unified file (a blake3 content hash for the others).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "EXIT STATUS: 0 done; 1 failed (nothing written: see the error); 23 written, but \
part of the guest left out, as unify leaves it alone (directories nested deeper than 1000 \
levels: listed empty; paths of 4096 bytes or more: not listed): a backup made from this \
manifest does not have them (named in warnings on stderr). A backup loop should go on to \
the next guest on 23, and report it."
)]
pub struct ManifestArgs {
    /// A guest name from the catalog (as `store stats` lists it: `g\xff2`
    /// for a name with a byte that is not UTF-8), or a guest directory (on
    /// the store's filesystem: it must be the store the guest was unified
    /// into).
    pub guest: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// Write to FILE instead of stdout (`-`: stdout). FILE is replaced
    /// only once complete.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// With --format private-paths: end each path with NUL, not newline (tar --null -T).
    #[arg(short = '0', long)]
    pub null: bool,
    /// Also write the private paths of the same walk to FILE, each ended by
    /// NUL (what `--format private-paths -0` prints). A second `unifs
    /// manifest` run can disagree with the first when unify or the guest
    /// changes the tree in between (a file unified since is no longer
    /// listed, and the backup would miss it); one walk cannot.
    #[arg(long, value_name = "FILE")]
    pub private_list: Option<PathBuf>,
}

/// Rebuild a guest from a manifest, the store's objects and a backup copy
/// of its private files. Objects are hardlinked when TARGET is on the
/// store's filesystem and mount, copied otherwise. Every file is verified against the
/// manifest; nothing is written if anything is missing, and the tree is
/// only moved to TARGET when everything verified.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "EXIT STATUS: 0 restored, as the manifest says; 1 failed (see the error: nothing \
written, or the partial tree left in TARGET.unifs-restore); 23 restored, but the target's \
filesystem did not keep some times as the manifest has them (out of its range, such as a year \
3000 mtime on ext4, or finer than it keeps): each is named in a warning on stderr, path, the \
time wanted and the time kept."
)]
pub struct RestoreArgs {
    /// The guest's manifest (JSON lines, from `unifs manifest`; `-`:
    /// standard input).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// A directory holding the guest's private files at their guest paths.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Where to rebuild the guest (must not exist, or be empty).
    pub target: PathBuf,
    /// Print the result as JSON (fields: docs/store-format.md).
    #[arg(long)]
    pub json: bool,
    /// Treat an object as full at N links (for tests of link-limit handling).
    /// A test hook (src/sys/test_hooks.rs): without the feature, no flag.
    #[cfg_attr(
        feature = "test-hooks",
        arg(long, hide = true, env = "UNIFS_TEST_LINK_MAX", value_name = "N")
    )]
    #[cfg_attr(not(feature = "test-hooks"), arg(skip))]
    pub link_max: Option<u64>,
}

pub fn manifest(g: &Global, a: ManifestArgs) -> anyhow::Result<ExitCode> {
    super::start_global_threads()?;
    if a.null && !matches!(a.format, Format::PrivatePaths) {
        // A usage error, as clap reports one: a script that meant
        // `--format private-paths -0` must not get a manifest to feed tar.
        use clap::CommandFactory;
        let mut cmd = super::Cli::command();
        let sub = cmd.find_subcommand_mut("manifest").map(|c| c.clone());
        let err = sub.unwrap_or(cmd).bin_name("unifs manifest").error(
            clap::error::ErrorKind::ArgumentConflict,
            "-0/--null goes with --format private-paths only (the other formats have their own \
             line ends)",
        );
        // Exit status 1, as every refused command (clap's own is 2).
        let _ = err.print();
        return Ok(ExitCode::from(1));
    }
    // Not readable (not root), or failing (EIO), is no missing store.
    let objects = match std::fs::metadata(g.store.join("objects")) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "cannot read the store at {}: {e}; a manifest reads the store's catalog and \
             objects: run it as root",
            path(&g.store)
        ),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => anyhow::bail!(
            "cannot read the store at {}: {e} (nothing was written)",
            path(&g.store)
        ),
        r => r.ok(),
    };
    // Without the store every shared file would pass for private: a
    // mistyped UNIFS_STORE would give a full, undeduplicated backup.
    if !objects.is_some_and(|m| m.is_dir()) {
        Store::check_objects_there(&g.store)?;
        if Store::holds_other_files(&g.store) {
            let path = std::path::absolute(&g.store).unwrap_or_else(|_| g.store.clone());
            return Err(crate::store::Error::NotAStoreNorEmpty { path }.into());
        }
        anyhow::bail!(
            "no store at {0} (--store or UNIFS_STORE): a manifest tells the guest's shared \
             files from its own by the store it was unified into; check the path (for a \
             guest never unified, create the store first: `unifs --store {0} store init`)",
            path(&g.store)
        );
    }
    let store = Store::open(&g.store)?;
    store.check_catalog()?;
    let catalog = Catalog::open_readonly(&store.catalog_path())?;
    // A path, not a String: a guest directory's name need not be UTF-8.
    let by_name = match a.guest.to_str() {
        Some(name) => super::store::guest_named(&catalog, name)?,
        None => None,
    };
    // A bare word that is also a directory here, of another guest: which
    // one is meant cannot be told, and the wrong tree would be backed up.
    if let Some(row) = &by_name {
        if let Ok(dir) = crate::fs::canonicalize_bounded(&a.guest) {
            if dir.is_dir() && dir != row.path {
                let other = match catalog.guest_by_path(&dir)? {
                    Some(r) => format!("guest {}", r.name),
                    None => "not a guest of the store".to_string(),
                };
                anyhow::bail!(
                    "{0} is both the guest named {0} ({1}) and the directory ./{0} ({2}, {other}); \
                     give ./{0} for the directory, or run from elsewhere for the name",
                    path(&a.guest),
                    path(&row.path),
                    path(&dir)
                );
            }
        }
    }
    let (name, root) = match by_name {
        Some(row) => (row.name, row.path),
        None => {
            let root = crate::fs::canonicalize_bounded(&a.guest).with_context(|| {
                format!(
                    "{}: no such guest in the catalog, nor a directory",
                    path(&a.guest)
                )
            })?;
            let name = match catalog.guest_by_path(&root)? {
                Some(row) => row.name,
                None => root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            (name, root)
        }
    };
    crate::fs::refuse_stalled(&root).with_context(|| path(&root))?;
    let dev = match std::fs::symlink_metadata(&root) {
        Ok(m) if m.is_dir() => std::os::unix::fs::MetadataExt::dev(&m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "the directory of guest {}, {}, does not exist: restore the guest there \
             (`unifs restore`, docs/backup.md), or drop it from the catalog (`unifs store \
             forget {}`)",
            super::output::guest_name(&name, &root),
            path(&root),
            path(&root)
        ),
        Err(e) => anyhow::bail!("{}: {e} (nothing was written)", path(&root)),
        Ok(_) => anyhow::bail!("{}: not a directory", path(&root)),
    };
    // Refused as unify and mount refuse it: no file of the guest can link
    // an object of a store on another filesystem, so each would pass for
    // private, under the name of a guest the catalog does not have there.
    match store.check_same_fs(&root, dev) {
        Ok(()) => {}
        Err(crate::store::Error::CrossDevice {
            guest,
            guest_mount,
            store,
            store_mount,
        }) => anyhow::bail!(
            "{} is on another filesystem ({}) than the store {} ({}), so none of its files \
             can link that store's objects: a manifest needs the store the guest was unified \
             into, which is on the guest's filesystem; check --store and UNIFS_STORE (nothing \
             was written)",
            path(&guest),
            path(&guest_mount),
            path(&store),
            path(&store_mount)
        ),
        // The path named is a mount's, not the guest's: the store is not
        // the matter.
        Err(
            e @ (crate::store::Error::InUnifsView { .. }
            | crate::store::Error::MovedUnifsView { .. }
            | crate::store::Error::UnifsMountOver { .. }),
        ) => anyhow::bail!("{e} (nothing was written)"),
        Err(e) => anyhow::bail!(
            "{e}; a manifest needs the store the guest was unified into: check --store and \
             UNIFS_STORE (nothing was written)"
        ),
    }
    // One fd a level: a deep tree (a guest can nest thousands) needs many.
    let _ = crate::sys::raise_fd_limit();
    let recorded: HashMap<_, _> = catalog
        .objects()?
        .into_values()
        .map(|o| {
            let r = manifest::Recorded {
                content_hash: o.content_hash,
                size: o.size,
                mtime: o.mtime,
            };
            (o.id, r)
        })
        .collect();
    let described = match manifest::describe(&root, Some(&store), &recorded) {
        // Said what to do: else a bare "Too many open files".
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => anyhow::bail!(
            "describing {}: {e}: a manifest holds a directory open a level (down to {} \
             levels) and some files it hashes; raise the hard open-file limit (ulimit -Hn, \
             systemd LimitNOFILE=) to 2048 or more (nothing was written)",
            path(&root),
            crate::unify::scan::MAX_DEPTH
        ),
        r => r.with_context(|| format!("describing {}", path(&root)))?,
    };
    let entries = described.entries;
    for (rel, object) in &described.damaged {
        errln!(
            "unifs: warning: {}: links the store object {}, whose content is no longer what \
             the catalog recorded (changed around the store): the manifest describes it as a \
             private file, with the content it has now (the private list names it, for the \
             backup to copy); `unifs store verify` reports the object, docs/backup.md (\"A \
             damaged object\") says how to put it back",
            path(&root.join(rel)),
            path(object)
        );
    }
    for sub in described.subvolumes {
        errln!(
            "unifs: warning: {}: a btrfs subvolume inside the guest: its content is not in \
             this manifest (listed as an empty directory, which restore makes it); back it \
             up separately",
            path(&root.join(sub))
        );
    }
    // What a guest can nest too deep or too long for a backup: left out,
    // said here, and exit status 23 once everything else is written (not
    // 1: the documented backup loop goes on to the next guest).
    let left_out = !described.too_deep.is_empty() || !described.too_long.is_empty();
    let max = described.max_depth;
    let why = if max < crate::unify::scan::MAX_DEPTH as usize {
        format!(
            "the open-file limit ({}) allows no deeper walk, a directory being held open a \
             level: raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) to 2048 or more, \
             or move it up",
            fd_soft_limit()
        )
    } else {
        "as unify walks; move it up, or back it up separately".to_string()
    };
    // A guest can make any number of them: the first ones, then a count.
    const SHOWN: usize = 50;
    for dir in described.too_deep.iter().take(SHOWN) {
        errln!(
            "unifs: warning: {}: nested deeper than {max} directories: its content is not in \
             this manifest, nor in a backup made from it (listed as an empty directory, which \
             restore makes it) ({why})",
            path(&root.join(dir)),
        );
    }
    if described.too_deep.len() > SHOWN {
        errln!(
            "unifs: warning: … and {} more directories nested deeper than {max}, left out \
             the same way",
            described.too_deep.len() - SHOWN
        );
    }
    for (dir, &n) in described.too_long.iter().take(SHOWN) {
        let them = word(n, "it", "them");
        errln!(
            "unifs: warning: {}: {} in it {} guest paths of {} bytes or more, which restore \
             cannot rebuild: left out of this manifest, with everything below {them}, so a \
             backup made from this manifest does not have {them} (unify leaves {them} alone too); shorten \
             the names or the nesting",
            path(&root.join(dir)),
            counted(n, "name", "names"),
            word(n, "makes", "make"),
            crate::backup::restore::MAX_PATH,
        );
    }
    if described.too_long.len() > SHOWN {
        errln!(
            "unifs: warning: … and {} more directories holding names of too long a path, \
             left out the same way",
            described.too_long.len() - SHOWN
        );
    }
    for tmp in described.unify_temps {
        errln!(
            "unifs: warning: {}: unify's temp name, left out of the manifest (a unify \
             linking the guest meanwhile has one there for an instant, and a killed one \
             leaves one behind); a file of the guest's own by such a name is not backed up: \
             rename it",
            path(&root.join(tmp))
        );
    }
    if a.format == Format::PrivatePaths && !a.null {
        refuse_unsafe_lines(&entries)?;
    }
    let header = manifest::Header {
        unifs_manifest: manifest::version_for(&entries),
        guest: name,
        root: root.to_string_lossy().into_owned(),
        root_hex: manifest::encode(root.as_os_str()).1,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        entries: Some(entries.len() as u64),
    };
    // Files are written under a temp name and renamed into place when
    // complete: a killed run leaves no partial manifest under the name.
    let mut file_out = a
        .output
        .as_deref()
        .filter(|o| o.as_os_str() != "-")
        .map(Replacement::create)
        .transpose()?;
    // The list is put in place only with the manifest: one without the
    // other (a full disk) would pair with an older one of the same name.
    let mut list = None;
    if let Some(p) = &a.private_list {
        use std::os::unix::ffi::OsStrExt;
        let mut l = Replacement::create(p)?;
        let written = (|| -> std::io::Result<()> {
            for e in entries.iter().filter(|e| e.is_private_content()) {
                l.out.write_all(e.rel_path().as_os_str().as_bytes())?;
                l.out.write_all(b"\0")?;
            }
            l.out.flush()
        })();
        written.with_context(|| format!("writing {}", path(p)))?;
        list = Some(l);
    }
    let mut stdout;
    // A failed stdout is said as every command says it (`cli::stdout_failed`).
    let (out, failed): (&mut dyn Write, _) = match &mut file_out {
        Some(f) => (&mut f.out, format!("writing {}", path(&f.path))),
        None => {
            stdout = std::io::BufWriter::new(std::io::stdout().lock());
            (&mut stdout, "cannot write to standard output".to_string())
        }
    };
    let written = (|| -> anyhow::Result<()> {
        match a.format {
            Format::Jsonl => manifest::write_jsonl(&mut *out, &header, &entries)?,
            Format::Mtree => mtree::write(&mut *out, &header, &entries)?,
            Format::PrivatePaths => {
                use std::os::unix::ffi::OsStrExt;
                for e in entries.iter().filter(|e| e.is_private_content()) {
                    out.write_all(e.rel_path().as_os_str().as_bytes())?;
                    out.write_all(if a.null { b"\0" } else { b"\n" })?;
                }
            }
        }
        Ok(out.flush()?)
    })();
    written.context(failed)?;
    if let Some(f) = &mut file_out {
        f.sync()?;
    }
    if let Some(l) = &mut list {
        l.sync()?;
    }
    let list_path = list.as_ref().map(|l| l.path.clone());
    if let Some(l) = list {
        l.commit()?;
    }
    if let Some(f) = file_out {
        // Only the rename (or its sync) can fail here (both files are
        // synced), and the list's is done: said, for its new list does not
        // pair with the old manifest.
        f.commit().map_err(|e| match &list_path {
            Some(l) => e.context(format!(
                "the private list {} was replaced by this run's, which does not go with the \
                 manifest left there: run the manifest again",
                path(l)
            )),
            None => e,
        })?;
    }
    if left_out {
        return Ok(ExitCode::from(super::unify::EXIT_PROBLEMS));
    }
    Ok(ExitCode::SUCCESS)
}

/// The open-file limit the walk had.
fn fd_soft_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}

/// Refuses a newline-separated list of private paths that a reader would
/// take for other paths: a name with a newline is two lines (`q\n` holding
/// `etc/shadow` lists `/etc/shadow`), and GNU tar's `-T` turns a backslash
/// escape into the byte it names (a name `x\057..\057etc` is `x/../etc`)
/// and a line starting with `-` into an option (`--directory=..`).
/// Each can lead a `tar -C GUEST -T LIST` out of the guest. The
/// NUL-separated list (`-0`, `--private-list`) holds every name as it is.
fn refuse_unsafe_lines(entries: &[manifest::Entry]) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bad: Vec<_> = entries
        .iter()
        .filter(|e| e.is_private_content())
        .map(|e| e.rel_path())
        // GNU tar -T also takes a line that starts with `-` for an option
        // (`--directory=..` moves it out of the guest).
        .filter(|p| {
            let b = p.as_os_str().as_bytes();
            b.starts_with(b"-") || b.iter().any(|b| b"\n\\".contains(b))
        })
        .collect();
    let Some(first) = bad.first() else {
        return Ok(());
    };
    anyhow::bail!(
        "{} of the guest {} a newline or a backslash in {}, or {} with `-`, such as {}: \
         a newline-separated list would name other paths to tar -T, \
         or options (up to files outside the guest); nothing was written. Use the \
         NUL-separated list: `--format private-paths -0` (with `tar --null -T`), or \
         `--private-list FILE`",
        counted(bad.len() as u64, "private path", "private paths"),
        word(bad.len() as u64, "has", "have"),
        word(bad.len() as u64, "its name", "their names"),
        word(bad.len() as u64, "starts", "start"),
        path(first)
    )
}

/// A file written under a temp name beside `path` and renamed over it once
/// complete and synced, the rename synced too; removed if dropped before
/// that. A `path` that is
/// not a regular file (a pipe, `/dev/stdout`, a shell's `>(…)`) is written
/// in place: renaming over it would replace the device or pipe (as root,
/// `/dev/stdout` itself) and the reader would get nothing. A symlink to a
/// regular file has its target replaced, not the link.
struct Replacement {
    path: PathBuf,
    tmp: Option<PathBuf>,
    out: std::io::BufWriter<std::fs::File>,
    done: bool,
}

impl Replacement {
    fn create(path: &Path) -> anyhow::Result<Replacement> {
        let mut path = path.to_path_buf();
        match std::fs::metadata(&path) {
            // Else the whole walk is done before the rename over it fails.
            Ok(m) if m.is_dir() => anyhow::bail!(
                "{} is a directory; name a file to write (it is replaced when complete)",
                super::output::path(&path)
            ),
            Ok(m) if !m.is_file() && !m.is_dir() => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", super::output::path(&path)))?;
                return Ok(Replacement {
                    path,
                    tmp: None,
                    out: std::io::BufWriter::new(file),
                    done: true,
                });
            }
            Ok(m) if m.is_file() && path.symlink_metadata()?.file_type().is_symlink() => {
                path = std::fs::canonicalize(&path)
                    .with_context(|| format!("resolving {}", super::output::path(&path)))?;
            }
            _ => {}
        }
        let path = path.as_path();
        if path.file_name().is_none() {
            anyhow::bail!("{}: not a file name", super::output::path(path));
        }
        super::temp::remove_stale(path, ".unifs-manifest");
        // Numbered where the name is long, as the manifest and its private
        // list may both be.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = super::temp::name_for(path, ".unifs-manifest", 0, Some(n));
        // Root's alone, as the catalog is: a manifest names every path of
        // the guest, with owners, xattrs and content hashes, also where the
        // guest's own modes hide them from other users.
        let file = super::temp::create(&tmp).with_context(|| {
            format!(
                "creating {} (written as {})",
                super::output::path(path),
                super::output::path(&tmp)
            )
        })?;
        Ok(Replacement {
            path: path.to_path_buf(),
            tmp: Some(tmp),
            out: std::io::BufWriter::new(file),
            done: false,
        })
    }

    /// Flushes and syncs the temp file, where the disk may yet be full.
    fn sync(&mut self) -> anyhow::Result<()> {
        let Some(tmp) = &self.tmp else {
            return Ok(());
        };
        let what = || format!("writing {}", path(tmp));
        self.out.flush().with_context(what)?;
        self.out.get_ref().sync_all().with_context(what)
    }

    fn commit(mut self) -> anyhow::Result<()> {
        let Some(tmp) = self.tmp.take() else {
            let what = || format!("writing {}", path(&self.path));
            return self.out.flush().with_context(what);
        };
        let what = || format!("writing {}", path(&tmp));
        self.out.flush().with_context(what)?;
        self.out.get_ref().sync_all().with_context(what)?;
        let renamed = std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", path(&tmp), path(&self.path)));
        if renamed.is_err() {
            self.tmp = Some(tmp);
            return renamed;
        }
        self.done = true;
        // The rename on disk when the command says it is done: without it
        // a power cut right after left no FILE, or the old one.
        let dir = crate::sys::parent_dir(&self.path);
        crate::sys::sync_dir(dir).with_context(|| format!("syncing {}", path(dir)))
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if let (false, Some(tmp)) = (self.done, &self.tmp) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

pub fn restore(g: &Global, a: RestoreArgs) -> anyhow::Result<ExitCode> {
    // A new, empty store would hold none of the guest's shared files.
    if !g.store.join("objects").exists() {
        Store::check_objects_there(&g.store)?;
        anyhow::bail!(
            "no store at {} (--store or UNIFS_STORE): restore takes the guest's shared files \
             from the store the manifest was made with; name that store, or put it back first \
             (its objects and a catalog snapshot: docs/backup.md, \"The store is lost too\")",
            path(&g.store)
        );
    }
    let store = Store::open(&g.store)?;
    crate::fs::refuse_stalled(&a.target).with_context(|| path(&a.target))?;
    // A tree rebuilt in the store would be strays among its objects (store
    // verify fails) and a guest unify refuses.
    crate::unify::check_guest_outside_store(&crate::unify::resolved(&a.target), store.root())?;
    let (header, entries) = match a.manifest.as_os_str() == "-" {
        true => manifest::read_jsonl_from(std::io::stdin().lock())
            .context("reading the manifest from standard input")?,
        false => manifest::read_jsonl(&a.manifest)
            .with_context(|| format!("reading manifest {}", path(&a.manifest)))?,
    };
    // From the check that every object is there until the last is linked:
    // a gc meanwhile would remove one only the lost guest linked. And
    // before the catalog is read: through a read-only view of the store it
    // is read as a file nobody changes, which only the lock makes true.
    // (Where the store has no `lock`, its directory's flock.)
    let _lock = crate::store::WriterLock::acquire_reading(store.root())?;
    // Objects of a format this unifs does not know would all fail their
    // checks; the catalog is not needed otherwise ("the store is lost too").
    Catalog::check_format_if_readable(&store.catalog_path())?;
    let opts = restore::Options {
        link_max: a.link_max,
    };
    let report = restore::restore_with(&entries, &store, &a.from, &a.target, &opts)?;
    if let Some(why) = &report.extra_copy_failed {
        errln!(
            "unifs: warning: an object at the link limit could not get a new copy in the \
             store ({why}); its files were copied into the guest instead (a later unify of \
             the guest links them)"
        );
    }
    for b in &report.blake3_not_the_objects {
        errln!(
            "unifs: warning: the manifest gives the files of object {} the blake3 {}, but \
             its content's is {} and the object file hashes to its id (its content is what \
             the guest had): restored from it. The manifest took the blake3 from a damaged \
             catalog: run `unifs store verify` on the store it was written from, and repair \
             the catalog as it says before the next backup",
            b.object,
            b.manifest,
            b.content
        );
    }
    let not_kept = &report.times_not_kept;
    for t in not_kept.iter().take(50) {
        errln!("unifs: warning: {}", super::output::clean(&t.to_string()));
    }
    if not_kept.len() > 50 {
        errln!(
            "unifs: warning: … and {} more times not kept (`--json` lists them all)",
            not_kept.len() - 50
        );
    }
    if !not_kept.is_empty() {
        errln!(
            "unifs: warning: the filesystem of {} did not keep {} of the manifest as \
             they are: the guest is restored with the times it kept instead. Restore onto a \
             filesystem that holds them (btrfs and tmpfs hold any) to keep them",
            path(&a.target),
            counted(not_kept.len() as u64, "time", "times")
        );
    }
    if a.json {
        outln!("{}", super::output::json(&report)?);
    } else {
        let verified = match not_kept.len() {
            0 => "every file verified".to_string(),
            n => format!(
                "every file verified, but {} of the manifest not kept (see the warnings)",
                counted(n as u64, "time", "times")
            ),
        };
        let extra = match report.extra_copies {
            0 => String::new(),
            n => format!(
                " ({} for the link limit)",
                counted(n, "new object copy", "new object copies")
            ),
        };
        outln!(
            "restored guest {} into {}: {}; {} linked from the store{extra}, {} copied from \
             it ({}), {} copied ({}), {}; {verified}",
            super::output::guest_name(&header.guest, &header.root_path()),
            path(&a.target),
            counted(report.entries, "entry", "entries"),
            counted(report.objects_linked, "file", "files"),
            count(report.objects_copied),
            bytes(report.object_bytes_copied),
            counted(report.private_copied, "private file", "private files"),
            bytes(report.private_bytes_copied),
            counted(report.hardlinks, "hardlink", "hardlinks")
        );
    }
    if !not_kept.is_empty() {
        return Ok(ExitCode::from(super::unify::EXIT_PROBLEMS));
    }
    Ok(ExitCode::SUCCESS)
}
