//! The calling thread's capabilities, through capget(2)/capset(2) (raw:
//! they act on one thread only, never on the process's others).

use std::io;

/// Kernel ABI of capget/capset, version 3 (two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// One word of each set: capabilities 0–31, then 32–63.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn header() -> CapHeader {
    CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    }
}

/// The calling thread's sets.
pub(crate) fn get() -> io::Result<[CapData; 2]> {
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data match the v3 ABI (one header, two data
    // words); the kernel writes only the two words.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &header(), data.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// Sets the calling thread's sets.
pub(crate) fn set(data: &[CapData; 2]) -> io::Result<()> {
    // SAFETY: header and data match the v3 ABI and outlive the call; the
    // kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header(), data.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts capability `cap` in or out of the calling thread's effective set
/// (in: only where it is permitted). Threads it starts afterwards inherit
/// its sets.
pub fn set_effective(cap: u32, on: bool) -> io::Result<()> {
    let mut data = get()?;
    let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    let before = data[word].effective;
    if on {
        data[word].effective |= bit & data[word].permitted;
    } else {
        data[word].effective &= !bit;
    }
    if data[word].effective == before {
        return Ok(());
    }
    set(&data)
}

/// Capability 24: exceeds disk quotas and uses the blocks ext4 reserves
/// for root, among other limits.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Runs `f` with CAP_SYS_RESOURCE in the calling thread's effective set (if
/// permitted), then puts the sets back as they were: for the few changes
/// that need it (ext4's `chattr +j`) in a thread that keeps it out.
pub fn with_sys_resource<T>(f: impl FnOnce() -> T) -> T {
    let before = get().ok();
    let _ = set_effective(CAP_SYS_RESOURCE, true);
    let out = f();
    if let Some(before) = before {
        let _ = set(&before);
    }
    out
}
