//! The kernel's own word on which process a memory group's OOM killer
//! ended. A group's `oom_kill` count says that one of its processes was
//! killed, not which: a SIGKILL from anyone else at the same moment looked
//! the same. The kernel logs each kill, naming the victim by its PID in the
//! initial PID namespace ("Memory cgroup out of memory: Killed process
//! 4242 (sh) total-vm:…", mm/oom_kill.c), after it counted it and sent the
//! signal. Read through /dev/kmsg, from where the log stood when opened.
//!
//! That PID is the thread the kernel took the memory from: a process whose
//! main thread has ended (`pthread_exit`) is named by another thread's ID,
//! not its own. The summary the kernel logs just before ("oom-kill:
//! constraint=CONSTRAINT_MEMCG,…,task=NAME,pid=PID,uid=UID") names the
//! process it chose, by its own PID; it is rate-limited (10 in 5 s, for the
//! whole host), so it only adds to the other.
//!
//! The host out of memory (no group's limit) logs the same two lines with
//! "Out of memory" and a constraint other than CONSTRAINT_MEMCG: its
//! victims are noted apart, as the host's OOM killer's.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Instant;

/// What a memory group's OOM kill is logged as, before the victim's PID.
const KILLED: &str = "Memory cgroup out of memory: Killed process ";

/// What the host's OOM kill is logged as (mm/oom_kill.c, out_of_memory):
/// "Out of memory", or "Out of memory (oom_kill_allocating_task)", then
/// [`HOST_KILLED`] and the victim's PID.
const HOST_OUT_OF_MEMORY: &str = "Out of memory";
const HOST_KILLED: &str = ": Killed process ";

/// How the summary of an OOM kill begins (mm/oom_kill.c,
/// dump_oom_summary); the chosen process's PID is near its end.
const SUMMARY: &str = "oom-kill:constraint=";

/// The summary's constraint of a memory group's OOM kill; any other
/// (CONSTRAINT_NONE, a cpuset's or a memory policy's) is the host's.
const MEMCG: &str = "CONSTRAINT_MEMCG,";

/// The inode of the initial PID namespace (include/linux/proc_ns.h,
/// PROC_PID_INIT_INO): the one whose PIDs the log names.
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// How many victims are remembered (a host whose guests are killed often:
/// the oldest go).
const REMEMBERED: usize = 4096;

/// Which OOM killer a record names a victim of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killer {
    /// A memory group's, at its limit.
    Limit,
    /// The host's, out of memory.
    Host,
}

/// Puts `line` in the kernel's log as a warning of `unifs-keeper[PID]`
/// (dmesg; the host's journal, `journalctl -k`): for what a keeper cannot
/// say where `guest status` and `logs` look. Nothing where /dev/kmsg cannot
/// be written (a container's /dev).
pub fn say(line: &str) {
    use std::io::Write;
    let record = format!("<4>unifs-keeper[{}]: {line}\n", std::process::id());
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(record.as_bytes());
    }
}

/// /dev/kmsg, open from where the log stood, and the victims its records
/// named since.
pub struct KernelLog {
    kmsg: File,
    victims: VecDeque<(i32, Killer)>,
    /// The process the record just read, a summary, named.
    chosen: Option<(i32, Killer)>,
    /// When records were last overwritten before they were read (EPIPE),
    /// skipped with a kill counted meanwhile, or the log failed: a victim
    /// may be missing (a kill then or before).
    lost: Option<Instant>,
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
            chosen: None,
            lost: None,
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
                // The summary's process counts only with the kill logged
                // next: none follows where the kernel found it exiting.
                Ok(n) => match (self.parse(&buf[..n]), self.chosen.take()) {
                    (Some(Record::Chosen(pid, by)), _) => self.chosen = Some((pid, by)),
                    (Some(Record::Killed(pid, by)), chosen) => {
                        self.remember(pid, by);
                        if let Some(chosen) = chosen.filter(|c| c.0 != pid && c.1 == by) {
                            self.remember(chosen.0, by);
                        }
                    }
                    (None, _) => {}
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Overwritten before read; the next read goes on from the
                // oldest record left.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => self.lose(),
                Err(_) => {
                    self.lose();
                    return;
                }
            }
        }
    }

    /// Skips the records logged since the last read, unread (a read per
    /// record of the whole host, in every keeper, `run` and `exec`, cost
    /// each a share of a flood of the log: docs/benchmarks.md). For a
    /// caller whose group's count has not risen since its last read, nor
    /// at the read before (a record logged just after its kill was counted
    /// has had a sample's time: `oom_watch::sample`): the kernel counts a
    /// kill before it logs its victim, so none of them names it (only a
    /// summary just before a kill counted a moment after the count was
    /// read may go: a victim whose main thread had ended is then not
    /// named, as when the summary is rate-limited).
    /// `counted_since`, asked once the log's end is taken: whether the
    /// count rose after the caller read it; that kill may have been logged
    /// before the end, unread, and the log can no longer tell.
    pub fn skip(&mut self, counted_since: impl FnOnce() -> bool) {
        if self.kmsg.seek(SeekFrom::End(0)).is_err() {
            return self.read_new();
        }
        // A summary read last is no longer followed by its kill.
        self.chosen = None;
        if counted_since() {
            self.lose();
        }
    }

    /// Notes that a victim may be missing: a kill up to now.
    fn lose(&mut self) {
        self.lost = Some(Instant::now());
    }

    /// Forgets records lost before `then` (None: none is forgotten): a
    /// caller for whom a kill so long ago is no longer the cause of what it
    /// asks about. A loss once (a count that rose just as the log was
    /// skipped, a flood) left a keeper unable to tell any later kill for
    /// its life.
    pub fn forget_lost_before(&mut self, then: Option<Instant>) {
        if self.lost.is_some_and(|lost| then.is_some_and(|t| lost < t)) {
            self.lost = None;
        }
    }

    /// [`record`]; none at all with the tests' UNIFS_TEST_KMSG_FOREIGN, as
    /// on a kernel whose lines read otherwise. With UNIFS_TEST_KMSG_HOST a
    /// memory group's kill is read as the host's (the host cannot be run
    /// out of memory in a test): its lines as the kernel words the host's.
    fn parse(&self, bytes: &[u8]) -> Option<Record> {
        if crate::sys::test_hook!("UNIFS_TEST_KMSG_FOREIGN").is_some() {
            return None;
        }
        if crate::sys::test_hook!("UNIFS_TEST_KMSG_HOST").is_some() {
            let line = String::from_utf8_lossy(bytes)
                .replace(KILLED, &format!("{HOST_OUT_OF_MEMORY}{HOST_KILLED}"))
                .replace(MEMCG, "CONSTRAINT_NONE,");
            return record(line.as_bytes());
        }
        record(bytes)
    }

    fn remember(&mut self, pid: i32, by: Killer) {
        if self.victims.len() == REMEMBERED {
            self.victims.pop_front();
        }
        self.victims.push_back((pid, by));
    }

    /// Whether any record read so far named a victim.
    pub fn named_any(&self) -> bool {
        !self.victims.is_empty()
    }

    /// Which OOM killer a record read so far named `pid` the victim of
    /// (Some(None): none); None when records were lost (it cannot be told).
    pub fn named(&self, pid: i32) -> Option<Option<Killer>> {
        // The latest: a PID the host's killer named once may be reused.
        let by = self.victims.iter().rev().find(|v| v.0 == pid);
        match by {
            Some(&(_, by)) => Some(Some(by)),
            None if self.lost.is_some() => None,
            None => Some(None),
        }
    }
}

/// What one /dev/kmsg record says of an OOM kill.
#[derive(Debug, PartialEq)]
enum Record {
    /// The summary: the process the OOM killer chose.
    Chosen(i32, Killer),
    /// The kill: the thread whose memory it takes (the process's own PID
    /// unless its main thread has ended).
    Killed(i32, Killer),
}

/// "PRI,SEQ,TS,FLAGS;MESSAGE\n" with the kernel's facility (0): one written
/// to /dev/kmsg by a process gets LOG_USER at least, whatever it asks.
fn record(record: &[u8]) -> Option<Record> {
    let record = std::str::from_utf8(record).ok()?;
    let (prefix, message) = record.split_once(';')?;
    let pri: u32 = prefix.split(',').next()?.parse().ok()?;
    if pri >> 3 != 0 {
        return None;
    }
    let message = message.lines().next()?;
    if let Some(rest) = message.strip_prefix(KILLED) {
        let (pid, _) = rest.split_once(' ')?;
        return pid
            .parse()
            .ok()
            .map(|pid| Record::Killed(pid, Killer::Limit));
    }
    if let Some(rest) = message.strip_prefix(HOST_OUT_OF_MEMORY) {
        // A reason in parentheses may come first; the victim's name after
        // the PID may hold anything, the text before it not.
        let (reason, rest) = rest.split_once(HOST_KILLED)?;
        if !(reason.is_empty() || reason.starts_with(" (") && reason.ends_with(')')) {
            return None;
        }
        let (pid, _) = rest.split_once(' ')?;
        return pid
            .parse()
            .ok()
            .map(|pid| Record::Killed(pid, Killer::Host));
    }
    // The PID is the last field but one: the task's name before it may
    // hold anything, ",pid=" too.
    let rest = message.strip_prefix(SUMMARY)?;
    let by = match rest.starts_with(MEMCG) {
        true => Killer::Limit,
        false => Killer::Host,
    };
    let (_, pid) = rest.rsplit_once(",pid=")?;
    let (pid, _uid) = pid.split_once(",uid=")?;
    pid.parse().ok().map(|pid| Record::Chosen(pid, by))
}

#[cfg(test)]
mod tests {
    use super::{record, Killer, Record};

    #[test]
    fn a_record_names_the_victim_only_as_the_kernels_memory_group_kill() {
        let kill = "3,25156,21919637510,-;Memory cgroup out of memory: Killed process 2381 \
                    (sh) total-vm:18400kB, anon-rss:14976kB, UID:0 pgtables:80kB \
                    oom_score_adj:0\n";
        assert_eq!(
            record(kill.as_bytes()),
            Some(Record::Killed(2381, Killer::Limit))
        );
        // Written by a process (LOG_USER, facility 1: 8 + 3).
        let forged = kill.replacen("3,", "11,", 1);
        assert_eq!(record(forged.as_bytes()), None);
        assert_eq!(
            record(b"6,1,2,-;oom_reaper: reaped process 2381 (sh)\n"),
            None
        );
    }

    /// The host out of memory, as a 6.x kernel logs it (mm/oom_kill.c;
    /// the shapes of a real host's log: the summary, then the kill).
    #[test]
    fn a_record_names_the_hosts_oom_kill_as_the_hosts() {
        let summary = "6,812,5912345678,-;oom-kill:constraint=CONSTRAINT_NONE,\
                       nodemask=(null),cpuset=/,mems_allowed=0,global_oom,\
                       task_memcg=/init.scope,task=python,pid=7899,uid=0\n";
        assert_eq!(
            record(summary.as_bytes()),
            Some(Record::Chosen(7899, Killer::Host))
        );
        let kill = "3,813,5912345901,-;Out of memory: Killed process 7899 (python) \
                    total-vm:26184840kB, anon-rss:15370088kB, file-rss:0kB, shmem-rss:0kB, \
                    UID:0 pgtables:38964kB oom_score_adj:0\n";
        assert_eq!(
            record(kill.as_bytes()),
            Some(Record::Killed(7899, Killer::Host))
        );
        // vm.oom_kill_allocating_task: the allocating task, said so.
        let allocating = kill.replace("memory:", "memory (oom_kill_allocating_task):");
        assert_eq!(
            record(allocating.as_bytes()),
            Some(Record::Killed(7899, Killer::Host))
        );
        // A cpuset's or a memory policy's nodes out of memory: the host's too.
        let cpuset = summary.replace("CONSTRAINT_NONE", "CONSTRAINT_CPUSET");
        assert_eq!(
            record(cpuset.as_bytes()),
            Some(Record::Chosen(7899, Killer::Host))
        );
        // Not the kernel's, or not the kill line.
        let forged = kill.replacen("3,", "11,", 1);
        assert_eq!(record(forged.as_bytes()), None);
        let other = kill.replace("Out of memory:", "Out of memory and more:");
        assert_eq!(record(other.as_bytes()), None);
    }

    #[test]
    fn a_summary_names_the_chosen_process_whatever_its_name() {
        let summary = "6,2397,26753065627,-;oom-kill:constraint=CONSTRAINT_MEMCG,\
                       nodemask=(null),cpuset=guest,mems_allowed=0,oom_memcg=/unifs/g,\
                       task_memcg=/unifs/g/guest,task=lead,pid=26731,uid=0\n";
        let chosen = Some(Record::Chosen(26731, Killer::Limit));
        assert_eq!(record(summary.as_bytes()), chosen);
        // A name (15 bytes at most) that looks like the fields after it.
        let named = summary.replace("task=lead", "task=,pid=1,uid=0");
        assert_eq!(record(named.as_bytes()), chosen);
        let forged = summary.replacen("6,", "14,", 1);
        assert_eq!(record(forged.as_bytes()), None);
    }
}
