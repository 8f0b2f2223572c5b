//! `guest ps NAME`: a running guest's processes, seen from the host (as
//! util-vserver's `vps` and `machinectl status` show them), from its
//! cgroups and /proc: nothing runs inside the guest.

use serde::Serialize;

/// One process of a guest.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Process {
    /// Its PID on the host.
    pub pid: i32,
    /// Its PID inside the guest (1 for init).
    pub guest_pid: Option<i32>,
    /// Real uid.
    pub uid: Option<u32>,
    pub rss_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub cpu_secs: Option<f64>,
    /// `R`, `S`, `D`, `Z`, … as in /proc/PID/stat.
    pub state: Option<char>,
    /// Its arguments, or its name in brackets if it has none.
    pub command: String,
}

/// The processes among `pids` (listed from the guest's cgroups) that are
/// still there and still the guest's: each is read through one open
/// /proc/PID, checked to be in a group whose path holds `group` (as
/// `unifs/NAME`): a PID that ended and went to a host process since the
/// listing is left out. `init` is the guest's init, whose PID namespace
/// the guest PIDs are given in.
pub fn processes(pids: &[i32], init: i32, group: &str) -> Vec<Process> {
    let Ok(proc) = std::fs::File::open("/proc") else {
        return Vec::new();
    };
    // One worker for all the guest's cmdlines (see BoundedReads).
    let args = std::cell::RefCell::new(crate::sys::BoundedReads::new(crate::sys::ARGS_LIMIT));
    let read = |pid| read(&proc, pid, group, &mut args.borrow_mut());
    let mut read_all: Vec<(Process, Vec<i32>)> = pids.iter().filter_map(|&p| read(p)).collect();
    // Init's depth among the PID namespaces: a process in a namespace the
    // guest made below its own has more entries in NSpid.
    let depth = match read_all.iter().find(|(p, _)| p.pid == init) {
        Some((_, nspid)) => nspid.len(),
        None => match read(init) {
            Some((_, nspid)) => nspid.len(),
            None => return Vec::new(),
        },
    };
    for (p, nspid) in &mut read_all {
        p.guest_pid = depth.checked_sub(1).and_then(|i| nspid.get(i).copied());
    }
    read_all.into_iter().map(|(p, _)| p).collect()
}

/// The process `pid` if it is in `group`, with its NSpid (its PID in each
/// namespace from the host's down); `guest_pid` is left for the caller.
fn read(
    proc: &std::fs::File,
    pid: i32,
    group: &str,
    args: &mut crate::sys::BoundedReads,
) -> Option<(Process, Vec<i32>)> {
    use std::os::fd::AsFd;
    // Reads through this fd fail once the process is gone, PID reused or not.
    let dir = crate::sys::open_beneath(
        proc.as_fd(),
        std::path::Path::new(&pid.to_string()),
        libc::O_DIRECTORY | libc::O_RDONLY,
    )
    .ok()?;
    let open = |name: &str| {
        let fd = crate::sys::open_beneath(dir.as_fd(), std::path::Path::new(name), libc::O_RDONLY);
        fd.ok().map(std::fs::File::from)
    };
    let file = |name: &str| -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut open(name)?, &mut bytes).ok()?;
        Some(bytes)
    };
    let cgroups = String::from_utf8(file("cgroup")?).ok()?;
    if !in_group(&cgroups, group) {
        return None;
    }
    let status = String::from_utf8_lossy(&file("status")?).into_owned();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let nspid = super::state::nspid(&status)?;
    let uid = field("Uid").and_then(|v| v.split_whitespace().next()?.parse().ok());
    let rss_bytes = field("VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let stat = String::from_utf8_lossy(&file("stat")?).into_owned();
    let f = super::state::stat_fields(&stat)?;
    let state = f.first().and_then(|s| s.chars().next());
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_secs = match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) if ticks > 0.0 => {
            Some((u.parse::<u64>().ok()? + s.parse::<u64>().ok()?) as f64 / ticks)
        }
        _ => None,
    };
    // Its memory, read under its memory-map lock: bounded, and not tried
    // after a late one (see BoundedReads).
    let name = field("Name").unwrap_or("?");
    let skipped = args.gave_up();
    let cmdline = open("cmdline").map(|f| args.read(f));
    let command = match cmdline {
        Some(None) if skipped => format!("{name} (arguments unread: another's were late)"),
        Some(None) => format!("{name} (arguments unread: its memory map is locked)"),
        Some(Some(Ok(c))) if !c.is_empty() => c
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" "),
        _ => format!("[{name}]"),
    };
    let process = Process {
        pid,
        guest_pid: None,
        uid,
        rss_bytes,
        cpu_secs,
        state,
        command,
    };
    Some((process, nspid))
}

/// Whether /proc/PID/cgroup text `cgroups` puts the process in `group` or
/// below it. Paths start at the hierarchy's true root, which need not be
/// where it is mounted here (a host in a container mounts a subgroup as
/// its hierarchy): the guest's group anywhere along the path.
fn in_group(cgroups: &str, group: &str) -> bool {
    cgroups.lines().any(|l| {
        let path = l.splitn(3, ':').nth(2).unwrap_or_default();
        path.ends_with(&format!("/{group}")) || path.contains(&format!("/{group}/"))
    })
}

/// `command` for a terminal: the guest chose those bytes, and a newline
/// or an escape sequence in them would forge lines of the listing or
/// drive the operator's terminal, and a bidi override reorder the line.
/// Those ([`crate::sys::is_hidden`]) are shown as `?`, as procps does.
pub fn printable(command: &str) -> String {
    command
        .chars()
        .map(|c| if crate::sys::is_hidden(c) { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_found_wherever_its_hierarchy_is_mounted_from() {
        let g = "unifs/web1";
        assert!(in_group("4:memory:/unifs/web1/guest\n", g));
        assert!(in_group("0::/unifs/web1\n", g));
        assert!(in_group("4:memory:/docker/ab12/unifs/web1/guest/x\n", g));
        assert!(!in_group("4:memory:/unifs/web10/guest\n0::/\n", g));
        assert!(!in_group("4:memory:/unifs/web1x\n", g));
        assert!(!in_group("1:name=systemd:/user.slice\n", g));
    }

    #[test]
    fn control_characters_are_not_printed() {
        assert_eq!(
            printable("sh -c x\n  1 1 0 S sshd\u{1b}[31m"),
            "sh -c x?  1 1 0 S sshd?[31m"
        );
        assert_eq!(printable("vi \u{202e}txt.exe\u{9b}"), "vi ?txt.exe?");
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        assert!(
            processes(&[me], me, "no/such/group").is_empty(),
            "not in that group"
        );
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let group = mine
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .map(|p| p.trim_start_matches('/'))
            .find(|p| !p.is_empty());
        let Some(group) = group else {
            // In every hierarchy's root: the guest test (named_ps_…) covers it.
            eprintln!("reads_this_process: in no group of its own");
            return;
        };
        let p = processes(&[me, i32::MAX], me, group);
        assert_eq!(p.len(), 1, "a PID that is not there is left out");
        let p = &p[0];
        assert_eq!(p.pid, me);
        // SAFETY: getuid has no preconditions.
        assert_eq!(p.uid, Some(unsafe { libc::getuid() }));
        assert!(p.rss_bytes.unwrap() > 0);
        // The test's own thread runs; the process's main thread may sleep.
        assert!(matches!(p.state, Some('R' | 'S')), "{:?}", p.state);
        assert!(p.cpu_secs.unwrap() >= 0.0);
        assert_eq!(p.guest_pid, Some(me), "one PID namespace: the same");
        let arg0 = std::env::args().next().unwrap();
        assert!(p.command.starts_with(&arg0), "{}", p.command);
    }
}
