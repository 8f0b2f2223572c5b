//! What each command needs of root's capabilities, checked before it
//! starts. Without one a command got half-way and reported what it could
//! not do as something else: `store verify` called every object's marker
//! missing (trusted.* xattrs are invisible without CAP_SYS_ADMIN),
//! `manifest` left every shared file's object out, unify changed a guest
//! directory's mtime it could not put back (no CAP_FOWNER), and `guest
//! exec` failed with a bare "setns: EPERM" (no CAP_SYS_CHROOT). Each list
//! was measured: the command run with one capability dropped at a time
//! (tests/it/review_s34_caps.rs). What a guest's own config needs (the
//! capabilities it keeps, `cap_add`) is checked where the config is read.

use super::guest::GuestCommand as G;
use super::store::StoreCommand as S;
use super::Command;
use crate::guest::NetMode;

/// A capability a command needs, and what for (said when it is missing).
#[derive(Clone, Copy)]
pub(crate) struct Need {
    number: u32,
    name: &'static str,
    why: &'static str,
}

const CHOWN: Need = Need {
    number: 0,
    name: "CAP_CHOWN",
    why: "to give files their owners",
};
const DAC_OVERRIDE: Need = Need {
    number: 1,
    name: "CAP_DAC_OVERRIDE",
    why: "to write in guest directories whatever their modes",
};
const DAC_READ_SEARCH: Need = Need {
    number: 2,
    name: "CAP_DAC_READ_SEARCH",
    why: "to read guest files and directories whatever their modes",
};
const FOWNER: Need = Need {
    number: 3,
    name: "CAP_FOWNER",
    why: "to keep the times and modes of files of other owners",
};
const FSETID: Need = Need {
    number: 4,
    name: "CAP_FSETID",
    why: "to keep set-uid and set-gid bits",
};
const KILL: Need = Need {
    number: 5,
    name: "CAP_KILL",
    why: "to signal the guest's processes that run as another user",
};
const SETGID: Need = Need {
    number: 6,
    name: "CAP_SETGID",
    why: "to take the guest user's groups",
};
const SETUID: Need = Need {
    number: 7,
    name: "CAP_SETUID",
    why: "to take the guest user's uid",
};
const SETPCAP: Need = Need {
    number: 8,
    name: "CAP_SETPCAP",
    why: "to drop the guest's capabilities",
};
const NET_ADMIN: Need = Need {
    number: 12,
    name: "CAP_NET_ADMIN",
    why: "to set up the guest's network (its loopback, a veth pair)",
};
const SYS_CHROOT: Need = Need {
    number: 18,
    name: "CAP_SYS_CHROOT",
    why: "to join the guest's mount namespace",
};
const SYS_PTRACE: Need = Need {
    number: 19,
    name: "CAP_SYS_PTRACE",
    why: "to join a guest whose init runs under unifs's reaper (init_reaper) or keeps it",
};
const SYS_ADMIN: Need = Need {
    number: 21,
    name: "CAP_SYS_ADMIN",
    why: "to read trusted.* xattrs, which mark store objects, and to mount and enter namespaces",
};
const MKNOD: Need = Need {
    number: 27,
    name: "CAP_MKNOD",
    why: "to make device nodes",
};
const LEASE: Need = Need {
    number: 28,
    name: "CAP_LEASE",
    why: "to take leases on guest files, to know nobody writes them",
};

/// Reading and writing guest trees and the store.
const FILES: &[Need] = &[
    CHOWN,
    DAC_OVERRIDE,
    DAC_READ_SEARCH,
    FOWNER,
    FSETID,
    SYS_ADMIN,
];
/// (Not the DAC ones: restore reads root's own backup and store, writes a
/// tree it makes, and says which object it could not look up.)
const RESTORE: &[Need] = &[CHOWN, FOWNER, FSETID, SYS_ADMIN, MKNOD];
/// Rehashing objects: their ids cover their trusted.* xattrs.
const OBJECTS: &[Need] = &[DAC_READ_SEARCH, FOWNER, SYS_ADMIN];
const MANIFEST: &[Need] = &[DAC_READ_SEARCH, SYS_ADMIN];
/// Setting a guest up once its root is mounted (through the overlay,
/// whose daemon is `unifs mount`: [`FILES`]): its /dev nodes, its user, its
/// capability set.
const GUEST: &[Need] = &[SETUID, SETGID, SETPCAP, MKNOD];
/// Joining a running guest: setns needs CAP_SYS_ADMIN, and CAP_SYS_CHROOT
/// for the mount namespace; then the user's ids and the guest's capability
/// set, and KILL to pass signals on to a command of another user.
const ENTER: &[Need] = &[SYS_ADMIN, SYS_CHROOT, SETUID, SETGID, SETPCAP, KILL];
/// Unmounting the root; the stop signal to an init of another user.
const STOP: &[Need] = &[SYS_ADMIN, KILL];

/// The capabilities `command` needs: none for what only reads the catalog
/// or the run dir (`store stats`, `guest list`, …), for `unify
/// --dry-run`, which any user may run on what they can read, and for
/// `guest update`, which writes root's own cgroup files (uid 0 is enough;
/// the guest code refuses another user).
pub(crate) fn needed(command: &Command) -> Vec<Need> {
    let parts: &[&[Need]] = match command {
        Command::Unify(a) if a.dry_run => &[],
        Command::Unify(_) | Command::Demo(_) => &[FILES, &[LEASE]],
        Command::Manifest(_) => &[MANIFEST],
        Command::Restore(_) => &[RESTORE],
        Command::Mount(_) => &[FILES],
        // KILL: `run` passes SIGTERM and Ctrl-C on to a guest whose
        // command may run as another user, and `restart` stops one.
        Command::Run(a) => &[FILES, GUEST, &[KILL], network(a.opts.net)],
        Command::Guest(G::Restart { dirs, name, .. }) => {
            &[FILES, GUEST, &[KILL], configured_network(dirs, name)]
        }
        Command::Guest(G::Start { dirs, name }) => &[FILES, GUEST, configured_network(dirs, name)],
        Command::Guest(G::Enter { dirs, name, .. } | G::Exec { dirs, name, .. }) => {
            &[ENTER, tracing_init(dirs, name)]
        }
        Command::Guest(G::Stop { .. }) => &[STOP],
        Command::Store(S::Verify { .. } | S::Gc { .. } | S::Init { .. }) => &[OBJECTS],
        Command::Umount(_)
        | Command::Guest(G::Update { .. })
        | Command::Store(S::Stats { .. } | S::Ls { .. } | S::Runs { .. })
        | Command::Store(S::Forget { .. } | S::Snapshot { .. })
        | Command::Guest(G::List { .. } | G::Status { .. } | G::Logs { .. } | G::Ps { .. }) => &[],
    };
    parts.concat()
}

/// What a guest's network needs: nothing when it shares the host's
/// (measured: `run --net host` works without CAP_NET_ADMIN).
fn network(mode: NetMode) -> &'static [Need] {
    match mode {
        NetMode::Host => &[],
        NetMode::None | NetMode::Veth => &[NET_ADMIN],
    }
}

/// [`network`] of the guest `name`'s config; CAP_NET_ADMIN when the
/// config cannot be read (the command then says why itself).
fn configured_network(dirs: &super::guest::GuestDirs, name: &str) -> &'static [Need] {
    match crate::guest::config::GuestConfig::load(&dirs.config_dir, name) {
        Ok(cfg) => network(cfg.net.mode),
        Err(_) => &[NET_ADMIN],
    }
}

/// CAP_SYS_PTRACE to join the running guest `name` when its init is
/// unifs's reaper, which is not dumpable, or holds CAP_SYS_PTRACE itself
/// (the kernel's ptrace access check of its /proc/PID/root and ns files);
/// also when its record cannot be read (the command then says why).
fn tracing_init(dirs: &super::guest::GuestDirs, name: &str) -> &'static [Need] {
    let record = crate::guest::state::RunDir::new(&dirs.run_dir, name).read();
    match record {
        Ok(Some(st)) if !st.spec.init && st.spec.caps & (1u64 << SYS_PTRACE.number) == 0 => &[],
        _ => &[SYS_PTRACE],
    }
}

/// Commands that act on root's own files and need no capability beyond
/// uid 0: `guest update` writes root's cgroup files.
pub(crate) fn root_only(command: &Command) -> bool {
    matches!(command, Command::Guest(G::Update { .. }))
}

/// The effective capabilities of this process (`CapEff` in
/// /proc/self/status); all if that cannot be read (the kernel then says
/// what is refused).
fn effective() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX)
}

/// Fails, saying what is missing and what for, unless this process holds
/// every capability in `needs`. (Run after [`super::require_host_root`]:
/// in a user namespace of its own every capability shows as held.)
/// `root_only`: uid 0 is needed even when `needs` is empty ([`root_only`]).
pub(crate) fn require(command: &str, needs: &[Need], root_only: bool) -> anyhow::Result<()> {
    let held = effective();
    let missing: Vec<&Need> = needs
        .iter()
        .filter(|n| held & (1u64 << n.number) == 0)
        .collect();
    let root = nix::unistd::geteuid().is_root();
    if missing.is_empty() && (root || !root_only) {
        return Ok(());
    }
    if !root {
        let names: Vec<&str> = needs.iter().map(|n| n.name).collect();
        let what = if names.is_empty() {
            "it writes root's own files, and needs no capability".to_string()
        } else {
            format!("it needs {}", names.join(", "))
        };
        let dry = if command == "unify" {
            " (`unify --dry-run` shows what it would do, as any user)"
        } else {
            ""
        };
        anyhow::bail!(
            "unifs {command} needs root (uid {} here; {what}): run it as root{dry}",
            nix::unistd::geteuid(),
        );
    }
    let lacking: Vec<String> = missing
        .iter()
        .map(|n| format!("{} ({})", n.name, n.why))
        .collect();
    anyhow::bail!(
        "unifs {command} needs root's capabilities, and this process lacks {}: they were \
         dropped (capsh --drop, setpriv, a container, a service's CapabilityBoundingSet=); \
         run it with them",
        lacking.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capability_numbers_are_the_kernels() {
        for n in [
            CHOWN,
            DAC_OVERRIDE,
            DAC_READ_SEARCH,
            FOWNER,
            FSETID,
            KILL,
            SETGID,
            SETUID,
            SETPCAP,
            NET_ADMIN,
            SYS_CHROOT,
            SYS_PTRACE,
            SYS_ADMIN,
            MKNOD,
            LEASE,
        ] {
            let name = n.name.strip_prefix("CAP_").unwrap().to_lowercase();
            assert_eq!(
                crate::guest::caps::number(&name).ok(),
                Some(n.number),
                "{}",
                n.name
            );
        }
    }
}
