//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The unifs binary built for these tests.
pub fn unifs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_unifs"))
}

/// True when running as root; privileged tests need it. Outside CI a test
/// without it skips with a reason; under CI (`CI` set) it fails instead.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI must not skip it");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// Whether strace is there (.ci/run installs it, for the fault-injection
/// tests); outside CI a test without it skips with a reason, under CI it
/// fails.
pub fn require_strace(test: &str) -> bool {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok()
    {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs strace, and CI must not skip it");
    }
    eprintln!("skipping {test}: needs strace");
    false
}
