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
//!
//! What a command always needs is checked before anything is read, so a
//! user who is not root (or a root without one of them) is refused before
//! a guest's config or runtime record is opened. What the config or record
//! decides (CAP_NET_ADMIN by the network mode, CAP_SETUID by the user,
//! CAP_SYS_PTRACE by the reaper) is checked on the config or record the
//! command then goes on with, read once ([`configured`], [`recorded`]);
//! what `run --user` names, on its one lookup in the guest's tree
//! ([`for_uid`]).

use super::guest::GuestCommand as G;
use super::store::StoreCommand as S;
use super::Command;
use crate::guest::config::GuestConfig;
use crate::guest::state::State;
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
/// Needed even by a command that runs as root: setgroups(2) gives it the
/// guest's groups in place of this process's supplementary ones (none, or
/// a shell's), and the kernel asks CAP_SETGID for any list (measured:
/// `run` without it failed at `setgroups: EPERM`).
const SETGID: Need = Need {
    number: 6,
    name: "CAP_SETGID",
    why: "to set the groups of the guest's command (setgroups), root's too",
};
/// Needed only for a uid other than root's: setresuid(2) to the uid this
/// process has already is allowed without it (measured: `run`, `guest
/// start`, `exec` and `enter` as root work without it).
const SETUID: Need = Need {
    number: 7,
    name: "CAP_SETUID",
    why: "to take the uid of a user other than root",
};
const SETPCAP: Need = Need {
    number: 8,
    name: "CAP_SETPCAP",
    why: "to drop the guest's capabilities",
};
const NET_ADMIN: Need = Need {
    number: 12,
    name: "CAP_NET_ADMIN",
    why: "to set up a network of the guest's own (its loopback, a veth pair); one that \
          shares the host's (`--net host`, a config's `[net] mode = \"host\"`) needs none",
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
/// whose daemon is `unifs mount`: [`FILES`]): its /dev nodes, its groups,
/// its capability set; CAP_SETUID only for a user ([`SETUID`]).
const GUEST: &[Need] = &[SETGID, SETPCAP, MKNOD];
/// Joining a running guest: setns needs CAP_SYS_ADMIN, and CAP_SYS_CHROOT
/// for the mount namespace; then the groups and the guest's capability
/// set, and KILL to pass signals on to a command of another user.
const ENTER: &[Need] = &[SYS_ADMIN, SYS_CHROOT, SETGID, SETPCAP, KILL];
/// Unmounting the root; the stop signal to an init of another user.
const STOP: &[Need] = &[SYS_ADMIN, KILL];

/// The capabilities `command` always needs, read from its arguments alone
/// (nothing is opened): none for what only reads the catalog or the run
/// dir (`store stats`, `guest list`, …), for `unify --dry-run`, which any
/// user may run on what they can read, and for `guest update`, which
/// writes root's own cgroup files (uid 0 is enough; the guest code refuses
/// another user). What a guest's config or record adds: [`decided`].
pub(crate) fn needed(command: &Command) -> Vec<Need> {
    let user = |given: bool| -> &'static [Need] {
        match given {
            true => &[SETUID],
            false => &[],
        }
    };
    let parts: &[&[Need]] = match command {
        Command::Unify(a) if a.dry_run => &[],
        Command::Unify(_) | Command::Demo(_) => &[FILES, &[LEASE]],
        Command::Manifest(_) => &[MANIFEST],
        Command::Restore(_) => &[RESTORE],
        Command::Mount(_) => &[FILES],
        // KILL: `run` passes SIGTERM and Ctrl-C on to a guest whose
        // command may run as another user, and `restart` stops one.
        // (`--user` is looked up in the guest's tree first: [`for_uid`].)
        Command::Run(a) => &[
            FILES,
            GUEST,
            &[KILL],
            network(a.opts.net),
            user(a.opts.uid != 0),
        ],
        Command::Guest(G::Restart { .. }) => &[FILES, GUEST, &[KILL]],
        Command::Guest(G::Start { .. }) => &[FILES, GUEST],
        Command::Guest(G::Enter { who, .. } | G::Exec { who, .. }) => {
            &[ENTER, user(who.user.is_some())]
        }
        Command::Guest(G::Stop { .. }) => &[STOP],
        Command::Store(S::Verify { .. } | S::Gc { .. } | S::Init { .. }) => &[OBJECTS],
        Command::Umount(_)
        | Command::Completions(_)
        | Command::Man(_)
        | Command::Guest(G::Update { .. })
        | Command::Store(S::Stats { .. } | S::Ls { .. } | S::Runs { .. })
        | Command::Store(S::Forget { .. } | S::Snapshot { .. })
        | Command::Guest(G::List { .. } | G::Status { .. } | G::Logs { .. } | G::Ps { .. }) => &[],
    };
    parts.concat()
}

/// A capability that a guest's config or runtime record decides on, and
/// when it is needed: said to a user who is not root, who is refused
/// before either is read.
pub(crate) struct Decided {
    need: Need,
    when: &'static str,
}

/// What `command` may need beyond [`needed`], by what the guest's config
/// ([`configured`]) or runtime record ([`recorded`]) says.
pub(crate) fn decided(command: &Command) -> Vec<Decided> {
    let when = |need, when| Decided { need, when };
    let ptrace = when(SYS_PTRACE, "for a guest under unifs's reaper or keeping it");
    match command {
        Command::Run(a) if a.opts.user.is_some() => {
            vec![when(SETUID, "when --user names a user other than root")]
        }
        Command::Guest(G::Start { .. } | G::Restart { .. }) => vec![
            when(NET_ADMIN, "unless its config's network is the host's"),
            when(SETUID, "when its config names a user other than root"),
        ],
        Command::Guest(G::Enter { who, .. } | G::Exec { who, .. }) => match who.user {
            Some(_) => vec![ptrace],
            None => vec![
                when(
                    SETUID,
                    "when the guest's init runs as a user other than root",
                ),
                ptrace,
            ],
        },
        _ => vec![],
    }
}

/// What a guest's network needs: nothing when it shares the host's
/// (measured: `run --net host` works without CAP_NET_ADMIN).
fn network(mode: NetMode) -> &'static [Need] {
    match mode {
        NetMode::Host => &[],
        NetMode::None | NetMode::Veth => &[NET_ADMIN],
    }
}

/// What `guest start` and `restart` need of the guest's config `cfg`
/// beyond [`needed`]: the one they then start the guest from (read once:
/// checked on one, started from another, a config changed meanwhile got
/// a check for one network and a start in another).
pub(crate) fn configured(cfg: &GuestConfig) -> Vec<Need> {
    // A `user` not looked up (its root missing: the start refuses it) may
    // name anyone.
    let user = match (&cfg.account, &cfg.user) {
        (Some(account), _) => account.uid != 0,
        (None, Some(_)) => true,
        (None, None) => cfg.uid.is_some_and(|u| u != 0),
    };
    let setuid: &[Need] = if user { &[SETUID] } else { &[] };
    [network(cfg.net.mode), setuid].concat()
}

/// What `run --user` needs beyond [`needed`] once the user is looked up in
/// the guest's tree (`uid`): CAP_SETUID for a user other than root. (A
/// config's `user` is looked up once as well: [`configured`].)
pub(crate) fn for_uid(uid: u32) -> Vec<Need> {
    match uid {
        0 => Vec::new(),
        _ => vec![SETUID],
    }
}

/// What `guest exec` or `enter` of the running guest whose runtime record
/// is `st` needs beyond [`needed`]: CAP_SYS_PTRACE when its init is
/// unifs's reaper, which is not dumpable, or holds CAP_SYS_PTRACE itself
/// (the kernel's ptrace access check of its /proc/PID/root and ns files);
/// without `--user`, CAP_SETUID when init runs as a user other than root.
/// `st` is the record the command then joins (read once: checked on one,
/// joined by another, a guest restarted meanwhile got a check for one
/// init and a bare EPERM from the other).
pub(crate) fn recorded(st: &State, user_given: bool) -> Vec<Need> {
    let mut needs = Vec::new();
    if st.spec.init || st.spec.caps & (1u64 << SYS_PTRACE.number) != 0 {
        needs.push(SYS_PTRACE);
    }
    if st.spec.uid != 0 && !user_given {
        needs.push(SETUID);
    }
    needs
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
/// `decided`: what a user who is not root is told the guest's config or
/// record may add ([`decided`]).
pub(crate) fn require(
    command: &str,
    needs: &[Need],
    root_only: bool,
    decided: &[Decided],
) -> anyhow::Result<()> {
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
        let mut names: Vec<String> = needs.iter().map(|n| n.name.to_string()).collect();
        names.extend(
            decided
                .iter()
                .map(|d| format!("{} {}", d.need.name, d.when)),
        );
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
