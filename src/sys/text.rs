//! How text a guest chose (file names, symlink targets, xattr names, its
//! processes' command lines) is shown: one rule for every message, the log
//! and `--json` output. Printed as they are, a newline in a name forges a
//! line of our output, an escape sequence drives the operator's terminal
//! (sets its title, writes its clipboard: OSC 52), and a bidi override
//! makes `exe.txt` read as another name.

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether `c` must not reach a terminal or a log as it is: a control
/// character (C0, DEL, C1: they move the cursor, end lines and begin escape
/// sequences), or one that is invisible or reorders the text around it (the
/// bidi controls such as U+202E, zero-width characters, the soft hyphen,
/// the line and paragraph separators U+2028 and U+2029).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// `text`, a message, for a terminal or a log: each [`is_hidden`]
/// character escaped, `\n`, `\r`, `\t`, the others a byte at a time as
/// `\xNN` (U+202E is `\xe2\x80\xae`), as bash's `$'…'` reads them.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    push_escaped(&mut out, text, false);
    out.into()
}

/// A path for a message: as [`clean`] shows text, a backslash doubled
/// (`\\`), and bytes that are not UTF-8 in hex (`\xff`), so that no two
/// names are shown alike (a file named `a\x1b` and one with an ESC, or the
/// byte 0x9b and the character U+009B): read as the inside of bash's
/// `$'…'`, it gives the name's bytes back (but a `'`, which stays as it is).
pub fn shown(p: &Path) -> String {
    let mut out = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        push_escaped(&mut out, chunk.valid(), true);
        for b in chunk.invalid() {
            push_byte(&mut out, *b);
        }
    }
    out
}

/// A name that is text (a guest's name in the catalog) as [`shown`] shows
/// a path.
pub fn shown_str(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    push_escaped(&mut out, name, true);
    out
}

fn push_escaped(out: &mut String, text: &str, backslash: bool) {
    for c in text.chars() {
        push_char(out, c, backslash);
    }
}

fn push_char(out: &mut String, c: char, backslash: bool) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' if backslash => out.push_str("\\\\"),
        c if is_hidden(c) => {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                push_byte(out, b);
            }
        }
        c => out.push(c),
    }
}

/// A line of the log (one tracing event, formatted) as it is written:
/// each [`is_hidden`] character escaped as [`clean`] does, and bytes that
/// are not UTF-8 in hex, but the newline that ends it and, with `colour`,
/// the formatter's own colour codes (`ESC [ 0-9; m`: tracing escapes an
/// ESC in a message itself). The messages clean the names they show; this
/// is the catch-all for one that does not, so that no name forges a line
/// of the mount daemon's log or drives the terminal.
pub fn log_line(line: &[u8], colour: bool) -> Cow<'_, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let plain = |t: &str| !t.chars().any(|c| is_hidden(c) && (c != '\x1b' || !colour));
    if std::str::from_utf8(body).is_ok_and(plain) {
        return line.into();
    }
    let mut out = String::with_capacity(line.len() + 16);
    for chunk in body.utf8_chunks() {
        push_log_text(&mut out, chunk.valid(), colour);
        for b in chunk.invalid() {
            push_byte(&mut out, *b);
        }
    }
    if body.len() < line.len() {
        out.push('\n');
    }
    Cow::Owned(out.into_bytes())
}

fn push_log_text(out: &mut String, text: &str, colour: bool) {
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = match colour && c == '\x1b' {
            true => colour_code_len(rest),
            false => 0,
        };
        if len > 0 {
            out.push_str(&rest[..len]);
        } else {
            push_char(out, c, false);
        }
        rest = &rest[len.max(c.len_utf8())..];
    }
}

/// The length of the SGR sequence `text` starts with (`ESC [ 1;31 m`), or 0.
fn colour_code_len(text: &str) -> usize {
    let Some(args) = text.strip_prefix("\x1b[") else {
        return 0;
    };
    let n = args
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    match args.as_bytes().get(n) {
        Some(b'm') => 2 + n + 1,
        _ => 0,
    }
}

/// Always two digits: a hex digit after it stays itself.
fn push_byte(out: &mut String, b: u8) {
    out.push_str(&format!("\\x{b:02x}"));
}

/// JSON text (serde_json's) with every [`is_hidden`] character that it
/// leaves raw (DEL, C1, U+202E, …) escaped as `\uXXXX`: the same JSON
/// values, which a terminal it is printed on does not act on. Outside
/// strings JSON text is ASCII, and the C0 controls in strings are escaped
/// already, so each such character is in a string.
pub fn json_safe(json: String) -> String {
    if !json.chars().any(|c| c as u32 >= 0x7f && is_hidden(c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c as u32 >= 0x7f && is_hidden(c) {
            // All of them are in the BMP: one \u escape each.
            true => out.push_str(&format!("\\u{:04x}", c as u32)),
            false => out.push(c),
        }
    }
    out
}

/// `path` as one shell word, quoted where it needs it, for commands the
/// messages give to be pasted: bash's `$'…'` with `\xNN` escapes where it
/// is not UTF-8 or has [`is_hidden`] characters, so it names the same bytes.
pub fn shell_word(path: &Path) -> String {
    let bytes = path.as_os_str().as_bytes();
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(b);
    if !bytes.is_empty() && bytes.iter().all(plain) {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(is_hidden) => {
            format!("'{}'", text.replace('\'', r"'\''"))
        }
        _ => {
            let mut out = String::from("$'");
            for &b in bytes {
                match b {
                    b'\'' | b'\\' => {
                        out.push('\\');
                        out.push(b as char);
                    }
                    0x20..=0x7e => out.push(b as char),
                    _ => push_byte(&mut out, b),
                }
            }
            out.push('\'');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn hidden_characters_are_escaped_byte_by_byte() {
        assert_eq!(clean("plain/name é"), "plain/name é");
        assert_eq!(
            clean("evil\nunifs: fine\x1b[31m\u{9b}\t\u{202e}"),
            "evil\\nunifs: fine\\x1b[31m\\xc2\\x9b\\t\\xe2\\x80\\xae"
        );
        // A message's own backslashes stay; a name's are doubled.
        assert_eq!(clean(r"`g\xff2`"), r"`g\xff2`");
        assert_eq!(shown_str(r"a\x1b"), r"a\\x1b");
    }

    #[test]
    fn no_two_names_are_shown_alike() {
        let names: [&[u8]; 6] = [
            b"c\x9b",
            "c\u{9b}".as_bytes(),
            b"e\x1b",
            br"e\x1b",
            br"e\\x1b",
            "e\u{1b}\u{200b}".as_bytes(),
        ];
        let mut shown: Vec<String> = names
            .iter()
            .map(|n| super::shown(Path::new(OsStr::from_bytes(n))))
            .collect();
        assert_eq!(shown[0], r"c\x9b");
        assert_eq!(shown[1], r"c\xc2\x9b");
        shown.sort();
        shown.dedup();
        assert_eq!(shown.len(), names.len(), "{shown:?}");
    }

    #[test]
    fn a_log_line_keeps_its_end_and_colours_only() {
        let line = b"\x1b[2mtime\x1b[0m \x1b[33mWARN\x1b[0m a\nb\r\xff\xe2\x80\xae\x1b]0;t\x07\n";
        let shown = |colour| String::from_utf8(log_line(line, colour).into_owned()).unwrap();
        assert_eq!(
            shown(true),
            "\x1b[2mtime\x1b[0m \x1b[33mWARN\x1b[0m a\\nb\\r\\xff\\xe2\\x80\\xae\\x1b]0;t\\x07\n"
        );
        assert!(!shown(false).contains('\x1b'), "{}", shown(false));
        assert_eq!(shown(false).lines().count(), 1);
        assert!(matches!(
            log_line(b"plain \xc3\xa9\n", false),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_keeps_its_values() {
        let value = serde_json::json!({"path": "a\u{7f}\u{9b}2J\u{202e}\u{1b}é\u{2028}"});
        let text = json_safe(serde_json::to_string(&value).unwrap());
        assert_eq!(text, r#"{"path":"a\u007f\u009b2J\u202e\u001bé\u2028"}"#);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
