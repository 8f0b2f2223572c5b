//! cgroup v1's notice of an OOM: an eventfd the kernel signals when the
//! OOM killer is called for a memory group (its limit met, or one above
//! it), registered through `cgroup.event_control` on the group's
//! `memory.oom_control`. It comes before the kill: [`super::oom_watch`]
//! reads the counts at once, and again until one rose, so that a kill in
//! a group the guest removes right after is read before the group goes.
//! Deprecated in Linux 6.x (the kernel logs "oom_control is deprecated
//! and will be removed" once a boot), but v1's only trigger: the
//! `oom_kill` counts cannot be polled, and `memory.failcnt` stays 0 in a
//! guest's group (its memsw limit, the same, is charged first and fails;
//! see docs/guests.md).

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

/// The v1 memory group's file the notice is registered on.
pub const OOM_CONTROL: &str = "memory.oom_control";

/// A registered notice; dropping it (its eventfd closed) ends the
/// registration.
pub struct OomNotice {
    event: EventFd,
}

impl OomNotice {
    /// Registers for the OOMs of v1 memory group `group` (None: the group
    /// has no `memory.oom_control`, as on v2, whose `memory.events` keeps
    /// a removed group's kills itself). The kernel takes both descriptors
    /// at the write (`<eventfd> <oom_control fd>`) and holds the eventfd
    /// until it is closed or the group removed (it then signals it once);
    /// the control file may close after the write. Both are close-on-exec:
    /// a process the keeper starts does not hold the registration on.
    pub fn register(group: &Path) -> Option<std::io::Result<OomNotice>> {
        let control = group.join(OOM_CONTROL);
        let control = match std::fs::File::open(&control) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(Err(named(e, &control))),
            Ok(file) => file,
        };
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let event = match EventFd::from_flags(flags) {
            Ok(event) => event,
            Err(e) => return Some(Err(std::io::Error::from(e))),
        };
        let line = format!("{} {}", event.as_raw_fd(), control.as_raw_fd());
        let file = group.join("cgroup.event_control");
        // The tests' UNIFS_TEST_OOM_NOTICE_REFUSED (review_s52_oomlog): the
        // write refused, as a kernel that does not take it (no real way
        // to make this one refuse it as root).
        if crate::sys::test_hook!("UNIFS_TEST_OOM_NOTICE_REFUSED").is_some() {
            let refused = std::io::Error::from_raw_os_error(libc::EOPNOTSUPP);
            return Some(Err(named(refused, &file)));
        }
        Some(match std::fs::write(&file, line) {
            Ok(()) => Ok(OomNotice { event }),
            Err(e) => Err(named(e, &file)),
        })
    }

    /// Polled for a notice.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }

    /// Whether a notice came since the last call (the eventfd's count
    /// read, and so reset).
    pub fn take(&self) -> bool {
        self.event.read().is_ok_and(|n| n > 0)
    }
}

fn named(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
