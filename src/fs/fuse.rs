//! The fuser adapter: translates FUSE requests into [`Overlay`] calls and
//! their results into replies (each error as its real errno). Passthrough
//! registration lives here because it needs the reply object.

use super::overlay::{AttrFlags, Caller, Entry, OpenInode, Overlay};
use super::sys::SetTime;
use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags,
    PollEvents, PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The mount is its guest's only writer, so the kernel may cache long.
const TTL: Duration = Duration::from_secs(3600);

pub struct UnifsFs {
    pub overlay: Arc<Overlay>,
    /// This mount's generation for counter-numbered nodes
    /// ([`super::inode::generation`]).
    pub generation: u32,
    /// Ask the kernel for passthrough (the `nopassthrough` option clears it).
    pub want_passthrough: bool,
}

/// The errno a failed operation answers with; the cause goes to the log
/// (a missing name is routine, so only at trace level).
fn err(e: io::Error) -> Errno {
    match e.raw_os_error() {
        Some(libc::ENOENT) => tracing::trace!("reply: {e}"),
        Some(libc::EMFILE) => fd_limit_reached(),
        Some(libc::ENFILE) => system_fd_limit_reached(&e),
        Some(_) => tracing::debug!("reply: {e}"),
        None => tracing::warn!("reply EIO for: {e}"),
    }
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Says so, at most once a minute: every guest user of the mount then gets
/// EMFILE, whoever holds the files, and nothing else would tell the
/// operator why.
fn fd_limit_reached() {
    static LOG: super::LogLimit = super::LogLimit::new(1);
    if LOG.allows() {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| soft);
        let room = super::sys::room_for_requests(limit);
        tracing::warn!(
            "the daemon is at its open-file limit ({limit}) less the {room} fds it keeps \
             for requests (mkdir, rename, a break's copy; 8 per thread, `-o threads`): it \
             holds a file for each file and directory guests have open, and every guest \
             open now gets EMFILE until some are closed (a higher hard limit, `ulimit -Hn`, \
             before the mount, raises it)"
        );
    }
}

/// ENFILE: the system's limit (fs.file-max), not the daemon's; said as
/// seldom.
fn system_fd_limit_reached(e: &io::Error) {
    static LOG: super::LogLimit = super::LogLimit::new(1);
    if LOG.allows() {
        tracing::warn!("{}", crate::sys::explain_fd_limit(&e.to_string()));
    }
}

/// A stat's time as the `SystemTime` fuser replies with, exact (fuser counts
/// it back out as the kernel's seconds and forward nanoseconds); one whose
/// nanoseconds pass a second (ext4 keeps 30 bits) as the instant it stands
/// for. Never a panic: `-sec` overflowed for `i64::MIN` (a tmpfs or btrfs
/// file's time), which a build with overflow checks panicked on.
fn time(sec: i64, nsec: i64) -> SystemTime {
    let t = crate::sys::Timestamp::of_stat(sec, nsec);
    let whole = match t.sec >= 0 {
        true => UNIX_EPOCH.checked_add(Duration::from_secs(t.sec.unsigned_abs())),
        false => UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs())),
    };
    // Linux's SystemTime holds every i64 second: the epoch is never taken.
    whole
        .and_then(|w| w.checked_add(Duration::from_nanos(t.nsec.into())))
        .unwrap_or(UNIX_EPOCH)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dt(dt: u8) -> FileType {
    match dt {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

pub fn attr(e: &Entry) -> FileAttr {
    let st = &e.st;
    FileAttr {
        ino: INodeNo(e.node),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

// The kernel's FUSE sends these with an unsigned int of flags (not the
// long their numbers name) or a struct fsxattr (fs/fuse/ioctl.c).
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// Serves a flag ioctl: its output bytes, or ENOTTY for any other.
fn file_attr_ioctl(
    overlay: &Overlay,
    node: u64,
    cmd: u32,
    input: &[u8],
    out_size: u32,
    caller: Caller,
) -> io::Result<Vec<u8>> {
    let einval = || io::Error::from_raw_os_error(libc::EINVAL);
    let words = |n: usize| -> io::Result<Vec<u32>> {
        let bytes = input.get(..n * 4).ok_or_else(einval)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect())
    };
    let bytes = |words: &[u32]| -> io::Result<Vec<u8>> {
        if (out_size as usize) < words.len() * 4 {
            return Err(einval());
        }
        Ok(words.iter().flat_map(|w| w.to_ne_bytes()).collect())
    };
    match cmd {
        FS_IOC_GETFLAGS => bytes(&overlay.attr_flags(node, AttrFlags::Flags(0))?.words()),
        FS_IOC_FSGETXATTR => bytes(&overlay.attr_flags(node, AttrFlags::Fsx([0; 7]))?.words()),
        FS_IOC_SETFLAGS => {
            let flags = AttrFlags::Flags(words(1)?[0]);
            overlay
                .set_attr_flags(node, flags, caller)
                .map(|_| Vec::new())
        }
        FS_IOC_FSSETXATTR => {
            let raw: [u32; 7] = words(7)?.try_into().map_err(|_| einval())?;
            overlay
                .set_attr_flags(node, AttrFlags::Fsx(raw), caller)
                .map(|_| Vec::new())
        }
        _ => Err(io::Error::from_raw_os_error(libc::ENOTTY)),
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// The time a setattr asks for, as the kernel's seconds and nanoseconds
/// (counted forward from the second, before 1970 too, as fuser's patched
/// conversion gives them: vendor/fuser/UNIFS-PATCH.md).
fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => {
            let ns = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            };
            let t = crate::sys::Timestamp::of_nanos(ns);
            SetTime::At(t.sec, t.nsec)
        }
    })
}

/// Whether an open's I/O is better served in the daemon: the kernel's
/// passthrough file keeps the flags of the open it was made for, so an
/// fcntl(F_SETFL) that clears O_APPEND or O_DIRECT later (dd does before
/// its last, partial block) would not reach it, nor would a write's
/// RWF_NOAPPEND; the FUSE file the daemon serves follows them, as ext4 does.
fn wants_daemon_io(flags: i32) -> bool {
    flags & (libc::O_APPEND | libc::O_DIRECT) != 0
}

impl UnifsFs {
    fn generation(&self, node: u64) -> Generation {
        Generation(super::inode::generation(node, self.generation))
    }

    /// Registers the open file for passthrough (once per backing file);
    /// `None` means serve I/O in the daemon. The first open of a backing
    /// file decides for every open while it stays open (the kernel takes
    /// one mode per FUSE inode): one with `wants_daemon_io` flags has all
    /// served in the daemon, a plain one has all passed through.
    fn passthrough<'a>(
        &self,
        file: &'a OpenInode,
        flags: i32,
        register: impl FnOnce(&OpenInode) -> io::Result<BackingId>,
    ) -> Option<std::sync::MutexGuard<'a, Option<BackingId>>> {
        if !self.overlay.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let mut backing = file.backing.lock().unwrap_or_else(|p| p.into_inner());
        if backing.is_none() {
            if file.daemon_io.load(Ordering::Relaxed) || wants_daemon_io(flags) {
                file.daemon_io.store(true, Ordering::Relaxed);
                return None;
            }
            match register(file) {
                Ok(id) => *backing = Some(id),
                Err(e) => {
                    tracing::warn!(
                        "FUSE passthrough unavailable ({e}); serving file I/O in the daemon"
                    );
                    self.overlay.passthrough.store(false, Ordering::Relaxed);
                    return None;
                }
            }
        }
        Some(backing)
    }

    /// Registers `file` (`open_backing`) with the filesystem ids the
    /// overlay picks for it: the kernel keeps the credentials the daemon
    /// has at that moment (fs/fuse/backing.c, `fb->cred`) and does all
    /// passthrough I/O of the file with them, so a guest user's writes
    /// are the user's, not root's (ext4's root-reserved blocks).
    fn register(
        &self,
        file: &OpenInode,
        flags: i32,
        caller: Caller,
        open_backing: impl FnOnce(&OpenInode) -> io::Result<BackingId>,
    ) -> io::Result<BackingId> {
        let (uid, gid) = self.overlay.registration_ids(file, flags, caller);
        crate::sys::fsids::with_fs_ids(uid, gid, || open_backing(file))
    }
}

impl Filesystem for UnifsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // O_TRUNC comes with the open, so an O_RDONLY|O_TRUNC open of a
        // shared file breaks it before the file is opened, not after.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // The kernel's permission checks honour POSIX ACLs (it reads them as
        // system.posix_acl_* xattrs), as a local filesystem's do; else a
        // file's ACL entries would neither grant nor deny. It then leaves the
        // umask of a create to us (see Overlay::new_mode), but only with
        // FUSE_DONT_MASK: without it, FUSE applies the umask itself even in
        // a directory with a default ACL, where a local filesystem ignores
        // it (a new file's ACL mask would lose what the umask takes away).
        // The kernel also turns its permission checks on with it
        // (`default_permissions`, fs/fuse/inode.c), which the mount has anyway.
        if config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            tracing::warn!("the kernel offers no FUSE POSIX ACLs: ACL entries are not checked");
        } else if config.add_capabilities(InitFlags::FUSE_DONT_MASK).is_err() {
            tracing::warn!(
                "the kernel offers no FUSE_DONT_MASK: new files in a directory \
                 with a default ACL get the caller's umask too"
            );
        }
        // Without passthrough, writes come in chunks of this size.
        let _ = config.set_max_write(1 << 20);
        if self.want_passthrough {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if ok {
                tracing::info!("FUSE passthrough enabled");
            } else {
                tracing::warn!(
                    "the kernel offers no FUSE passthrough (Linux >= 6.9 needed); \
                     serving file I/O in the daemon"
                );
            }
            self.overlay.passthrough.store(ok, Ordering::Relaxed);
        } else {
            tracing::info!("passthrough off by option; serving file I/O in the daemon");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.overlay.lookup(parent.0, name) {
            Ok(e) => reply.entry(&TTL, &attr(&e), self.generation(e.node)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.overlay.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.overlay.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(e) => reply.attr(&TTL, &attr(&e)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.overlay.setattr(
            ino.0,
            mode,
            uid,
            gid,
            size,
            set_time(atime),
            set_time(mtime),
            fh.map(|f| f.0),
            caller(req),
        ) {
            Ok(e) => reply.attr(&TTL, &attr(&e)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.overlay.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self
            .overlay
            .mknod(parent.0, name, mode, umask, rdev, req.uid(), req.gid())
        {
            Ok(e) => reply.entry(&TTL, &attr(&e), self.generation(e.node)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let reply = test_panic_holding(reply);
        match self
            .overlay
            .mkdir(parent.0, name, mode, umask, req.uid(), req.gid())
        {
            Ok(e) => reply.entry(&TTL, &attr(&e), self.generation(e.node)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.overlay.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.overlay.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.overlay.symlink(
            parent.0,
            link_name,
            target.as_os_str(),
            req.uid(),
            req.gid(),
        ) {
            Ok(e) => reply.entry(&TTL, &attr(&e), self.generation(e.node)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.overlay.rename(
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
            req.uid(),
            req.gid(),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self
            .overlay
            .link(ino.0, newparent.0, newname, req.uid(), req.gid())
        {
            Ok(e) => reply.entry(&TTL, &attr(&e), self.generation(e.node)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = match self.overlay.open(ino.0, flags.0, caller(req)) {
            Ok(o) => o,
            Err(e) => return reply.error(err(e)),
        };
        self.overlay.note_opener(opened.fh, req.pid());
        let fh = FileHandle(opened.fh);
        let backing = self.passthrough(&opened.file, flags.0, |f| {
            self.register(f, flags.0, caller(req), |f| reply.open_backing(&f.fd))
        });
        match backing.as_ref().and_then(|b| b.as_ref()) {
            Some(id) => reply.opened_passthrough(fh, FopenFlags::empty(), id),
            None => reply.opened(fh, FopenFlags::empty()),
        };
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.overlay.read(fh.0, offset, size, flags.0) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel's writeback of cached pages is no direct I/O, whatever
        // the flags of the file it names.
        let flags = match write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
            true => 0,
            false => flags.0,
        };
        match self.overlay.write(fh.0, offset, data, flags, caller(req)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.overlay.flush(fh.0);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        release_test_pause();
        self.overlay.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.overlay.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.overlay.opendir(ino.0, flags.0) {
            // The kernel may cache listings: the mount is the only writer,
            // and its own changes invalidate them. The cached offsets reach
            // other handles: the daemon numbers them per directory.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    // Not reached: init asks for FUSE_DO_READDIRPLUS (every kernel since
    // 3.9 offers it) without FUSE_READDIRPLUS_AUTO, so the kernel lists
    // every directory with READDIRPLUS, and no mount option turns that
    // off. An entry not looked up yet would show its backing number here
    // (a store object's, a subvolume's own), not the one a lookup gives.
    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self
            .overlay
            .list_dir(fh.0, offset, |_, name, backing_ino, dt, next| {
                let number = match name.as_bytes() {
                    b"." => ino.0,
                    b".." => self.overlay.parent_of(ino.0),
                    _ => self.overlay.known_child(ino.0, name).unwrap_or(backing_ino),
                };
                reply.add(INodeNo(number), next, kind_of_dt(dt), name)
            });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // Entries added take kernel references: an error after some were
        // added replies with those (the next readdir meets it again).
        let mut added = false;
        let mut failed = None;
        let listed = self
            .overlay
            .list_dir(fh.0, offset, |dir, name, _, _, next| {
                if matches!(name.as_bytes(), b"." | b"..") {
                    // The kernel takes no reference for these; any attributes do.
                    let Ok(e) = self.overlay.dir_attr(ino.0, dir) else {
                        return false;
                    };
                    // (fuser takes the entry's number from its attributes.)
                    let mut a = attr(&e);
                    if name.as_bytes() == b".." {
                        a.ino = INodeNo(self.overlay.parent_of(ino.0));
                    }
                    return reply.add(a.ino, next, name, &TTL, &a, self.generation(a.ino.0));
                }
                let e = match self.overlay.lookup_in(dir, ino.0, name) {
                    Ok(e) => e,
                    // Gone since it was listed.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return false,
                    Err(e) => {
                        failed = Some(e);
                        return true;
                    }
                };
                let generation = self.generation(e.node);
                if reply.add(INodeNo(e.node), next, name, &TTL, &attr(&e), generation) {
                    // Did not fit: the kernel did not take this reference.
                    self.overlay.forget(e.node, 1);
                    return true;
                }
                added = true;
                false
            });
        match listed.err().or(failed) {
            Some(e) if !added => reply.error(err(e)),
            Some(e) => {
                tracing::debug!("readdirplus stops short: {e}");
                reply.ok();
            }
            None => reply.ok(),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.overlay.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.overlay.fsyncdir(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The tests' busy daemon: it answers, slowly (review_s46_rundir2).
        crate::sys::test_pause!("UNIFS_TEST_STATFS_PAUSE_MS");
        match self.overlay.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self
            .overlay
            .setxattr(ino.0, name, value, flags, caller(req))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.overlay.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(err(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.overlay.listxattr(ino.0, caller(req)) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(err(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.overlay.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Never sent with default_permissions (always on): existence is all we check.
        match self.overlay.getattr(ino.0, None) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (entry, opened) =
            match self
                .overlay
                .create(parent.0, name, mode, umask, flags, caller(req))
            {
                Ok(r) => r,
                Err(e) => return reply.error(err(e)),
            };
        self.overlay.note_opener(opened.fh, req.pid());
        let fh = FileHandle(opened.fh);
        let (a, generation) = (attr(&entry), self.generation(entry.node));
        let backing = self.passthrough(&opened.file, flags, |f| {
            self.register(f, flags, caller(req), |f| reply.open_backing(&f.fd))
        });
        let none = FopenFlags::empty();
        match backing.as_ref().and_then(|b| b.as_ref()) {
            Some(id) => reply.created_passthrough(&TTL, &a, generation, fh, none, id),
            None => reply.created(&TTL, &a, generation, fh, none),
        };
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self
            .overlay
            .fallocate(fh.0, offset, length, mode, caller(req))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    /// The flag ioctls (`lsattr`, `chattr`; see overlay::attrflags) are
    /// served; every other ioctl fails as a plain file answers a terminal's
    /// (isatty's TCGETS, on every stdio open), without the log line
    /// fuser's default writes for each.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        match file_attr_ioctl(&self.overlay, ino.0, cmd, in_data, out_size, caller(req)) {
            Ok(out) => reply.ioctl(0, &out),
            Err(e) => reply.error(err(e)),
        }
    }

    /// Files here never block, as on a local filesystem: ENOSYS tells the
    /// kernel so, once per mount, and it answers every poll of them itself
    /// from then on (readable and writable), without the warning fuser's
    /// default logs for it (a guest's `read -t 0 < FILE` polls).
    #[allow(clippy::too_many_arguments)]
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.overlay.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.overlay.copy_file_range(
            fh_in.0,
            offset_in,
            fh_out.0,
            offset_out,
            len,
            caller(req),
        ) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// Sleeps for `UNIFS_TEST_RELEASE_PAUSE_MS` (read once; unset: not at all)
/// before a release is handled: the tests' way to have a close's release
/// come late, as it may on a busy machine (the kernel sends it after the
/// close has returned).
fn release_test_pause() {
    crate::sys::test_pause!("UNIFS_TEST_RELEASE_PAUSE_MS");
}

/// UNIFS_TEST_CHILD_PANIC=fuse-mkdir (read once): a test's way to make a
/// FUSE thread panic in a handler (a mkdir's) holding its `reply`, as a bug
/// of ours would; `fuse-mkdir-unanswered`: with the reply forgotten first,
/// as a panic in fuser's own code before it makes the reply leaves a
/// request (its `system_time_from_time` on some times of a SETATTR).
fn test_panic_holding<T>(reply: T) -> T {
    crate::sys::test_panic!("fuse-mkdir");
    crate::sys::test_panic!("fuse-mkdir-unanswered", std::mem::forget(reply));
    reply
}
