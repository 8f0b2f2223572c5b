//! Formatting for people: sizes, counts, problems.

use super::print::errln;
use crate::unify::Problem;

/// `1234567` → `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub use crate::words::{count, counted, word};

/// Parses `4096`, `4k`, `10M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(format!("unknown size suffix in {s:?} (use k, M or G)")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n = num
        .parse::<u64>()
        .map_err(|_| format!("not a size: {s:?}"))?;
    // Checked: wrapped around, a huge size became a small one.
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large (at most 16 EiB)"))
}

pub use crate::sys::{clean, shown as path, shown_str as name};

/// `value` as `--json` prints it: pretty, with what a terminal would act
/// on escaped ([`crate::sys::json_safe`]).
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(crate::sys::json_safe)
}

/// A guest's name (`store stats`, the unify summary) as [`path`] shows it.
/// The catalog names a guest after its directory made text (bytes that are
/// not UTF-8 replaced), with `-2`, … when taken: those bytes are shown from
/// `root`'s own name.
pub fn guest_name(name: &str, root: &std::path::Path) -> String {
    let base = root.file_name().unwrap_or_default();
    let lossy = base.to_string_lossy();
    match name.strip_prefix(lossy.as_ref()) {
        Some(rest) if lossy.contains('\u{fffd}') => {
            format!("{}{}", path(std::path::Path::new(base)), self::name(rest))
        }
        _ => self::name(name),
    }
}

/// Prints problems, at most `limit` of them unless `all`.
pub fn print_problems(problems: &[Problem], all: bool) {
    let limit = if all { usize::MAX } else { 20 };
    for p in problems.iter().take(limit) {
        errln!("unifs: warning: {}: {}", path(&p.path), clean(&p.what));
    }
    if problems.len() > limit {
        errln!(
            "unifs: … and {} more (use -v to list all, or --json)",
            problems.len() - limit
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_show_in_hex() {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/g/b\xffd\n\xc3"));
        assert_eq!(path(p), "/g/b\\xffd\\n\\xc3");
        assert_eq!(guest_name("b\u{fffd}d\n\u{fffd}-2", p), "b\\xffd\\n\\xc3-2");
        assert_eq!(
            guest_name("web\x1b", std::path::Path::new("/g/web\x1b")),
            "web\\x1b"
        );
        assert_eq!(
            guest_name("w\\x1b\u{202e}", std::path::Path::new("/g/w")),
            "w\\\\x1b\\xe2\\x80\\xae"
        );
        // A name that is not the directory's (moved since) is shown as it is.
        assert_eq!(guest_name("old\u{fffd}", p), "old\u{fffd}");
    }

    #[test]
    fn formats_and_parses() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert!(parse_size("x").is_err());
        assert!(
            parse_size("17179869184G").is_err(),
            "2^64 does not wrap to 0"
        );
    }
}
