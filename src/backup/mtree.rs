//! The manifest as BSD mtree (mtree(5) as libarchive reads it), for tools
//! that speak mtree: `bsdtar -tvf guest.mtree`, `bsdtar -cf x.tar @guest.mtree`.

use super::manifest::{Entry, Header};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

pub fn write(out: &mut dyn Write, header: &Header, entries: &[Entry]) -> io::Result<()> {
    writeln!(out, "#mtree")?;
    // Escaped as names are: a newline in the guest's path would end the
    // comment, and the rest would be read as an entry.
    let root = escape(header.root_path().as_os_str().as_bytes());
    writeln!(
        out,
        "# unifs manifest of guest {} ({root})",
        escape(header.guest.as_bytes()),
    )?;
    for e in entries {
        let path = e.rel_path();
        // mtree(5) has no socket type (bsdtar warns and takes it for a
        // file), and a socket cannot be restored anyway: a comment says so.
        if e.kind == "socket" {
            writeln!(
                out,
                "# socket left out: ./{}",
                escape(path.as_os_str().as_bytes())
            )?;
            continue;
        }
        if path.as_os_str() == super::manifest::ROOT {
            write!(out, ".")?;
        } else {
            write!(out, "./{}", escape(path.as_os_str().as_bytes()))?;
        }
        let kind = match e.kind.as_str() {
            "symlink" => "link",
            k => k,
        };
        write!(
            out,
            " type={kind} uid={} gid={} mode={:04o} time={}",
            e.uid, e.gid, e.mode, e.mtime
        )?;
        if let Some(size) = e.size {
            write!(out, " size={size}")?;
        }
        if let Some(n) = e.nlink {
            write!(out, " nlink={n}")?;
        }
        if let Some(t) = e.target_path() {
            write!(out, " link={}", escape(t.as_os_str().as_bytes()))?;
        }
        if let (Some(maj), Some(min)) = (e.rdev_major, e.rdev_minor) {
            write!(out, " device=native,{maj},{min}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// vis(3)-style escaping: anything but plain printable characters becomes
/// `\ooo`, as mtree readers expect.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric() || b"./_+-,:@%=~^".contains(&b);
        if plain {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\{b:03o}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_spaces_and_non_ascii() {
        assert_eq!(escape(b"a b"), "a\\040b");
        assert_eq!(escape("é".as_bytes()), "\\303\\251");
        assert_eq!(escape(b"usr/lib/x.so.1"), "usr/lib/x.so.1");
    }
}
