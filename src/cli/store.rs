//! `unifs store init|verify|gc|forget|stats|ls|runs|snapshot`.

use super::output::{bytes, clean, count, counted, guest_name, name, path, word};
use super::print::{errln, outln};
use super::Global;
use crate::catalog::Catalog;
use crate::store::maintain::{describe_change, Recorded};
use crate::store::Store;
use anyhow::Context;
use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

mod copied;

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Create the store (objects/, tmp/, lock, catalog.db) if it does not exist.
    ///
    /// A store is created only in a new or empty directory.
    Init {
        /// Leave mtime out of object ids: more sharing, one common mtime per object.
        #[arg(long)]
        ignore_mtime: bool,
        /// Start an empty catalog in a store whose catalog.db was lost (prefer
        /// restoring a `store snapshot`); unify every guest again afterwards.
        /// Give --ignore-mtime as the store was made: the objects tell, and
        /// init refuses the other mode.
        #[arg(long)]
        new_catalog: bool,
    },
    /// Rehash every object; report each mismatch (for an object changed
    /// around the store: what changed, and how to put it back); exit 1 if any.
    Verify {
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
    },
    /// Remove objects that no guest links any more; repair object files
    /// the catalog lists but that are gone (restored from a guest that still
    /// links the inode, or else dropped from the catalog with their links),
    /// and those replaced by a copy (a backup put back over them: the name
    /// goes back to the inode guests link). Refused in a copy of a store
    /// whose catalog names the original's guests while they are there.
    Gc {
        /// Only list what would be removed.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
    },
    /// Drop guests from the catalog: their rows and links go, so `unify --all`
    /// no longer visits them. A guest directory that no longer exists can be
    /// named too. Files are not touched; objects stay until `store gc`.
    Forget {
        /// The guests' root directories (or names, as `store stats` lists them);
        /// a symlink at the end of one is not followed: it names the entry
        /// recorded at that path (a guest moved away), not its target.
        #[arg(value_name = "GUEST_DIR", required = true)]
        guests: Vec<std::path::PathBuf>,
    },
    /// Objects, bytes stored and saved, per guest.
    Stats {
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
    },
    /// List object files (paths relative to the store), or only those added
    /// after unify run RUN: what an incremental backup must copy.
    Ls {
        /// Only objects added by runs after RUN (see `unifs store runs`), and
        /// every extra copy (`.1`, …) of an object at the link limit.
        #[arg(long, value_name = "RUN", default_value_t = 0)]
        since: i64,
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
        /// End each path with NUL, not newline.
        #[arg(short = '0', long)]
        null: bool,
    },
    /// List unify runs, numbered.
    Runs {
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent copy of the catalog to DEST (SQLite online backup),
    /// safe while unify or mounts are running.
    Snapshot {
        /// The file to write (must not exist).
        dest: std::path::PathBuf,
    },
}

pub fn run(g: &Global, c: StoreCommand) -> anyhow::Result<ExitCode> {
    match c {
        StoreCommand::Init {
            ignore_mtime,
            new_catalog,
        } => init(g, ignore_mtime, new_catalog),
        StoreCommand::Verify { json } => {
            super::start_global_threads()?;
            verify(g, json)
        }
        StoreCommand::Gc { dry_run, json } => gc(g, dry_run, json),
        StoreCommand::Forget { guests } => forget(g, &guests),
        StoreCommand::Stats { json } => stats(g, json),
        StoreCommand::Ls { since, json, null } => ls(g, since, json, null),
        StoreCommand::Runs { json } => runs(g, json),
        StoreCommand::Snapshot { dest } => snapshot(g, &dest),
    }
}

fn init(g: &Global, ignore_mtime: bool, new_catalog: bool) -> anyhow::Result<ExitCode> {
    let store = Store::create(&g.store)?;
    let _lock = store.lock_writer()?;
    tighten_modes(&store);
    if !new_catalog {
        store.check_catalog()?;
    } else if std::fs::metadata(store.catalog_path()).is_ok_and(|m| m.len() > 0) {
        anyhow::bail!(
            "store {s} has a catalog ({}); --new-catalog only starts one where there is none. \
             If it is damaged and you have no snapshot to copy there, move it aside first, with \
             its catalog.db-wal and catalog.db-shm, those there are (`mv {s}/catalog.db* \
             DIR/`), then run this again",
            path(&store.catalog_path()),
            s = path(store.root()),
        );
    }
    if new_catalog {
        // The objects' ids say which mode they were made in; a catalog in
        // the other would call every object changed, and unify would add
        // its own beside them. Refused rather than taken silently: the
        // option given is then wrong, and the store's other settings are
        // the operator's to check too.
        match store.objects_id_mode(16)? {
            Some((made_ignoring, object)) if made_ignoring != ignore_mtime => anyhow::bail!(
                "store {}: its objects were made {} --ignore-mtime ({} hashes to its name only \
                 {} its mtime), and a catalog in the other mode would take every object for \
                 changed; nothing was done: run `unifs --store {} store init --new-catalog{}`",
                path(store.root()),
                if made_ignoring { "with" } else { "without" },
                path(&object),
                if made_ignoring { "without" } else { "with" },
                path(store.root()),
                if made_ignoring { " --ignore-mtime" } else { "" },
            ),
            Some(_) => {}
            None if !objects_empty(&store)? => errln!(
                "unifs: warning: store {}: none of the objects read hashes to its name with or \
                 without its mtime (changed around the store?), so whether the store was made \
                 with --ignore-mtime could not be told from them; the catalog takes it as given \
                 ({}); `unifs store verify` checks every object",
                path(store.root()),
                if ignore_mtime { "with" } else { "without" },
            ),
            None => {}
        }
    }
    let catalog = Catalog::open(&store.catalog_path())?;
    check_catalog_is_this_stores(&store, &catalog)?;
    let effective = catalog.init_config(ignore_mtime)?;
    if effective != ignore_mtime {
        anyhow::bail!(
            "store {} already exists {} --ignore-mtime",
            path(store.root()),
            if effective { "with" } else { "without" }
        );
    }
    outln!("store ready at {}", path(store.root()));
    Ok(ExitCode::SUCCESS)
}

/// True when the store's `objects/` holds no fan-out directory with an
/// object in it.
fn objects_empty(store: &Store) -> anyhow::Result<bool> {
    Ok(store.list_objects()?.0.is_empty())
}

fn open_catalog(store: &Store) -> anyhow::Result<Catalog> {
    store.check_catalog()?;
    Ok(Catalog::open_readonly(&store.catalog_path())?)
}

fn verify(g: &Global, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&g.store)?;
    let catalog = open_catalog(&store)?;
    // The catalog first: a damaged page can leave every query below working.
    catalog.check_integrity(true)?;
    check_catalog_is_this_stores(&store, &catalog)?;
    let ignore_mtime = catalog.ignore_mtime()?;
    // Each object file is held against its row: where ids leave mtime
    // out, only the catalog knows what it was; and a row SQLite's checks
    // pass may still say what the file is not.
    let rows = catalog.objects()?;
    let mut report = store.verify(ignore_mtime, |id| rows.get(id).map(recorded))?;
    // What changed in an object that no longer hashes to its id, from what
    // the catalog recorded when it was made (a file read once more: few).
    for p in &mut report.problems {
        let Some(id) = p.changed else { continue };
        let recorded = rows.get(&id).map(recorded);
        if let Ok(what) = describe_change(&p.path, &id, recorded.as_ref(), ignore_mtime) {
            p.what = what;
        }
    }
    // Which guests a bad object hurts: those with a path that still links
    // its inode (the catalog's links, checked by stat).
    let mut inodes = std::collections::HashMap::new();
    for p in &report.problems {
        if let (Some(dir), Some(name)) = (
            p.path.parent().and_then(|d| d.file_name()),
            p.path.file_name(),
        ) {
            if let (Some((id, _)), Ok(st)) = (
                crate::store::parse_object_name(dir, name),
                crate::sys::lstat(&p.path),
            ) {
                inodes.insert(p.path.clone(), (id, (st.dev, st.ino)));
            }
        }
    }
    let mut missing = Vec::new();
    for ((dev, ino), f) in catalog.object_inodes()? {
        // Only a missing file: another inode than listed (the store
        // restored from a backup, or the file replaced by a copy) is sound; the catalog's
        // numbers are updated by the next unify or gc.
        if store.stat_object(&f.id, f.copy)?.is_none() {
            missing.push(((dev, ino), f));
        }
    }
    // A store gc beside us drops rows first, then removes the files: a
    // file missing whose row went too was removed meanwhile.
    if !missing.is_empty() {
        let now: std::collections::HashSet<_> = catalog
            .object_inodes()?
            .into_values()
            .map(|f| (f.id, f.copy))
            .collect();
        missing.retain(|(_, f)| now.contains(&(f.id, f.copy)));
    }
    for ((dev, ino), f) in missing {
        let what = "listed in the catalog but missing: `unifs store gc` gives it its name \
                    back from a guest that still links it, or drops it from the catalog"
            .to_string();
        let path = store.object_path(&f.id, f.copy);
        inodes.insert(path.clone(), (f.id, (dev, ino)));
        report.problems.push(crate::store::maintain::Problem {
            path,
            what,
            guests: Vec::new(),
            changed: None,
        });
    }
    let names: std::collections::HashMap<_, _> = catalog
        .guests()?
        .into_iter()
        .map(|r| (r.path, r.name))
        .collect();
    let mut linking = Vec::new();
    for p in &mut report.problems {
        let Some((id, inode)) = inodes.get(&p.path) else {
            linking.push(Vec::new());
            continue;
        };
        let mut paths = Vec::new();
        for (root, rel) in catalog.links_to(id)? {
            let path = root.join(&rel);
            if crate::sys::lstat(&path).is_ok_and(|st| (st.dev, st.ino) == *inode) {
                let name = names.get(&root).cloned().unwrap_or_default();
                if !p.guests.contains(&name) {
                    p.guests.push(name);
                }
                paths.push(path);
            }
        }
        linking.push(paths);
    }
    if json {
        outln!("{}", super::output::json(&report)?);
    } else {
        for (p, paths) in report.problems.iter().zip(&linking) {
            outln!("BAD {}: {}", path(&p.path), clean(&p.what));
            if !p.guests.is_empty() {
                outln!(
                    "    linked by {} {}: {}",
                    word(p.guests.len() as u64, "guest", "guests"),
                    p.guests
                        .iter()
                        .map(|g| name(g))
                        .collect::<Vec<_>>()
                        .join(", "),
                    counted(paths.len() as u64, "path", "paths")
                );
                for p in paths.iter().take(10) {
                    outln!("      {}", path(p));
                }
            }
        }
        outln!(
            "verified {} ({}): {}",
            counted(report.object_files, "object file", "object files"),
            bytes(report.bytes),
            counted(report.problems.len() as u64, "problem", "problems")
        );
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An object's row, as verify holds its file against it.
fn recorded(r: &crate::catalog::ObjectRow) -> Recorded {
    Recorded {
        perm: r.perm,
        uid: r.uid,
        gid: r.gid,
        mtime: r.mtime,
        size: r.size,
        content_hash: r.content_hash,
    }
}

fn gc(g: &Global, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&g.store)?;
    // A dry run only reads: it shares the lock with restores (and works on
    // a read-only copy of a store); a writer still keeps it out.
    let _lock = if dry_run {
        store.lock_shared()?
    } else {
        Some(store.lock_writer()?)
    };
    store.check_catalog()?;
    if !dry_run {
        // Before the catalog: on a full disk a killed unify's staged copy
        // may be what keeps it from opening, and gc is what frees space.
        // (Once: nothing stages there while gc holds the lock.)
        store.empty_tmp()?;
        tighten_modes(&store);
    }
    // A new serial before anything changes (see store::SERIAL_XATTR).
    let serial = match dry_run {
        true => None,
        false => Some(store.serial()).zip(store.set_new_serial()),
    };
    match gc_pass(g, &store, dry_run, json, &[], &serial) {
        Err(e) if !dry_run && disk_full(&e) => gc_on_full_disk(g, &store, json, e, &serial),
        r => r,
    }
}

/// Whether `e` is SQLite finding no room on the catalog's filesystem.
fn disk_full(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<crate::catalog::Error>() {
        Some(crate::catalog::Error::Sqlite { error, full, .. }) => {
            *full || error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        }
        _ => false,
    }
}

/// `store gc` where the catalog could not be written for want of space:
/// the unused object files go first (nothing links them, and we hold the
/// writer lock, so nothing will), then their rows in a second pass. A gc
/// killed in between leaves rows naming files that are gone, which verify
/// reports and the next gc drops (no guest path links their inodes); the
/// other order could never free the space the catalog needs.
fn gc_on_full_disk(
    g: &Global,
    store: &Store,
    json: bool,
    first: anyhow::Error,
    serial: &Serial,
) -> anyhow::Result<ExitCode> {
    let freed = store.gc_candidates(&Default::default())?;
    if freed.is_empty() {
        return Err(first);
    }
    let inodes: std::collections::HashMap<_, _> = freed
        .iter()
        .filter_map(|(f, _)| {
            let st = crate::sys::lstat(&f.path).ok()?;
            Some(((f.id, f.copy), (st.dev, st.ino)))
        })
        .collect();
    store.gc_remove(&freed)?;
    let removed = freed.len() as u64;
    // A file removed that was a copy put in place of the inode the catalog
    // lists (a backup put back over it; the catalog could not be read
    // before, on the full disk) keeps its rows: gc_pass then gives its name
    // back from a guest path that still links that inode, or drops them.
    let listed: std::collections::HashMap<_, _> =
        match Catalog::open_readonly(&store.catalog_path()) {
            Ok(catalog) => catalog
                .object_inodes()?
                .into_iter()
                .map(|(inode, f)| ((f.id, f.copy), inode))
                .collect(),
            Err(_) => Default::default(),
        };
    let freed: Vec<_> = freed
        .into_iter()
        .filter(|(f, _)| {
            let key = (f.id, f.copy);
            listed.get(&key).is_none_or(|i| Some(i) == inodes.get(&key))
        })
        .collect();
    let why = match first.downcast_ref::<crate::catalog::Error>() {
        Some(crate::catalog::Error::Sqlite { error, .. }) => error.to_string(),
        _ => first.to_string(),
    };
    errln!(
        "unifs: the filesystem of store {} is full (SQLite: {why}): removed the {} first, to \
         make room for the catalog's update",
        path(store.root()),
        counted(removed, "unused object file", "unused object files")
    );
    gc_pass(g, store, false, json, &freed, serial).with_context(|| {
        format!(
            "removed {}, but the catalog could not be updated: it lists them until the next \
             `unifs store gc` (store verify reports them as missing meanwhile); free some space \
             on the filesystem of {} and run it again",
            counted(
                freed.len() as u64,
                "unused object file",
                "unused object files"
            ),
            path(store.root())
        )
    })
}

/// The store's serial before a writer set a new one, and the new one.
type Serial = Option<(Option<String>, String)>;

/// Says what [`Store::tighten_modes`] changed.
fn tighten_modes(store: &Store) {
    for change in store.tighten_modes() {
        errln!("unifs: warning: {change}");
    }
}

/// One pass of `store gc` over the catalog. `freed`: unused object files
/// already removed (on a full disk), whose rows go with the others'.
fn gc_pass(
    g: &Global,
    store: &Store,
    dry_run: bool,
    json: bool,
    freed: &[(crate::store::maintain::ObjectFile, u64)],
    serial: &Serial,
) -> anyhow::Result<ExitCode> {
    // A dry run changes nothing, not even the schema of an older catalog:
    // an older unifs must still open it afterwards.
    let catalog = if dry_run {
        Catalog::open_readonly(&store.catalog_path())?
    } else {
        Catalog::open(&store.catalog_path())?
    };
    check_catalog_is_this_stores(store, &catalog)?;
    copied::refuse_other_stores_guests(store, &catalog)?;
    // Only a catalog that matched the store goes on matching it: gc does
    // not check the inode numbers of the objects it keeps, as unify does.
    let recorded = catalog.config(crate::catalog::STORE_SERIAL)?;
    let next_serial = serial
        .as_ref()
        .filter(|(before, _)| before.is_some() && *before == recorded)
        .map(|(_, next)| next);
    let replaced = repair_replaced(store, &catalog, dry_run)?;
    let removed = store.gc_candidates(&replaced.kept)?;
    // Objects copied without xattrs (`rsync -aH`) lost their markers: a
    // mount would write into them for every guest. (Not root: trusted.*
    // cannot be read.) Not those it removes: "put back" and then removed
    // would say it twice, wrongly once.
    let removing: HashSet<&Path> = removed.iter().map(|(f, _)| f.path.as_path()).collect();
    let mut marked = Vec::new();
    let mut rewritten = Vec::new();
    if nix::unistd::geteuid().is_root() {
        // A marker there but wrong is put right for an object the catalog
        // knows (and whose file hashes to its name).
        let known = catalog.objects()?;
        let ignore_mtime = catalog.ignore_mtime()?;
        for f in store.list_objects()?.0 {
            if removing.contains(f.path.as_path()) {
                continue;
            }
            if store.restore_marker(&f.id, f.copy, dry_run)? {
                marked.push(f.path);
            } else if known.contains_key(&f.id)
                && store.rewrite_wrong_marker(&f.id, f.copy, ignore_mtime, dry_run)?
            {
                rewritten.push(f.path);
            }
        }
    }
    if !dry_run {
        // Rows first, files second: see Store::gc_remove.
        catalog.begin()?;
        for (f, _) in removed.iter().chain(freed) {
            catalog.remove_object_file(&f.id, f.copy)?;
        }
        catalog.commit()?;
        store.gc_remove(&removed)?;
    }
    let removed: Vec<_> = freed.iter().cloned().chain(removed).collect();
    let missing = repair_missing(store, &catalog, dry_run)?;
    if let Some(next) = next_serial {
        catalog.set_config(crate::catalog::STORE_SERIAL, next)?;
    }
    let freed: u64 = removed.iter().map(|(_, size)| size).sum();
    if json {
        let paths: Vec<_> = removed.iter().map(|(f, _)| f.path.clone()).collect();
        let mut out = serde_json::json!({
            "dry_run": dry_run, "objects_removed": removed.len(), "bytes_freed": freed,
            "links_dropped": missing.links_dropped,
        });
        // Paths as text, and in `*_hex` lists where one is not UTF-8 (a
        // store whose directory's name is not).
        for (key, list) in [
            ("paths", &paths),
            ("missing_restored", &missing.restored),
            ("missing_dropped", &missing.dropped),
            ("missing_left", &missing.left),
            ("replaced_renumbered", &replaced.renumbered),
            ("replaced_given_back", &replaced.given_back),
            ("markers_restored", &marked),
            ("markers_rewritten", &rewritten),
        ] {
            crate::sys::json_paths(&mut out, key, list);
        }
        outln!("{}", super::output::json(&out)?);
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        if g.verbose > 0 || dry_run {
            for (f, _) in &removed {
                outln!("{verb} {}", path(&f.path));
            }
        }
        outln!(
            "{verb} {}, {}",
            counted(
                removed.len() as u64,
                "unused object file",
                "unused object files"
            ),
            bytes(freed)
        );
        for p in &replaced.given_back {
            let verb = if dry_run { "would give" } else { "gave" };
            outln!(
                "{verb} {} back the inode guests link (it had been replaced by a copy, which \
                 is freed)",
                path(p)
            );
        }
        for p in &replaced.renumbered {
            let verb = if dry_run { "would update" } else { "updated" };
            outln!(
                "{verb} the catalog's inode of {} (the file was replaced)",
                path(p)
            );
        }
        for p in &marked {
            let verb = if dry_run {
                "would put back"
            } else {
                "put back"
            };
            outln!(
                "{verb} the missing store marker of {} (copied without xattrs?)",
                path(p)
            );
        }
        for p in &rewritten {
            let verb = if dry_run { "would rewrite" } else { "rewrote" };
            outln!(
                "{verb} the wrong store marker of {} (malformed, or naming another object)",
                path(p)
            );
        }
        let (restore, drop) = if dry_run {
            ("would restore", "would drop")
        } else {
            ("restored", "dropped")
        };
        for p in &missing.restored {
            outln!("{restore} missing {} from a guest that links it", path(p));
        }
        for p in &missing.dropped {
            outln!("{drop} missing {} from the catalog", path(p));
        }
        if !missing.dropped.is_empty() {
            outln!(
                "{drop} {} to missing objects: unify treats those files as ordinary files \
                 again",
                counted(missing.links_dropped, "guest link", "guest links")
            );
        }
    }
    if !missing.left.is_empty() {
        errln!(
            "unifs: {} listed in the catalog {} missing, left as found: repairing needs root \
             (to read the store's trusted.* markers)",
            counted(missing.left.len() as u64, "object file", "object files"),
            word(missing.left.len() as u64, "is", "are")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses another store's catalog (see [`Store::check_catalog_lists`]).
fn check_catalog_is_this_stores(store: &Store, catalog: &Catalog) -> anyhow::Result<()> {
    let listed = catalog.object_inodes()?;
    let seen_dir = catalog.config(crate::catalog::OBJECTS_DIR)?;
    Ok(store.check_catalog_lists(listed.values().map(|f| (f.id, f.copy)), seen_dir.as_deref())?)
}

/// An object file as the catalog lists it, the inode listed, and the
/// file's stat.
type ReplacedFile = (crate::catalog::ObjectInode, (u64, u64), crate::sys::Stat);

/// Object files whose inode is not the one the catalog lists (replaced by
/// a copy, restored from a backup), sorted.
fn replaced_files(store: &Store, catalog: &Catalog) -> anyhow::Result<Vec<ReplacedFile>> {
    let mut moved = Vec::new();
    for ((dev, ino), f) in catalog.object_inodes()? {
        if let Some(st) = store.stat_object(&f.id, f.copy)? {
            if (st.dev, st.ino) != (dev, ino) {
                moved.push((f, (dev, ino), st));
            }
        }
    }
    moved.sort_by_key(|(f, ..)| (f.id, f.copy));
    Ok(moved)
}

/// What `store gc` did about object files that are another inode than the
/// catalog lists.
#[derive(Default)]
struct Replaced {
    /// Their names given back to the inode guest paths still link (the
    /// copy put in its place had no guest link, and is freed).
    given_back: Vec<std::path::PathBuf>,
    /// The catalog took the file's inode: unify then links guest paths of
    /// the old one to the store again (by their markers).
    renumbered: Vec<std::path::PathBuf>,
    /// Not removed by this gc whatever their link count: guest paths still
    /// link the inode the catalog listed (the object they use).
    kept: std::collections::HashSet<(crate::store::ObjectId, u32)>,
}

/// Object files replaced by another inode (a copy, tar restoring objects
/// over the store). Where a guest path still links the inode the catalog
/// lists and the copy has no guest link, the name goes back to that inode
/// (checked by marker and hash, as for a missing file: needs root), so the
/// store is as it was. Otherwise the catalog gets the file's inode, so that
/// unify no longer takes paths linking the old one for links to the store.
/// Either way gc does not remove the file while guest paths link the old
/// inode: the copy, unlinked by any guest, is all the store has of it.
fn repair_replaced(store: &Store, catalog: &Catalog, dry_run: bool) -> anyhow::Result<Replaced> {
    let mut out = Replaced::default();
    let moved = replaced_files(store, catalog)?;
    if moved.is_empty() {
        return Ok(out);
    }
    let root = nix::unistd::geteuid().is_root();
    let ignore_mtime = catalog.ignore_mtime()?;
    let mut renumber = Vec::new();
    for (f, old, st) in moved {
        let mut linked = false;
        let mut given_back = false;
        for (guest_root, rel) in catalog.links_to(&f.id)? {
            let path = guest_root.join(&rel);
            if !crate::sys::lstat(&path).is_ok_and(|s| (s.dev, s.ino) == old) {
                continue;
            }
            linked = true;
            if !root || st.nlink != 1 {
                break;
            }
            let made_mtime = match ignore_mtime {
                true => catalog.object(&f.id)?.map(|r| r.mtime),
                false => None,
            };
            given_back = store
                .relink_missing(
                    &f.id,
                    f.copy,
                    old,
                    (&guest_root, &rel),
                    ignore_mtime,
                    made_mtime,
                    dry_run,
                    true,
                )
                .unwrap_or(false);
            if given_back {
                break;
            }
        }
        if linked {
            out.kept.insert((f.id, f.copy));
        }
        if given_back {
            out.given_back.push(store.object_path(&f.id, f.copy));
        } else {
            renumber.push((f, st));
        }
    }
    if !dry_run && !renumber.is_empty() {
        catalog.begin()?;
        for (f, st) in &renumber {
            catalog.set_object_file(&f.id, f.copy, st.dev, st.ino)?;
        }
        catalog.commit()?;
    }
    for (f, _) in renumber {
        out.renumbered.push(store.object_path(&f.id, f.copy));
    }
    Ok(out)
}

/// What `store gc` did about object files the catalog lists but that are gone.
#[derive(Default)]
struct Missing {
    /// Given their name back from a guest path that still links the inode.
    restored: Vec<std::path::PathBuf>,
    /// Forgotten by the catalog (with the guest links naming them).
    dropped: Vec<std::path::PathBuf>,
    links_dropped: u64,
    /// Left alone (not root: the markers cannot be read).
    left: Vec<std::path::PathBuf>,
}

/// Object files the catalog lists but that are gone (deleted by hand, or
/// lost): each gets its name back from a guest path that still links its
/// inode (checked by marker and hash), or else its rows go, with the guest
/// links naming it, so that verify is clean and unify sees those guest
/// files as ordinary files again.
fn repair_missing(store: &Store, catalog: &Catalog, dry_run: bool) -> anyhow::Result<Missing> {
    let mut out = Missing::default();
    let mut gone: Vec<_> = catalog
        .object_inodes()?
        .into_iter()
        .map(|(inode, f)| (f, inode))
        .collect();
    gone.sort_by_key(|(f, _)| (f.id, f.copy));
    gone.retain(|(f, _)| matches!(store.stat_object(&f.id, f.copy), Ok(None)));
    if gone.is_empty() {
        return Ok(out);
    }
    if !nix::unistd::geteuid().is_root() {
        out.left = gone
            .iter()
            .map(|(f, _)| store.object_path(&f.id, f.copy))
            .collect();
        return Ok(out);
    }
    let ignore_mtime = catalog.ignore_mtime()?;
    if !dry_run {
        catalog.begin()?;
    }
    for (f, inode) in gone {
        let path = store.object_path(&f.id, f.copy);
        let links = catalog.links_to(&f.id)?;
        let made_mtime = match ignore_mtime {
            true => catalog.object(&f.id)?.map(|r| r.mtime),
            false => None,
        };
        let restored = links.iter().any(|(root, rel)| {
            let guest_path = (root.as_path(), rel.as_path());
            store
                .relink_missing(
                    &f.id,
                    f.copy,
                    inode,
                    guest_path,
                    ignore_mtime,
                    made_mtime,
                    dry_run,
                    false,
                )
                .unwrap_or(false)
        });
        if restored {
            out.restored.push(path);
            continue;
        }
        out.links_dropped += if dry_run {
            links.len() as u64
        } else {
            catalog.drop_missing_object_file(&f.id, f.copy)?
        };
        out.dropped.push(path);
    }
    if !dry_run {
        catalog.commit()?;
    }
    Ok(out)
}

fn forget(g: &Global, args: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let store = Store::open(&g.store)?;
    let _lock = store.lock_writer()?;
    tighten_modes(&store);
    store.check_catalog()?;
    let catalog = Catalog::open(&store.catalog_path())?;
    check_catalog_is_this_stores(&store, &catalog)?;
    let mut rows = Vec::with_capacity(args.len());
    for arg in args {
        match find_guest(&catalog, arg)? {
            Some(row) => rows.push(row),
            None => anyhow::bail!(
                "{}: not a guest of the store {}{} (`unifs store stats` lists them); \
                 nothing was forgotten",
                path(arg),
                path(store.root()),
                symlink_hint(&catalog, arg)?
            ),
        }
    }
    let mut seen = std::collections::HashSet::new();
    rows.retain(|r| seen.insert(r.id));
    catalog.begin()?;
    let mut forgotten = Vec::with_capacity(rows.len());
    for row in rows {
        let links = catalog.forget_guest(row.id)?;
        forgotten.push((row, links));
    }
    catalog.commit()?;
    for (row, links) in forgotten {
        // Its kept directory listings too (a cache; if this fails, a guest
        // given the same id later would only find listings that match no
        // directory of its own).
        let _ = std::fs::remove_file(crate::unify::listings::cache_path(&store, row.id));
        outln!(
            "forgot guest {} ({}): {}",
            guest_name(&row.name, &row.path),
            path(&row.path),
            counted(links, "link", "links")
        );
    }
    outln!("objects no guest links any more stay until `unifs store gc`");
    Ok(ExitCode::SUCCESS)
}

/// The catalog's guest for a GUEST_DIR argument ([`as_recorded`]), or else
/// a guest name.
fn find_guest(
    catalog: &Catalog,
    arg: &std::path::Path,
) -> anyhow::Result<Option<crate::catalog::GuestRow>> {
    if let Some(row) = catalog.guest_by_path(&as_recorded(arg))? {
        return Ok(Some(row));
    }
    match arg.to_str() {
        Some(name) if !name.contains('/') => guest_named(catalog, name),
        _ => Ok(None),
    }
}

/// The guest called `name`, as the catalog has it or as outputs show it
/// ([`guest_name`]: `g\xff2` for a directory `g<0xff>2`, whose catalog name
/// has U+FFFD there). Refused when it names more than one guest.
pub(super) fn guest_named(
    catalog: &Catalog,
    name: &str,
) -> anyhow::Result<Option<crate::catalog::GuestRow>> {
    let mut found: Vec<_> = catalog
        .guests()?
        .into_iter()
        .filter(|r| r.name == name || guest_name(&r.name, &r.path) == name)
        .collect();
    if found.len() > 1 {
        let dirs: Vec<String> = found.iter().map(|r| path(&r.path)).collect();
        anyhow::bail!(
            "{} names more than one guest (of the directories {}): name the guest's directory \
             instead",
            clean(name),
            dirs.join(", ")
        );
    }
    Ok(found.pop())
}

/// GUEST_DIR as the catalog would have recorded that directory: absolute,
/// `.` and `..` taken lexically, the parent's symlinks resolved (unify
/// records guests resolved), but not a symlink at the last component. A
/// guest moved with a symlink left at its old path (`mv web1 web1-new; ln -s
/// web1-new web1`) still has its old entry under `web1`, and `forget web1`,
/// the command `unify --all` prints for it, must forget that entry, not the
/// guest the symlink leads to.
fn as_recorded(arg: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(arg).unwrap_or_else(|_| arg.to_path_buf());
    // The parent as the kernel resolves it (`link/..` is where the link
    // leads, up one: `..` is not taken off as text).
    match (abs.parent(), abs.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => crate::unify::resolved(parent).join(name),
        _ => crate::unify::resolved(&abs),
    }
}

/// Why GUEST_DIR `arg` is no guest, when it is a symlink to one: forget
/// never follows it (see [`as_recorded`]).
fn symlink_hint(catalog: &Catalog, arg: &std::path::Path) -> anyhow::Result<String> {
    let dir = as_recorded(arg);
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_symlink()) {
        return Ok(String::new());
    }
    let Ok(target) = std::fs::canonicalize(&dir) else {
        return Ok(String::new());
    };
    Ok(match catalog.guest_by_path(&target)? {
        Some(row) => format!(
            " ({} is a symlink to {}, the directory of guest {}: forget does not follow a \
             symlink at the end of GUEST_DIR; name {} to forget that guest)",
            path(&dir),
            path(&target),
            guest_name(&row.name, &row.path),
            path(&target)
        ),
        None => format!(
            " ({} is a symlink to {}; forget does not follow a symlink at the end of \
             GUEST_DIR)",
            path(&dir),
            path(&target)
        ),
    })
}

fn stats(g: &Global, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&g.store)?;
    let catalog = open_catalog(&store)?;
    let usage = store.usage()?;
    let guests = catalog.guest_stats()?;
    if json {
        let mut out = serde_json::json!({
            "store": store.root().to_string_lossy(), "usage": usage, "guests": guests
        });
        if let Some(hex) = crate::sys::hex_if_not_utf8(store.root()) {
            out["store_hex"] = hex.into();
        }
        outln!("{}", super::output::json(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("store {}", path(store.root()));
    outln!(
        "  {} in {}, {} stored, {}, {} saved",
        counted(usage.objects, "object", "objects"),
        counted(usage.object_files, "file", "files"),
        bytes(usage.bytes_stored),
        counted(usage.guest_links, "guest link", "guest links"),
        bytes(usage.bytes_saved)
    );
    if usage.unused_object_files > 0 {
        outln!(
            "  {} no guest links (`unifs store gc` removes them)",
            counted(usage.unused_object_files, "object file", "object files")
        );
    }
    if usage.unused_kept_object_files > 0 {
        outln!(
            "  {} no guest links, kept by `unifs store gc`: a higher copy of the same \
             object is linked (link-limit copies)",
            counted(
                usage.unused_kept_object_files,
                "object file",
                "object files"
            )
        );
    }
    // The figures above are counted now; these are the catalog's, which
    // only a unify run updates (a link a guest broke since still counts).
    if !guests.is_empty() {
        outln!("  per guest, as of its last unify run:");
    }
    for row in guests {
        let run = match row.last_run {
            Some(r) => format!("run {r}"),
            None => "no run done".to_string(),
        };
        outln!(
            "  guest {:<16} {:>10} {} linked ({}) {} ({run})",
            guest_name(&row.name, &row.path),
            count(row.files_linked),
            word(row.files_linked, "file", "files"),
            bytes(row.bytes_linked),
            path(&row.path)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ls(g: &Global, since: i64, json: bool, null: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&g.store)?;
    let catalog = open_catalog(&store)?;
    // A mark past the last run cannot come from this catalog: listing
    // nothing would make an incremental backup skip what it must copy.
    let last = catalog.runs()?.iter().map(|r| r.run).max().unwrap_or(0);
    if since > last {
        anyhow::bail!(
            "--since {since} is past the last unify run of store {} (run {last}): the mark \
             comes from another store, or the catalog was restored from an older snapshot (run \
             numbers then go on from the snapshot's); list every object (--since 0) for a full \
             backup, and take the mark from this store's `unifs store runs`",
            path(store.root())
        );
    }
    let objects = catalog.objects_since(since)?;
    if json {
        outln!("{}", super::output::json(&objects)?);
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = (|| -> std::io::Result<()> {
        for o in &objects {
            out.write_all(o.path.as_bytes())?;
            out.write_all(if null { b"\0" } else { b"\n" })?;
        }
        out.flush()
    })();
    // Said as every command says it (`cli::stdout_failed`); a reader gone
    // (`| head`) is still no failure, told by the error's kind.
    written.context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn runs(g: &Global, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&g.store)?;
    let catalog = open_catalog(&store)?;
    let runs = catalog.runs()?;
    if json {
        outln!("{}", super::output::json(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in runs {
        let state = match r.finished_at {
            Some(_) => "done",
            None => "unfinished",
        };
        outln!(
            "{:>5}  {:<10} {:>10} files linked {:>10} saved  {}",
            r.run,
            state,
            count(r.files_linked),
            bytes(r.bytes_saved),
            // Recorded by an older unifs, paths as they were.
            clean(&r.command)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot(g: &Global, dest: &std::path::Path) -> anyhow::Result<ExitCode> {
    if dest.exists() {
        anyhow::bail!(
            "{} exists; snapshot writes a new file: remove it first, or name another",
            path(dest)
        );
    }
    // SQLite would only say "unable to open database file", under the
    // catalog's name.
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            anyhow::bail!(
                "cannot write {}: directory {} does not exist: make it first (`mkdir -p {}`)",
                path(dest),
                path(dir),
                path(dir)
            );
        }
    }
    let store = Store::open(&g.store)?;
    let catalog = open_catalog(&store)?;
    // Written under a temp name and renamed when complete: one that fails
    // (a full disk) or is killed leaves no partial DEST to be taken for a
    // snapshot, nor one that makes the next try refuse.
    if dest.file_name().is_none() {
        anyhow::bail!("{}: not a file name", path(dest));
    }
    super::temp::remove_stale(dest, ".unifs-snapshot");
    // A long DEST name leaves no room for the suffix and SQLite's
    // "-journal" (NAME_MAX, 255 bytes).
    let tmp = super::temp::name_for(dest, ".unifs-snapshot", "-journal".len(), None);
    // Held (locked) until renamed: a later run leaves it alone meanwhile.
    let _held = super::temp::create(&tmp)
        .with_context(|| format!("creating {} (written as {})", path(dest), path(&tmp)))?;
    let written = catalog
        .snapshot(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            std::fs::rename(&tmp, dest)
                .with_context(|| format!("renaming {} to {}", path(&tmp), path(dest)))
        })
        .and_then(|()| {
            // The file is synced by SQLite's commit; the rename only so.
            let dir = crate::sys::parent_dir(dest);
            crate::sys::sync_dir(dir).with_context(|| format!("syncing {}", path(dir)))
        });
    if let Err(e) = written {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = tmp.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        return Err(e.context(format!("writing {}", path(dest))));
    }
    outln!("catalog snapshot written to {}", path(dest));
    Ok(ExitCode::SUCCESS)
}
