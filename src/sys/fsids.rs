//! The calling thread's filesystem ids (setfsuid(2), setfsgid(2); raw
//! syscalls: they act on the calling thread only, as the kernel keeps
//! credentials per thread). The mount daemon writes as the guest's user
//! with them, so that what the backing filesystem grants by the writer's
//! fsuid or fsgid (ext4's blocks reserved for root, `tune2fs -m`) goes to
//! guest root only, as it would locally.

use std::marker::PhantomData;

/// What `setfsuid`/`setfsgid` return for -1: the id in force, unchanged
/// (-1 is never a valid id, so the call changes nothing).
const QUERY: u32 = u32::MAX;

fn setfsuid(uid: u32) -> u32 {
    // SAFETY: takes an integer, touches no memory; on the calling thread.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
}

fn setfsgid(gid: u32) -> u32 {
    // SAFETY: as for setfsuid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
}

/// The calling thread's filesystem uid and gid.
pub fn current() -> (u32, u32) {
    (setfsuid(QUERY), setfsgid(QUERY))
}

thread_local! {
    /// The thread's own ids, read on its first [`with_fs_ids`] (never
    /// inside one: calls do not nest): they are
    /// what every call finds and leaves, so each request (a daemon thread's
    /// writes and registrations, root's mostly, which switch nothing) does
    /// not ask the kernel again. Holds while nothing else changes a
    /// thread's ids: the daemon never setuids (a set*id would change every
    /// thread's, through the C library).
    static OWN: (u32, u32) = current();
}

/// The thread's ids and capabilities as they were before [`with_fs_ids`]
/// changed them; put back on drop, on the same thread (hence not `Send`),
/// even when `f` unwinds.
struct Restore {
    uid: u32,
    gid: u32,
    caps: Option<[super::caps::CapData; 2]>,
    _thread: PhantomData<*const ()>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // The uid first: back to 0, the kernel puts back the capabilities
        // it took; the sets are then made exactly as they were.
        setfsuid(self.uid);
        setfsgid(self.gid);
        if let Some(caps) = &self.caps {
            let _ = super::caps::set(caps);
        }
    }
}

/// Runs `f` with the calling thread's filesystem uid and gid set to `uid`
/// and `gid`, and puts them back before it returns. Only the ids change:
/// a switch away from fsuid 0 takes the file capabilities (CAP_CHOWN,
/// CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, …) out of the effective set,
/// and they are put back at once, so that `f` is checked as before in every
/// other way (CAP_SYS_ADMIN, which registering a passthrough file needs,
/// is never taken). Where the thread may not switch (no CAP_SETUID or
/// CAP_SETGID: root with them dropped, which `unifs mount` accepts, and
/// says so: [`switches`]), `f` runs with its own ids (setfsuid(2) fails
/// silently).
///
/// Invariant: when this returns, the thread's fsuid, fsgid and capability
/// sets are what they were when it was called; other threads' are never
/// touched (a thread `f` starts inherits the changed ids: start none).
/// `f` must not call this again: the ids put back are the thread's own
/// (`OWN`), not the outer call's.
pub fn with_fs_ids<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    let (old_uid, old_gid) = OWN.with(|own| *own);
    if (old_uid, old_gid) == (uid, gid) {
        return f();
    }
    let _restore = Restore {
        uid: old_uid,
        gid: old_gid,
        caps: super::caps::get().ok(),
        _thread: PhantomData,
    };
    setfsgid(gid);
    setfsuid(uid);
    if let Some(caps) = &_restore.caps {
        let _ = super::caps::set(caps);
    }
    f()
}

/// Which of setfsuid and setfsgid would take effect on the calling thread
/// for another id than its own: root needs CAP_SETUID and CAP_SETGID in its
/// effective set (both calls fail without a word). Read from the set, not
/// tried: a change of fsuid resets the thread's parent-death signal and
/// the process's dumpable flag (credentials(7)), and the mount daemon of
/// `unifs run` ends by that signal when `unifs run` dies.
pub fn switches() -> (bool, bool) {
    const CAP_SETGID: u32 = 6;
    const CAP_SETUID: u32 = 7;
    let Ok(caps) = super::caps::get() else {
        return (false, false);
    };
    let has = |cap: u32| caps[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0;
    (has(CAP_SETUID), has(CAP_SETGID))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids and capabilities inside and after, on a thread of its own (the
    /// test harness's threads run other tests).
    #[test]
    fn ids_change_inside_only_and_capabilities_stay() {
        std::thread::spawn(|| {
            let before = current();
            let caps = crate::sys::caps::get().unwrap();
            let inside = with_fs_ids(1000, 1001, || (current(), crate::sys::caps::get().unwrap()));
            if before.0 == 0 {
                assert_eq!(inside.0, (1000, 1001));
                for (i, c) in caps.iter().enumerate() {
                    assert_eq!(inside.1[i].effective, c.effective, "word {i}");
                }
            }
            assert_eq!(current(), before);
            let after = crate::sys::caps::get().unwrap();
            for (i, c) in caps.iter().enumerate() {
                assert_eq!(after[i].effective, c.effective, "word {i}");
                assert_eq!(after[i].permitted, c.permitted, "word {i}");
            }
        })
        .join()
        .unwrap();
    }

    /// Another thread's ids are its own (one started before the change:
    /// a thread started inside `f` would inherit the changed ones).
    #[test]
    fn other_threads_keep_their_ids() {
        let before = current();
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (answer, answered) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            asked.recv().unwrap();
            answer.send(current()).unwrap();
        });
        let seen = with_fs_ids(1000, 1000, || {
            ask.send(()).unwrap();
            answered.recv().unwrap()
        });
        other.join().unwrap();
        assert_eq!(seen, before);
    }

    /// Without CAP_SETGID only (out of the thread's effective set), the uid
    /// takes and the gid does not, and the other way round; each time the
    /// thread's ids and capabilities are as before after.
    #[test]
    fn switches_says_which_id_takes_and_leaves_the_thread_as_it_was() {
        const CAP_SETGID: u32 = 6;
        const CAP_SETUID: u32 = 7;
        std::thread::spawn(|| {
            let before = current();
            if before.0 != 0 {
                return;
            }
            let check = |want: (bool, bool)| {
                let caps = crate::sys::caps::get().unwrap();
                assert_eq!(switches(), want);
                assert_eq!(current(), before);
                let after = crate::sys::caps::get().unwrap();
                for (i, c) in caps.iter().enumerate() {
                    assert_eq!(after[i].effective, c.effective, "word {i}");
                }
            };
            check((true, true));
            crate::sys::caps::set_effective(CAP_SETGID, false).unwrap();
            check((true, false));
            crate::sys::caps::set_effective(CAP_SETGID, true).unwrap();
            crate::sys::caps::set_effective(CAP_SETUID, false).unwrap();
            check((false, true));
        })
        .join()
        .unwrap();
    }

    /// The check changes nothing of the thread: the mount daemon of
    /// `unifs run` asks it after setting its parent-death signal, which
    /// a change of fsuid would have cleared (it then outlived a killed
    /// `unifs run` until its keeper killed it).
    #[test]
    fn switches_keeps_the_parent_death_signal() {
        std::thread::spawn(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGUSR2).unwrap();
            let _ = switches();
            assert_eq!(
                nix::sys::prctl::get_pdeathsig().unwrap(),
                Some(nix::sys::signal::Signal::SIGUSR2)
            );
            nix::sys::prctl::set_pdeathsig(None).unwrap();
        })
        .join()
        .unwrap();
    }
}
