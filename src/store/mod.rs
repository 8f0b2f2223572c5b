//! The store on disk: `objects/<2 hex>/<62 hex>[.N]`, `catalog.db`, `tmp/`,
//! `lock`. Depends on nothing else in the crate but `sys`.
//!
//! Every object carries the xattr [`MARKER_XATTR`] = its id's 32 bytes. The mount
//! recognises a shared inode by it (positively, never by `nlink > 1`), and
//! unify recovers objects the catalog missed (a run killed before commit).

pub mod id;
mod lock;
pub mod maintain;
pub mod object;

pub use id::{ContentHash, ObjectHasher, ObjectId, ObjectMeta};
pub use lock::WriterLock;

use crate::sys;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Marks an inode as a store object; value: the 64-hex object id.
/// `trusted.` so only root can read or set it; the mount hides it.
pub const MARKER_XATTR: &str = "trusted.unifs.object";

/// On `objects/`: a value unify and gc set anew before they change the
/// store, and record in the catalog (config `store_serial`) once done. A
/// catalog that records another (a snapshot put back, or one a killed run
/// left) may name object inode numbers freed since: unify then checks
/// every object file before it trusts one.
pub const SERIAL_XATTR: &str = "trusted.unifs.serial";

/// Files in `tmp/` named this and a pid hold the directory mtimes a unify
/// run is to put back (for the next run, if it was killed); gc leaves them.
pub const DIR_TIMES_PREFIX: &str = "dirtimes-";

/// Inode flags a file with any of is left alone by unify, and an object
/// file must not have (`store verify` reports one): a hardlink shares
/// them, and the object id does not cover them: `chattr`'s s u c S i a d A m j t C
/// x, and E (encrypted: another guest could not read the object) and V
/// (fs-verity); not the filesystem's own, like e for extents. And ext4's
/// old EOFBLOCKS bit ([`EXT4_EOFBLOCKS_FL`]), which a guest may set.
pub const INODE_FLAGS: u32 = 0x1
    | 0x2
    | 0x4
    | 0x8
    | 0x10
    | 0x20
    | 0x40
    | 0x80
    | 0x400
    | 0x800
    | 0x4000
    | 0x8000
    | 0x10_0000
    | 0x40_0000
    | 0x80_0000
    | 0x200_0000;

/// ext4's EOFBLOCKS_FL: set by Linux before 5.7 on a file with blocks
/// allocated past its end, read by no kernel since, yet stored as a
/// SETFLAGS asks (Linux 6.18: a guest sets it through its mount). No
/// `chattr` letter: `chattr =` with the letters a file has clears it.
pub const EXT4_EOFBLOCKS_FL: u32 = 0x40_0000;

/// xfs' inode flags that FS_IOC_GETFLAGS does not show (FS_IOC_FSGETXATTR's
/// fsx_xflags), shared by a hardlink as well: realtime, the extent size
/// hints (extsize, extszinherit, cowextsize), nodefrag, filestream, dax.
/// Not prealloc or hasattr, which xfs sets by itself.
pub const XFS_FLAGS: u32 = 0x1 | 0x800 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x1_0000;

/// Whether the file open at `fd` has inode flags of either set.
pub fn has_inode_flags(fd: BorrowedFd) -> io::Result<bool> {
    if sys::inode_flags(fd)? & INODE_FLAGS != 0 {
        return Ok(true);
    }
    Ok(sys::fs_xattr(fd)?.xflags & XFS_FLAGS != 0)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the store. Each names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", crate::sys::shown(path))]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "store {store} is busy: another process{holder} holds its lock (a unify, gc or \
         restore, or a reader that keeps those out); wait for it to finish, then try again"
    )]
    Busy { store: PathBuf, holder: String },
    #[error(
        "store {store} was taken away or replaced while this command opened it (its \
         objects/ is gone or another directory now: a unify that had just made the store \
         refused its guests and removed it again?); nothing was done: run the command again"
    )]
    Replaced { store: PathBuf },
    #[error(
        "store {}: cannot read {}: {error}; a store is root's alone (unifs makes it mode \
         0700: objects keep guests' set-uid bits, the catalog names every guest path): run the \
         command as root",
        crate::sys::shown(store),
        path.as_deref().map_or("it".into(), crate::sys::shown)
    )]
    NotReadable {
        store: PathBuf,
        /// What in the store could not be read; none: the store itself.
        path: Option<PathBuf>,
        error: io::Error,
    },
    #[error(
        "{path} is not a unifs store (no objects/ directory); create one with \
         `unifs --store {path} store init`"
    )]
    NotAStore { path: PathBuf },
    #[error(
        "{path} is not a unifs store (no objects/ directory) and holds other files, so none \
         can be made there either: check --store (or UNIFS_STORE), which names the store's \
         own directory"
    )]
    NotAStoreNorEmpty { path: PathBuf },
    #[error(
        "store {path} is a symlink to {target}, which does not exist (the store moved, or its \
         filesystem is not mounted?); nothing was done. If the store moved, point the symlink \
         at it (`ln -sfn NEW_DIR {path}`) or name NEW_DIR with --store (or UNIFS_STORE); to \
         start a new store there, make {target} first"
    )]
    DanglingSymlink { path: PathBuf, target: PathBuf },
    #[error(
        "store {store}: cannot open its writer lock {path}: {error}; every command that \
         writes needs it, and restore (a store that cannot be written can still be read: \
         store verify, stats, ls, runs, snapshot, unify --dry-run, and restore from a \
         read-only filesystem){}",
        lock_hint(error.raw_os_error())
    )]
    Lock {
        store: PathBuf,
        path: PathBuf,
        error: io::Error,
    },
    #[error(
        "store {}: cannot create {}: {error}{}",
        crate::sys::shown(store),
        crate::sys::shown(path),
        crate::sys::refused_writes_hint(error.raw_os_error())
    )]
    Create {
        store: PathBuf,
        path: PathBuf,
        error: io::Error,
    },
    #[error(
        "store {path} has its catalog but no objects/ directory (deleted? or a filesystem \
         meant to be mounted there is not): the guests' files still link the objects. If it \
         is gone, make it again, `install -d -m 0700 {path}/objects`, then run `unifs --store \
         {path} store gc`: it gives each object a guest still links its name back (and drops \
         the others from the catalog); `unifs store verify` then checks them"
    )]
    ObjectsLost { path: PathBuf },
    #[error(
        "store {}: its filesystem has no extended attributes (trusted.*), which mark every \
         store object so that the mount breaks a shared file's link before a write (ramfs, \
         vfat and some network filesystems lack them); nothing was done: put the store and \
         the guests on a filesystem that has them (ext4, xfs, btrfs, tmpfs)",
        crate::sys::shown(store)
    )]
    NoXattrs { store: PathBuf },
    #[error(
        "store {path} is not a directory; --store (or UNIFS_STORE) names the store's directory"
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "store {path}: the directory is not empty and is not a unifs store (no objects/ \
         directory); a store is created only in a new or empty directory: name another \
         --store (or UNIFS_STORE)"
    )]
    NotEmpty { path: PathBuf },
    #[error(
        "store {store} holds objects but its catalog {catalog} is {state}: the catalog was \
         lost, and unifs will not start an empty one next to the objects. Copy your last \
         catalog snapshot (`unifs store snapshot`, see docs/backup.md) to {catalog}; unify \
         then finds objects added since by their markers. Without a snapshot, start an empty \
         catalog with `unifs --store {store} store init --new-catalog` (add --ignore-mtime if \
         the store was made with it: init tells from the objects and refuses the other mode) \
         and unify every guest again"
    )]
    CatalogLost {
        store: PathBuf,
        catalog: PathBuf,
        state: &'static str,
    },
    #[error(
        "store {store}: none of the {listed} object files its catalog {catalog} lists is in \
         {store}/objects, which holds other objects, and the catalog does not record this \
         objects/ directory: the catalog is another store's (copied in?), or objects/ is, or \
         it is this store's own from before the store was copied or restored from a backup \
         and every object it lists was removed since (by gc); nothing was done. Put back this \
         store's own catalog of a later time, if you have one, or move catalog.db* aside and \
         start an empty one (`unifs --store {store} store init --new-catalog`, then unify \
         every guest again: nothing is lost, the objects are found by their markers); see \
         docs/store-format.md"
    )]
    ForeignCatalog {
        store: PathBuf,
        catalog: PathBuf,
        listed: usize,
    },
    #[error(
        "{} is in a unifs mount, the copy-on-write view that `unifs mount` serves a guest, \
         not a guest's directory: name the guest's backing directory instead ({})",
        crate::sys::shown(path),
        crate::sys::shown(backing)
    )]
    InUnifsView { path: PathBuf, backing: PathBuf },
    /// [`Error::InUnifsView`] of a mount whose guest directory was moved
    /// away since it was mounted: the path its source names is another
    /// directory now, not the backing one.
    #[error("{}", moved_unifs_view(path, mount, guest))]
    MovedUnifsView {
        path: PathBuf,
        mount: PathBuf,
        guest: PathBuf,
    },
    /// [`Error::InUnifsView`] where the view is the path's own directory
    /// (a guest mounted over itself, `unifs mount G G`): naming the backing
    /// directory "instead" would name the same path.
    #[error("{}", unifs_mount_over(path, mount))]
    UnifsMountOver { path: PathBuf, mount: PathBuf },
    #[error(
        "{guest} is on another filesystem ({guest_mount}) than the store {store} \
         ({store_mount}); hardlinks cannot cross filesystems: put the store on {guest_mount}"
    )]
    CrossDevice {
        guest: PathBuf,
        guest_mount: PathBuf,
        store: PathBuf,
        store_mount: PathBuf,
    },
    #[error(
        "{guest} is in another btrfs subvolume ({guest_top}) than the store {store} \
         ({store_top}): a subvolume has a device number (st_dev) of its own, and hardlinks \
         cannot cross subvolumes; the store and its guests must be in one subvolume (make \
         the guests plain directories in the store's subvolume, not subvolumes of their own)"
    )]
    CrossSubvolume {
        guest: PathBuf,
        guest_top: PathBuf,
        store: PathBuf,
        store_top: PathBuf,
    },
    #[error(
        "guest {guest} is reached through another mount than the store {store}, though \
         of the same filesystem (a bind mount?); hardlinks cannot cross mounts: name \
         the guest by a path on the store's mount"
    )]
    CrossMount { guest: PathBuf, store: PathBuf },
}

pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}

/// What to do about a lock that cannot be opened: root's alone (EACCES:
/// another user, with read access to the store), or on a filesystem that
/// refuses writes.
fn lock_hint(raw: Option<i32>) -> &'static str {
    match raw {
        Some(libc::EACCES) => "; only root may take it: run the command as root",
        raw => crate::sys::refused_writes_hint(raw),
    }
}

impl Error {
    /// [`Error::NotReadable`] for `path` in the store `store`, or for the
    /// store's own directory where that is what this user cannot enter.
    fn not_readable(store: &Path, path: &Path, error: io::Error) -> Error {
        let enter = nix::unistd::access(store, nix::unistd::AccessFlags::X_OK);
        Error::NotReadable {
            store: store.to_path_buf(),
            path: (enter.is_ok() && path != store).then(|| path.to_path_buf()),
            error,
        }
    }
}

/// An opened store directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Objects are reached as `ab/cdef…` from this one fd (never a fd per
    /// fan-out directory: 256 of them would eat a low open-file limit).
    objects: Arc<OwnedFd>,
    /// `None` in a store that has none and where none can be made (a
    /// read-only backup copy): only writers need it.
    tmp: Option<OwnedFd>,
    dev: u64,
    /// The inode of `objects/`: another one than the catalog recorded means
    /// the store was restored (every object file is another inode).
    objects_ino: u64,
    /// Copies 1, 2, … of every object, listed once when first asked for
    /// (see [`Store::copies_past_gaps`]).
    higher_copies: OnceLock<std::collections::HashMap<ObjectId, Vec<u32>>>,
}

/// Makes `dir` (if missing) for root alone: objects keep the guests' set-uid
/// bits and file capabilities, and a host user who could enter the store
/// would run a guest's set-uid root program as root.
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        r => r,
    }
}

/// A mode [`Store::tighten_modes`] changed.
#[derive(Debug, Clone)]
pub struct ModeChange {
    pub path: PathBuf,
    pub old: u32,
    pub new: u32,
}

impl ModeChange {
    /// What was done and why, without the path.
    pub fn what(&self) -> String {
        format!(
            "mode {:04o} changed to {:04o}, as unifs makes it now (nothing in a store is for \
             other users: objects keep guests' set-uid bits, the catalog names every guest \
             path); an older unifs made it so, or a restore from a backup",
            self.old, self.new
        )
    }
}

impl std::fmt::Display for ModeChange {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {}", crate::sys::shown(&self.path), self.what())
    }
}

impl Store {
    /// Creates the layout (idempotent) and opens it. `objects/` comes last,
    /// so a store that [`Store::exists`] is complete even if creation was killed.
    pub fn create(root: &Path) -> Result<Store> {
        Store::check_new(root)?;
        let at = |path: &Path| {
            let (store, path) = (root.to_path_buf(), path.to_path_buf());
            move |error| Error::Create { store, path, error }
        };
        let made_dir = !root.exists();
        // Found (or made) here and gone now: taken away meanwhile, by the
        // unify that had just made the store and refused its guests
        // ([`Store::discard_new`], under the lock, which this process
        // takes only later). Not "cannot create STORE/tmp: No such file".
        let gone = |e: Error| match std::fs::symlink_metadata(root) {
            Err(gone) if gone.kind() == io::ErrorKind::NotFound => Error::Replaced {
                store: root.to_path_buf(),
            },
            _ => e,
        };
        std::fs::create_dir_all(root)
            .map_err(at(root))
            .map_err(gone)?;
        if let Err(e) = Store::check_xattrs_at(root) {
            if made_dir {
                let _ = std::fs::remove_dir(root);
            }
            return Err(e);
        }
        let layout = || {
            if !Store::exists(root) {
                // A new store is root's alone: its catalog and listings
                // name every guest path, its objects are guest files. (An
                // existing one keeps the mode its owner gave it.)
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                    .map_err(at(root))?;
            }
            let tmp = root.join("tmp");
            private_dir(&tmp).map_err(at(&tmp))?;
            let lock = root.join("lock");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&lock)
                .map_err(at(&lock))?;
            let objects = root.join("objects");
            private_dir(&objects).map_err(at(&objects))?;
            Store::open(root)
        };
        layout().map_err(gone)
    }

    /// Refuses a store directory on a filesystem without xattrs: every
    /// object's marker is one ([`MARKER_XATTR`]), and without it unify
    /// would fail file by file and the mount could not tell a shared file.
    /// A probe set on the directory and taken off again; only "not
    /// supported" refuses (another error is for the calls that need it).
    pub fn check_xattrs_at(root: &Path) -> Result<()> {
        // By path, not through an open: the store's directory is opened
        // only where its identity matters (the lock, objects/).
        let probe = OsStr::new("trusted.unifs.probe");
        match sys::xattr::set_path(root, probe, b"") {
            Ok(()) => {
                let _ = sys::xattr::remove_path(root, probe);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(Error::NoXattrs {
                store: root.to_path_buf(),
            }),
            Err(_) => Ok(()),
        }
    }

    /// Whether the store holds nothing yet: no catalog (or an empty file)
    /// and an empty `objects/`. Asked under the writer lock, it tells a
    /// store this process is making from one another has made meanwhile.
    pub fn is_unused(&self) -> Result<bool> {
        let catalog = self.catalog_path();
        match std::fs::metadata(&catalog) {
            Ok(m) if m.len() > 0 => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(catalog),
        }
        let objects = self.root.join("objects");
        Ok(std::fs::read_dir(&objects).at(&objects)?.next().is_none())
    }

    /// Takes away a store [`Store::create`] made for a run that then
    /// refused, without a trace: what a new store holds, and its
    /// directory when `made_dir`. Called with the writer lock held (and
    /// [`Store::is_unused`] true when it was taken), so that no other run
    /// can have made the store its own meanwhile. Best effort: a file it
    /// cannot remove (or that is not a new store's) stays; nothing at all
    /// when `objects/` holds anything.
    pub fn discard_new(self, made_dir: bool) {
        let root = self.root.clone();
        drop(self);
        let objects = root.join("objects");
        if !std::fs::read_dir(&objects).is_ok_and(|mut d| d.next().is_none()) {
            return;
        }
        for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm", "lock"] {
            let _ = std::fs::remove_file(root.join(name));
        }
        for name in ["tmp", "cache"] {
            let _ = std::fs::remove_dir_all(root.join(name));
        }
        // Only an empty objects/: a new store's has nothing yet.
        let _ = std::fs::remove_dir(root.join("objects"));
        if made_dir {
            let _ = std::fs::remove_dir(&root);
        }
    }

    /// Refuses to make a store at `root` unless it is one already, or
    /// `root` is missing, empty, or holds only what a [`Store::create`]
    /// killed early left (`tmp/`, `lock`): never a directory with other data.
    pub fn check_new(root: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Store::check_not_dangling(root)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(Error::NotADirectory {
                    path: root.to_path_buf(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                return Err(Error::not_readable(root, root, e))
            }
            Err(e) => return Err(e).at(root),
        };
        if Store::exists(root) {
            return Ok(());
        }
        Store::check_objects_there(root)?;
        for entry in entries {
            let name = entry.at(root)?.file_name();
            if name != "tmp" && name != "lock" {
                return Err(Error::NotEmpty {
                    path: root.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Whether `root` is a directory that is no store and that
    /// [`Store::check_new`] refuses: `store init` is no advice there.
    pub fn holds_other_files(root: &Path) -> bool {
        matches!(Store::check_new(root), Err(Error::NotEmpty { .. }))
    }

    /// Refuses a store whose catalog was lost: `catalog.db` missing or
    /// empty while `objects/` holds something. (A new store has an empty
    /// objects/ until its catalog exists.)
    pub fn check_catalog(&self) -> Result<()> {
        let catalog = self.catalog_path();
        let state = match std::fs::metadata(&catalog) {
            Ok(m) if m.len() > 0 => return Ok(()),
            Ok(_) => "empty",
            Err(e) if e.kind() == io::ErrorKind::NotFound => "missing",
            Err(e) => return Err(e).at(catalog),
        };
        let objects = self.root.join("objects");
        let mut listed = match std::fs::read_dir(&objects) {
            // Opened a moment ago: taken away since (see `Store::create`).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Replaced {
                    store: self.root.clone(),
                })
            }
            listed => listed.at(&objects)?,
        };
        if listed.next().is_none() {
            return Ok(());
        }
        Err(Error::CatalogLost {
            store: self.root.clone(),
            catalog,
            state,
        })
    }

    /// Opens an existing store.
    pub fn open(root: &Path) -> Result<Store> {
        let root = std::path::absolute(root).at(root)?;
        let objects_path = root.join("objects");
        let objects = match sys::open_dir(&objects_path) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                Store::check_objects_there(&root)?;
                if Store::holds_other_files(&root) {
                    return Err(Error::NotAStoreNorEmpty { path: root });
                }
                return Err(Error::NotAStore { path: root });
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && !root.is_dir() => {
                return Err(Error::NotADirectory { path: root });
            }
            // The store's root (0700) or objects/ as another user sees them.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                return Err(Error::not_readable(&root, &objects_path, e))
            }
            Err(e) => return Err(e).at(objects_path),
        };
        let tmp_path = root.join("tmp");
        // A store restored from a backup of objects/ alone has no tmp/ yet.
        let _ = private_dir(&tmp_path);
        let tmp = match sys::open_dir(&tmp_path) {
            Ok(fd) => Some(fd),
            // Only writers use tmp/, and they need root: a reader another
            // user was let into the store (a group given read access) has
            // no use for it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EACCES)) => None,
            Err(e) => return Err(e).at(tmp_path),
        };
        let objects_st = sys::fstat(objects.as_fd()).at(&objects_path)?;
        let (dev, objects_ino) = (objects_st.dev, objects_st.ino);
        Ok(Store {
            root,
            objects: Arc::new(objects),
            tmp,
            dev,
            objects_ino,
            higher_copies: OnceLock::new(),
        })
    }

    /// Refuses a store whose `objects/` is gone while its catalog is there
    /// ([`Error::ObjectsLost`]): not a new store to make, nor "no store".
    pub fn check_objects_there(root: &Path) -> Result<()> {
        Store::check_not_dangling(root)?;
        let catalog_there = std::fs::metadata(root.join("catalog.db")).is_ok_and(|m| m.len() > 0);
        if catalog_there && !Store::exists(root) {
            return Err(Error::ObjectsLost {
                path: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
            });
        }
        Ok(())
    }

    /// Refuses a store path that is a symlink to nothing
    /// ([`Error::DanglingSymlink`]): not a missing store to make there.
    pub fn check_not_dangling(root: &Path) -> Result<()> {
        let dangling = std::fs::symlink_metadata(root).is_ok_and(|m| m.is_symlink())
            && std::fs::metadata(root).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
        match dangling {
            true => Err(Error::DanglingSymlink {
                path: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
                target: std::fs::read_link(root).unwrap_or_default(),
            }),
            false => Ok(()),
        }
    }

    /// True when `root` looks like a store.
    pub fn exists(root: &Path) -> bool {
        root.join("objects").is_dir()
    }

    /// True when `dir` looks like a unifs store: it holds `objects/` and
    /// `catalog.db`. (A guest root never does: unify refuses guests that
    /// overlap its store.)
    pub fn looks_like_store(dir: &Path) -> bool {
        dir.join("objects").is_dir() && dir.join("catalog.db").is_file()
    }

    /// The nearest of `dir` and its ancestors that [looks like a
    /// store](Store::looks_like_store), if any.
    pub fn enclosing_store(dir: &Path) -> Option<PathBuf> {
        dir.ancestors()
            .find(|d| Store::looks_like_store(d))
            .map(Path::to_path_buf)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `tmp/`, where new objects are staged (and unify keeps its record of
    /// directory mtimes to put back, [`DIR_TIMES_PREFIX`]).
    pub fn tmp_dir(&self) -> Result<BorrowedFd<'_>> {
        match &self.tmp {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)).at(self.root.join("tmp")),
        }
    }

    /// `cache/` (made if missing), reached from `objects/`: in the store
    /// this was opened as, wherever it is now (a store moved during a run
    /// keeps its cache, and its old path gets none made).
    pub fn cache_dir(&self) -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let root = sys::open_at(self.objects.as_fd(), OsStr::new(".."), flags, 0)?;
        match sys::mkdir_at(root.as_fd(), OsStr::new("cache"), 0o700) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
            _ => {}
        }
        sys::open_at(root.as_fd(), OsStr::new("cache"), flags, 0)
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.root.join("catalog.db")
    }

    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// `objects/` as (device, inode), as text for the catalog's config.
    pub fn objects_identity(&self) -> String {
        format!("{}:{}", self.dev, self.objects_ino)
    }

    /// Takes from the store directory, `objects/`, `tmp/`, `cache/` and
    /// `catalog.db` any permission for group or others (the modes
    /// [`Store::create`] gives them): older builds made them 0755 and
    /// 0644. For writers, under the lock. Best effort: a mode that cannot
    /// be changed (a read-only filesystem) stays, unreported.
    pub fn tighten_modes(&self) -> Vec<ModeChange> {
        use std::os::unix::fs::PermissionsExt;
        let mut changed = Vec::new();
        let paths = [
            self.root.clone(),
            self.root.join("objects"),
            self.root.join("tmp"),
            self.root.join("cache"),
            self.catalog_path(),
        ];
        for path in paths {
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            let old = m.permissions().mode() & 0o7777;
            let new = old & 0o700;
            if new != old
                && std::fs::set_permissions(&path, std::fs::Permissions::from_mode(new)).is_ok()
            {
                changed.push(ModeChange { path, old, new });
            }
        }
        changed
    }

    /// The [`SERIAL_XATTR`] of `objects/`, if set.
    pub fn serial(&self) -> Option<String> {
        let v = sys::xattr::get_fd(self.objects.as_fd(), OsStr::new(SERIAL_XATTR)).ok()??;
        String::from_utf8(v).ok()
    }

    /// Sets a new [`SERIAL_XATTR`] on `objects/` and returns it; `None`
    /// where it cannot be set (then no catalog matches the store).
    pub fn set_new_serial(&self) -> Option<String> {
        // Unique enough: no two writers of a store share a pid and a time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let serial = format!("{:x}-{:x}", now.as_nanos(), std::process::id());
        sys::xattr::set_fd(
            self.objects.as_fd(),
            OsStr::new(SERIAL_XATTR),
            serial.as_bytes(),
        )
        .ok()?;
        Some(serial)
    }

    /// Takes the writer lock, failing at once with [`Error::Busy`] if held.
    pub fn lock_writer(&self) -> Result<WriterLock> {
        let lock = WriterLock::acquire(&self.root);
        if matches!(lock, Err(Error::Busy { .. })) {
            return lock;
        }
        // Opened before the lock was taken: a new store can have been
        // taken away since by the unify that made it (`discard_new`), and
        // this process would write into a directory no longer there.
        use std::os::unix::fs::MetadataExt;
        let objects = self.root.join("objects");
        match std::fs::symlink_metadata(&objects) {
            Ok(m) if (m.dev(), m.ino()) == (self.dev, self.objects_ino) => lock,
            _ => Err(Error::Replaced {
                store: self.root.clone(),
            }),
        }
    }

    /// Takes the lock shared (see [`WriterLock::acquire_shared`]), failing
    /// at once with [`Error::Busy`] while a writer holds it.
    pub fn lock_shared(&self) -> Result<Option<WriterLock>> {
        WriterLock::acquire_shared(&self.root)
    }

    /// Refuses a guest reached through another mount than the store's
    /// objects (a bind mount of the same filesystem): unify links across.
    pub fn check_same_mount(&self, guest: &Path, guest_fd: BorrowedFd) -> Result<()> {
        match (sys::mount_id(guest_fd), sys::mount_id(self.objects.as_fd())) {
            (Some(g), Some(s)) if g != s => Err(Error::CrossMount {
                guest: guest.to_path_buf(),
                store: self.root.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a guest on another filesystem than the store.
    pub fn check_same_fs(&self, guest: &Path, guest_dev: u64) -> Result<()> {
        if guest_dev == self.dev {
            return Ok(());
        }
        if let Some(backing) = crate::fs::unifs_view_backing(guest) {
            return Err(Error::in_unifs_view(guest.to_path_buf(), backing));
        }
        let real = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        Err(cross_device(guest, &self.root, &real))
    }

    /// `objects/ab/cdef…[.N]` relative to the store root.
    pub fn object_rel_path(id: &ObjectId, copy: u32) -> PathBuf {
        let (dir, name) = object_names(id, copy);
        Path::new("objects").join(dir).join(name)
    }

    pub fn object_path(&self, id: &ObjectId, copy: u32) -> PathBuf {
        self.root.join(Self::object_rel_path(id, copy))
    }

    /// `objects/` and the name of object copy `copy` of `id` beneath it
    /// (`ab/cdef…[.N]`), for linking it into a guest.
    pub fn object_link_source(&self, id: &ObjectId, copy: u32) -> (Arc<OwnedFd>, OsString) {
        (self.objects.clone(), object_name(id, copy))
    }

    /// Runs `op` on `objects/` and the name of copy `copy` of `id` beneath
    /// it. With `create`, a missing fan-out directory (ENOENT) is made and
    /// `op` run once more. The fan-out directories are the store's own
    /// (`objects/` is root's alone), so a name through one is safe.
    fn at_object<T>(
        &self,
        id: &ObjectId,
        copy: u32,
        create: bool,
        op: impl Fn(BorrowedFd, &OsStr) -> io::Result<T>,
    ) -> Result<T> {
        let name = object_name(id, copy);
        match op(self.objects.as_fd(), &name) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                self.make_fanout(id)?;
                op(self.objects.as_fd(), &name).at(self.object_path(id, copy))
            }
            r => r.at(self.object_path(id, copy)),
        }
    }

    fn make_fanout(&self, id: &ObjectId) -> Result<()> {
        let (dir, _) = object_names(id, 0);
        match sys::mkdir_at(self.objects.as_fd(), &dir, 0o755) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                Err(e).at(self.root.join("objects").join(&dir))
            }
            _ => Ok(()),
        }
    }

    /// Opens copy `copy` of `id` beneath `objects/`, never through a
    /// symlink; with the fd of no fan-out directory kept.
    pub fn open_object(&self, id: &ObjectId, copy: u32, flags: i32) -> Result<OwnedFd> {
        self.at_object(id, copy, false, |dir, name| {
            sys::open_beneath(dir, Path::new(name), flags)
        })
    }

    /// fsyncs the fan-out directory of `id` (a name was added to it).
    fn sync_fanout(&self, id: &ObjectId) -> io::Result<()> {
        let (dir, _) = object_names(id, 0);
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        sys::fsync(sys::open_at(self.objects.as_fd(), &dir, flags, 0)?.as_fd())
    }

    /// Stats object copy `copy` of `id`; `None` if it does not exist (nor
    /// its fan-out directory). Any other failure (EACCES, EIO) is an error.
    pub fn stat_object(&self, id: &ObjectId, copy: u32) -> Result<Option<sys::Stat>> {
        match self.at_object(id, copy, false, sys::stat_at) {
            Ok(st) => Ok(Some(st)),
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Store {
    /// Copy `copy` of `id`, opened without following a link: its path, fd,
    /// stat and marker value (if any).
    #[allow(clippy::type_complexity)]
    fn open_with_marker(
        &self,
        id: &ObjectId,
        copy: u32,
    ) -> Result<(PathBuf, OwnedFd, sys::Stat, Option<Vec<u8>>)> {
        let path = self.object_path(id, copy);
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOATIME;
        let fd = self.open_object(id, copy, flags)?;
        let st = sys::fstat(fd.as_fd()).at(&path)?;
        let marker = sys::xattr::get_fd(fd.as_fd(), OsStr::new(MARKER_XATTR)).at(&path)?;
        Ok((path, fd, st, marker))
    }

    /// Puts back the marker of copy `copy` of `id` where it is missing (the
    /// store copied without xattrs: `rsync -aH`, tar without `--xattrs`).
    /// Without it a mount takes the inode for a guest's own file and writes
    /// into it, for every guest linking it. Returns whether it did (with
    /// `dry_run`: whether it would).
    pub fn restore_marker(&self, id: &ObjectId, copy: u32, dry_run: bool) -> Result<bool> {
        let (path, fd, st, marker) = self.open_with_marker(id, copy)?;
        if !st.is_file() || marker.is_some() || dry_run {
            return Ok(st.is_file() && marker.is_none());
        }
        sys::xattr::set_fd(fd.as_fd(), OsStr::new(MARKER_XATTR), &marker_value(id)).at(&path)?;
        Ok(true)
    }

    /// Looks at up to `max` object files (the first few of the first few
    /// fan-out directories, as they are listed: a handful of directory
    /// reads, whatever the store's size) and returns how many it looked at
    /// and those without a marker. A store copied without xattrs has lost
    /// every one, and a mount would write into its objects: the mount asks
    /// this before it serves. (An object stripped alone is `store
    /// verify`'s to find.)
    pub fn sample_unmarked(&self, max: usize) -> Result<(usize, Vec<PathBuf>)> {
        const PER_DIR: usize = 2;
        let objects = self.root.join("objects");
        let (mut seen, mut unmarked) = (0, Vec::new());
        for fanout in std::fs::read_dir(&objects).at(&objects)? {
            let fanout = fanout.at(&objects)?;
            let dir_name = fanout.file_name();
            if dir_name.len() != 2 || !fanout.file_type().at(fanout.path())?.is_dir() {
                continue;
            }
            let dir = fanout.path();
            let mut taken = 0;
            for e in std::fs::read_dir(&dir).at(&dir)? {
                let e = e.at(&dir)?;
                let path = e.path();
                if parse_object_name(&dir_name, &e.file_name()).is_none()
                    || !e.file_type().at(&path)?.is_file()
                {
                    continue;
                }
                match sys::xattr::get_path(&path, OsStr::new(MARKER_XATTR)) {
                    Ok(Some(_)) => {}
                    Ok(None) => unmarked.push(path),
                    // Gone since listed (gc).
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e).at(path),
                }
                seen += 1;
                taken += 1;
                if seen == max {
                    return Ok((seen, unmarked));
                }
                if taken == PER_DIR {
                    break;
                }
            }
        }
        Ok((seen, unmarked))
    }

    /// Rewrites the marker of copy `copy` of `id` where it is there but
    /// wrong: malformed (a mount then takes the inode for a guest's own
    /// file, as with none) or naming another object. Only when the file
    /// hashes to `id`, so the right value is known. Returns whether it did
    /// (with `dry_run`: whether it would).
    pub fn rewrite_wrong_marker(
        &self,
        id: &ObjectId,
        copy: u32,
        ignore_mtime: bool,
        dry_run: bool,
    ) -> Result<bool> {
        let (path, fd, st, marker) = self.open_with_marker(id, copy)?;
        let wrong = marker.is_some_and(|v| parse_marker(&v) != Some(*id));
        if !st.is_file() || !wrong {
            return Ok(false);
        }
        let meta = ObjectMeta::of_fd(fd.as_fd(), &st, ignore_mtime).at(&path)?;
        let file = std::fs::File::from(fd);
        if id::hash_id(&meta, &file).at(&path)? != *id {
            return Ok(false);
        }
        if !dry_run {
            sys::xattr::set_fd(file.as_fd(), OsStr::new(MARKER_XATTR), &marker_value(id))
                .at(&path)?;
        }
        Ok(true)
    }

    /// The lowest copy of object `id` there is, if any: copy 0, but in a
    /// store with a gap (see [`Store::copies_past_gaps`]) a higher copy may be
    /// the only one (any copy will do: same content and metadata).
    pub fn first_copy(&self, id: &ObjectId) -> Result<Option<u32>> {
        if self.stat_object(id, 0)?.is_some() {
            return Ok(Some(0));
        }
        Ok(self.copies_past_gaps(id)?.into_iter().min())
    }

    /// The copies above 0 of object `id` there are. Copies are found by
    /// counting up from 0 (a stat each), which stops at a gap; the `store
    /// gc` of builds before 38a63d4 removed an unlinked copy while a higher
    /// one was linked, and stores it ran on keep such gaps. For what
    /// counting missed, `objects/` is listed once per process (only names
    /// with a copy number are kept: few): never once per file, as a
    /// restored store's guest files, each marked but another inode than
    /// the object, would ask.
    pub fn copies_past_gaps(&self, id: &ObjectId) -> Result<Vec<u32>> {
        if self.higher_copies.get().is_none() {
            let mut map = std::collections::HashMap::<ObjectId, Vec<u32>>::new();
            for f in self.list_objects()?.0.into_iter().filter(|f| f.copy > 0) {
                map.entry(f.id).or_default().push(f.copy);
            }
            let _ = self.higher_copies.set(map);
        }
        Ok(self
            .higher_copies
            .get()
            .and_then(|m| m.get(id))
            .cloned()
            .unwrap_or_default())
    }

    /// Which copy of object `id` is the inode (dev, ino), if any.
    pub fn find_copy(&self, id: &ObjectId, dev: u64, ino: u64) -> Result<Option<u32>> {
        let mut counted = 0;
        for copy in 0.. {
            match self.stat_object(id, copy)? {
                Some(st) if st.dev == dev && st.ino == ino => return Ok(Some(copy)),
                Some(_) => continue,
                None => {
                    counted = copy;
                    break;
                }
            }
        }
        // Past a gap an older gc left (rare: the marker said it is one).
        for copy in self
            .copies_past_gaps(id)?
            .into_iter()
            .filter(|&c| c > counted)
        {
            if let Some(st) = self.stat_object(id, copy)? {
                if (st.dev, st.ino) == (dev, ino) {
                    return Ok(Some(copy));
                }
            }
        }
        Ok(None)
    }
}

/// The fan-out directory name and the file name of an object copy.
pub fn object_names(id: &ObjectId, copy: u32) -> (OsString, OsString) {
    let hex = id.to_hex();
    let name = if copy == 0 {
        hex[2..].to_string()
    } else {
        format!("{}.{copy}", &hex[2..])
    };
    (OsString::from(&hex[..2]), OsString::from(name))
}

/// The name of an object copy relative to `objects/`: `ab/cdef…[.N]`.
pub fn object_name(id: &ObjectId, copy: u32) -> OsString {
    let (dir, name) = object_names(id, copy);
    let mut rel = dir;
    rel.push("/");
    rel.push(name);
    rel
}

/// Parses an object file name back into (id, copy), given its fan-out dir.
/// Only the names [`object_names`] gives are objects: `….01`, `….+1` or
/// upper-case digits would parse to a copy whose file is another name.
pub fn parse_object_name(dir: &OsStr, name: &OsStr) -> Option<(ObjectId, u32)> {
    let dir_text = dir.to_str()?;
    let text = name.to_str()?;
    let (rest, copy) = match text.split_once('.') {
        Some((rest, copy)) => (rest, copy.parse().ok()?),
        None => (text, 0),
    };
    let id: ObjectId = format!("{dir_text}{rest}").parse().ok()?;
    let (want_dir, want_name) = object_names(&id, copy);
    (want_dir == dir && want_name == name).then_some((id, copy))
}

/// Reads the store marker of an open file: `Some(id)` if it is (or was made
/// to be) a store object.
pub fn read_marker(fd: BorrowedFd) -> io::Result<Option<ObjectId>> {
    let value = sys::xattr::get_fd(fd, OsStr::new(MARKER_XATTR))?;
    Ok(value.as_deref().and_then(parse_marker))
}

/// The marker's value: the id's 32 bytes (small enough to stay inside an
/// ext4 inode, where 64 hex digits would take an extra block per object),
/// or, as stores made before 2026-11-30 have it, 64 hex digits.
pub fn marker_value(id: &ObjectId) -> [u8; 32] {
    id.0
}

/// The object a marker's value names; None for a malformed one.
pub fn parse_marker(v: &[u8]) -> Option<ObjectId> {
    match v.len() {
        32 => Some(ObjectId(v.try_into().ok()?)),
        64 => std::str::from_utf8(v).ok()?.parse().ok(),
        _ => None,
    }
}

/// Reads the store marker of a host path without following a symlink.
pub fn read_marker_path(path: &Path) -> io::Result<Option<ObjectId>> {
    let value = sys::xattr::get_path(path, OsStr::new(MARKER_XATTR))?;
    Ok(value.as_deref().and_then(parse_marker))
}

impl Error {
    /// `path` lies in a unifs mount, the view of the guest directory
    /// `backing` ([`crate::fs::unifs_view_backing`]).
    pub fn in_unifs_view(path: PathBuf, backing: PathBuf) -> Error {
        if let Some((mount, guest)) = crate::fs::unifs_view_moved(&path) {
            return Error::MovedUnifsView { path, mount, guest };
        }
        if path != backing {
            return Error::InUnifsView { path, backing };
        }
        let mount = crate::fs::holding_mount_point(&path).unwrap_or_else(|| path.clone());
        Error::UnifsMountOver { path, mount }
    }
}

fn moved_unifs_view(path: &Path, mount: &Path, guest: &Path) -> String {
    let what = if path == mount {
        format!("{} is a unifs mount", crate::sys::shown(path))
    } else {
        format!(
            "{} is in the unifs mount at {}",
            crate::sys::shown(path),
            crate::sys::shown(mount)
        )
    };
    format!(
        "{what}, the copy-on-write view that `unifs mount` serves a guest, not a guest's \
         directory; it serves the directory that was at {} when it was mounted, which was \
         moved or replaced since (the one there now is not served): name that directory \
         where it is now, or unmount {} (`unifs umount {}`) and mount the guest again",
        crate::sys::shown(guest),
        crate::sys::shown(mount),
        crate::sys::shown(mount)
    )
}

fn unifs_mount_over(path: &Path, mount: &Path) -> String {
    let what = if path == mount {
        format!("{} has a unifs mount over it", crate::sys::shown(path))
    } else {
        format!(
            "{} is under a unifs mount over {}",
            crate::sys::shown(path),
            crate::sys::shown(mount)
        )
    };
    format!(
        "{what}, which shows the guest's copy-on-write view, not its own files: unmount it \
         (`unifs umount {}`), and mount guests elsewhere (e.g. /run/unifs/NAME)",
        crate::sys::shown(mount)
    )
}

/// Why `guest` (on another device number than the store `store`) cannot be
/// linked to it; `store_at` is a path on the store's filesystem, symlinks
/// resolved (a store path that is a symlink names the guest's mount point
/// itself). Two btrfs subvolumes of one mount have device
/// numbers of their own but one mount: no other filesystem to put the
/// store on, as the other error would advise.
pub fn cross_device(guest: &Path, store: &Path, store_at: &Path) -> Error {
    let guest_top = mount_point_of(guest);
    let store_top = mount_point_of(store_at);
    let mount_of = |p: &Path| {
        sys::open_dir(p)
            .ok()
            .and_then(|fd| sys::mount_id(fd.as_fd()))
    };
    let one_mount = matches!((mount_of(guest), mount_of(&store_top)), (Some(g), Some(s)) if g == s);
    if one_mount {
        return Error::CrossSubvolume {
            guest: guest.to_path_buf(),
            guest_top,
            store: store.to_path_buf(),
            store_top,
        };
    }
    Error::CrossDevice {
        guest: guest.to_path_buf(),
        guest_mount: guest_top,
        store: store.to_path_buf(),
        store_mount: store_top,
    }
}

/// The mount point holding `path`, for error messages.
pub fn mount_point_of(path: &Path) -> PathBuf {
    let Ok(mut cur) = std::path::absolute(path) else {
        return path.to_path_buf();
    };
    let Ok(dev) = sys::lstat(&cur).map(|s| s.dev) else {
        return cur;
    };
    while let Some(parent) = cur.parent() {
        match sys::lstat(parent) {
            Ok(st) if st.dev == dev => cur = parent.to_path_buf(),
            _ => break,
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_read_raw_or_as_hex() {
        let id = ObjectId([0x5a; 32]);
        assert_eq!(parse_marker(&marker_value(&id)), Some(id));
        assert_eq!(parse_marker(id.to_hex().as_bytes()), Some(id));
        assert_eq!(parse_marker(b"not an id"), None);
        assert_eq!(parse_marker(&[0u8; 31]), None);
    }

    #[test]
    fn object_names_round_trip() {
        let id = ObjectId([0xab; 32]);
        let (dir, name) = object_names(&id, 0);
        assert_eq!(dir, "ab");
        assert_eq!(name.len(), 62);
        assert_eq!(parse_object_name(&dir, &name), Some((id, 0)));
        let (dir, name) = object_names(&id, 3);
        assert!(name.to_str().unwrap().ends_with(".3"));
        assert_eq!(parse_object_name(&dir, &name), Some((id, 3)));
        assert_eq!(parse_object_name(OsStr::new("ab"), OsStr::new("zz")), None);
    }

    #[test]
    fn only_canonical_object_names_parse() {
        let id = ObjectId([0xab; 32]);
        let (dir, name) = object_names(&id, 0);
        let name = name.to_str().unwrap();
        for bad in [".0", ".00", ".01", ".+1", ".02", ".1x", ".-1", "."] {
            let other = OsString::from(format!("{name}{bad}"));
            assert_eq!(parse_object_name(&dir, &other), None, "{bad}");
        }
        let upper = OsString::from(name.to_uppercase());
        assert_eq!(parse_object_name(&dir, &upper), None);
        assert_eq!(parse_object_name(OsStr::new("AB"), OsStr::new(name)), None);
    }
}
