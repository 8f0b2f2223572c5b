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
    /// Its arguments, or its name in brackets if it has none (a zombie).
    pub command: String,
}

/// The processes among `pids` still there, by host PID. A process that
/// ends while it is read is left out.
pub fn processes(pids: &[i32]) -> Vec<Process> {
    pids.iter().filter_map(|&pid| read(pid)).collect()
}

fn read(pid: i32) -> Option<Process> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    // NSpid: the PID in each namespace from the host's down; the last is
    // the guest's own.
    let guest_pid = field("NSpid").and_then(|v| v.split_whitespace().last()?.parse().ok());
    let uid = field("Uid").and_then(|v| v.split_whitespace().next()?.parse().ok());
    let rss_bytes = field("VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    let state = f.first().and_then(|s| s.chars().next());
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_secs = match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) if ticks > 0.0 => {
            Some((u.parse::<u64>().ok()? + s.parse::<u64>().ok()?) as f64 / ticks)
        }
        _ => None,
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = match cmdline.is_empty() {
        true => format!("[{}]", field("Name").unwrap_or("?")),
        false => cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" "),
    };
    Some(Process {
        pid,
        guest_pid,
        uid,
        rss_bytes,
        cpu_secs,
        state,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let p = processes(&[me, i32::MAX]);
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
