//! The tests' hooks: environment variables named `UNIFS_TEST_*` that stop,
//! pause or steer unifs at one point of its code, so that a test can land a
//! race or a failure there whatever the machine's load.
//!
//! They exist only in a build with the cargo feature `test-hooks`, the
//! tests' (`cargo test --release --features test-hooks`, README.md). In any
//! other build (`cargo build`, `cargo install`: what users run) each macro
//! here expands to the normal path and names no variable: a root who sets
//! one, or inherits it from a script, changes nothing (`UNIFS_TEST_NO_CLAIM`
//! or a negative `UNIFS_TEST_COARSE_CTIME` could lose data, a `*_STOP` would
//! stop a daemon dead), and the binary holds none of their names
//! (tests/it/review_s44_hooks.rs looks).
//!
//! A new hook: a name starting with `UNIFS_TEST_` (checked when it builds),
//! read through one of these macros, never through `std::env` (that test
//! also checks the source), with a comment at the call saying which test
//! needs it and why:
//!
//! - `test_hook!("UNIFS_TEST_X")`: the variable's value, an
//!   `Option<&'static OsStr>` (read once at each call site);
//! - `test_stop!("UNIFS_TEST_X_STOP")`: the process stops itself (SIGSTOP)
//!   there while it is set; the test acts, then sends SIGCONT;
//! - `test_pause!("UNIFS_TEST_X_PAUSE_MS")`: sleeps there for its
//!   milliseconds;
//! - `test_bound!("UNIFS_TEST_X_MAX", DEFAULT)`: its value, a positive
//!   number, in place of `DEFAULT`;
//! - `test_panic!("site")`: panics there when `UNIFS_TEST_CHILD_PANIC` is
//!   `site` (`test_panic!("site", expr)`: evaluates `expr` first).

/// `name`, a hook's name: a build fails when it does not start with
/// `UNIFS_TEST_` (this runs at compile time, in every build).
pub const fn hook_name(name: &'static str) -> &'static str {
    let (name_bytes, prefix) = (name.as_bytes(), b"UNIFS_TEST_");
    assert!(
        name_bytes.len() > prefix.len(),
        "a hook is named UNIFS_TEST_…"
    );
    let mut i = 0;
    while i < prefix.len() {
        assert!(name_bytes[i] == prefix[i], "a hook is named UNIFS_TEST_…");
        i += 1;
    }
    name
}

/// The value of the environment variable `name`.
#[cfg(feature = "test-hooks")]
pub fn read(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// Stops this process (SIGSTOP) until a SIGCONT.
#[cfg(feature = "test-hooks")]
pub fn stop() {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
}

/// Sleeps for the milliseconds `value` gives (not a number: not at all).
#[cfg(feature = "test-hooks")]
pub fn pause(value: Option<&std::ffi::OsStr>) {
    let ms = value.and_then(|v| v.to_str()?.parse().ok());
    if let Some(ms) = ms {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `value`, when a positive number; else `default`.
#[cfg(feature = "test-hooks")]
pub fn bound(value: Option<&std::ffi::OsStr>, default: usize) -> usize {
    value
        .and_then(|v| v.to_str()?.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// With the feature: the hooks.
#[cfg(feature = "test-hooks")]
mod built {
    macro_rules! test_hook {
        ($name:literal) => {{
            static VALUE: std::sync::OnceLock<Option<std::ffi::OsString>> =
                std::sync::OnceLock::new();
            VALUE
                .get_or_init(|| {
                    $crate::sys::test_hooks::read(
                        const { $crate::sys::test_hooks::hook_name($name) },
                    )
                })
                .as_deref()
        }};
    }

    macro_rules! test_stop {
        ($name:literal) => {
            if $crate::sys::test_hook!($name).is_some() {
                $crate::sys::test_hooks::stop();
            }
        };
        // Only where the variable's value is `$value`.
        ($name:literal, $value:expr) => {
            if $crate::sys::test_hook!($name).is_some_and(|v| *v == *$value) {
                $crate::sys::test_hooks::stop();
            }
        };
    }

    macro_rules! test_pause {
        ($name:literal) => {
            $crate::sys::test_hooks::pause($crate::sys::test_hook!($name))
        };
    }

    macro_rules! test_bound {
        ($name:literal, $default:expr) => {
            $crate::sys::test_hooks::bound($crate::sys::test_hook!($name), $default)
        };
    }

    macro_rules! test_panic {
        ($site:literal $(, $first:expr)?) => {
            if $crate::sys::test_hook!("UNIFS_TEST_CHILD_PANIC").is_some_and(|v| v == $site) {
                $($first;)?
                panic!(concat!("UNIFS_TEST_CHILD_PANIC=", $site));
            }
        };
    }

    pub(crate) use {test_bound, test_hook, test_panic, test_pause, test_stop};
}

/// Without the feature: the normal path, and no variable named.
#[cfg(not(feature = "test-hooks"))]
mod built {
    macro_rules! test_hook {
        ($name:literal) => {{
            const _: &str = $crate::sys::test_hooks::hook_name($name);
            None::<&'static std::ffi::OsStr>
        }};
    }

    macro_rules! test_stop {
        ($name:literal $(, $value:expr)?) => {{
            const _: &str = $crate::sys::test_hooks::hook_name($name);
        }};
    }

    macro_rules! test_pause {
        ($name:literal) => {{
            const _: &str = $crate::sys::test_hooks::hook_name($name);
        }};
    }

    macro_rules! test_bound {
        ($name:literal, $default:expr) => {{
            const _: &str = $crate::sys::test_hooks::hook_name($name);
            $default
        }};
    }

    macro_rules! test_panic {
        ($site:literal $(, $first:expr)?) => {};
    }

    pub(crate) use {test_bound, test_hook, test_panic, test_pause, test_stop};
}

pub(crate) use built::{test_bound, test_hook, test_panic, test_pause, test_stop};
