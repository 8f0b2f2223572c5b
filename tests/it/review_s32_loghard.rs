//! Review s32 (log hardening): the tracing log (stderr, the mount daemon's
//! --log, a guest's log) wrote what a message carried as it was: tracing
//! escapes an ESC, not a newline or a bidi control, so a message with a
//! raw name could forge a line of the log. The writer now escapes them.

use crate::common::unifs_bin;
use crate::guest::harness::run_bounded;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;
use std::time::Duration;

/// `guest list` with a --config-dir that does not exist warns with the
/// directory's name as it is given (a real message that shows a name
/// raw): its newline, CR and U+202E reach the log escaped, on one line.
#[test]
fn a_raw_name_in_a_log_message_is_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().join("nope").into_os_string().into_vec();
    dir.extend_from_slice("\nFORGED \u{202e}txt\rFORGED2 \x1b[31mred".as_bytes());
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(tmp.path().join("store"));
    c.args(["guest", "list", "--config-dir"]);
    c.arg(OsString::from_vec(dir));
    c.env_remove("RUST_LOG").env_remove("NO_COLOR");
    let out = run_bounded(c, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warning.len(), 1, "{err:?}");
    assert!(
        warning[0].contains(r"nope\nFORGED \xe2\x80\xaetxt\rFORGED2 "),
        "{err:?}"
    );
    assert!(!err.lines().any(|l| l.starts_with("FORGED")), "{err:?}");
    assert!(!err.contains(['\r', '\u{202e}', '\x1b']), "{err:?}");
}
