//! Counts in words for people: `1,234,567`, `1 file`, `2 files`. The
//! library's messages use them as the command line's do.

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` and the word for it: `1 file`, `2 files` (`one`, `many`: the
/// words for one and for any other number, as English has them).
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), word(n, one, many))
}

/// The word for `n` things: `one` for 1, `many` for any other number.
pub fn word<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}
