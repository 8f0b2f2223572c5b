//! Rebuilding a guest from its manifest, the store's objects and a backup
//! copy of its private files. Nothing is written until everything the
//! manifest needs is known to be there; the tree is built in a staging
//! directory beside the target and renamed into place only when every file
//! verified against the manifest. A time the target filesystem cannot hold
//! (it stores another one, without an error) is reported, not fatal.

use super::flags;
use super::manifest::{self, from_hex, parse_time, Entry, ROOT};
use crate::store::object::Ingested;
use crate::store::{ObjectId, Store};
use crate::sys::{self, Timestamp};
use crate::words::{counted, word};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The length a guest path (relative to the guest) must stay under for
/// restore to rebuild it (PATH_MAX: restore works relative to the staging
/// tree and the --from directory, so TARGET's length does not count). Unify
/// and manifest leave a path of this many bytes or more alone, with a
/// warning: restore could not make it, and a guest could make unify's
/// catalog and caches, and manifests, grow with files × depth through such
/// paths.
pub const MAX_PATH: usize = libc::PATH_MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", sys::shown(path))]
    Io { path: PathBuf, source: io::Error },
    #[error("{} exists and is not empty; restore into a new directory", sys::shown(.0))]
    TargetExists(PathBuf),
    /// A target restore cannot put the tree in place of, or must not (a
    /// mount point, a symlink, a served guest's directory): what it is and
    /// what to do, nothing written.
    #[error("{0}")]
    Target(String),
    #[error(
        "the restored tree could not be put in place: renaming {} to {}: {source}; {}",
        sys::shown(.staging), sys::shown(.target), .left
    )]
    PutInPlace {
        staging: PathBuf,
        target: PathBuf,
        source: io::Error,
        /// What became of the staging tree.
        left: String,
    },
    #[error(
        "another restore into {} is running (it holds {}); nothing was written",
        sys::shown(.target), sys::shown(.lock)
    )]
    Busy { target: PathBuf, lock: PathBuf },
    #[error(
        "the manifest is damaged ({}); nothing was written:\n{}",
        counted(.0.len() as u64, "problem", "problems"), list(.0)
    )]
    Damaged(Vec<String>),
    #[error("{} of what the manifest needs is missing; nothing was written:\n{}", .0.len(), list(.0))]
    Missing(Vec<String>),
    /// Whether what the manifest needs is there could not be told (EMFILE,
    /// EACCES, EIO): not taken for missing.
    #[error(
        "cannot tell whether {what} (for {}) is there: {source}; nothing was written: fix \
         that and run this restore again",
        sys::shown(.file)
    )]
    Lookup {
        what: String,
        file: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{} of the manifest {} too long to restore, such as {}: a path in the guest must be \
         under {} bytes (`unifs manifest` leaves longer ones out); nothing was written",
        counted(*.count as u64, "path", "paths"), word(*.count as u64, "is", "are"),
        list(std::slice::from_ref(.first)).trim(), MAX_PATH
    )]
    TooLong { count: usize, first: String },
    #[error(
        "{} could not be restored (not written, or not as the manifest says); the partial \
         tree is left in {} (the next restore starts it over):\n{}",
        counted(.bad.len() as u64, "path", "paths"), sys::shown(.staging), list(.bad)
    )]
    Unverified { staging: PathBuf, bad: Vec<String> },
}

fn list(items: &[String]) -> String {
    // One line each, whatever the names in them (a guest's to choose).
    let line = |i: &String| format!("  {}\n", i.replace('\n', "\\n"));
    let mut s: String = items.iter().take(50).map(line).collect();
    if items.len() > 50 {
        s.push_str(&format!("  … and {} more\n", items.len() - 50));
    }
    s
}

trait At<T> {
    fn at(self, p: &Path) -> Result<T, Error>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, p: &Path) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            path: p.to_path_buf(),
            source,
        })
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub entries: u64,
    pub objects_linked: u64,
    pub objects_copied: u64,
    pub private_copied: u64,
    pub hardlinks: u64,
    /// Bytes of both kinds of copy: `object_bytes_copied` +
    /// `private_bytes_copied`.
    pub bytes_copied: u64,
    /// Bytes of the files copied from the store (`objects_copied`).
    pub object_bytes_copied: u64,
    /// Bytes of the private files copied (`private_copied`).
    pub private_bytes_copied: u64,
    /// Object copies (`.1`, …) started because every copy there was was at
    /// the link limit, as unify starts them.
    pub extra_copies: u64,
    /// Why an object at the link limit was copied into the guest rather
    /// than linked through a new copy (the first such reason), if one was.
    pub extra_copy_failed: Option<String>,
    pub skipped_sockets: u64,
    /// Times the target filesystem stored otherwise than the manifest has
    /// them; the tree is in place with the times it got.
    pub times_not_kept: Vec<TimeNotKept>,
    /// Objects whose content is not the manifest's blake3, though each
    /// hashes to its id (see [`check_object`]): restored from the object.
    pub blake3_not_the_objects: Vec<BadBlake3>,
}

/// An object the manifest gives a wrong blake3 ([`check_object`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadBlake3 {
    pub object: String,
    /// The manifest's blake3 of its files.
    pub manifest: String,
    /// Its content's.
    pub content: String,
}

/// A time the target filesystem did not keep as the manifest gives it: out
/// of its range (ext4 holds 1901 to 2446, to 2038 with 128-byte inodes) or
/// finer than its granularity. Times as a manifest writes them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimeNotKept {
    /// Relative to the guest root. (In JSON as every path there is: text,
    /// and `path_hex` where not UTF-8; until 2026-12-03 escaped as messages
    /// show names.)
    #[serde(flatten, serialize_with = "crate::sys::json_path")]
    pub path: PathBuf,
    /// `mtime` or `atime`.
    pub which: &'static str,
    pub wanted: String,
    pub got: String,
}

impl std::fmt::Display for TimeNotKept {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (wanted, got) = (parse_time(&self.wanted), parse_time(&self.got));
        let why = match (wanted, got) {
            (Some(w), Some(g)) if w.sec == g.sec => "finer than the target filesystem keeps",
            _ => {
                "outside the time range of the target filesystem, which stored the nearest it holds"
            }
        };
        let date = |t: Option<Timestamp>| t.map(utc_date).unwrap_or_default();
        write!(
            f,
            "{}: {} {} ({}) wanted, {} ({}) kept: {why}",
            crate::sys::shown(&self.path),
            self.which,
            self.wanted,
            date(wanted),
            self.got,
            date(got)
        )
    }
}

/// `t` as `YYYY-MM-DD hh:mm:ss UTC` (proleptic Gregorian; seconds only).
fn utc_date(t: Timestamp) -> String {
    let (days, secs) = (t.sec.div_euclid(86_400), t.sec.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days: eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// How a restore runs, beyond what it restores.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Treat an object copy as full at this many links (tests of the link
    /// limit; else EMLINK decides).
    pub link_max: Option<u64>,
}

/// Restores the guest described by `entries` into `target`.
pub fn restore(
    entries: &[Entry],
    store: &Store,
    private: &Path,
    target: &Path,
) -> Result<Report, Error> {
    restore_with(entries, store, private, target, &Options::default())
}

/// [`restore`] with `opts`.
pub fn restore_with(
    entries: &[Entry],
    store: &Store,
    private: &Path,
    target: &Path,
    opts: &Options,
) -> Result<Report, Error> {
    // Before anything is written (the lock file too); held to the end, so
    // that no mount of the target starts meanwhile.
    let _unserved = check_target(target)?;
    // Two restores into one target would empty each other's staging tree.
    let _lock = TargetLock::take(target)?;
    if target.exists() && fs::read_dir(target).at(target)?.next().is_some() {
        return Err(Error::TargetExists(target.to_path_buf()));
    }
    let damaged = check_paths(entries);
    if !damaged.is_empty() {
        return Err(Error::Damaged(damaged));
    }
    let staging = staging_path(target);
    if let Some((count, first)) = too_long(entries) {
        return Err(Error::TooLong { count, first });
    }
    // Private files are reached from this fd by their guest path: TARGET's
    // or --from's length does not count against PATH_MAX.
    // (Following a symlink at --from, as paths below it always did.)
    let private_dir = File::open(private)
        .ok()
        .filter(|d| d.metadata().is_ok_and(|m| m.is_dir()));
    let missing = preflight(entries, store, private, private_dir.as_ref())?;
    if !missing.is_empty() {
        return Err(Error::Missing(missing));
    }
    if staging.exists() {
        // A killed restore may have left immutable or append-only entries.
        clear_flags_below(&staging);
        fs::remove_dir_all(&staging).at(&staging)?;
    }
    fs::create_dir_all(&staging).at(&staging)?;
    let staging_dev = fs::metadata(&staging).at(&staging)?.dev();
    let link_objects = staging_dev == store.dev();
    let mut report = Report::default();
    let in_staging = WorkingDir::enter(&staging).at(&staging)?;
    let private_dir = private_dir.as_ref().map(|d| d.as_fd());
    let bad = build(
        entries,
        store,
        private,
        private_dir,
        link_objects,
        opts,
        &mut report,
    );
    in_staging.leave().at(&staging)?;
    if !bad.is_empty() {
        return Err(Error::Unverified { staging, bad });
    }
    // rename(2) replaces an empty directory at the target in one step: a
    // failure leaves the target as it was.
    if let Err(source) = fs::rename(&staging, target) {
        clear_flags_below(&staging);
        let left = match fs::remove_dir_all(&staging) {
            Ok(()) => format!(
                "{} was removed and {} left as it was: fix what stopped the rename, then \
                 run the restore again",
                crate::sys::shown(&staging),
                crate::sys::shown(target)
            ),
            Err(e) => format!(
                "the complete tree is left in {} (removing it failed: {e}); it links store \
                 objects, which `store gc` cannot free while it is there: move it into place \
                 yourself, or run the restore again once the rename can work (it starts it \
                 over)",
                crate::sys::shown(&staging)
            ),
        };
        return Err(Error::PutInPlace {
            staging,
            target: target.to_path_buf(),
            source,
            left,
        });
    }
    let root = entries.iter().find(|e| e.rel_path() == Path::new(ROOT));
    if let Some(bits) = root.and_then(|e| wanted_flags(e, link_objects)) {
        flags::apply(target, bits).at(target)?;
    }
    // The rename that put the tree in place, on disk when the restore
    // says it is done. Its files are (each copy is fsynced, and a journal
    // commits in order), but without this a power cut after it left the
    // target missing, the tree still under its staging name.
    let parent = sys::parent_dir(target);
    sys::sync_dir(parent).at(parent)?;
    Ok(report)
}

/// Builds the tree in the working directory, the staging tree (every path
/// relative to it, so that a path of the guest under PATH_MAX can be made
/// whatever the length of TARGET): every entry, then directory metadata,
/// then inode flags. Returns what could not be restored.
fn build(
    entries: &[Entry],
    store: &Store,
    private: &Path,
    private_dir: Option<BorrowedFd>,
    link_objects: bool,
    opts: &Options,
    report: &mut Report,
) -> Vec<String> {
    let mut links = Links::new(store, opts.link_max);
    let mut bad = Vec::new();
    for e in entries {
        report.entries += 1;
        let dest = e.rel_path();
        let result = match e.kind.as_str() {
            "dir" if dest == Path::new(ROOT) => Ok(()),
            "dir" => fs::create_dir(&dest)
                .and_then(|_| fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))),
            // A later path of one of the guest's hardlink groups, of any type
            // (a socket is not restored): linked to its first path, made
            // before it with the inode's metadata (link() changes only its
            // ctime). Its inode flags come last, as every path's.
            _ if e.kind != "socket" && e.link_path().is_some() => {
                let first = e.link_path().unwrap_or_default();
                fs::hard_link(first, &dest).map(|()| report.hardlinks += 1)
            }
            "file" => restore_file(
                e,
                &mut links,
                (private, private_dir),
                &dest,
                link_objects,
                report,
            ),
            "symlink" => match e.target_path() {
                Some(t) => std::os::unix::fs::symlink(t, &dest)
                    .and_then(|_| apply_meta(e, &dest, &mut report.times_not_kept)),
                None => Err(io::Error::other("symlink without a target")),
            },
            "char" | "block" | "fifo" => {
                let ty = match e.kind.as_str() {
                    "char" => libc::S_IFCHR,
                    "block" => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                sys::mknod(
                    &dest,
                    ty | e.mode,
                    e.rdev_major.unwrap_or(0),
                    e.rdev_minor.unwrap_or(0),
                )
                .and_then(|_| apply_meta(e, &dest, &mut report.times_not_kept))
            }
            _ => {
                // A socket belongs to a running process; nothing to restore.
                report.skipped_sockets += 1;
                Ok(())
            }
        };
        if let Err(err) = result {
            bad.push(format!("{}: {err}", crate::sys::shown(&dest)));
        }
    }
    // Directory metadata last, deepest first, so creating entries in them
    // did not change their times and read-only modes did not get in the way.
    for e in entries.iter().rev().filter(|e| e.kind == "dir") {
        let dest = e.rel_path();
        if let Err(err) = apply_meta(e, &dest, &mut report.times_not_kept) {
            bad.push(format!("{}: {err}", crate::sys::shown(&e.rel_path())));
        }
    }
    // Inode flags last, entries before their directory: nothing can be
    // written into an immutable or append-only one (nor linked to an
    // immutable file). The root's after the rename: such a directory
    // cannot be renamed. Exactly the manifest's: none where it names none
    // (a new file takes some from its directory on ext4: `d`, `A`, …).
    let flagged: Vec<(&Entry, u32)> = entries
        .iter()
        .rev()
        .filter_map(|e| wanted_flags(e, link_objects).map(|f| (e, f)))
        .collect();
    if bad.is_empty() {
        for (e, bits) in flagged
            .iter()
            .filter(|(e, _)| e.rel_path() != Path::new(ROOT))
        {
            if let Err(err) = flags::apply(&e.rel_path(), *bits) {
                let letters = flags::to_letters(*bits).unwrap_or_default();
                bad.push(format!(
                    "{}: inode flags {letters:?}: {err}{}",
                    crate::sys::shown(&e.rel_path()),
                    unsupported_hint(&err)
                ));
            }
        }
        if !bad.is_empty() {
            // So that the next restore can remove the partial tree.
            for (e, _) in &flagged {
                let _ = flags::apply(&e.rel_path(), 0);
            }
        }
    }
    bad
}

/// The process's working directory moved into a directory until `leave`
/// (or drop): a path relative to it can be up to PATH_MAX long however long
/// the directory's own path is. Nothing else may resolve a relative path
/// meanwhile: the restore is the only work of its process (the CLI's).
struct WorkingDir {
    back: Option<File>,
}

impl WorkingDir {
    fn enter(dir: &Path) -> io::Result<WorkingDir> {
        let back = File::open(".")?;
        nix::unistd::chdir(dir)?;
        Ok(WorkingDir { back: Some(back) })
    }

    fn leave(mut self) -> io::Result<()> {
        match self.back.take() {
            Some(back) => Ok(nix::unistd::fchdir(back)?),
            None => Ok(()),
        }
    }
}

impl Drop for WorkingDir {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            let _ = nix::unistd::fchdir(back);
        }
    }
}

/// Refuses, before anything is written, a target the tree cannot be renamed
/// onto, or must not be: a symlink (the rename would replace it, not fill
/// the directory it leads to), anything but a directory, a mount point (it
/// cannot be replaced: EBUSY), and the directory a unifs mount serves, or
/// one inside it (the daemon would go on serving the directory the rename
/// replaced, deleted: the guest would see an empty root and every create
/// fail). Returns the shared flocks that keep a mount of the target, or of
/// a directory around it, from starting while the restore runs.
fn check_target(target: &Path) -> Result<Vec<std::os::fd::OwnedFd>, Error> {
    let shown = crate::sys::shown(target);
    let nothing = "nothing was written";
    crate::fs::refuse_stalled(target).at(target)?;
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) if crate::fs::daemon_gone_error(&e) => {
            return Err(Error::Target(format!(
                "{shown} is a FUSE mount whose daemon is gone (killed?); unmount it first \
                 (`unifs umount {shown}`) ({nothing})"
            )))
        }
        Err(e) => return Err(e).at(target),
    };
    if let Some(m) = &meta {
        if m.file_type().is_symlink() {
            let points = fs::read_link(target).at(target)?;
            let what = match fs::canonicalize(target) {
                Ok(real) => format!(
                    "name the directory it leads to instead (`unifs restore … {}`)",
                    crate::sys::shown(&real)
                ),
                Err(e) => format!(
                    "it leads to nothing usable ({e}): name the directory the guest goes in"
                ),
            };
            return Err(Error::Target(format!(
                "{shown} is a symlink (to {}): restore puts the tree it rebuilds in place with \
                 a rename, which would replace the symlink rather than fill the directory it \
                 leads to; {what} ({nothing})",
                crate::sys::shown(&points)
            )));
        }
        if !m.is_dir() {
            return Err(Error::Target(format!(
                "{shown} exists and is not a directory; restore into a new directory ({nothing})"
            )));
        }
        if let Some((fstype, source)) = mount_point(target) {
            if let Some(guest) = source.strip_prefix("unifs:") {
                return Err(Error::Target(format!(
                    "{shown} is a unifs mount (of the guest directory {guest}): restore \
                     rebuilds a guest's own directory, never through a mount of it; stop the \
                     guest or unmount it (`unifs umount {shown}`), then restore into the guest's \
                     directory ({nothing})"
                )));
            }
            return Err(Error::Target(format!(
                "{shown} is a mount point ({fstype} {source}): restore puts the tree it \
                 rebuilds in place with a rename, and a mount point cannot be replaced \
                 ({nothing}); restore into a new directory inside it (`unifs restore … \
                 {shown}/NAME`) and make that the guest's directory, or unmount it and restore \
                 into the directory beneath (store objects are linked into a guest on the \
                 store's filesystem, copied onto any other)"
            )));
        }
    }
    // The target, else the nearest directory above it that exists.
    let mut dir = target.to_path_buf();
    if meta.is_none() {
        dir = target
            .ancestors()
            .skip(1)
            .map(|a| {
                if a.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    a
                }
            })
            .find(|a| a.is_dir())
            .unwrap_or(Path::new("/"))
            .to_path_buf();
    }
    let served = match crate::fs::hold_unserved(&dir).at(&dir)? {
        Ok(held) => return Ok(held),
        Err(served) => served,
    };
    let mut daemon = match served.pid {
        Some(pid) => format!("its daemon: pid {pid}"),
        None => "its daemon holds the guest root's flock".to_string(),
    };
    if !served.mount_points.is_empty() {
        let at: Vec<String> = served
            .mount_points
            .iter()
            .map(|p| crate::sys::shown(p))
            .collect();
        daemon.push_str(&format!(", mounted at {}", at.join(", ")));
    }
    let what = "stop the guest (`unifs guest stop`) or unmount it (`unifs umount MOUNTPOINT`) \
                first";
    let itself = fs::canonicalize(target).is_ok_and(|t| t == served.guest);
    Err(Error::Target(if itself {
        format!(
            "{shown} is served by a unifs mount ({daemon}): the restored tree would replace \
             the directory the daemon serves, and the guest would be left on a deleted, empty \
             root; {what} ({nothing})"
        )
    } else {
        format!(
            "{shown} is inside {}, which is served by a unifs mount ({daemon}): the daemon \
             must be its tree's only writer; {what}, or restore elsewhere ({nothing})",
            crate::sys::shown(&served.guest)
        )
    }))
}

/// (filesystem type, source) of the mount at the directory `dir`, when it is
/// a mount point: listed in /proc/self/mountinfo, or (where that cannot be
/// read) on another device or mount than its parent.
fn mount_point(dir: &Path) -> Option<(String, String)> {
    if let Ok(Some(m)) = crate::fs::mount_at(dir) {
        // A unifs source as it names its guest (decoded), for the message.
        let source = match m.unifs_guest() {
            Some(guest) => format!("unifs:{}", sys::shown(&guest)),
            None => m.source.to_string_lossy().into_owned(),
        };
        return Some((m.fstype, source));
    }
    let real = fs::canonicalize(dir).ok()?;
    let parent = real.parent()?;
    let (a, b) = (sys::open_dir(&real).ok()?, sys::open_dir(parent).ok()?);
    let (sa, sb) = (fs::metadata(&real).ok()?, fs::metadata(parent).ok()?);
    let other_mount = sys::mount_id(a.as_fd()) != sys::mount_id(b.as_fd());
    (sa.dev() != sb.dev() || other_mount).then(|| ("a filesystem".into(), "mounted".into()))
}

/// The inode flags to give the path of `e`: a file's own or a directory's
/// (a guest hardlink shares its first path's); none for a store object
/// linked in, which is every guest's and has none.
fn wanted_flags(e: &Entry, link_objects: bool) -> Option<u32> {
    let own = e.kind == "dir" || (e.kind == "file" && e.link_path().is_none());
    let bits = match e.flags.as_deref() {
        Some(letters) => flags::from_letters(letters)?,
        None if link_objects && e.object.is_some() => return None,
        None => 0,
    };
    own.then_some(bits)
}

/// Takes the kept inode flags off everything in `dir` (not following
/// symlinks), so that it can be removed.
fn clear_flags_below(dir: &Path) {
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        let t = entry.file_type();
        if t.is_dir() || t.is_file() {
            let _ = flags::apply(entry.path(), 0);
        }
    }
}

fn staging_path(target: &Path) -> PathBuf {
    beside(target, ".unifs-restore")
}

/// `TARGET` + `suffix`, a sibling of the target. A target name too long to
/// take the suffix (names end at 255 bytes) is cut and given 16 hex digits
/// of its hash instead: still one name per target, so a later restore finds
/// what an earlier one left.
fn beside(target: &Path, suffix: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let base = target.file_name().unwrap_or_default().as_bytes();
    let mut name = base.to_vec();
    if base.len() + suffix.len() > NAME_MAX {
        let hash = blake3::hash(base).to_hex();
        name.truncate(NAME_MAX - suffix.len() - 17);
        name.push(b'~');
        name.extend_from_slice(&hash.as_bytes()[..16]);
    }
    name.extend_from_slice(suffix.as_bytes());
    target.with_file_name(std::ffi::OsStr::from_bytes(&name))
}

/// The longest name a directory entry can have (Linux filesystems).
const NAME_MAX: usize = 255;

/// An exclusive flock on `TARGET.unifs-restore.lock`, taken without
/// waiting; the file is removed while still locked, on drop (and the
/// kernel releases the lock of a killed restore).
struct TargetLock {
    path: PathBuf,
    _file: nix::fcntl::Flock<File>,
}

impl TargetLock {
    fn take(target: &Path) -> Result<TargetLock, Error> {
        use nix::fcntl::{Flock, FlockArg};
        let path = beside(target, ".unifs-restore.lock");
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).at(parent)?;
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = sys::open_dir(dir.unwrap_or(Path::new("."))).at(&path)?;
        let name = path.file_name().unwrap_or_default();
        loop {
            let file = File::from(Self::open(dir.as_fd(), name).at(&path)?);
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(Error::Busy {
                        target: target.to_path_buf(),
                        lock: path,
                    })
                }
                Err((_, e)) => return Err(io::Error::from(e)).at(&path),
            };
            // The holder before us removed the file as it ended: ours
            // counts only if it is still the one at `path`.
            let ours = file.metadata().at(&path)?;
            match fs::symlink_metadata(&path) {
                Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => {
                    return Ok(TargetLock { path, _file: file })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&path),
            }
        }
    }
}

impl TargetLock {
    /// The lock file `name` of `dir`, made if missing. A name that is
    /// there is looked at first (`O_PATH`) and opened only if it is a
    /// regular file (read-only is enough for `flock`): the target's
    /// directory may be a guest's, whose root can put a device node there
    /// (whose open acts, a watchdog arms) or a symlink (that would make the
    /// file elsewhere).
    fn open(dir: BorrowedFd, name: &OsStr) -> io::Result<std::os::fd::OwnedFd> {
        loop {
            match sys::look_at(dir, name, libc::O_RDONLY) {
                Ok((_, Some(fd))) => return Ok(fd),
                Ok(_) => return Err(io::Error::other(format!("{}; remove it", sys::NotRegular))),
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
                Err(_) => {}
            }
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            match sys::open_at(dir, name, flags, 0o600) {
                // Made by another restore since the look: look again.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                r => return r,
            }
        }
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Before the flock goes with `_file`: see `take`.
        let _ = fs::remove_file(&self.path);
    }
}

/// What makes a manifest impossible or unsafe to follow: a path that is not
/// plain and relative (`..`, absolute), one whose parent is not a directory
/// the manifest restores before it (a symlink, say: nothing may be written
/// through one), a path twice, an unknown type, a hardlink to anything but
/// an earlier path of the guest's own of the same type, or of a directory.
/// `unifs manifest` writes none of these.
fn check_paths(entries: &[Entry]) -> Vec<String> {
    let mut dirs: HashSet<PathBuf> = HashSet::from([PathBuf::new()]);
    let mut seen = HashSet::new();
    // First paths of hardlink groups, with their type.
    let mut leaders = std::collections::HashMap::new();
    let mut bad = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let rel = e.rel_path();
        let shown = crate::sys::shown(&rel);
        if !["file", "dir", "symlink", "char", "block", "fifo", "socket"].contains(&e.kind.as_str())
        {
            bad.push(format!("{shown}: unknown type {:?}", e.kind));
            continue;
        }
        if let Some(why) = bad_field(e) {
            bad.push(format!("{shown}: {why}"));
            continue;
        }
        if let Some(f) = &e.flags {
            if flags::from_letters(f).is_none() || !["file", "dir"].contains(&e.kind.as_str()) {
                bad.push(format!("{shown}: inode flags {f:?} on a {}", e.kind));
                continue;
            }
        }
        if rel == Path::new(ROOT) {
            if i != 0 || e.kind != "dir" {
                bad.push(format!(
                    "{shown}: the root's entry must be the first, a dir"
                ));
            }
            continue;
        }
        let plain = !rel.as_os_str().is_empty()
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            bad.push(format!("{shown}: not a relative path inside the guest"));
            continue;
        }
        let rel: PathBuf = rel.components().collect();
        let parent = rel.parent().unwrap_or(Path::new(""));
        if !dirs.contains(parent) {
            bad.push(format!(
                "{shown}: its parent is not a directory the manifest restores before it"
            ));
            continue;
        }
        if !seen.insert(rel.clone()) {
            bad.push(format!("{shown}: listed twice"));
            continue;
        }
        match (e.kind.as_str(), e.link_path()) {
            ("dir", None) => {
                dirs.insert(rel);
            }
            ("dir", Some(l)) => bad.push(format!(
                "{shown}: a directory cannot be a hardlink (of {})",
                crate::sys::shown(&l)
            )),
            (kind, Some(l)) => {
                let l: PathBuf = l.components().collect();
                if leaders.get(&l) != Some(&kind) {
                    bad.push(format!(
                        "{shown}: its hardlink {} is not an earlier {kind} of the guest",
                        crate::sys::shown(&l)
                    ))
                }
            }
            (kind, None) => {
                leaders.insert(rel, kind);
            }
        }
    }
    bad
}

/// What of `e` no restore could follow, or only by guessing: a `*_hex`
/// field that is not hex (its path read as empty), a NUL in a path, a
/// target or an xattr name (no system call takes one), an xattr value not
/// hex, a time not as `unifs manifest` writes it. Refused before anything
/// is written, not halfway through the build.
fn bad_field(e: &Entry) -> Option<String> {
    let hex = [
        ("path_hex", &e.path_hex),
        ("target_hex", &e.target_hex),
        ("link_hex", &e.link_hex),
    ];
    if let Some((field, _)) = hex
        .iter()
        .find(|(_, h)| h.as_deref().is_some_and(|h| from_hex(h).is_none()))
    {
        return Some(format!("{field} is not hex"));
    }
    let paths = [
        ("path", Some(e.rel_path())),
        ("target", e.target_path()),
        ("link", e.link_path()),
    ];
    for (field, p) in paths {
        if p.is_some_and(|p| p.as_os_str().as_bytes().contains(&0)) {
            return Some(format!("its {field} holds a NUL byte"));
        }
    }
    for (name, value) in &e.xattrs {
        if name.is_empty() || name.contains('\0') || from_hex(value).is_none() {
            return Some(format!(
                "bad xattr {name:?} (a name without NUL, a hex value)"
            ));
        }
    }
    for (field, t) in [("mtime", &e.mtime), ("atime", &e.atime)] {
        if parse_time(t).is_none() {
            return Some(format!(
                "bad {field} {t:?} (SECONDS.NANOSECONDS, NANOSECONDS 9 digits)"
            ));
        }
    }
    None
}

/// How many of the manifest's paths are too long for one call relative to
/// the staging tree or --from (PATH_MAX; `unifs manifest` writes none such,
/// an edited manifest may), and the first; `None` when none is.
fn too_long(entries: &[Entry]) -> Option<(usize, String)> {
    let mut long = entries
        .iter()
        .map(|e| e.rel_path())
        .filter(|r| r.as_os_str().len() >= MAX_PATH);
    let first = sys::shown(&long.next()?);
    Some((1 + long.count(), first))
}

/// Everything the manifest needs that is not there; an error where that
/// cannot be told (a lookup failed for another reason than "not found").
fn preflight(
    entries: &[Entry],
    store: &Store,
    private: &Path,
    private_dir: Option<&File>,
) -> Result<Vec<String>, Error> {
    let mut missing = Vec::new();
    let mut private_missing = 0;
    for e in entries.iter().filter(|e| e.kind == "file") {
        let rel = e.rel_path();
        if let Some(obj) = &e.object {
            match obj.parse::<ObjectId>() {
                Ok(id) => match store.first_copy(&id) {
                    Ok(Some(_)) => {}
                    Err(e) => {
                        return Err(Error::Lookup {
                            what: format!("object {obj} of the store {}", sys::shown(store.root())),
                            file: rel,
                            source: e.into(),
                        })
                    }
                    Ok(None) => missing.push(format!(
                        "object {obj} (for {}) is not in the store {}",
                        crate::sys::shown(&rel),
                        crate::sys::shown(store.root())
                    )),
                },
                Err(_) => missing.push(format!(
                    "{}: bad object id {obj:?}",
                    crate::sys::shown(&rel)
                )),
            }
        } else if e.link_path().is_none() {
            let src = private.join(&rel);
            let there = private_dir.map(|d| sys::stat_at(d.as_fd(), rel.as_os_str()));
            match there {
                Some(Ok(st)) if st.mode & libc::S_IFMT == libc::S_IFREG => {}
                Some(Err(e)) if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    return Err(Error::Lookup {
                        what: format!("private file {}", sys::shown(&src)),
                        file: rel,
                        source: e.into(),
                    })
                }
                _ => {
                    private_missing += 1;
                    missing.push(format!(
                        "private file {} is not in the backup",
                        crate::sys::shown(&src)
                    ))
                }
            }
        }
    }
    // A mistyped --from: say that once, not once for each file.
    if private_missing > 0 && !private.is_dir() {
        missing.retain(|m| !m.starts_with("private file "));
        missing.insert(
            0,
            format!(
                "--from {} is not a directory: the {} the manifest needs {} looked for \
                 there; name the directory the guest's private files were extracted to",
                crate::sys::shown(private),
                counted(private_missing as u64, "private file", "private files"),
                word(private_missing as u64, "is", "are"),
            ),
        );
    }
    Ok(missing)
}

fn restore_file(
    e: &Entry,
    links: &mut Links,
    (private, private_dir): (&Path, Option<BorrowedFd>),
    dest: &Path,
    link_objects: bool,
    report: &mut Report,
) -> io::Result<()> {
    if let Some(id) = e.object_id() {
        let store = links.store;
        let copy = links.source_copy(&id)?;
        let src = store.object_path(&id, copy);
        let checked = (id, copy, e.blake3.clone(), e.size);
        if !links.checked.contains(&checked) {
            check_object(e, &id, &src, store.root(), report)?;
            links.checked.insert(checked);
        }
        // Flags on a store object would be every guest's: copy it.
        let link = link_objects && e.flags.is_none();
        if link && links.link(&id, copy, dest, report)? {
            check_meta(e, dest)?;
            report.objects_linked += 1;
            return Ok(());
        }
        copy_with_meta(e, &File::open(&src)?, dest, &mut report.times_not_kept)?;
        report.objects_copied += 1;
        report.bytes_copied += e.size.unwrap_or(0);
        report.object_bytes_copied += e.size.unwrap_or(0);
        return Ok(());
    }
    // By its guest path from --from's fd (preflight saw it there).
    let dir = private_dir.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let src = File::from(sys::open_at(dir, e.rel_path().as_os_str(), flags, 0)?);
    if !src.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file in --from"));
    }
    check_digest(e, manifest::hash_file(&src)?, &private.join(e.rel_path()))?;
    copy_with_meta(e, &src, dest, &mut report.times_not_kept)?;
    report.private_copied += 1;
    report.bytes_copied += e.size.unwrap_or(0);
    report.private_bytes_copied += e.size.unwrap_or(0);
    Ok(())
}

/// Linking objects into the restored guest, and what it learned of each
/// object's copies: files of one object link the copy that took the last
/// one, so that each does not try every full copy first (an object linked
/// 200,000 times has three full copies).
struct Links<'a> {
    store: &'a Store,
    link_max: Option<u64>,
    /// Per object, the copy to link next (`None`: none can be linked, it is
    /// copied).
    room: std::collections::HashMap<ObjectId, Option<u32>>,
    /// link() failed with EXDEV: the store is reached through another
    /// mount (a bind mount); every object is copied.
    cross_mount: bool,
    /// Object copies found to hold what an entry says (id, copy, blake3,
    /// size): an object 65,000 files link is read once, not 65,000 times.
    checked: std::collections::HashSet<(ObjectId, u32, Option<String>, Option<u64>)>,
}

impl<'a> Links<'a> {
    fn new(store: &'a Store, link_max: Option<u64>) -> Links<'a> {
        Links {
            store,
            link_max,
            room: Default::default(),
            cross_mount: false,
            checked: Default::default(),
        }
    }

    /// The copy of `id` to read from: the one linked last, else the first
    /// there is.
    fn source_copy(&self, id: &ObjectId) -> io::Result<u32> {
        if let Some(Some(copy)) = self.room.get(id) {
            return Ok(*copy);
        }
        let first = self.store.first_copy(id).map_err(io::Error::other)?;
        Ok(first.unwrap_or(0))
    }

    /// Links `dest` to object `id`: to the copy the last file of `id` was
    /// linked to (else `copy`), or, where that one is full (EMLINK), to the
    /// next, starting it if there is none yet, as unify does. `Ok(false)`
    /// when the object is to be copied instead: no new copy could be made
    /// (the reason goes into `report`), or the store is reached through
    /// another mount of the target's filesystem (a bind mount: link()
    /// cannot cross mounts, EXDEV), as onto another filesystem.
    fn link(
        &mut self,
        id: &ObjectId,
        copy: u32,
        dest: &Path,
        report: &mut Report,
    ) -> io::Result<bool> {
        if self.cross_mount {
            return Ok(false);
        }
        let mut copy = match self.room.get(id) {
            Some(None) => return Ok(false),
            Some(Some(c)) => *c,
            None => copy,
        };
        loop {
            match self.link_once(id, copy, dest) {
                Ok(()) => {
                    self.room.insert(*id, Some(copy));
                    return Ok(true);
                }
                Err(err) if err.raw_os_error() == Some(libc::EMLINK) => {
                    let next = copy + 1;
                    let there = self
                        .store
                        .stat_object(id, next)
                        .map_err(io::Error::other)?
                        .is_some();
                    if !there {
                        match self.store.new_copy_in_its_mode(id, copy, next) {
                            Ok(Ingested::Linked { .. }) => report.extra_copies += 1,
                            // Another restore started it meanwhile.
                            Ok(Ingested::Exists { .. }) => {}
                            Err(err) => {
                                report.extra_copy_failed.get_or_insert_with(|| {
                                    format!(
                                        "{}: {err}",
                                        crate::sys::shown(&self.store.object_path(id, next))
                                    )
                                });
                                self.room.insert(*id, None);
                                return Ok(false);
                            }
                        }
                    }
                    copy = next;
                }
                Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {
                    self.cross_mount = true;
                    return Ok(false);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One link() of copy `copy` of `id` to `dest`; EMLINK also where the
    /// copy has `link_max` links (tests).
    fn link_once(&self, id: &ObjectId, copy: u32, dest: &Path) -> io::Result<()> {
        if let Some(max) = self.link_max {
            let st = self.store.stat_object(id, copy).map_err(io::Error::other)?;
            if st.is_some_and(|st| st.nlink >= max) {
                return Err(io::Error::from_raw_os_error(libc::EMLINK));
            }
        }
        fs::hard_link(self.store.object_path(id, copy), dest)
    }
}

/// An object whose content is not what the manifest says: the store's
/// copy was damaged after the backup. Extracting objects.tar again keeps
/// it (`--skip-old-files`), so it must go first.
fn damaged_object(err: io::Error, object: &Path, store: &Path) -> io::Error {
    io::Error::other(format!(
        "{err}: the store's object is damaged (`unifs store verify` reports it): remove it \
         (`rm {o}`), run `unifs --store {s} store gc` (which drops it from the catalog), \
         extract it from the backup again as docs/backup.md says (\"A damaged object\"), \
         then run this restore again",
        o = crate::sys::shown(object),
        s = crate::sys::shown(store)
    ))
}

/// The object file `src` of `id` holds what entry `e` says: its blake3 and
/// size. Where only the blake3 differs and the file still hashes to its
/// id, the object is sound and the manifest's blake3 is wrong: `manifest`
/// takes it from the catalog's row of the object, which can be damaged
/// where SQLite's checks do not look. The id covers the content, so the
/// object's content is what the guest had: restored, and said
/// (`blake3_not_the_objects`), rather than the object called damaged.
fn check_object(
    e: &Entry,
    id: &ObjectId,
    src: &Path,
    store: &Path,
    report: &mut Report,
) -> io::Result<()> {
    let (got, len) = manifest::content_hash(src)?;
    let sound = |len| {
        e.size == Some(len)
            && crate::store::maintain::id_mode_of(src, id).is_ok_and(|m| m.is_some())
    };
    match check_digest(e, (got.clone(), len), src) {
        Ok(()) => Ok(()),
        Err(_) if e.blake3.as_ref().is_some_and(|b| *b != got) && sound(len) => {
            report.blake3_not_the_objects.push(BadBlake3 {
                object: id.to_hex(),
                manifest: e.blake3.clone().unwrap_or_default(),
                content: got,
            });
            Ok(())
        }
        Err(err) => Err(damaged_object(err, src, store)),
    }
}

/// The file's content hashes to the manifest's blake3 and is as long as
/// its size says (a manifest whose two disagree was not written from one
/// file: the content is not what the guest had there).
fn check_content(e: &Entry, path: &Path) -> io::Result<()> {
    check_digest(e, manifest::content_hash(path)?, path)
}

/// [`check_content`] of a file read already (`got`, `len`): `path` names
/// it in the message.
fn check_digest(e: &Entry, (got, len): (String, u64), path: &Path) -> io::Result<()> {
    match &e.blake3 {
        Some(want) if *want == got => match e.size {
            Some(size) if size != len => Err(io::Error::other(format!(
                "{} holds {len} bytes, the manifest says {size}: its content and size were not \
                 read from one file (a backup of a running guest?); take it from another backup",
                crate::sys::shown(path)
            ))),
            _ => Ok(()),
        },
        Some(want) => Err(io::Error::other(format!(
            "content of {} does not match the manifest (blake3 {} expected {})",
            crate::sys::shown(path),
            &got[..12],
            &want[..want.len().min(12)]
        ))),
        None => Err(io::Error::other("the manifest has no content hash")),
    }
}

/// A linked object shows the manifest's metadata (an object changed around
/// the store would not).
fn check_meta(e: &Entry, path: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(path)?;
    // As the manifest writes it: the instant.
    let mtime = Timestamp::of_stat(m.mtime(), m.mtime_nsec());
    let mismatch = m.mode() & 0o7777 != e.mode
        || m.uid() != e.uid
        || m.gid() != e.gid
        || Some(mtime) != parse_time(&e.mtime)
        || Some(m.size()) != e.size
        || manifest_xattrs_of(path)? != wanted_xattrs(e);
    if mismatch {
        return Err(io::Error::other(
            "the store object's mode, owner, mtime, size or xattrs differ from the manifest",
        ));
    }
    Ok(())
}

/// The xattrs of `path` as a manifest records them.
fn manifest_xattrs_of(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, v) in sys::xattr::list_path(path)? {
        if manifest::kept_xattr(n.as_bytes()) {
            out.insert(n.to_string_lossy().into_owned(), manifest::to_hex(&v));
        }
    }
    Ok(out)
}

/// The manifest's xattrs for `e`, without xfs' second names for ACLs that
/// manifests made on xfs before 2026-12-02 hold: the `system.posix_acl_*`
/// entries beside them carry the ACL, and elsewhere they would be junk.
fn wanted_xattrs(e: &Entry) -> BTreeMap<String, String> {
    e.xattrs
        .iter()
        .filter(|(n, _)| manifest::kept_xattr(n.as_bytes()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn copy_with_meta(
    e: &Entry,
    from: &File,
    dest: &Path,
    not_kept: &mut Vec<TimeNotKept>,
) -> io::Result<()> {
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    let len = from.metadata()?.len();
    if sys::ficlone(to.as_fd(), from.as_fd()).is_err() {
        sys::copy_data(from.as_fd(), to.as_fd(), len)?;
    }
    to.sync_all()?;
    drop(to);
    check_content(e, dest)?;
    apply_meta(e, dest, not_kept)
}

use std::os::unix::fs::OpenOptionsExt;

/// A default ACL above the target gives every new file and directory an
/// ACL the guest did not have (a 0640 file readable by its group): the
/// manifest's xattrs, and no others. xfs' second names for an ACL are
/// left alone: removing one removes the ACL just set.
fn remove_other_xattrs(path: &Path, want: &BTreeMap<String, String>) -> io::Result<()> {
    for (name, _) in sys::xattr::list_path(path)? {
        let keep = !manifest::kept_xattr(name.as_bytes())
            || want.contains_key(name.to_string_lossy().as_ref());
        if keep {
            continue;
        }
        match sys::xattr::remove_path(path, &name) {
            // Gone with one removed before it (another name of the same ACL).
            Err(err) if err.raw_os_error() == Some(libc::ENODATA) => {}
            r => r?,
        }
    }
    Ok(())
}

/// An xattr the target refuses, named: a btrfs guest's manifest holds
/// `btrfs.compression` (a btrfs property shown as an xattr), which no other
/// filesystem takes.
fn xattr_error(name: &str, err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("xattr {name}: {err}{}", unsupported_hint(&err)),
    )
}

/// What EOPNOTSUPP means here: the manifest was made on another kind of
/// filesystem than the target.
fn unsupported_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) => {
            " (the target filesystem does not support it: the manifest was made on \
             another kind, such as btrfs for `btrfs.*` xattrs and the `c` flag; restore \
             onto that kind, or edit the manifest to leave it out)"
        }
        _ => "",
    }
}

/// The path holds exactly the manifest's xattrs: an ACL lost on the way
/// (a filesystem that keeps it under another name too) fails the restore.
fn check_xattrs(path: &Path, want: &BTreeMap<String, String>) -> io::Result<()> {
    let have = manifest_xattrs_of(path)?;
    if have == *want {
        return Ok(());
    }
    let missing = want.keys().filter(|n| have.get(*n) != want.get(*n));
    let extra = have.keys().filter(|n| !want.contains_key(*n));
    let names: Vec<&str> = missing.chain(extra).map(String::as_str).collect();
    Err(io::Error::other(format!(
        "its xattrs are not the manifest's after restoring them (differ: {})",
        names.join(", ")
    )))
}

/// Owner, mode, xattrs, then times (chown clears set-id bits and file
/// capabilities, so it goes first). A time the filesystem stored otherwise
/// goes into `not_kept`.
fn apply_meta(e: &Entry, path: &Path, not_kept: &mut Vec<TimeNotKept>) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid))?;
    if e.kind != "symlink" {
        fs::set_permissions(path, fs::Permissions::from_mode(e.mode))?;
    }
    let want = wanted_xattrs(e);
    for (name, value) in &want {
        let value = from_hex(value).ok_or_else(|| io::Error::other("bad xattr hex"))?;
        sys::xattr::set_path(path, OsStr::new(name), &value)
            .map_err(|err| xattr_error(name, err))?;
    }
    if e.kind != "symlink" {
        remove_other_xattrs(path, &want)?;
        check_xattrs(path, &want)?;
    }
    let mtime = parse_time(&e.mtime).ok_or_else(|| io::Error::other("bad mtime"))?;
    let atime = parse_time(&e.atime).unwrap_or(mtime);
    sys::lutimens(path, atime, mtime)?;
    // A filesystem clamps a time out of its range (or rounds one finer than
    // it keeps) without an error: read them back. Nothing reads the path
    // between the two calls, so atime is still the one set.
    let m = fs::symlink_metadata(path)?;
    let times = [
        (
            "mtime",
            mtime,
            Timestamp::of_stat(m.mtime(), m.mtime_nsec()),
        ),
        (
            "atime",
            atime,
            Timestamp::of_stat(m.atime(), m.atime_nsec()),
        ),
    ];
    for (which, wanted, got) in times {
        if wanted != got {
            not_kept.push(TimeNotKept {
                path: e.rel_path(),
                which,
                wanted: manifest::time_string(wanted),
                got: manifest::time_string(got),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_of_times_on_both_sides_of_1970() {
        let d = |sec| utc_date(Timestamp { sec, nsec: 0 });
        assert_eq!(d(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(d(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(d(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(d(32_503_680_000), "3000-01-01 00:00:00 UTC");
        assert_eq!(d(-11_676_096_000), "1600-01-01 00:00:00 UTC");
        // ext4's limits.
        assert_eq!(d(i32::MIN as i64), "1901-12-13 20:45:52 UTC");
        assert_eq!(d(15_032_385_535), "2446-05-10 22:38:55 UTC");
    }
}
