//! The kernel's own word on which process a memory group's OOM killer
//! ended. A group's `oom_kill` count says that one of its processes was
//! killed, not which: a SIGKILL from anyone else at the same moment looked
//! the same. The kernel logs each kill, naming the victim by its PID in the
//! initial PID namespace ("Memory cgroup out of memory: Killed process
//! 4242 (sh) total-vm:…", mm/oom_kill.c), after it counted it and sent the
//! signal. Read through /dev/kmsg, from where the log stood when opened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// What a memory group's OOM kill is logged as, before the victim's PID.
const KILLED: &str = "Memory cgroup out of memory: Killed process ";

/// The inode of the initial PID namespace (include/linux/proc_ns.h,
/// PROC_PID_INIT_INO): the one whose PIDs the log names.
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// How many victims are remembered (a host whose guests are killed often:
/// the oldest go).
const REMEMBERED: usize = 4096;

/// /dev/kmsg, open from where the log stood, and the victims its records
/// named since.
pub struct KernelLog {
    kmsg: File,
    victims: VecDeque<i32>,
    /// Records were overwritten before they were read (EPIPE) or the log
    /// failed: a victim may be missing.
    lost: bool,
}

impl KernelLog {
    /// Opens the log at its end. None where it cannot name our processes:
    /// no /dev/kmsg (a container's /dev), not allowed (dmesg_restrict
    /// without CAP_SYSLOG), or a PID namespace other than the initial one
    /// (our PIDs are not the log's).
    pub fn open() -> Option<KernelLog> {
        let ns = std::fs::metadata("/proc/self/ns/pid").ok()?;
        if ns.ino() != INITIAL_PID_NS {
            return None;
        }
        let mut kmsg = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/kmsg")
            .ok()?;
        kmsg.seek(SeekFrom::End(0)).ok()?;
        Some(KernelLog {
            kmsg,
            victims: VecDeque::new(),
            lost: false,
        })
    }

    /// Its fd, for a caller that closes all others.
    pub fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.kmsg.as_raw_fd()
    }

    /// Reads the records logged since the last read (without waiting),
    /// noting the victims they name.
    pub fn read_new(&mut self) {
        // A record is at most 8 KiB with its dictionary (CONSOLE_EXT_LOG_MAX).
        let mut buf = vec![0u8; 8192];
        loop {
            match self.kmsg.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if let Some(pid) = victim(&buf[..n]) {
                        if self.victims.len() == REMEMBERED {
                            self.victims.pop_front();
                        }
                        self.victims.push_back(pid);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Overwritten before read; the next read goes on from the
                // oldest record left.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => self.lost = true,
                Err(_) => {
                    self.lost = true;
                    return;
                }
            }
        }
    }

    /// Whether a record read so far named `pid` as a memory group's OOM
    /// victim; None when records were lost (it cannot be told).
    pub fn named(&self, pid: i32) -> Option<bool> {
        match self.victims.contains(&pid) {
            true => Some(true),
            false if self.lost => None,
            false => Some(false),
        }
    }
}

/// The PID one /dev/kmsg record names as a memory group's OOM victim:
/// "PRI,SEQ,TS,FLAGS;MESSAGE\n" with the kernel's facility (0): one written
/// to /dev/kmsg by a process gets LOG_USER at least, whatever it asks.
fn victim(record: &[u8]) -> Option<i32> {
    let record = std::str::from_utf8(record).ok()?;
    let (prefix, message) = record.split_once(';')?;
    let pri: u32 = prefix.split(',').next()?.parse().ok()?;
    if pri >> 3 != 0 {
        return None;
    }
    let rest = message.strip_prefix(KILLED)?;
    let (pid, _) = rest.split_once(' ')?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::victim;

    #[test]
    fn a_record_names_the_victim_only_as_the_kernels_memory_group_kill() {
        let kill = "3,25156,21919637510,-;Memory cgroup out of memory: Killed process 2381 \
                    (sh) total-vm:18400kB, anon-rss:14976kB, UID:0 pgtables:80kB \
                    oom_score_adj:0\n";
        assert_eq!(victim(kill.as_bytes()), Some(2381));
        // Written by a process (LOG_USER, facility 1: 8 + 3).
        let forged = kill.replacen("3,", "11,", 1);
        assert_eq!(victim(forged.as_bytes()), None);
        // The host out of memory: not a group's limit.
        let global = kill.replacen("Memory cgroup out of memory", "Out of memory", 1);
        assert_eq!(victim(global.as_bytes()), None);
        assert_eq!(
            victim(b"6,1,2,-;oom_reaper: reaped process 2381 (sh)\n"),
            None
        );
    }
}
