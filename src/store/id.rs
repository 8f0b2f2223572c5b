//! Object ids: blake3 over a canonical metadata header followed by the
//! content. docs/store-format.md specifies the exact bytes.

use crate::sys::{self, Stat, Timestamp};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::str::FromStr;

/// Xattrs whose names start with this belong to the store, not the file:
/// they are left out of the header and hidden from guests.
pub const STORE_XATTR_PREFIX: &[u8] = b"trusted.unifs.";

/// Version of the header layout; part of every id.
pub const FORMAT_VERSION: u8 = 1;

/// A 32-byte blake3 digest naming an object (or, as [`ContentHash`], its content).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

/// blake3 of a file's content alone, kept so reports can say "same content,
/// other owner".
pub type ContentHash = ObjectId;

impl ObjectId {
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not an object id (64 hex digits): {0:?}")]
pub struct BadId(pub String);

impl FromStr for ObjectId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(BadId(s.to_string()));
        }
        // By table: the catalog parses tens of thousands of these per run.
        const fn table() -> [u8; 256] {
            let mut t = [0xff; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                t[b'A' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        }
        const NIBBLE: [u8; 256] = table();
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let (hi, lo) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
            bad |= hi | lo;
            *o = hi << 4 | lo;
        }
        if bad & 0xf0 != 0 {
            return Err(BadId(s.to_string()));
        }
        Ok(ObjectId(out))
    }
}

/// Lowercase hex of any bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// What of a file's inode an object id covers besides the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Permission bits, set-id and sticky bits (`st_mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// `None` in a store created with `--ignore-mtime`.
    pub mtime: Option<Timestamp>,
    /// Sorted by name, store xattrs excluded.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    pub size: u64,
}

impl ObjectMeta {
    /// Reads the metadata of an open file.
    pub fn of_fd(fd: BorrowedFd, st: &Stat, ignore_mtime: bool) -> io::Result<ObjectMeta> {
        let xattrs = sys::xattr::list_fd_where(fd, |name| !name.starts_with(STORE_XATTR_PREFIX))?;
        Ok(ObjectMeta {
            perm: st.perm(),
            uid: st.uid,
            gid: st.gid,
            // The instant: a copy of a file whose raw nanoseconds pass a
            // second (a damaged ext4 inode) can have no other, and the id
            // must be its copies' too (`store verify`, scripts/object-id.py).
            mtime: (!ignore_mtime).then_some(st.mtime.instant()),
            xattrs,
            size: st.size,
        })
    }

    /// The canonical header: see docs/store-format.md, "Object id".
    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(64);
        h.extend_from_slice(b"unifs-object\0");
        h.push(FORMAT_VERSION);
        h.extend_from_slice(&self.perm.to_le_bytes());
        h.extend_from_slice(&self.uid.to_le_bytes());
        h.extend_from_slice(&self.gid.to_le_bytes());
        match self.mtime {
            Some(t) => {
                h.push(1);
                h.extend_from_slice(&t.sec.to_le_bytes());
                h.extend_from_slice(&t.nsec.to_le_bytes());
            }
            None => h.push(0),
        }
        h.extend_from_slice(&(self.xattrs.len() as u32).to_le_bytes());
        for (name, value) in &self.xattrs {
            let name = name.as_bytes();
            h.extend_from_slice(&(name.len() as u32).to_le_bytes());
            h.extend_from_slice(name);
            h.extend_from_slice(&(value.len() as u32).to_le_bytes());
            h.extend_from_slice(value);
        }
        h.extend_from_slice(&self.size.to_le_bytes());
        h
    }
}

/// Hashes header + content into an id and, unless made with
/// [`ObjectHasher::id_only`], content alone into a content hash, in one pass
/// over the data.
pub struct ObjectHasher {
    id: blake3::Hasher,
    content: Option<blake3::Hasher>,
    len: u64,
}

impl ObjectHasher {
    pub fn new(meta: &ObjectMeta) -> ObjectHasher {
        let mut h = ObjectHasher::id_only(meta);
        h.content = Some(blake3::Hasher::new());
        h
    }

    /// A hasher of the id alone: half the work, for whoever needs no
    /// content hash.
    pub fn id_only(meta: &ObjectMeta) -> ObjectHasher {
        let mut id = blake3::Hasher::new();
        id.update(&meta.header());
        ObjectHasher {
            id,
            content: None,
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.id.update(data);
        if let Some(content) = &mut self.content {
            content.update(data);
        }
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The id, and the content hash unless made `id_only`.
    pub fn finish(&self) -> (ObjectId, Option<ContentHash>) {
        (
            ObjectId(*self.id.finalize().as_bytes()),
            self.content
                .as_ref()
                .map(|c| ObjectId(*c.finalize().as_bytes())),
        )
    }
}

/// Reads `reader` to the end into a hasher for `meta`: the id and the
/// content hash. Fails if the content length differs from `meta.size` (the
/// file changed while read).
pub fn hash_reader(meta: &ObjectMeta, reader: impl Read) -> io::Result<(ObjectId, ContentHash)> {
    let (id, content) = hash_into(ObjectHasher::new(meta), meta, reader)?;
    Ok((id, content.expect("a hasher of both")))
}

/// [`hash_reader`] for the id alone.
pub fn hash_id(meta: &ObjectMeta, reader: impl Read) -> io::Result<ObjectId> {
    Ok(hash_into(ObjectHasher::id_only(meta), meta, reader)?.0)
}

/// [`hash_reader`] with the content hash only if `content`.
pub fn hash_maybe(
    meta: &ObjectMeta,
    reader: impl Read,
    content: bool,
) -> io::Result<(ObjectId, Option<ContentHash>)> {
    let hasher = if content {
        ObjectHasher::new(meta)
    } else {
        ObjectHasher::id_only(meta)
    };
    hash_into(hasher, meta, reader)
}

fn hash_into(
    mut hasher: ObjectHasher,
    meta: &ObjectMeta,
    mut reader: impl Read,
) -> io::Result<(ObjectId, Option<ContentHash>)> {
    thread_local! {
        // One read buffer per thread: allocating and zeroing it per file
        // showed in profiles of unify.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    BUF.with_borrow_mut(|buf| -> io::Result<()> {
        loop {
            let n = match reader.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
        }
    })?;
    if hasher.len() != meta.size {
        return Err(io::Error::other(format!(
            "file changed while hashed: {} bytes read, {} expected",
            hasher.len(),
            meta.size
        )));
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(perm: u32) -> ObjectMeta {
        ObjectMeta {
            perm,
            uid: 0,
            gid: 0,
            mtime: Some(Timestamp { sec: 1, nsec: 2 }),
            xattrs: vec![],
            size: 5,
        }
    }

    #[test]
    fn the_id_alone_is_the_id_of_both() {
        let (id, content) = hash_reader(&meta(0o644), &b"hello"[..]).unwrap();
        assert_eq!(hash_id(&meta(0o644), &b"hello"[..]).unwrap(), id);
        assert_eq!(
            hash_maybe(&meta(0o644), &b"hello"[..], false).unwrap(),
            (id, None)
        );
        let both = hash_maybe(&meta(0o644), &b"hello"[..], true).unwrap();
        assert_eq!(both, (id, Some(content)));
        assert_ne!(id, content, "the id covers the header too");
        assert!(hash_id(&meta(0o644), &b"hell"[..]).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let (id, _) = hash_reader(&meta(0o644), &b"hello"[..]).unwrap();
        let parsed: ObjectId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        assert!("xyz".parse::<ObjectId>().is_err());
        // Right length, one bad digit anywhere.
        let hex = id.to_hex();
        for at in [0, 1, 31, 63] {
            let mut bad = hex.clone().into_bytes();
            bad[at] = b'g';
            assert!(String::from_utf8(bad).unwrap().parse::<ObjectId>().is_err());
        }
        assert_eq!(hex.to_uppercase().parse::<ObjectId>().unwrap(), id);
    }

    #[test]
    fn metadata_changes_the_id_but_not_the_content_hash() {
        let (a, ca) = hash_reader(&meta(0o644), &b"hello"[..]).unwrap();
        let (b, cb) = hash_reader(&meta(0o755), &b"hello"[..]).unwrap();
        assert_ne!(a, b);
        assert_eq!(ca, cb);
        assert_eq!(ca.0, *blake3::hash(b"hello").as_bytes());
    }

    #[test]
    fn short_read_is_an_error() {
        assert!(hash_reader(&meta(0o644), &b"hell"[..]).is_err());
    }
}
