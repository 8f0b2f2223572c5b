//! Unify (vunify): scan → hash → plan → apply. Identical regular files
//! across guests become hardlinks to one store object; the first file seen
//! for an object becomes the object, so no data is copied.

pub mod apply;
mod clones;
mod closer;
mod dirjournal;
mod dirtimes;
pub mod exclude;
pub mod hash;
pub mod listings;
mod pipeline;
pub mod plan;
mod record;
pub mod scan;
mod split;
mod stale;

pub use exclude::Excludes;

use crate::catalog::{self, Catalog, Checking, GuestRow, RunTotals};
use crate::store::{self, IoContext, ObjectId, Store};
use crate::sys;
use crate::words::{counted, word};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Catalog(#[from] catalog::Error),
    #[error(
        "{}: not a directory; unify takes guest root directories",
        crate::sys::shown(path)
    )]
    NotADirectory { path: PathBuf },
    #[error("guest directory {}: {error}", crate::sys::shown(path))]
    Guest {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "store {store} was created {was} --ignore-mtime; object ids cannot mix both \
         (drop the option, or use another store)"
    )]
    MtimeMismatch { store: PathBuf, was: &'static str },
    #[error("no guests given (name guest directories, or use --all)")]
    NoGuests,
    #[error(
        "--all: the store {store} {why}; name guest directories to unify (or check --store \
         and UNIFS_STORE)"
    )]
    NoKnownGuests { store: PathBuf, why: &'static str },
    #[error(
        "every guest the catalog knows was skipped ({list}); `unifs store forget GUEST_DIR...` \
         drops a guest that was removed or moved to another filesystem, `unifs umount DIR` a \
         mount over a guest"
    )]
    AllGuestsMissing { list: String },
    #[error(
        "the store {store} is reached through another mount than every guest of its catalog \
         ({list}), though of the same filesystem (the store named through a bind mount?), and \
         hardlinks cannot cross mounts: name the store by a path on the guests' mount (--store \
         or UNIFS_STORE); nothing was done"
    )]
    StoreOnOtherMount { store: PathBuf, list: String },
    #[error(
        "guest {guest} of the catalog is reached through another mount than the store {store}, \
         though of the same filesystem, and hardlinks cannot cross mounts; nothing was done. If \
         the guest did not move, the store is named through another mount (a bind mount?): \
         name the store by a path on the guest's mount (--store or UNIFS_STORE); if the guest \
         moved to that mount for good, `unifs store forget {forget}` drops it from the catalog"
    )]
    KnownGuestOtherMount {
        guest: PathBuf,
        store: PathBuf,
        /// `guest` as a shell word.
        forget: String,
    },
    #[error(
        "{guest} and the store {store} overlap (one is inside the other); \
         keep the store outside every guest"
    )]
    StoreInGuest { guest: PathBuf, store: PathBuf },
    #[error("guests {a} and {b} overlap (one is inside the other); name each guest root once")]
    NestedGuests { a: PathBuf, b: PathBuf },
    #[error(
        "guest {guest} and the guest {name} the store knows ({known}) overlap (one is inside \
         the other), and a file can belong to one guest only: name guest roots only; `unifs \
         store forget DIR` drops a guest the catalog recorded by mistake"
    )]
    NestedInKnownGuest {
        guest: PathBuf,
        name: String,
        known: PathBuf,
    },
    #[error(
        "guest directory {guest} is the directory the catalog knows as guest {name} at {known} \
         (the same device and inode: a bind mount, or the guest moved); one directory must not \
         be two guests, and nothing was done: name it as {known}, or if {known} is really gone \
         (the guest moved to {guest} for good), `unifs store forget {forget}` first"
    )]
    SameGuestOtherPath {
        guest: PathBuf,
        name: String,
        known: PathBuf,
        /// `known` as a shell word.
        forget: String,
    },
    #[error(
        "guest directories {first} and {second} are one directory (the same device and inode: \
         a bind mount?); nothing was done: name it once (where both are guests of the \
         catalog, `unifs store forget` the one whose path is not to stay)"
    )]
    GuestNamedTwice { first: PathBuf, second: PathBuf },
    #[error(
        "guest {guest} of the catalog {why}: `unifs store forget {forget}` drops it from the \
         catalog if it moved there for good; nothing was done"
    )]
    KnownGuestElsewhere {
        guest: PathBuf,
        /// `guest` as a shell word.
        forget: String,
        why: String,
    },
    #[error(
        "{} {} about {needed} open files (one per guest root, plus about \
         {beside} for the store and the work), but the open-file limit is {limit} \
         (RLIMIT_NOFILE); nothing was done: raise it (`ulimit -n {needed}` in the shell that runs \
         unify, systemd LimitNOFILE=), or unify fewer guests per run",
        counted(*.guests as u64, "guest", "guests"), word(*.guests as u64, "needs", "need")
    )]
    TooManyGuests {
        guests: usize,
        needed: usize,
        beside: usize,
        limit: usize,
    },
    #[error(
        "store {store} did not exist, yet {} of these guests ({example} first) {} \
         of another store ({} its marker, trusted.unifs.object, and {} links outside these \
         guests): most likely that store moved or its filesystem is not \
         mounted. {}",
        counted(*.count, "file", "files"), word(*.count, "is an object", "are objects"),
        word(*.count, "it carries", "they carry"), word(*.count, "has", "have"),
        other_stores_objects_advice(store, *made_meanwhile)
    )]
    OtherStoresObjects {
        store: PathBuf,
        count: u64,
        example: PathBuf,
        /// The store, missing when this run started, was made (and
        /// perhaps filled) by another run before this one took its lock.
        made_meanwhile: bool,
    },
    #[error("{}", other_stores_guests(store, *count, example, guests, copied_from.as_deref()))]
    OtherStoresGuests {
        store: PathBuf,
        count: u64,
        example: PathBuf,
        /// The guest roots with such files.
        guests: Vec<PathBuf>,
        /// The `objects/` (DEV:INO) the catalog recorded, where it is not
        /// this store's: the store it was copied from.
        copied_from: Option<String>,
    },
    #[error(
        "guest {} is named twice; name each guest root once",
        crate::sys::shown(path)
    )]
    GuestTwice { path: PathBuf },
    #[error(
        "guest directory {path} has a unifs mount over it, which hides the guest's own files \
         from unify; unmount it (`unifs umount {path}`), and mount guests elsewhere \
         (e.g. /run/unifs/NAME)"
    )]
    Overmounted { path: PathBuf },
}

/// The end of [`Error::OtherStoresObjects`]: what was left, and what to do.
fn other_stores_objects_advice(store: &Path, made_meanwhile: bool) -> String {
    let name = "give the store these guests were unified into with --store (or UNIFS_STORE)";
    if made_meanwhile {
        format!(
            "Nothing was changed; another unifs run made the store meanwhile, and it is left \
             as that run made it: {name}. To unify them into this store on purpose, run this \
             again: the store is there now, and takes them (with a warning)"
        )
    } else {
        format!(
            "Nothing was changed and no store was made: {name}. To start a new store for them \
             on purpose, make it first: `unifs --store {} store init`",
            crate::sys::shown(store)
        )
    }
}

/// The message of [`Error::OtherStoresGuests`].
fn other_stores_guests(
    store: &Path,
    count: u64,
    example: &Path,
    guests: &[PathBuf],
    copied_from: Option<&str>,
) -> String {
    /// Guests named; more are counted.
    const NAMED: usize = 5;
    let word = sys::shell_word(store);
    let store = sys::shown(store);
    let mut names: Vec<String> = guests.iter().take(NAMED).map(|g| sys::shown(g)).collect();
    if guests.len() > NAMED {
        names.push(format!("and {} more", guests.len() - NAMED));
    }
    let catalog = match copied_from {
        Some(dir) => format!(
            " This store's catalog was last used with another objects/ directory (device:inode \
             {dir}): this store is most likely a copy or a restore of that store, and its \
             catalog names that store's guests."
        ),
        None => String::new(),
    };
    let mount = crate::store::mount_point_of(example);
    format!(
        "store {store}: {} of the guests {} ({} first) {} of another store: each is the \
         inode this store's catalog lists for its object, which this store's objects/ now has as another file, and has links outside the guests of this \
         run (`find {} -xdev -samefile {}` shows them: the other store's objects/…); the \
         catalog was copied from that store. Unifying would link them to this store's \
         objects, taking these guests away from their store.{catalog} Nothing was changed. \
         Unify these guests with their own store (--store, or UNIFS_STORE). If they are not \
         this store's guests (it is a copy, and its own are elsewhere), drop them from its \
         catalog first (`unifs --store {word} store forget GUEST_DIR...`), then unify its own \
         guests by their paths. To move them into this store on purpose, add \
         --move-from-other-store (see docs/unify.md)",
        counted(count, "file", "files"),
        names.join(", "),
        sys::shown(example),
        crate::words::word(count, "is an object", "are objects"),
        // Commands to paste: each path one shell word.
        sys::shell_word(&mount),
        sys::shell_word(example),
    )
}

/// A file unify left alone or could not handle, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// In JSON as text, bytes that are not UTF-8 replaced (U+FFFD), and
    /// then exactly in `path_hex`: a guest's file names need not be UTF-8.
    #[serde(flatten, serialize_with = "sys::json_path")]
    pub path: PathBuf,
    pub what: String,
}

impl Problem {
    pub fn new(path: impl Into<PathBuf>, what: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            what: what.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub guests: Vec<PathBuf>,
    /// Also every guest the catalog knows.
    pub all: bool,
    pub min_size: u64,
    pub excludes: Excludes,
    pub dry_run: bool,
    pub paranoid: bool,
    /// `Some(true)`: the store's ids leave mtime out (set when it is created).
    pub ignore_mtime: Option<bool>,
    /// Treat an object as full at this many links (tests of EMLINK handling).
    pub link_max: Option<u64>,
    pub progress: bool,
    /// Link guest files that are another store's objects to this store's
    /// objects of the same id, rather than refuse
    /// ([`Error::OtherStoresGuests`]).
    pub move_from_other_store: bool,
}

/// A guest being unified: its catalog row and an fd on its root that every
/// open resolves beneath.
pub struct Guest {
    pub row: GuestRow,
    pub root: PathBuf,
    pub fd: OwnedFd,
}

impl Guest {
    /// Opens a file of the guest read-only for hashing, never through a
    /// symlink, without touching its atime, and only if it is a regular
    /// file ([`sys::NotRegular`] else): a running guest may have put a
    /// device node or FIFO at the name since the walk. (Only its owner or
    /// root may ask for no atime: a dry run by another user reads the file
    /// as any reader does.)
    pub fn open_for_reading(&self, rel: &Path) -> std::io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_NOATIME;
        sys::open_regular_beneath(self.fd.as_fd(), rel, flags)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub run: Option<i64>,
    pub dry_run: bool,
    pub guests: Vec<String>,
    /// Each guest's root, as `guests` (for showing a name that is not UTF-8).
    #[serde(skip)]
    pub guest_roots: Vec<PathBuf>,
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    pub files_excluded: u64,
    pub files_too_small: u64,
    pub guest_hardlinks_left: u64,
    /// Files with inode flags (`chattr`), left alone: a hardlink would
    /// share them.
    pub files_with_inode_flags: u64,
    /// Files with holes, left alone unread.
    pub files_sparse: u64,
    /// Files whose own xattrs leave no room for the store's marker (ext4:
    /// 128-byte inodes, a full xattr block), left alone.
    pub files_no_xattr_room: u64,
    /// Files of another project ID (xfs/ext4 quotas) than the object they
    /// match, left alone: a link would share the object's.
    pub files_other_project: u64,
    /// Paths of inodes a clone (`cp -al`) shared across guests that got a
    /// copy of their own (inodes unify cannot make objects).
    pub clone_paths_split: u64,
    /// Files left unread though another guest has a file of their path
    /// and size: kept apart by mtime, mode or owner (see
    /// [`hash::apart_by_metadata`]); and of those, the ones whose mode and
    /// owner match it (only the mtime differs).
    pub files_apart_by_metadata: u64,
    pub files_apart_by_mtime: u64,
    pub files_already_linked: u64,
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    pub cache_hits: u64,
    pub files_linked: u64,
    /// Bytes of the paths linked to objects, less `bytes_copied`.
    pub bytes_saved: u64,
    /// Bytes of the copies the run made: objects copied into the store,
    /// extra copies at the link limit, clone paths split.
    pub bytes_copied: u64,
    pub objects_added: u64,
    pub objects_copied: u64,
    pub extra_copies: u64,
    pub skipped_changed: u64,
    /// Files whose name went away while unify ran (deleted or moved by a
    /// running guest): nothing to do, and no problem.
    pub files_gone: u64,
    pub skipped_in_use: u64,
    pub stale_tmp_removed: u64,
    /// Object files a killed run linked into the store but did not record,
    /// recorded by this run (under its number).
    pub objects_recovered: u64,
    /// Directories whose mtime a killed run had changed, put back.
    pub dir_mtimes_recovered: u64,
    /// Directories the walk read, and directories whose listing kept from
    /// the last run still matched (see `listings.rs`).
    pub dirs_read: u64,
    pub dirs_from_cache: u64,
    /// Wall time of walking (with reading the catalog).
    pub scan_seconds: f64,
    /// Hashing and linking overlap: from the end of the walk, the time
    /// until the last file was hashed, and until the last was linked and
    /// recorded.
    pub hash_seconds: f64,
    pub apply_seconds: f64,
    pub seconds: f64,
    pub problems: Vec<Problem>,
    /// Warnings about what the run did, that leave nothing undone (the exit
    /// status stays 0).
    pub notices: Vec<Problem>,
    /// The store written to: problems about its own records (`tmp/`) are
    /// no file or guest left as it was.
    #[serde(skip)]
    pub store_root: Option<PathBuf>,
}

impl Summary {
    /// The problems about the run's own records in the store (e.g. the
    /// directory mtimes it could not keep a record of in `STORE/tmp`),
    /// rather than about a file or guest it left as it was.
    pub fn store_problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| {
            self.store_root
                .as_ref()
                .is_some_and(|r| p.path.starts_with(r))
        })
    }
}

/// Unifies the guests of `opts` into the store at `store_path`. Sets SIGIO
/// to be ignored for the whole process: leases announce breaks with it.
pub fn unify(store_path: &Path, opts: &Options) -> Result<Summary> {
    let started = Instant::now();
    sys::ignore_sigio();
    // Before anything is created or recorded: the guests named must be
    // directories, the store must not land inside one, nor (a new store)
    // on another filesystem.
    if opts.guests.is_empty() && !opts.all {
        return Err(Error::NoGuests);
    }
    let mounts = UnifsMounts::read();
    let guests = opts
        .guests
        .iter()
        .map(|g| guest_dir(g, &mounts))
        .collect::<Result<Vec<_>, _>>()?;
    check_overlaps(&guests, Some(&resolved(store_path)))?;
    check_fd_limit(guests.len())?;
    // A store missing when this run started: the guests are refused if
    // they turn out to belong to another store (`Error::OtherStoresObjects`).
    let new_store = !Store::exists(store_path);
    let dir_existed = store_path.exists();
    if new_store {
        Store::check_objects_there(store_path)?;
        if guests.is_empty() {
            // --all: a new store knows none; most likely the wrong --store.
            return Err(Error::NoKnownGuests {
                store: store_path.to_path_buf(),
                why: "does not exist, so it knows no guests",
            });
        }
        // The resolved roots: a guest named by a symlink is where it leads.
        check_same_fs_as_new_store(store_path, &guests)?;
        Store::check_new(store_path)?;
        if opts.dry_run {
            return dry_run_without_store(store_path, opts, started);
        }
    }
    let store = if opts.dry_run {
        Store::open(store_path)?
    } else {
        Store::create(store_path)?
    };
    store.check_catalog()?;
    let _lock = if opts.dry_run {
        None
    } else {
        let lock = store.lock_writer()?;
        // A killed run's staged copy would keep its space until a gc. First
        // thing: on a full disk it may be what keeps the catalog from
        // opening. (tmp/ is any unifs's to empty under the lock, a newer
        // one's too: store-format.md. A tmp/ that cannot be read is for
        // the run to report where it needs it.)
        let _ = store.empty_tmp();
        Some(lock)
    };
    let tightened = match opts.dry_run {
        true => Vec::new(),
        false => store.tighten_modes(),
    };
    // Decided under the lock: the store is this run's to take away again
    // only if it still holds nothing. Another run may have made it, and
    // filled it, since this one found it missing.
    let made_here = new_store && !opts.dry_run && store.is_unused()?;
    let (catalog, mut checking) = if opts.dry_run {
        let catalog = Catalog::open_readonly(&store.catalog_path())?;
        (catalog, Checking::passed())
    } else {
        Catalog::open_checking(&store.catalog_path())?
    };
    // Before anything is recorded: `--all` would take the other store's
    // guests for this one's.
    let object_inodes = checking.or_damaged(catalog.object_inodes())?;
    let seen_dir = checking.or_damaged(catalog.config(catalog::OBJECTS_DIR))?;
    store.check_catalog_lists(
        object_inodes.values().map(|f| (f.id, f.copy)),
        seen_dir.as_deref(),
    )?;
    let ignore_mtime = settle_ignore_mtime(&store, &catalog, &mut checking, opts)?;
    let result = run(
        Some(&store),
        &catalog,
        checking,
        object_inodes,
        opts,
        ignore_mtime,
        new_store,
        started,
    );
    let mut result = result;
    if let Ok(summary) = &mut result {
        let said = tightened.iter().map(|c| Problem::new(&c.path, c.what()));
        summary.notices.splice(0..0, said);
        // Checked before the run's first write, and written only by it
        // since; still under the lock.
        if !opts.dry_run {
            catalog.close_checked();
            return result;
        }
    }
    if let Err(Error::OtherStoresGuests { copied_from, .. }) = &mut result {
        *copied_from = seen_dir.filter(|d| *d != store.objects_identity());
    }
    if let Err(Error::OtherStoresObjects { made_meanwhile, .. }) = &mut result {
        if made_here {
            // Still under the lock, which no other run can have held
            // since this one made the store: nothing but this run's.
            drop(catalog);
            store.discard_new(!dir_existed);
            drop(_lock);
        } else {
            *made_meanwhile = true;
        }
    }
    result
}

fn dry_run_without_store(store_path: &Path, opts: &Options, started: Instant) -> Result<Summary> {
    let catalog = Catalog::in_memory()?;
    let ignore_mtime = opts.ignore_mtime.unwrap_or(false);
    run(
        None,
        &catalog,
        Checking::passed(),
        Default::default(),
        opts,
        ignore_mtime,
        true,
        started,
    )
    .map_err(|e| match e {
        Error::OtherStoresObjects { count, example, .. } => Error::OtherStoresObjects {
            store: store_path.to_path_buf(),
            count,
            example,
            made_meanwhile: false,
        },
        e => e,
    })
}

/// A guest directory named on the command line, resolved; refused unless
/// it is a directory.
fn guest_dir(g: &Path, mounts: &UnifsMounts) -> Result<PathBuf> {
    let abs = crate::fs::canonicalize_bounded(g).map_err(guest_err(g))?;
    // First: a mount whose daemon is gone cannot be stat'ed (ENOTCONN),
    // and would be called not a directory.
    check_not_overmounted(&abs, mounts)?;
    if !abs.is_dir() {
        return Err(Error::NotADirectory {
            path: g.to_path_buf(),
        });
    }
    Ok(abs)
}

/// Refuses a guest root with a unifs mount over it (`unifs mount G G`):
/// unify would see the mount, a filesystem of its own, instead of the
/// guest's files, and must never link through it.
fn check_not_overmounted(root: &Path, mounts: &UnifsMounts) -> Result<()> {
    if mounts.over(root) {
        // A guest's view, mounted elsewhere (a running guest's root).
        if let Some(backing) = crate::fs::unifs_view_backing(root).filter(|b| b != root) {
            let path = root.to_path_buf();
            return Err(store::Error::in_unifs_view(path, backing).into());
        }
        return Err(Error::Overmounted {
            path: root.to_path_buf(),
        });
    }
    Ok(())
}

/// Where unifs mounts are, from one read of /proc/self/mountinfo: the
/// mount points of FUSE mounts whose source is ours (`None` where it could
/// not be read). Asking [`crate::fs::is_unifs_mount`] reads the whole
/// table, and asking it for each of thousands of guests (some twice) took a
/// while; a root that is none of these points has no unifs mount on top.
struct UnifsMounts(Option<HashSet<PathBuf>>);

impl UnifsMounts {
    fn read() -> UnifsMounts {
        let Ok(mounts) = crate::fs::mountinfo::read() else {
            return UnifsMounts(None);
        };
        let points = mounts
            .into_iter()
            .filter(|m| m.unifs_guest().is_some())
            .map(|m| m.point)
            .collect();
        UnifsMounts(Some(points))
    }

    /// Whether the canonical `root` has a unifs mount over it (on top of
    /// the mounts there): [`crate::fs::is_unifs_mount`], asked only where
    /// a unifs mount is.
    fn over(&self, root: &Path) -> bool {
        match &self.0 {
            Some(points) if !points.contains(root) => false,
            // Not known: taken as mounted, never linked through.
            _ => crate::fs::is_unifs_mount(root).unwrap_or(true),
        }
    }
}

/// The object id of the store marker the guest file `rec` (still the
/// inode scanned) carries, if any.
fn marker_of(guest: &Guest, rec: &scan::FileRec) -> Option<ObjectId> {
    let fd = guest.open_for_reading(&rec.rel).ok()?;
    let st = sys::fstat(fd.as_fd()).ok()?;
    if (st.dev, st.ino) != (rec.stat.dev, rec.stat.ino) {
        return None;
    }
    crate::store::read_marker(fd.as_fd()).ok().flatten()
}

/// Which directory a guest root is (device, inode, birth time in ns), as
/// the catalog records it; `None` when it cannot be told.
fn root_identity(fd: &OwnedFd) -> Option<(u64, u64, Option<i64>)> {
    let (dev, ino, birth) = sys::dir_identity(fd.as_fd()).ok()?;
    Some((dev, ino, birth.map(|b| b.as_nanos() as i64)))
}

/// Per guest, a digest of the hardlinked inodes its walk found with links
/// that no walk of the run saw (dev, ino, link count and the guest's paths
/// of it; `None` for none), and whether an inode unify may link was found
/// in two guests.
fn unseen_links(scan: &scan::Scan, guests: usize) -> (Vec<Option<[u8; 32]>>, bool) {
    let mut by_inode: std::collections::HashMap<(u64, u64), (u64, Vec<u32>)> = Default::default();
    let mut shared = false;
    for (i, rec) in scan
        .hardlinked
        .iter()
        .chain(&scan.hardlinked_left)
        .enumerate()
    {
        let (nlink, seen) = by_inode
            .entry((rec.stat.dev, rec.stat.ino))
            .or_insert_with(|| (rec.stat.nlink, Vec::new()));
        // Excluded and small paths shared across guests are split anyway.
        shared = shared || (i < scan.hardlinked.len() && seen.iter().any(|&g| g != rec.guest));
        *nlink = (*nlink).max(rec.stat.nlink);
        seen.push(rec.guest);
    }
    let mut unseen: Vec<Vec<[u64; 4]>> = vec![Vec::new(); guests];
    for ((dev, ino), (nlink, mut seen)) in by_inode {
        if (seen.len() as u64) < nlink {
            seen.sort_unstable();
            for g in seen.chunk_by(|a, b| a == b) {
                unseen[g[0] as usize].push([dev, ino, nlink, g.len() as u64]);
            }
        }
    }
    let digests = unseen
        .into_iter()
        .map(|mut v| {
            v.sort_unstable();
            let mut h = blake3::Hasher::new();
            for e in &v {
                for n in e {
                    h.update(&n.to_le_bytes());
                }
            }
            (!v.is_empty()).then(|| *h.finalize().as_bytes())
        })
        .collect();
    (digests, shared)
}

fn guest_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |error| Error::Guest { path, error }
}

/// Refuses guests (resolved roots) on another filesystem than the one a new
/// store would be made on, before it is made. Both are stat'ed where their
/// symlinks lead: that is where the store and the guests' files are.
fn check_same_fs_as_new_store(store_path: &Path, guests: &[PathBuf]) -> Result<()> {
    let existing = existing_ancestor(&resolved(store_path));
    let dev = sys::lstat(&existing).at(&existing)?.dev;
    for g in guests {
        let st = sys::lstat(g).map_err(guest_err(g))?;
        if st.dev != dev {
            if let Some(backing) = crate::fs::unifs_view_backing(g) {
                let path = g.clone();
                return Err(store::Error::in_unifs_view(path, backing).into());
            }
            return Err(store::cross_device(g, store_path, &existing).into());
        }
    }
    Ok(())
}

fn existing_ancestor(path: &Path) -> PathBuf {
    let mut cur = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    while !cur.exists() {
        match cur.parent() {
            Some(p) => cur = p.to_path_buf(),
            None => break,
        }
    }
    cur
}

/// `path` made absolute with every existing component's symlinks resolved.
pub(crate) fn resolved(path: &Path) -> PathBuf {
    let existing = existing_ancestor(path);
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (
        std::fs::canonicalize(&existing),
        abs.strip_prefix(&existing),
    ) {
        // join("") would add a trailing slash, shown in messages.
        (Ok(base), Ok(rest)) if rest.as_os_str().is_empty() => base,
        (Ok(base), Ok(rest)) => base.join(rest),
        _ => abs,
    }
}

fn settle_ignore_mtime(
    store: &Store,
    catalog: &Catalog,
    checking: &mut Checking,
    opts: &Options,
) -> Result<bool> {
    let recorded = checking.or_damaged(catalog.config("ignore_mtime"))?;
    match (recorded.as_deref(), opts.ignore_mtime) {
        (None, wanted) if !opts.dry_run => {
            checking.wait()?;
            Ok(catalog.init_config(wanted.unwrap_or(false))?)
        }
        (None, wanted) => Ok(wanted.unwrap_or(false)),
        (Some(v), Some(wanted)) if (v == "1") != wanted => Err(Error::MtimeMismatch {
            store: store.root().to_path_buf(),
            was: if v == "1" { "with" } else { "without" },
        }),
        (Some(v), _) => Ok(v == "1"),
    }
}

/// Config key: the last unfinished run whose object files a later run
/// looked for in `objects/` (and recorded those the catalog lacked).
const UNFINISHED_RECORDED: &str = "unfinished_recorded";

#[allow(clippy::too_many_arguments)]
fn run(
    store: Option<&Store>,
    catalog: &Catalog,
    mut checking: Checking,
    mut object_inodes: catalog::Map<(u64, u64), catalog::ObjectInode>,
    opts: &Options,
    ignore_mtime: bool,
    new_store: bool,
    started: Instant,
) -> Result<Summary> {
    // Until the walk is done the catalog is only read, while its check
    // runs (`checking`); the run is recorded after both, so a command that
    // fails before leaves no unfinished run behind.
    let (mut guests, missing) = checking.or_damaged(open_guests(store, catalog, opts))?;
    // The store a run writes to (not a dry run's).
    let writing = store.filter(|_| !opts.dry_run);
    // Object files gone whose inode numbers the catalog may not know to be
    // free (a snapshot put back): a file with one is taken for a link of
    // its object only if it carries the object's marker.
    let mut unverified = catalog::Map::default();
    // Renumbered in memory for the walk, a dry run's too (trusting the
    // catalog's numbers in a copied or restored store, it took guest files
    // still linking the old inodes for linked, which the real run then
    // linked to this store's objects); in the catalog at the run's first
    // write, so that a run refused before it changes nothing there.
    let looked = match store {
        Some(store) => look_up_object_files(store, catalog, &mut checking, &object_inodes)?,
        None => None,
    };
    if let Some(looked) = &looked {
        looked.renumber(&mut object_inodes, &mut unverified);
    }
    // The catalog's numbers of object files now other inodes.
    let was_file: catalog::Map<(u64, u64), ObjectId> = looked
        .iter()
        .flat_map(|l| &l.moved)
        .map(|&(old, f, _)| (old, f.id))
        .collect();
    let mut summary = Summary {
        dry_run: opts.dry_run,
        problems: missing,
        store_root: writing.map(|s| s.root().to_path_buf()),
        ..Summary::default()
    };
    // Before any file is stat'ed: on a coarse ctime clock, a file changed
    // since (or just before) may change again with the same stat.
    // Once per filesystem (each note reads the mount table).
    let mut devs = HashSet::new();
    for g in &guests {
        if let Ok(st) = sys::fstat(g.fd.as_fd()) {
            if devs.insert(st.dev) {
                listings::note_filesystem(&g.root, &st);
            }
        }
    }
    let racy_from = listings::clock();
    let mut killed_dirs = dirjournal::KilledDirs::new();
    if let Some(store) = writing {
        // A killed run's directory mtimes, before anything reads them.
        let tmp = store.root().join("tmp");
        let (recovered, dirs, mut problems) = dirjournal::recover(store.tmp_dir()?, &tmp);
        killed_dirs = dirs;
        summary.dir_mtimes_recovered = recovered;
        summary.problems.append(&mut problems);
    }

    // Scan every guest in parallel; meanwhile this thread reads the rest of
    // what the catalog knows (its connection stays on this thread).
    // A guest's first run (never recorded, or killed before its links were)
    // also looks into its excluded trees for files a clone shares.
    // When one guest does, all do: the links a new guest shares may be in
    // another guest's excluded trees. A guest whose directory is another
    // one than the last run saw (removed and made again, say as a `cp -al`
    // clone of another guest) is new, whatever its path.
    let root_ids: Vec<_> = guests.iter().map(|g| root_identity(&g.fd)).collect();
    let mut any_new = false;
    let mut replaced = vec![false; guests.len()];
    let mut roots_known = Vec::with_capacity(guests.len());
    let mut outside_known = Vec::with_capacity(guests.len());
    for (i, g) in guests.iter().enumerate() {
        let digest = checking.or_damaged(catalog.links_digest(g.row.id))?;
        let root = checking.or_damaged(catalog.guest_root(g.row.id))?;
        // Not known (a catalog of an older unifs): looked at once.
        replaced[i] = g.row.id >= 0 && root_ids[i].is_some() && root != root_ids[i];
        any_new = any_new || g.row.id < 0 || digest.is_none() || replaced[i];
        roots_known.push(root);
        outside_known.push(checking.or_damaged(catalog.links_outside(g.row.id))?);
    }
    let mut look_in_excluded = any_new;
    let scan_with = |look_in_excluded: bool| {
        let ctx = scan::ScanContext {
            store,
            excludes: &opts.excludes,
            min_size: opts.min_size,
            object_inodes: &object_inodes,
            unverified: &unverified,
            use_listings: !opts.paranoid,
            look_in_excluded,
        };
        worker_pool().install(|| {
            guests
                .par_iter()
                .enumerate()
                .map(|(i, g)| scan::scan_guest(&ctx, i as u32, g))
                .collect::<Vec<scan::Scan>>()
        })
    };
    let scan_all = || scan_with(look_in_excluded);
    let (scans, objects, cache) = std::thread::scope(|s| {
        // Without a thread to spare, one after the other.
        let scanning = std::thread::Builder::new().spawn_scoped(s, scan_all).ok();
        let objects = catalog.objects();
        let cache = catalog.hash_cache();
        let scans = match scanning {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => scan_all(),
        };
        (scans, objects, cache)
    });
    let (objects, cache) = (checking.or_damaged(objects)?, checking.or_damaged(cache)?);
    // Object files a killed run linked into the store but did not record
    // are recorded by the next run, whatever guests it is given (docs/
    // backup.md: `store ls --since` then lists them under its number).
    // Only when a run was left unfinished since the last such look.
    let mut unrecorded = Vec::new();
    let mut unfinished_seen = None;
    if let Some(store) = writing {
        let last = checking.or_damaged(catalog.last_unfinished_run())?;
        let looked = checking
            .or_damaged(catalog.config(UNFINISHED_RECORDED))?
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if let Some(last) = last.filter(|&last| last > looked) {
            let known: HashSet<(ObjectId, u32)> =
                object_inodes.values().map(|o| (o.id, o.copy)).collect();
            let (found, mut problems) =
                worker_pool().install(|| stale::unrecorded_objects(store, &known, ignore_mtime))?;
            unrecorded = found;
            summary.problems.append(&mut problems);
            unfinished_seen = Some(last);
        }
    }
    let mut scan = scan::Scan::flatten(scans);
    // Inodes the walk found shared across guests (a clone's), or a guest's
    // with links it did not see, other than those a look into the
    // excluded trees last found all the guest's own (a `cp -al` snapshot
    // adds links): the excluded trees may share more, or hold the snapshot's
    // links. Looked into now, in this run, by walking again.
    let mut outside_walked = None;
    if !look_in_excluded {
        let (outside, shared) = unseen_links(&scan, guests.len());
        if shared || outside != outside_known {
            look_in_excluded = true;
            for g in &guests {
                // The first walk read the roots through dups of these fds.
                sys::rewind_dir(g.fd.as_fd()).map_err(guest_err(&g.root))?;
            }
            scan = scan::Scan::flatten(scan_with(true));
            outside_walked = Some(outside);
        }
    }
    scan.size_linked(&objects, opts.min_size);
    scan.sort_hardlinks(
        look_in_excluded,
        |g| guests[g as usize].root.clone(),
        |rec| marker_of(&guests[rec.guest as usize], rec),
        |key, id| was_file.get(&key) == Some(id),
    );
    if let Some((count, example)) = scan.foreign.take() {
        if new_store {
            let store = store.map_or_else(PathBuf::new, |s| s.root().to_path_buf());
            return Err(Error::OtherStoresObjects {
                store,
                count,
                example,
                made_meanwhile: false,
            });
        }
        // Nothing is lost: where this store has the object, the guest
        // moves to it (the other store keeps its other guests); where not,
        // both stores link the inode and count each other's links, and a
        // fix verify prints for one store's object acts on the other's
        // guests. Either way the operator is told how to undo it.
        let store = store.map_or_else(PathBuf::new, |s| s.root().to_path_buf());
        summary.notices.push(Problem::new(
            example,
            format!(
                "{} (this one first) {} a store marker and {} links outside the guests \
                 of this run: {} of another store (a guest unified \
                 into two stores, or a wrong --store?), or of this one before its objects were \
                 restored. Where store {} has the object, the file is linked to its object \
                 file and no longer shares the other store's (its guest moves to this store); \
                 where it has not, this store takes the inode as its object, shared with the \
                 other store, whose guests then count in the stats of both. If these guests \
                 belong to the other store, unify them with it again (`unifs --store \
                 THAT_STORE unify GUEST_DIR...`, which links them back) and drop them here \
                 (`unifs --store {} store forget GUEST_DIR...`); see docs/unify.md",
                counted(count, "file", "files"),
                word(count, "carries", "carry"),
                word(count, "has", "have"),
                word(count, "an object", "objects"),
                sys::shown(&store),
                sys::shown(&store),
            ),
        ));
    }
    // Before anything is changed: an accident far more often than a
    // move (a copy of a store used while its original's guests run on).
    if let Some(o) = scan.other_stores.take() {
        if !opts.move_from_other_store {
            return Err(Error::OtherStoresGuests {
                store: store.map_or_else(PathBuf::new, |s| s.root().to_path_buf()),
                count: o.count,
                example: o.example,
                guests: o
                    .guests
                    .iter()
                    .map(|&g| guests[g as usize].root.clone())
                    .collect(),
                copied_from: None,
            });
        }
        summary.notices.push(Problem::new(
            o.example,
            format!(
                "{} (this one first) {} of another store (inodes this store's catalog \
                 listed for objects of its own, with links outside the guests of this run): \
                 --move-from-other-store links {} to this store's objects, and {} that \
                 store's objects",
                counted(o.count, "file", "files"),
                word(o.count, "is an object", "are objects"),
                word(o.count, "it", "them"),
                word(
                    o.count,
                    "its guest no longer shares",
                    "their guests no longer share"
                ),
            ),
        ));
    }
    // The run's first write.
    checking.wait()?;
    let mut serial = None;
    if let Some(store) = writing {
        let new_serial = record_object_files(store, catalog, looked.as_ref())?;
        // Recorded at the end only where every object file was found.
        serial = new_serial.filter(|_| unverified.is_empty());
    }
    let run_id = if opts.dry_run {
        None
    } else {
        let run = catalog.begin_run(&describe(opts, &guests))?;
        for g in &mut guests {
            g.row = catalog.register_guest(&g.root, run)?;
        }
        Some(run)
    };
    summary.run = run_id;
    summary.guests = guests.iter().map(|g| g.row.name.clone()).collect();
    summary.guest_roots = guests.iter().map(|g| g.row.path.clone()).collect();
    summary.scan_seconds = started.elapsed().as_secs_f64();
    let hash_started = Instant::now();
    summary.files_scanned = scan.counts.files;
    summary.bytes_scanned = scan.counts.bytes;
    summary.files_excluded = scan.counts.excluded;
    summary.files_too_small = scan.counts.too_small;
    summary.guest_hardlinks_left = scan.counts.guest_hardlinks;
    summary.dirs_read = scan.counts.dirs_read;
    summary.dirs_from_cache = scan.counts.dirs_cached;
    summary.files_already_linked = scan.linked.len() as u64;
    summary.problems.append(&mut scan.problems);
    if opts.dry_run {
        summary.clone_paths_split = clones::split_paths(&scan.to_split);
        summary.bytes_copied = clones::split_bytes(&scan.to_split);
    }

    // Hash what can pay, bucket by bucket, and link each bucket as soon as
    // it is hashed. Objects a killed run linked but did not record count as
    // existing too.
    let recovered = scan
        .linked
        .iter()
        .filter_map(|l| Some((l, *l.recovered.as_deref()?)));
    let object_keys: HashSet<hash::MetaKey> = objects
        .values()
        .map(|o| hash::MetaKey::of_object(o, ignore_mtime))
        .chain(
            recovered
                .clone()
                .map(|(_, st)| hash::MetaKey::of_stat(&st, ignore_mtime)),
        )
        .chain(
            unrecorded
                .iter()
                .map(|u| hash::MetaKey::of_object(&u.row, ignore_mtime)),
        )
        .collect();
    let existing: HashSet<ObjectId> = objects
        .keys()
        .copied()
        .chain(recovered.map(|(l, _)| l.id))
        .chain(unrecorded.iter().map(|u| u.row.id))
        .collect();
    let buckets = hash::buckets(&scan.candidates, &object_keys, ignore_mtime);
    let (apart, mtime_only) = hash::apart_by_metadata(&scan.candidates, &buckets);
    summary.files_apart_by_metadata = apart;
    summary.files_apart_by_mtime = mtime_only;
    let total: u64 = buckets
        .iter()
        .flatten()
        .map(|&i| scan.candidates[i].stat.size)
        .sum();
    let progress = progress_bar(opts.progress, total, "hashing and linking");
    let inputs = |applier| pipeline::Inputs {
        guests: &guests,
        candidates: &scan.candidates,
        cache: &cache,
        existing: &existing,
        ignore_mtime,
        applier,
        progress: &progress,
    };

    let (Some(store), Some(run_id)) = (store, run_id) else {
        let out = pipeline::run(&inputs(None), buckets, |_| Ok(()))?;
        progress.finish_and_clear();
        hashed_summary(&mut summary, &out, hash_started);
        // Clone-shared files hashing leaves alone (sparse, inode flags)
        // would be split too.
        let hashed: HashSet<usize> = out.hashed.iter().map(|h| h.file).collect();
        let left = scan.shared_left(|i| !hashed.contains(&i));
        summary.clone_paths_split += clones::split_paths(&left);
        summary.bytes_copied += clones::split_bytes(&left);
        summary.files_linked = out.planned_links;
        summary.bytes_saved = out.planned_bytes_saved.saturating_sub(summary.bytes_copied);
        summary.objects_added = out.planned_objects;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    };

    let mut writer = record::Writer::new(catalog, run_id, racy_from)?;
    let mut applier = apply::Applier::new(store, &guests, &scan.candidates);
    applier.link_max = opts.link_max;
    applier.paranoid = opts.paranoid;
    applier.ignore_mtime = ignore_mtime;
    // Rewrite only the guest_links rows that changed: a re-run writes little,
    // and reads none back for a guest whose links hash to what the catalog
    // recorded at the end of the last run.
    let mut digests = vec![[0u8; 32]; guests.len()];
    for &(g, d) in &scan.digests {
        digests[g as usize] = d;
    }
    let stored = guests
        .iter()
        .map(|g| catalog.links_digest(g.row.id))
        .collect::<catalog::Result<Vec<_>>>()?;
    let mut old_links = guests
        .iter()
        .zip(digests.iter().zip(&stored))
        .map(|(g, (d, stored))| match stored {
            Some(stored) if stored == d => Ok(None),
            _ => catalog.guest_links(g.row.id).map(Some),
        })
        .collect::<catalog::Result<Vec<_>>>()?;
    let mut recorded: HashSet<(ObjectId, u32)> = HashSet::new();
    for u in &unrecorded {
        stale::record_unrecorded(&mut writer, u)?;
        recorded.insert((u.row.id, u.copy));
    }
    for l in &scan.linked {
        if l.recovered.is_some() && recorded.insert((l.id, l.copy)) {
            stale::recover_object(store, &mut writer, l, ignore_mtime)?;
        }
        let Some(old) = &mut old_links[l.guest as usize] else {
            continue; // the catalog has exactly these links
        };
        if old.remove(&l.rel) != Some(l.id) {
            writer.guest_link(guests[l.guest as usize].row.id, &l.rel, &l.id)?;
        }
    }
    // From the first change of a guest directory on (removing a killed
    // run's temp names is one), nothing may return before their mtimes are
    // put back. They are kept on disk as well, for the next run if this one
    // is killed (dirjournal.rs).
    let roots: Vec<&Path> = guests.iter().map(|g| g.root.as_path()).collect();
    match store
        .tmp_dir()
        .map_err(std::io::Error::other)
        .and_then(|tmp| dirjournal::Journal::create(tmp, &roots))
    {
        Ok(j) => applier.dir_times.keep_journal(j),
        Err(e) => summary.problems.push(Problem::new(
            store.root().join("tmp"),
            format!(
                "cannot keep a record of the directory mtimes to put back ({e}); \
                 if this run is killed, the directories it changed keep new mtimes"
            ),
        )),
    }
    let (removed, left, mut problems) = stale::clean(
        &applier,
        &scan.stale_tmp,
        &killed_dirs,
        &existing,
        ignore_mtime,
    );
    summary.stale_tmp_removed = removed;
    summary.problems.append(&mut problems);
    // Directories of guests not in this run may still hold leftovers.
    let kept = killed_dirs.len();
    // A run known by its pid alone is done with once a run given every
    // guest of the store found no leftover of it.
    let in_run: HashSet<&Path> = roots.iter().copied().collect();
    let every_guest = catalog
        .guests()
        .is_ok_and(|all| all.iter().all(|g| in_run.contains(g.path.as_path())));
    killed_dirs.retain(|key, root| {
        left.contains(key)
            || match key.1 == dirjournal::ANY_DIR {
                true => !every_guest,
                false => !in_run.contains(root.as_path()),
            }
    });
    if killed_dirs.len() != kept {
        let why = "cannot update the directories killed runs changed";
        summary
            .problems
            .extend(keep_killed(store, &killed_dirs, why));
    }
    // Clones' shared inodes get split once the directories it changes are
    // noted on disk: a killed split's temp names are then known as ours.
    let (split, mut split_bytes, mut problems, failed) =
        split::split_all(&guests, &scan.to_split, &applier.dir_times);
    summary.clone_paths_split = split;
    summary.problems.append(&mut problems);
    scan.unsettled.extend(failed);
    let out = pipeline::run(&inputs(Some(&applier)), buckets, |op| {
        writer.record(op, &guests, &scan.candidates)
    });
    // Temp names the run could not remove: the next run removes them.
    let left_behind = applier.take_left_behind();
    if !left_behind.is_empty() {
        killed_dirs.extend(left_behind);
        let why = "cannot keep the directories of temp names left behind";
        summary
            .problems
            .extend(keep_killed(store, &killed_dirs, why));
    }
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let _ = applier.dir_times.restore(&guests);
            return Err(e);
        }
    };
    progress.finish_and_clear();
    hashed_summary(&mut summary, &out, hash_started);
    // Clone-shared inodes that did not become objects after all (left
    // alone as sparse, with inode flags, with no room for the marker, of
    // another project ID, or in use): still shared by several guests, so
    // each guest but the first gets a copy of its own, as above.
    let left = scan.shared_left(|i| {
        let st = &scan.candidates[i].stat;
        !out.consumed.contains(&i) && !out.object_files.contains(&(st.dev, st.ino))
    });
    let (split, bytes, mut problems, failed) = split::split_all(&guests, &left, &applier.dir_times);
    summary.clone_paths_split += split;
    split_bytes += bytes;
    summary.problems.append(&mut problems);
    scan.unsettled.extend(failed);
    let t = out.totals;
    summary.files_linked = t.files_linked;
    // What the run freed: the paths it replaced, less the copies it made.
    summary.bytes_copied = t.bytes_copied + split_bytes;
    summary.bytes_saved = t.bytes_saved.saturating_sub(summary.bytes_copied);
    summary.objects_added = t.objects_added;
    summary.objects_copied = t.objects_copied;
    summary.objects_recovered = recorded.len() as u64;
    summary.extra_copies = t.extra_copies;
    summary.skipped_changed += t.skipped_changed;
    summary.files_gone += t.gone;
    summary.skipped_in_use = t.skipped_in_use;
    summary.files_no_xattr_room = t.no_xattr_room;
    summary.files_other_project = t.other_project;
    let totals = RunTotals {
        files_scanned: summary.files_scanned,
        bytes_hashed: summary.bytes_hashed,
        files_linked: summary.files_linked,
        bytes_saved: summary.bytes_saved,
    };
    // This thread finishes the catalog while another puts the directories'
    // mtimes back: neither needs the other.
    let mut finish = || -> Result<()> {
        for &file in &out.consumed {
            let rec = &scan.candidates[file];
            if let Some(old) = &mut old_links[rec.guest as usize] {
                old.remove(&rec.rel);
            }
        }
        for (g, gone) in guests.iter().zip(&old_links) {
            for path in gone.iter().flat_map(|m| m.keys()) {
                writer.delete_guest_link(g.row.id, path)?;
            }
        }
        // A guest's rows are now the links the scan found (the rest were
        // deleted) and the ones this run made.
        let touched: Vec<u32> = (0..guests.len() as u32)
            .filter(|&g| writer.touched.contains(&guests[g as usize].row.id))
            .collect();
        // Each guest's links, sorted out once (not a pass over all of
        // them for each guest: thousands of guests).
        let mut links: Vec<Vec<(&Path, &ObjectId)>> = vec![Vec::new(); guests.len()];
        for l in &scan.linked {
            links[l.guest as usize].push((l.rel.as_path(), &l.id));
        }
        for (file, id) in &out.new_links {
            let rec = &scan.candidates[*file];
            links[rec.guest as usize].push((rec.rel.as_path(), id));
        }
        let digests_now: Vec<[u8; 32]> = worker_pool().install(|| {
            touched
                .par_iter()
                .map(|&g| catalog::links_digest(links[g as usize].iter().copied()))
                .collect()
        });
        for (&g, digest) in touched.iter().zip(&digests_now) {
            digests[g as usize] = *digest;
        }
        let unsettled: HashSet<u32> = scan.unsettled.iter().copied().collect();
        for (i, (g, digest)) in guests.iter().zip(&digests).enumerate() {
            if unsettled.contains(&(i as u32)) {
                // No digest: its next run counts as a first one again.
                catalog.set_links_digest(g.row.id, None)?;
            } else if writer.touched.contains(&g.row.id) || stored[i] != Some(*digest) {
                // A touched guest's digest was cleared in the catalog.
                catalog.set_links_digest(g.row.id, Some(digest))?;
            }
            // The links its walk does not see, as this run's look into the
            // excluded trees found them all its own; else none known.
            let outside = match &outside_walked {
                Some(walked) if !unsettled.contains(&(i as u32)) => walked[i],
                Some(_) => None,
                None if replaced[i] => None,
                None => outside_known[i],
            };
            if outside != outside_known[i] {
                catalog.set_links_outside(g.row.id, outside.as_ref())?;
            }
            if let Some(root) = root_ids[i].filter(|&r| roots_known[i] != Some(r)) {
                catalog.set_guest_root(g.row.id, root)?;
            }
        }
        if covers_every_guest(catalog, &guests)? {
            prune_hash_cache(catalog, &cache, &scan.candidates)?;
        }
        if let Some(last) = unfinished_seen {
            catalog.set_config(UNFINISHED_RECORDED, &last.to_string())?;
        }
        if let Some(serial) = &serial {
            catalog.set_config(catalog::STORE_SERIAL, serial)?;
        }
        catalog.finish_run(run_id, &totals)?;
        // No syncfs: every link and swap is atomic, so after a crash each
        // path names its old or its new inode, and the catalog is checked
        // against the filesystem again by the next run.
        catalog.commit()?;
        Ok(())
    };
    let dir_times = &applier.dir_times;
    let (restored, finished) = std::thread::scope(|s| {
        let restoring = std::thread::Builder::new()
            .spawn_scoped(s, || dir_times.restore(&guests))
            .ok();
        let finished = finish();
        let restored = match restoring {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => dir_times.restore(&guests),
        };
        (restored, finished)
    });
    drop(applier);
    let (mut problems, relisted) = restored;
    summary.problems.append(&mut problems);
    finished?;
    listings::keep(
        store,
        &guests,
        &scan.kept,
        std::mem::take(&mut scan.listings),
        relisted,
    );
    summary.apply_seconds = hash_started.elapsed().as_secs_f64();
    summary.seconds = started.elapsed().as_secs_f64();
    // Freeing tens of thousands of small allocations takes milliseconds that
    // whoever waits for the summary need not wait for.
    drop(writer);
    let tables = (scan, objects, object_inodes, cache, old_links, out);
    // (If no thread can be had, the spawn error drops them here.)
    let _ = std::thread::Builder::new().spawn(move || drop(tables));
    Ok(summary)
}

/// True when the run walked every guest the catalog knows (`--all`, or
/// each named): then no file a guest has is missing from its scan.
fn covers_every_guest(catalog: &Catalog, guests: &[Guest]) -> Result<bool> {
    let run: HashSet<i64> = guests.iter().map(|g| g.row.id).collect();
    Ok(catalog.guests()?.iter().all(|g| run.contains(&g.id)))
}

/// Drops the hash-cache rows of inodes that are no candidate of a run
/// that walked every guest: files deleted or replaced since (a package
/// update, a guest's churn), whose rows nothing would ever read again.
/// Kept, they grew the catalog and every run's load of the cache for the
/// store's life. A row dropped by mistake costs one hash, never a link.
fn prune_hash_cache(
    catalog: &Catalog,
    cache: &catalog::Map<(u64, u64), catalog::CacheRow>,
    candidates: &[scan::FileRec],
) -> Result<()> {
    let seen: HashSet<(u64, u64)> = candidates
        .iter()
        .map(|c| (c.stat.dev, c.stat.ino))
        .collect();
    for &(dev, ino) in cache.keys().filter(|k| !seen.contains(k)) {
        catalog.delete_hash(dev, ino)?;
    }
    Ok(())
}

/// Object files are known by the inode numbers the catalog lists: a guest
/// path whose directory entry names one is taken to link that object
/// without a stat. A store restored from a backup (objects and catalog) has
/// every object file at another inode, and the old numbers name other files
/// (guest files, other objects). So when `objects/` is not the directory
/// the catalog last saw, or a few object files looked at are other inodes
/// than listed (objects.tar extracted into the store, as docs/backup.md
/// says: tar replaces every file, but `objects/` stays the directory it
/// was), every object file's inode is looked up again first (`true`).
/// Writes the directories that still hold killed runs' temp names to the
/// store's `tmp/`; a failure is a problem saying `why`.
fn keep_killed(store: &Store, killed: &dirjournal::KilledDirs, why: &str) -> Option<Problem> {
    let kept = store
        .tmp_dir()
        .map_err(std::io::Error::other)
        .and_then(|tmp| dirjournal::keep_killed(tmp, killed));
    let e = kept.err()?;
    Some(Problem::new(
        store.root().join("tmp"),
        format!("{why}: {e}"),
    ))
}

/// An inode: (device, inode number).
type DevIno = (u64, u64);

/// Every object file the catalog lists, looked up again.
struct LookedUp {
    /// The catalog's (dev, ino) of a file now another inode, the file, and
    /// its (dev, ino) now.
    moved: Vec<(DevIno, catalog::ObjectInode, DevIno)>,
    /// The catalog's (dev, ino) of those gone.
    gone: Vec<(u64, u64)>,
}

impl LookedUp {
    /// `inodes` as the object files are now; the gone ones' rows move to
    /// `unverified` (each number then stands for its object only in a file
    /// carrying its marker), unless a moved file has that number now.
    fn renumber(
        &self,
        inodes: &mut catalog::Map<(u64, u64), catalog::ObjectInode>,
        unverified: &mut catalog::Map<(u64, u64), catalog::ObjectInode>,
    ) {
        for key in &self.gone {
            if let Some(f) = inodes.remove(key) {
                unverified.insert(*key, f);
            }
        }
        for (old, _, _) in &self.moved {
            inodes.remove(old);
        }
        for &(_, f, now) in &self.moved {
            inodes.insert(now, f);
            unverified.remove(&now);
        }
    }
}

/// Looks up every object file's inode again where the catalog may not be
/// the one the store was last written with: its serial is not the
/// store's (a snapshot put back, a killed run, an older unifs, a store
/// restored from backup), `objects/` is another directory, or one of a
/// few object files sampled moved. `None` where none of these holds.
/// Reads only: a dry run's too.
fn look_up_object_files(
    store: &Store,
    catalog: &Catalog,
    checking: &mut Checking,
    inodes: &crate::catalog::Map<(u64, u64), crate::catalog::ObjectInode>,
) -> Result<Option<LookedUp>> {
    /// Object files looked at when the catalog seems to be the store's
    /// last (each costs a directory and an inode read with a cold cache).
    const SAMPLE: usize = 4;
    let stat =
        |f: &crate::catalog::ObjectInode| -> Result<_> { Ok(store.stat_object(&f.id, f.copy)?) };
    let moved = |(dev, ino): (u64, u64), st: &Option<sys::Stat>| {
        st.as_ref().is_some_and(|st| (st.dev, st.ino) != (dev, ino))
    };
    let serial = store.serial();
    let trusted = serial.is_some()
        && checking.or_damaged(catalog.config(catalog::STORE_SERIAL))? == serial
        && checking
            .or_damaged(catalog.config(catalog::OBJECTS_DIR))?
            .as_deref()
            == Some(store.objects_identity().as_str());
    if trusted {
        let mut any_moved = false;
        for (&key, f) in inodes.iter().take(SAMPLE) {
            if moved(key, &stat(f)?) {
                any_moved = true;
                break;
            }
        }
        if !any_moved {
            return Ok(None);
        }
    }
    let mut looked = LookedUp {
        moved: Vec::new(),
        gone: Vec::new(),
    };
    for (&key, f) in inodes {
        match stat(f)? {
            Some(st) if (st.dev, st.ino) != key => looked.moved.push((key, *f, (st.dev, st.ino))),
            Some(_) => {}
            // gc's to repair (it checks guest paths); not trusted here.
            None => looked.gone.push(key),
        }
    }
    Ok(Some(looked))
}

/// Where [`look_up_object_files`] looked them all up, gives the catalog's
/// rows of moved object files their inodes now. Then gives the store a
/// new serial (returned), before this run changes anything else.
fn record_object_files(
    store: &Store,
    catalog: &Catalog,
    looked: Option<&LookedUp>,
) -> Result<Option<String>> {
    if let Some(looked) = looked {
        catalog.begin()?;
        for (_, f, (dev, ino)) in &looked.moved {
            catalog.set_object_file(&f.id, f.copy, *dev, *ino)?;
            // A copy made without xattrs lost the markers the mount needs.
            store.restore_marker(&f.id, f.copy, false)?;
        }
        catalog.set_config(catalog::OBJECTS_DIR, &store.objects_identity())?;
        catalog.commit()?;
    }
    Ok(store.set_new_serial())
}

/// The run's command as recorded: `unify [--all] ROOT...`, every guest
/// root the run works on.
fn describe(opts: &Options, guests: &[Guest]) -> String {
    let mut s = String::from("unify");
    if opts.all {
        s.push_str(" --all");
    }
    // Each path one shell word (`$'…'` where it must be): a space, a
    // newline or a byte that is not UTF-8 in one leaves no doubt where each
    // ends and which bytes it has.
    for g in guests {
        s.push(' ');
        s.push_str(&sys::shell_word(&g.root));
    }
    s
}

/// Resolves and checks the guests of this run, with their catalog rows
/// where the catalog knows them (placeholders with negative ids where not:
/// a run registers them). A guest that `--all` adds but whose directory is
/// gone is skipped, and reported as a problem with the way to forget it.
fn open_guests(
    store: Option<&Store>,
    catalog: &Catalog,
    opts: &Options,
) -> Result<(Vec<Guest>, Vec<Problem>)> {
    let mounts = UnifsMounts::read();
    let mut paths: Vec<PathBuf> = Vec::new();
    for g in &opts.guests {
        paths.push(guest_dir(g, &mounts)?);
    }
    let named = paths.len();
    // A guest inside (or around) one the catalog knows would make its files
    // two guests' files, and every later `--all` fail on the overlap.
    let known = catalog.guests()?;
    let mut check: Vec<&PathBuf> = paths.iter().collect();
    if opts.all {
        check.extend(known.iter().map(|k| &k.path));
    }
    let mut sorted: Vec<&GuestRow> = known.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for g in check {
        if let Some(k) = known_overlap(g, &sorted) {
            return Err(Error::NestedInKnownGuest {
                guest: g.clone(),
                name: k.name.clone(),
                known: k.path.clone(),
            });
        }
    }
    if opts.all {
        paths.extend(known.into_iter().map(|g| g.path));
    }
    let mut seen = HashSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    if paths.is_empty() {
        return Err(match store {
            Some(s) if opts.all => Error::NoKnownGuests {
                store: s.root().to_path_buf(),
                why: "knows no guests yet",
            },
            _ => Error::NoGuests,
        });
    }
    check_overlaps(&paths, store.map(|s| s.root()))?; // --all adds guests
    check_fd_limit(paths.len())?;
    let too_many = |e: &std::io::Error| e.raw_os_error() == Some(libc::EMFILE);
    // (device, inode) of each guest root so far: one directory is one guest.
    let mut roots: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    let guest_count = paths.len();
    let mut guests = Vec::with_capacity(paths.len());
    let mut missing = Vec::new();
    // (path, why) of each skipped guest, for the error when all are.
    let mut skipped = Vec::new();
    // Of those, the guests reached through another mount than the store.
    let mut other_mounts = 0;
    for (i, root) in paths.into_iter().enumerate() {
        // Checked before the open, which would reach the mount's daemon.
        if i >= named && mounts.over(&root) {
            missing.push(Problem::new(
                &root,
                format!(
                    "guest directory of the catalog has a unifs mount over it, which hides \
                     the guest's own files; skipped: unmount it (`unifs umount {}`) and mount \
                     guests elsewhere (e.g. /run/unifs/NAME)",
                    crate::sys::shown(&root)
                ),
            ));
            skipped.push(format!(
                "{}: a unifs mount over it",
                crate::sys::shown(&root)
            ));
            continue;
        }
        let fd = match sys::open_dir(&root) {
            Ok(fd) => fd,
            Err(e)
                if i >= named && matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
            {
                // A symlink left where the guest was (it moved): forget
                // drops this entry, not the guest it leads to.
                let why = match std::fs::symlink_metadata(&root) {
                    Ok(m) if m.is_symlink() => "a symlink now, not the guest's directory".into(),
                    _ => e.to_string(),
                };
                missing.push(Problem::new(
                    &root,
                    format!(
                        "guest directory of the catalog is gone ({why}); skipped: \
                         `unifs store forget {}` drops it",
                        sys::shell_word(&root)
                    ),
                ));
                skipped.push(format!("{}: gone", sys::shell_word(&root)));
                continue;
            }
            // Not the guest's fault: the roots (with what else is open)
            // are more than the limit.
            Err(e) if too_many(&e) => return Err(too_many_guests(guest_count)),
            Err(e) => return Err(guest_err(&root)(e)),
        };
        let st = sys::fstat(fd.as_fd()).map_err(guest_err(&root))?;
        let known = catalog.guest_by_path(&root)?;
        if known.is_none() {
            check_not_known_elsewhere(catalog, &root, &fd)?;
        }
        if let Some(first) = roots.insert((st.dev, st.ino), root.clone()) {
            return Err(Error::GuestNamedTwice {
                first,
                second: root,
            });
        }
        if let Some(store) = store {
            // A dry run links nothing, so a store reached through another
            // mount of the guests' filesystem (a read-only bind mount) does
            // for it.
            let reachable = store
                .check_same_fs(&root, st.dev)
                .and_then(|()| match opts.dry_run {
                    true => Ok(()),
                    false => store.check_same_mount(&root, fd.as_fd()),
                });
            // A guest of the catalog that now sits on another filesystem
            // (a disk mounted over it, or moved to one) is, for --all, like
            // one that is gone: one guest must not stop the others.
            if let Err(e) = reachable {
                let why = match elsewhere(&e) {
                    Some(why) if known.is_some() => why,
                    _ => return Err(e.into()),
                };
                // Another mount of the same filesystem: the store path is
                // as likely what changed (a bind mount of it) as the guest.
                let other_mount = matches!(e, store::Error::CrossMount { .. });
                if i < named && other_mount {
                    let forget = sys::shell_word(&root);
                    return Err(Error::KnownGuestOtherMount {
                        guest: root,
                        store: store.root().to_path_buf(),
                        forget,
                    });
                }
                if i < named {
                    let forget = sys::shell_word(&root);
                    return Err(Error::KnownGuestElsewhere {
                        guest: root,
                        forget,
                        why,
                    });
                }
                let advice = match other_mount {
                    true => {
                        "name the store by a path on the guest's mount if the guest did \
                             not move; if it moved there for good, "
                    }
                    false => "",
                };
                missing.push(Problem::new(
                    &root,
                    format!(
                        "guest directory of the catalog {why}; skipped: {advice}`unifs store \
                         forget {}` drops it from the catalog{}",
                        sys::shell_word(&root),
                        if other_mount {
                            ""
                        } else {
                            " if it moved there for good"
                        }
                    ),
                ));
                let place = match other_mount {
                    true => {
                        other_mounts += 1;
                        "reached through another mount"
                    }
                    false => "on another filesystem",
                };
                skipped.push(format!("{}: {place}", sys::shell_word(&root)));
                continue;
            }
        }
        let row = known.unwrap_or(GuestRow {
            id: -(i as i64) - 1,
            name: root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: root.clone(),
        });
        guests.push(Guest { row, root, fd });
    }
    // Mounted since it was checked (before its root was opened).
    let mounts = UnifsMounts::read();
    for g in &guests {
        check_not_overmounted(&g.root, &mounts)?;
    }
    if guests.is_empty() {
        if let Some(store) = store.filter(|_| other_mounts == skipped.len()) {
            return Err(Error::StoreOnOtherMount {
                store: store.root().to_path_buf(),
                list: skipped.join(", "),
            });
        }
        return Err(Error::AllGuestsMissing {
            list: skipped.join(", "),
        });
    }
    Ok((guests, missing))
}

/// Refuses a guest root new to the catalog that is the directory a guest
/// of the catalog was at its last finished run, under another path (a bind
/// mount, or the guest moved): it would be two guests, its files counted
/// twice and recorded under two paths. Not where the old path is another
/// directory now (the old one was replaced there): then they are two.
fn check_not_known_elsewhere(catalog: &Catalog, root: &Path, fd: &OwnedFd) -> Result<()> {
    let Some((dev, ino, birth)) = root_identity(fd) else {
        return Ok(());
    };
    for (row, was_born) in catalog.guests_with_root(dev, ino)? {
        // Another directory that got the inode number of one removed.
        if birth.is_some() && was_born.is_some() && birth != was_born {
            continue;
        }
        let old_is_other = sys::open_dir(&row.path)
            .ok()
            .and_then(|old| root_identity(&old))
            .is_some_and(|(d, i, _)| (d, i) != (dev, ino));
        if old_is_other {
            continue;
        }
        return Err(Error::SameGuestOtherPath {
            guest: root.to_path_buf(),
            forget: sys::shell_word(&row.path),
            name: row.name,
            known: row.path,
        });
    }
    Ok(())
}

/// Why a guest of the catalog can no longer be linked to the store, when
/// `e` says it is on another filesystem or mount than the store.
fn elsewhere(e: &store::Error) -> Option<String> {
    match e {
        store::Error::CrossDevice {
            guest_mount,
            store,
            store_mount,
            ..
        } => Some(format!(
            "is now on another filesystem ({}) than the store {} ({}), and hardlinks cannot \
             cross filesystems",
            crate::sys::shown(guest_mount),
            crate::sys::shown(store),
            crate::sys::shown(store_mount)
        )),
        store::Error::CrossSubvolume {
            guest_top, store, ..
        } => Some(format!(
            "is now in another btrfs subvolume ({}) than the store {}, and hardlinks cannot \
             cross subvolumes",
            crate::sys::shown(guest_top),
            crate::sys::shown(store)
        )),
        store::Error::CrossMount { store, .. } => Some(format!(
            "is now reached through another mount than the store {} (a bind mount?), and \
             hardlinks cannot cross mounts",
            crate::sys::shown(store)
        )),
        _ => None,
    }
}

/// Refuses a guest root (canonical) that is the store at `store`, lies inside
/// it or holds it: the check unify makes, for `unifs mount` and `unifs run`,
/// whose writes through such a root would reach store objects.
pub fn check_guest_outside_store(guest: &Path, store: &Path) -> Result<()> {
    check_overlaps(&[guest.to_path_buf()], Some(store))
}

/// Refuses a guest that holds the store (or lies inside it), and guests
/// nested in each other: their files would be unified twice, or the
/// store's own files taken for a guest's.
fn check_overlaps(paths: &[PathBuf], store: Option<&Path>) -> Result<()> {
    let overlap = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    if let Some(store) = store {
        let store = resolved(store);
        if let Some(g) = paths.iter().find(|g| overlap(g, &store)) {
            return Err(Error::StoreInGuest {
                guest: g.clone(),
                store,
            });
        }
    }
    if let Some((a, b)) = nested_pair(paths) {
        let (a, b) = (&paths[a], &paths[b]);
        if a == b {
            return Err(Error::GuestTwice { path: a.clone() });
        }
        return Err(Error::NestedGuests {
            a: a.clone(),
            b: b.clone(),
        });
    }
    Ok(())
}

/// Two of `paths` (their indexes, the lower first) one of which is the
/// other or lies inside it; `None` if no two are. In `Path`'s order, which
/// compares component by component, whatever sorts between a path and one
/// inside it lies inside it too (`/a/b`, `/a/b/c`, `/a/b-x`, `/a/bc`: byte
/// order would put `/a/b-x` between the first two). So where there is such
/// a pair, there is one of neighbours: a sort and one pass, not every pair
/// (thousands of guests took minutes).
fn nested_pair(paths: &[PathBuf]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by(|&x, &y| paths[x].cmp(&paths[y]));
    order
        .windows(2)
        .find(|w| paths[w[1]].starts_with(&paths[w[0]]))
        .map(|w| (w[0].min(w[1]), w[0].max(w[1])))
}

/// The known guest (of `known`, sorted by path) that `g` lies inside or
/// holds, other than `g` itself: its ancestors are looked up, and the path
/// sorting right after it, the first inside it if any is (see
/// [`nested_pair`]).
fn known_overlap<'a>(g: &Path, known: &[&'a GuestRow]) -> Option<&'a GuestRow> {
    let find = |p: &Path| known.binary_search_by(|k| k.path.as_path().cmp(p));
    let above = g.ancestors().skip(1).find_map(|a| find(a).ok());
    let below = known.partition_point(|k| k.path.as_path() <= g);
    above
        .map(|i| known[i])
        .or_else(|| known.get(below).copied().filter(|k| k.path.starts_with(g)))
}

/// The fds a run with `guests` guests may keep open to save opening them
/// again: the open-file limit (raised to the hard one) less what the run
/// holds anyway — a root fd per guest, the files being closed, a file and
/// a directory per thread, and a reserve for SQLite (catalog, WAL, shm),
/// the lock, `objects/` (one fd: objects are reached as `ab/cdef…` from
/// it, never a fd per fan-out directory), `tmp/`, the cache files and the
/// walk's directories.
fn spare_fds(guests: usize) -> usize {
    fd_limit().saturating_sub(guests + fds_beside_roots())
}

/// The reserve of [`spare_fds`].
const FDS_RESERVE: usize = 64;

/// The fds a run holds beside its guest roots (see [`spare_fds`]): about
/// 350 (264 files being closed, 2 a thread, the reserve).
fn fds_beside_roots() -> usize {
    let threads = worker_pool().current_num_threads();
    closer::IN_FLIGHT + 2 * threads + FDS_RESERVE
}

/// Refuses, before anything is done, a run of `guests` guests that needs
/// more fds than the open-file limit allows: it would fail midway, file by
/// file, with a bare "Too many open files".
fn check_fd_limit(guests: usize) -> Result<()> {
    if guests > 0 && guests + fds_beside_roots() > fd_limit() {
        return Err(too_many_guests(guests));
    }
    Ok(())
}

fn too_many_guests(guests: usize) -> Error {
    Error::TooManyGuests {
        guests,
        needed: guests + fds_beside_roots(),
        beside: fds_beside_roots(),
        limit: fd_limit(),
    }
}

/// The open-file limit, raised to the hard one the first time.
fn fd_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use nix::sys::resource::{getrlimit, Resource};
        let limit = sys::raise_fd_limit()
            .or_else(|_| getrlimit(Resource::RLIMIT_NOFILE).map(|(soft, _)| soft))
            .unwrap_or(1024);
        limit.min(1 << 20) as usize
    })
}

/// Threads for hashing and linking: more than the cores, because a thread
/// often waits for the disk (cold cache, journal, discard) rather than a CPU.
/// `UNIFS_THREADS` overrides the count. Built by [`start_workers`].
fn worker_pool() -> &'static rayon::ThreadPool {
    WORKERS.get_or_init(|| build_workers().unwrap_or_else(|e| panic!("{e}")))
}

static WORKERS: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();

/// Starts unify's worker threads, before any work: under a low RLIMIT_AS
/// or RLIMIT_NPROC they cannot all start, and the error says which limit
/// to raise rather than a panic halfway through a run.
pub fn start_workers() -> std::io::Result<()> {
    if WORKERS.get().is_none() {
        let _ = WORKERS.set(build_workers()?);
    }
    Ok(())
}

fn build_workers() -> std::io::Result<rayon::ThreadPool> {
    let threads = std::env::var("UNIFS_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        // Not rayon's own count: that starts rayon's global pool, which
        // panics under the same limits.
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores * 4).clamp(4, 16)
        });
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        // The walk recurses once a directory level, up to MAX_DEPTH
        // (scan.rs); 2 MiB is not enough for that in a debug build.
        .stack_size(WORKER_STACK)
        .thread_name(|i| format!("unify-{i}"))
        .build()
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot start unify's {threads} worker threads ({} MiB of stack each): {e}; \
                 {}: raise them (`ulimit -v unlimited`, `ulimit -u`), or set UNIFS_THREADS \
                 to fewer threads",
                WORKER_STACK >> 20,
                // With the pids cgroup's limit, the one a unit's TasksMax= sets.
                crate::fs::ready::task_limits_text()
            ))
        })
}

/// A worker thread's stack.
const WORKER_STACK: usize = 16 << 20;

/// Hashing figures of a run into its summary.
fn hashed_summary(summary: &mut Summary, out: &pipeline::Outcome, hash_started: Instant) {
    summary.bytes_hashed = out.bytes_hashed;
    summary.files_with_inode_flags = out.flagged;
    summary.files_sparse = out.sparse;
    summary.files_gone = out.gone;
    summary.skipped_changed = out.changed;
    summary.files_hashed = out.hashed.iter().filter(|h| h.read).count() as u64;
    summary.cache_hits = out.hashed.iter().filter(|h| h.from_cache).count() as u64;
    summary.problems.extend(out.problems.iter().cloned());
    summary.hash_seconds = out.hash_seconds;
    summary.apply_seconds = hash_started.elapsed().as_secs_f64();
}

fn progress_bar(show: bool, total: u64, what: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = if what.starts_with("hashing") {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} [{bar:30}] {pos}/{len} files"
    };
    bar.set_style(
        ProgressStyle::with_template(style).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn nested_guests_are_found_among_sorted_neighbours() {
        let pair = |list: &[&str]| nested_pair(&paths(list));
        assert_eq!(pair(&[]), None);
        assert_eq!(pair(&["/a"]), None);
        // A prefix of bytes is not one of components.
        assert_eq!(pair(&["/a/b", "/a/bc"]), None);
        assert_eq!(pair(&["/a/bc", "/a/b"]), None);
        assert_eq!(pair(&["/a/b", "/a/b-x", "/a/b.c", "/a/b0"]), None);
        // Byte order would put /a/b-x (and /a/b.c) between these two.
        assert_eq!(pair(&["/a/b/c", "/a/b-x", "/a/b.c", "/a/b"]), Some((0, 3)));
        assert_eq!(pair(&["/x", "/a/b-x/y", "/a/b", "/a/b-x"]), Some((1, 3)));
        assert_eq!(pair(&["/g/1", "/g/2", "/g/1"]), Some((0, 2)));
        assert_eq!(pair(&["/", "/srv/g"]), Some((0, 1)));
    }

    /// The sorted check finds a nested pair exactly where comparing every
    /// pair does, over many sets of paths made of names that are prefixes
    /// of each other.
    #[test]
    fn the_sorted_check_agrees_with_comparing_every_pair() {
        let names = ["b", "b-x", "b.c", "bc", "b0", "c"];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..2000 {
            let count = 1 + next(6);
            let set: Vec<PathBuf> = (0..count)
                .map(|_| {
                    let mut p = PathBuf::from("/a");
                    for _ in 0..1 + next(3) {
                        p.push(names[next(names.len())]);
                    }
                    p
                })
                .collect();
            let every_pair = (0..set.len()).any(|i| {
                (i + 1..set.len())
                    .any(|j| set[i].starts_with(&set[j]) || set[j].starts_with(&set[i]))
            });
            let found = nested_pair(&set);
            assert_eq!(found.is_some(), every_pair, "{set:?}");
            if let Some((i, j)) = found {
                assert!(i < j, "{set:?}");
                assert!(
                    set[i].starts_with(&set[j]) || set[j].starts_with(&set[i]),
                    "{set:?}"
                );
            }
        }
    }

    #[test]
    fn a_guest_inside_or_around_a_known_one_is_found() {
        let rows: Vec<GuestRow> = ["/g/a", "/g/ab", "/g/a-b", "/h/x/y"]
            .iter()
            .enumerate()
            .map(|(i, p)| GuestRow {
                id: i as i64 + 1,
                name: p.to_string(),
                path: PathBuf::from(p),
            })
            .collect();
        let mut sorted: Vec<&GuestRow> = rows.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let found = |g: &str| known_overlap(Path::new(g), &sorted).map(|k| k.name.clone());
        assert_eq!(found("/g/a/sub/dir").as_deref(), Some("/g/a"));
        assert_eq!(found("/h/x").as_deref(), Some("/h/x/y"));
        assert_eq!(found("/h").as_deref(), Some("/h/x/y"));
        assert_eq!(found("/g/a"), None, "a known guest is no other guest");
        assert_eq!(found("/g/ab/c").as_deref(), Some("/g/ab"));
        assert_eq!(found("/g/b"), None);
        assert_eq!(found("/h/x/yz"), None);
        assert_eq!(found("/h/x/y-z"), None);
    }
}
