//! Who holds a flock, as /proc/locks says.

/// The pids holding a flock on the inode `ino` of device `dev`, from
/// /proc/locks (lines like `1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0
/// EOF`: the device as hex major:minor, the inode in decimal; a blocked
/// waiter's line has `->` before FLOCK and is no holder). `None` where the
/// file cannot be read. A holder outside the PID namespace of the reader's
/// /proc is not listed at all (fs/locks.c, locks_show: no pid to show), so
/// the list is empty for a lock held only there.
///
/// The kernel serves the file a page at a time and walks its lock list
/// again from the same index for each page: a lock let go before that
/// index meanwhile shifts the list, and a line is skipped. Under a busy
/// machine that is the one line asked for often enough, so a read that
/// finds no holder is tried again, up to three reads in all.
pub fn flock_holders(dev: u64, ino: u64) -> Option<Vec<i32>> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut pids = Vec::new();
    let mut read_any = false;
    for _ in 0..3 {
        if !pids.is_empty() {
            break;
        }
        let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
            continue;
        };
        read_any = true;
        pids.extend(locks.lines().filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&"FLOCK") {
                return None;
            }
            let mut id = f.get(5)?.split(':');
            let maj = u32::from_str_radix(id.next()?, 16).ok()?;
            let min = u32::from_str_radix(id.next()?, 16).ok()?;
            let i: u64 = id.next()?.parse().ok()?;
            (maj == major && min == minor && i == ino)
                .then(|| f.get(4)?.parse::<i32>().ok())
                .flatten()
        }));
    }
    pids.sort_unstable();
    pids.dedup();
    read_any.then_some(pids)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_held_flock_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("l")).unwrap();
        let md = file.metadata().unwrap();
        assert_eq!(super::flock_holders(md.dev(), md.ino()), Some(vec![]));
        // SAFETY: flock on an fd we own.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        let me = std::process::id() as i32;
        assert_eq!(super::flock_holders(md.dev(), md.ino()), Some(vec![me]));
    }
}
