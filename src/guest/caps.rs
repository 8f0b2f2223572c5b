//! Capability names and the default set a guest keeps.

use super::{Error, Result};

/// Capability names in kernel order (capability.h); the index is the number.
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The highest capability number unifs knows.
pub const LAST_CAP: u32 = NAMES.len() as u32 - 1;

/// What a guest keeps unless told otherwise: enough to run an init and
/// services as root inside (own files, change ids, bind low ports, kill its
/// own processes), nothing that reaches the shared kernel: no sys_admin
/// (mount), mknod, sys_module, sys_ptrace, sys_rawio, net_admin, sys_time,
/// sys_boot or syslog. Docker's default set minus mknod.
pub const DEFAULT: &[&str] = &[
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "net_bind_service",
    "net_raw",
    "sys_chroot",
    "audit_write",
    "setfcap",
];

/// The number of a capability, from `sys_admin`, `SYS_ADMIN` or `CAP_SYS_ADMIN`.
pub fn number(name: &str) -> Result<u32> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u32)
        .ok_or_else(|| Error::Invalid {
            what: "capability",
            value: name.to_string(),
            reason: "not a Linux capability name".into(),
        })
}

pub fn name(cap: u32) -> &'static str {
    NAMES.get(cap as usize).copied().unwrap_or("unknown")
}

/// The kept set as a bit mask, as Docker and Podman read `--cap-add` and
/// `--cap-drop`: the default minus `drop`, then plus `add`, so
/// `drop = ["all"], add = ["net_bind_service"]` keeps exactly that one (the
/// least-privilege idiom); with `add = ["all"]`, everything minus `drop`.
pub fn keep_mask(add: &[String], drop: &[String]) -> Result<u64> {
    let mask_of = |names: &[String]| -> Result<u64> {
        let mut mask = 0u64;
        for n in names {
            if n.eq_ignore_ascii_case("all") {
                mask |= (1u64 << (LAST_CAP + 1)) - 1;
            } else {
                mask |= 1 << number(n)?;
            }
        }
        Ok(mask)
    };
    let default = DEFAULT
        .iter()
        .map(|n| 1u64 << number(n).unwrap())
        .sum::<u64>();
    let all = (1u64 << (LAST_CAP + 1)) - 1;
    let (add, drop) = (mask_of(add)?, mask_of(drop)?);
    if add == all {
        return Ok(all & !drop);
    }
    Ok((default & !drop) | add)
}

/// The capabilities this process may give on (`CapPrm` in
/// /proc/self/status); all if that cannot be read (the kernel then says).
pub fn held() -> u64 {
    // Not root: no guest starts anyway, and a config still parses (its
    // own tests run as any user).
    if !nix::unistd::geteuid().is_root() {
        return u64::MAX;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX)
}

/// `mask` cut to what the launcher `held` (`all` and the defaults mean what
/// this host's root has: a container's root, or one whose bounding set lost
/// `sys_resource`, lacks some); a capability named in `add` that it does
/// not hold is an error naming it (capset(2) would only say EPERM), the
/// host's limit ([`Error::CapNotHeld`]).
pub fn within_held(add: &[String], mask: u64, held: u64) -> Result<u64> {
    for n in add.iter().filter(|n| !n.eq_ignore_ascii_case("all")) {
        if held & (1 << number(n)?) == 0 {
            return Err(Error::CapNotHeld { cap: n.clone() });
        }
    }
    Ok(mask & held)
}

/// Names of the capabilities in `mask`, for messages and status.
pub fn names(mask: u64) -> Vec<&'static str> {
    (0..=LAST_CAP)
        .filter(|c| mask & (1 << c) != 0)
        .map(name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_all_spellings() {
        assert_eq!(number("sys_admin").unwrap(), 21);
        assert_eq!(number("CAP_SYS_ADMIN").unwrap(), 21);
        assert_eq!(number("MKNOD").unwrap(), 27);
        assert!(number("fly").is_err());
    }

    #[test]
    fn default_keeps_nothing_that_reaches_the_kernel() {
        let mask = keep_mask(&[], &[]).unwrap();
        for dangerous in [
            "sys_admin",
            "sys_module",
            "mknod",
            "sys_ptrace",
            "sys_rawio",
        ] {
            assert_eq!(mask & (1 << number(dangerous).unwrap()), 0, "{dangerous}");
        }
        assert_ne!(mask & (1 << number("chown").unwrap()), 0);
    }

    #[test]
    fn add_and_drop() {
        let mask = keep_mask(&["net_admin".into()], &["chown".into()]).unwrap();
        assert!(names(mask).contains(&"net_admin"));
        assert!(!names(mask).contains(&"chown"));
        assert_eq!(keep_mask(&[], &["all".into()]).unwrap(), 0);
    }

    #[test]
    fn only_what_the_launcher_holds_is_given() {
        let held = keep_mask(&["all".into()], &["sys_resource".into()]).unwrap();
        let all = keep_mask(&["all".into()], &[]).unwrap();
        assert_eq!(within_held(&["all".into()], all, held).unwrap(), held);
        let err = within_held(&["sys_resource".into()], all, held).unwrap_err();
        assert!(err.to_string().contains("sys_resource"), "{err}");
        assert!(matches!(err, Error::CapNotHeld { .. }), "the host's: {err}");
        let default = keep_mask(&[], &[]).unwrap();
        assert_eq!(within_held(&[], default, held).unwrap(), default);
    }

    #[test]
    fn drop_all_then_add_keeps_what_is_added() {
        let only = keep_mask(&["net_bind_service".into()], &["all".into()]).unwrap();
        assert_eq!(names(only), ["net_bind_service"]);
        // Added after the drop, as Docker does.
        let both = keep_mask(&["chown".into()], &["chown".into()]).unwrap();
        assert!(names(both).contains(&"chown"));
        let all_but = keep_mask(&["all".into()], &["sys_admin".into()]).unwrap();
        assert!(!names(all_but).contains(&"sys_admin"));
        assert!(names(all_but).contains(&"sys_module"));
    }
}
