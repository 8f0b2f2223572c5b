//! A [`Syscall`] that records each call instead of making it.

use super::*;
use std::cell::RefCell;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount2(PathBuf, MntFlags),
    LockTree(PathBuf, bool),
    PivotRoot(PathBuf, PathBuf),
    Chdir(PathBuf),
    Unshare(CloneFlags),
    MountPoint(PathBuf, MountPoint),
    Mknod(PathBuf, u32, u64),
    Chown(PathBuf, u32, u32),
    Symlink(PathBuf, PathBuf),
    Hostname(String),
    LoopbackUp,
    Setgroups(Vec<u32>),
    Setrlimit(u32, u64, u64),
    Setresgid(u32),
    Setresuid(u32),
    DropBoundingCap(u32),
    SetCaps(u64),
    NewSessionKeyring,
    NoNewPrivs,
    SyscallFilter(SyscallFilter),
    ParentDeathSignal,
    Exec(PathBuf, Vec<String>, Vec<String>),
}

#[derive(Default)]
pub struct Recorder {
    pub calls: RefCell<Vec<Call>>,
    /// Calls matching this fail with EPERM.
    pub fail_on: Option<fn(&Call) -> bool>,
}

impl Recorder {
    fn record(&self, call: Call) -> nix::Result<()> {
        let fail = self.fail_on.is_some_and(|f| f(&call));
        self.calls.borrow_mut().push(call);
        if fail {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }
}

impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.record(Call::Umount2(target.to_path_buf(), flags))
    }
    fn lock_tree(&self, path: &Path, read_only: bool) -> nix::Result<()> {
        self.record(Call::LockTree(path.into(), read_only))
    }
    fn mount_flags(&self, _path: &Path) -> nix::Result<MsFlags> {
        Ok(MsFlags::MS_RELATIME)
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(Call::PivotRoot(new_root.into(), put_old.into()))
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::Chdir(path.into()))
    }
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(Call::Unshare(flags))
    }
    fn prepare_mount_point(&self, _root: &Path, path: &Path, kind: MountPoint) -> nix::Result<()> {
        self.record(Call::MountPoint(path.into(), kind))
    }
    fn mknod(&self, path: &Path, _kind: SFlag, perm: u32, dev: u64) -> nix::Result<()> {
        self.record(Call::Mknod(path.into(), perm, dev))
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()> {
        self.record(Call::Chown(path.into(), uid, gid))
    }
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        self.record(Call::Symlink(target.into(), link.into()))
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Hostname(name.into()))
    }
    fn loopback_up(&self) -> nix::Result<()> {
        self.record(Call::LoopbackUp)
    }
    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()> {
        self.record(Call::Setgroups(groups.iter().map(|g| g.as_raw()).collect()))
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> nix::Result<()> {
        self.record(Call::Setrlimit(resource, soft, hard))
    }
    fn setresgid(&self, gid: Gid) -> nix::Result<()> {
        self.record(Call::Setresgid(gid.as_raw()))
    }
    fn setresuid(&self, uid: Uid) -> nix::Result<()> {
        self.record(Call::Setresuid(uid.as_raw()))
    }
    fn drop_bounding_cap(&self, cap: u32) -> nix::Result<()> {
        self.record(Call::DropBoundingCap(cap))
    }
    fn set_caps(&self, keep: u64) -> nix::Result<()> {
        self.record(Call::SetCaps(keep))
    }
    fn new_session_keyring(&self) -> nix::Result<()> {
        self.record(Call::NewSessionKeyring)
    }
    fn set_no_new_privs(&self) -> nix::Result<()> {
        self.record(Call::NoNewPrivs)
    }
    fn set_syscall_filter(&self, mode: SyscallFilter) -> nix::Result<()> {
        self.record(Call::SyscallFilter(mode))
    }
    fn set_parent_death_signal(&self) -> nix::Result<()> {
        self.record(Call::ParentDeathSignal)
    }
    fn exec(&self, program: &Path, args: &[String], env: &[String], _: BorrowedFd) -> Errno {
        let _ = self.record(Call::Exec(program.into(), args.to_vec(), env.to_vec()));
        Errno::UnknownErrno
    }
}
