//! Typed queries over the catalog's tables.

use super::{Catalog, Error, Result};
use crate::store::ObjectId;
use crate::sys::Timestamp;
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRow {
    pub id: i64,
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub id: ObjectId,
    pub content_hash: ObjectId,
    pub size: u64,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
}

/// The maps the catalog loads: hashed with foldhash (several lookups per
/// guest file in a unify run), seeded per process so that names a guest
/// picks cannot make them collide.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// An object file: which object, and which copy of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInode {
    pub id: ObjectId,
    pub copy: u32,
}

/// A hash-cache entry: valid while (dev, ino, size, mtime, ctime) match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRow {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub object_id: ObjectId,
    pub content_hash: ObjectId,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunTotals {
    pub files_scanned: u64,
    pub bytes_hashed: u64,
    pub files_linked: u64,
    pub bytes_saved: u64,
}

/// Per-guest figures for `store stats`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatsRow {
    pub name: String,
    #[serde(flatten, serialize_with = "crate::sys::json_path")]
    pub path: PathBuf,
    pub files_linked: u64,
    pub bytes_linked: u64,
    /// The unify run the figures are from (links broken since still count).
    pub last_run: Option<i64>,
}

/// An order-independent digest of a set of guest links (relative path,
/// object id): blake3 over the entries sorted by path bytes, each as path
/// length (u64 LE), path, id. A re-run that computes the same digest from
/// its walk as the catalog holds need not read the guest's rows back.
pub fn links_digest<'a>(entries: impl Iterator<Item = (&'a Path, &'a ObjectId)>) -> [u8; 32] {
    let mut v: Vec<(&[u8], &ObjectId)> = entries.map(|(p, id)| (path_blob(p), id)).collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut h = blake3::Hasher::new();
    for (path, id) in v {
        h.update(&(path.len() as u64).to_le_bytes());
        h.update(path);
        h.update(&id.0);
    }
    *h.finalize().as_bytes()
}

fn path_blob(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn blob_path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

/// The columns of an object's row after its id, as [`RawObject::at`] reads them.
const OBJECT_FIELDS: &str = "content_hash, size, mode, uid, gid, mtime_sec, mtime_nsec";

/// An `objects` row as read, its content hash not yet checked.
struct RawObject {
    content_hash: std::result::Result<ObjectId, String>,
    size: i64,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime_sec: i64,
    mtime_nsec: u32,
}

impl RawObject {
    /// [`OBJECT_FIELDS`] from column `at` on.
    fn at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<RawObject> {
        Ok(RawObject {
            content_hash: Catalog::id_in(r, at)?,
            size: r.get(at + 1)?,
            perm: r.get(at + 2)?,
            uid: r.get(at + 3)?,
            gid: r.get(at + 4)?,
            mtime_sec: r.get(at + 5)?,
            mtime_nsec: r.get(at + 6)?,
        })
    }
}

impl Catalog {
    /// An id read straight from the row's text, without allocating; a bad
    /// value comes back as its text for [`Catalog::parse_id`]'s error.
    fn id_in(
        r: &rusqlite::Row,
        i: usize,
    ) -> rusqlite::Result<std::result::Result<ObjectId, String>> {
        let text = r.get_ref(i)?.as_str()?;
        Ok(text.parse().map_err(|_| text.to_string()))
    }

    fn checked_id(
        &self,
        what: &'static str,
        id: std::result::Result<ObjectId, String>,
    ) -> Result<ObjectId> {
        id.or_else(|value| self.parse_id(what, value))
    }

    fn parse_id(&self, what: &'static str, s: String) -> Result<ObjectId> {
        s.parse().map_err(|_| Error::BadValue {
            path: self.path.clone(),
            what,
            value: s,
        })
    }

    pub fn begin_run(&self, command: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs(command, started_at) VALUES (?1, unixepoch())",
                [command],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run: i64, t: &RunTotals) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = unixepoch(), files_scanned = ?2,
                 bytes_hashed = ?3, files_linked = ?4, bytes_saved = ?5 WHERE id = ?1",
                params![
                    run,
                    t.files_scanned as i64,
                    t.bytes_hashed as i64,
                    t.files_linked as i64,
                    t.bytes_saved as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Finds or adds the guest at absolute `path`. New guests are named after
    /// the directory, with `-2`, `-3`… when that name is taken.
    pub fn register_guest(&self, path: &Path, run: i64) -> Result<GuestRow> {
        if let Some(g) = self.guest_by_path(path)? {
            self.conn
                .execute(
                    "UPDATE guests SET last_run = ?2 WHERE id = ?1",
                    params![g.id, run],
                )
                .map_err(|e| self.err(e))?;
            return Ok(g);
        }
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".to_string());
        let mut name = base.clone();
        let mut n = 1;
        while self.guest_by_name(&name)?.is_some() {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.conn
            .execute(
                "INSERT INTO guests(name, path, added_run, last_run) VALUES (?1, ?2, ?3, ?3)",
                params![name, path_blob(path), run],
            )
            .map_err(|e| self.err(e))?;
        Ok(GuestRow {
            id: self.conn.last_insert_rowid(),
            name,
            path: path.to_path_buf(),
        })
    }

    fn guest_where(&self, clause: &str, arg: &dyn rusqlite::ToSql) -> Result<Option<GuestRow>> {
        self.conn
            .query_row(
                &format!("SELECT id, name, path FROM guests WHERE {clause}"),
                [arg],
                |r| {
                    Ok(GuestRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        path: blob_path(r.get(2)?),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Removes a guest and its link rows (`store forget`); returns how many
    /// links it had. Objects stay: `store gc` removes those nobody links.
    pub fn forget_guest(&self, guest: i64) -> Result<u64> {
        let links: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM guest_links WHERE guest_id = ?1",
                [guest],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute("DELETE FROM guest_links WHERE guest_id = ?1", [guest])
            .map_err(|e| self.err(e))?;
        self.conn
            .execute("DELETE FROM guests WHERE id = ?1", [guest])
            .map_err(|e| self.err(e))?;
        Ok(links as u64)
    }

    pub fn guest_by_path(&self, path: &Path) -> Result<Option<GuestRow>> {
        self.guest_where("path = ?1", &path_blob(path))
    }

    pub fn guest_by_name(&self, name: &str) -> Result<Option<GuestRow>> {
        self.guest_where("name = ?1", &name)
    }

    pub fn guests(&self) -> Result<Vec<GuestRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, path FROM guests ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(GuestRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    path: blob_path(r.get(2)?),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Every object, by id.
    pub fn objects(&self) -> Result<Map<ObjectId, ObjectRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT id, {OBJECT_FIELDS} FROM objects"))
            .map_err(|e| self.err(e))?;
        let raw = stmt
            .query_map([], |r| Ok((Self::id_in(r, 0)?, RawObject::at(r, 1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        let mut out = Map::with_capacity_and_hasher(raw.len(), Default::default());
        for (id, raw) in raw {
            let id = self.checked_id("objects.id", id)?;
            out.insert(id, self.object_row(id, raw)?);
        }
        Ok(out)
    }

    /// The row of object `id`, if the catalog has one.
    pub fn object(&self, id: &ObjectId) -> Result<Option<ObjectRow>> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {OBJECT_FIELDS} FROM objects WHERE id = ?1"),
                [id.to_hex()],
                |r| RawObject::at(r, 0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        raw.map(|raw| self.object_row(*id, raw)).transpose()
    }

    fn object_row(&self, id: ObjectId, raw: RawObject) -> Result<ObjectRow> {
        Ok(ObjectRow {
            id,
            content_hash: self.checked_id("objects.content_hash", raw.content_hash)?,
            size: raw.size as u64,
            perm: raw.perm,
            uid: raw.uid,
            gid: raw.gid,
            mtime: Timestamp {
                sec: raw.mtime_sec,
                nsec: raw.mtime_nsec,
            },
        })
    }

    /// Every object file's inode: (dev, ino) → (object id, copy).
    /// Every object file the catalog knows, keyed by (dev, ino).
    pub fn object_inodes(&self) -> Result<Map<(u64, u64), ObjectInode>> {
        let mut stmt = self
            .conn
            .prepare("SELECT dev, ino, object_id, copy FROM object_files")
            .map_err(|e| self.err(e))?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    Self::id_in(r, 2)?,
                    r.get::<_, u32>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        let mut out = Map::with_capacity_and_hasher(raw.len(), Default::default());
        for (dev, ino, id, copy) in raw {
            let id = self.checked_id("object_files.object_id", id)?;
            out.insert((dev as u64, ino as u64), ObjectInode { id, copy });
        }
        Ok(out)
    }

    pub fn insert_object(&self, o: &ObjectRow, run: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO objects(id, content_hash, size, mode, uid, gid, mtime_sec, mtime_nsec, added_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO NOTHING")
            .and_then(|mut st| st.execute(params![
                    o.id.to_hex(),
                    o.content_hash.to_hex(),
                    o.size as i64,
                    o.perm,
                    o.uid,
                    o.gid,
                    o.mtime.sec,
                    o.mtime.nsec,
                    run
                ]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn set_object_file(&self, id: &ObjectId, copy: u32, dev: u64, ino: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO object_files(object_id, copy, dev, ino) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(object_id, copy) DO UPDATE SET dev = excluded.dev, ino = excluded.ino",
            )
            .and_then(|mut st| st.execute(params![id.to_hex(), copy, dev as i64, ino as i64]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets an object file (gc removed it, or it vanished).
    pub fn remove_object_file(&self, id: &ObjectId, copy: u32) -> Result<()> {
        let hex = id.to_hex();
        self.conn
            .execute(
                "DELETE FROM object_files WHERE object_id = ?1 AND copy = ?2",
                params![hex, copy],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "DELETE FROM objects WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM object_files WHERE object_id = ?1)",
                [hex],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The guest paths (guest root, relative path) the catalog lists as
    /// linking object `id`.
    pub fn links_to(&self, id: &ObjectId) -> Result<Vec<(PathBuf, PathBuf)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT g.path, l.path FROM guest_links l JOIN guests g ON g.id = l.guest_id
                 WHERE l.object_id = ?1 ORDER BY g.name, l.path",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id.to_hex()], |r| {
                Ok((blob_path(r.get(0)?), blob_path(r.get(1)?)))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Forgets an object file that is gone. When it was the object's last
    /// file, the object and the guest links naming it go too (those guests'
    /// link digests are cleared). Returns how many guest links went.
    pub fn drop_missing_object_file(&self, id: &ObjectId, copy: u32) -> Result<u64> {
        let hex = id.to_hex();
        let others: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM object_files WHERE object_id = ?1 AND copy != ?2",
                params![hex, copy],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let mut links = 0;
        if others == 0 {
            self.conn
                .execute(
                    "UPDATE guests SET links_digest = NULL
                     WHERE id IN (SELECT guest_id FROM guest_links WHERE object_id = ?1)",
                    [&hex],
                )
                .map_err(|e| self.err(e))?;
            links = self
                .conn
                .execute("DELETE FROM guest_links WHERE object_id = ?1", [&hex])
                .map_err(|e| self.err(e))? as u64;
        }
        self.remove_object_file(id, copy)?;
        Ok(links)
    }

    pub fn set_guest_link(&self, guest: i64, path: &Path, id: &ObjectId, run: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO guest_links(guest_id, path, object_id, run_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(guest_id, path) DO UPDATE SET object_id = excluded.object_id,
                 run_id = excluded.run_id",
            )
            .and_then(|mut st| st.execute(params![guest, path_blob(path), id.to_hex(), run]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every path of `guest` the catalog lists as linking an object.
    pub fn guest_links(&self, guest: i64) -> Result<Map<PathBuf, ObjectId>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, object_id FROM guest_links WHERE guest_id = ?1")
            .map_err(|e| self.err(e))?;
        let raw = stmt
            .query_map([guest], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        let mut out = Map::with_capacity_and_hasher(raw.len(), Default::default());
        for (path, id) in raw {
            out.insert(blob_path(path), self.parse_id("guest_links.object_id", id)?);
        }
        Ok(out)
    }

    /// The digest of the guest's links as the last run left them
    /// ([`links_digest`]); `None` when not known.
    pub fn links_digest(&self, guest: i64) -> Result<Option<[u8; 32]>> {
        self.guest_digest(guest, "links_digest")
    }

    pub fn set_links_digest(&self, guest: i64, digest: Option<&[u8; 32]>) -> Result<()> {
        self.set_guest_digest(guest, "links_digest", digest)
    }

    /// The guest root's (device, inode, birth time in ns) as the last run
    /// that finished it saw them; `None` when not known.
    pub fn guest_root(&self, guest: i64) -> Result<Option<(u64, u64, Option<i64>)>> {
        let v: Option<(Option<i64>, Option<i64>, Option<i64>)> = self
            .conn
            .prepare_cached("SELECT root_dev, root_ino, root_birth_ns FROM guests WHERE id = ?1")
            .and_then(|mut st| {
                st.query_row([guest], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        Ok(match v {
            Some((Some(dev), Some(ino), birth)) => Some((dev as u64, ino as u64, birth)),
            _ => None,
        })
    }

    /// The guests whose root was, when a run last finished them, the
    /// directory (device `dev`, inode `ino`), with its birth time then.
    pub fn guests_with_root(&self, dev: u64, ino: u64) -> Result<Vec<(GuestRow, Option<i64>)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, name, path, root_birth_ns FROM guests
                 WHERE root_dev = ?1 AND root_ino = ?2 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![dev as i64, ino as i64], |r| {
                let row = GuestRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    path: blob_path(r.get(2)?),
                };
                Ok((row, r.get(3)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn set_guest_root(&self, guest: i64, root: (u64, u64, Option<i64>)) -> Result<()> {
        let (dev, ino, birth) = root;
        self.conn
            .prepare_cached(
                "UPDATE guests SET root_dev = ?2, root_ino = ?3, root_birth_ns = ?4 WHERE id = ?1",
            )
            .and_then(|mut st| st.execute(params![guest, dev as i64, ino as i64, birth]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The digest of the guest's own links the walk does not see, as a run
    /// that walked its excluded trees last found them (`guests.links_outside`).
    pub fn links_outside(&self, guest: i64) -> Result<Option<[u8; 32]>> {
        self.guest_digest(guest, "links_outside")
    }

    pub fn set_links_outside(&self, guest: i64, digest: Option<&[u8; 32]>) -> Result<()> {
        self.set_guest_digest(guest, "links_outside", digest)
    }

    /// A 32-byte digest kept in the `guests` column `column` (a name of
    /// ours, never input); `None` when not known.
    fn guest_digest(&self, guest: i64, column: &str) -> Result<Option<[u8; 32]>> {
        let v: Option<Vec<u8>> = self
            .conn
            .prepare_cached(&format!("SELECT {column} FROM guests WHERE id = ?1"))
            .and_then(|mut st| st.query_row([guest], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))?
            .flatten();
        Ok(v.and_then(|v| v.try_into().ok()))
    }

    fn set_guest_digest(&self, guest: i64, column: &str, digest: Option<&[u8; 32]>) -> Result<()> {
        self.conn
            .prepare_cached(&format!("UPDATE guests SET {column} = ?2 WHERE id = ?1"))
            .and_then(|mut st| st.execute(params![guest, digest.map(|d| &d[..])]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn delete_guest_link(&self, guest: i64, path: &Path) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM guest_links WHERE guest_id = ?1 AND path = ?2")
            .and_then(|mut st| st.execute(params![guest, path_blob(path)]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The whole hash cache, keyed by (dev, ino).
    pub fn hash_cache(&self) -> Result<Map<(u64, u64), CacheRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, object_id, content_hash FROM hash_cache",
            )
            .map_err(|e| self.err(e))?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        let mut out = Map::with_capacity_and_hasher(raw.len(), Default::default());
        for (dev, ino, size, mtime_ns, ctime_ns, id, ch) in raw {
            out.insert(
                (dev as u64, ino as u64),
                CacheRow {
                    size: size as u64,
                    mtime_ns,
                    ctime_ns,
                    object_id: self.parse_id("hash_cache.object_id", id)?,
                    content_hash: self.parse_id("hash_cache.content_hash", ch)?,
                },
            );
        }
        Ok(out)
    }

    pub fn put_hash(&self, dev: u64, ino: u64, row: &CacheRow) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO hash_cache(dev, ino, size, mtime_ns, ctime_ns, object_id, content_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(dev, ino) DO UPDATE SET size = excluded.size,
                 mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,
                 object_id = excluded.object_id, content_hash = excluded.content_hash",
            )
            .and_then(|mut s| {
                s.execute(params![
                    dev as i64,
                    ino as i64,
                    row.size as i64,
                    row.mtime_ns,
                    row.ctime_ns,
                    row.object_id.to_hex(),
                    row.content_hash.to_hex()
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Drops the hash-cache row of inode (dev, ino), a file no guest has
    /// any more.
    pub fn delete_hash(&self, dev: u64, ino: u64) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM hash_cache WHERE dev = ?1 AND ino = ?2")
            .and_then(|mut s| s.execute(params![dev as i64, ino as i64]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Per-guest figures from the last run that saw each guest.
    pub fn guest_stats(&self) -> Result<Vec<StatsRow>> {
        let mut stmt = self
            .conn
            .prepare(
                // The links table read once in its own order (NOT INDEXED):
                // through the (guest, path) index, each link cost a lookup
                // of its row, a random page read once the catalog outgrew
                // the cache (a million links: 4-9 s instead of about 1).
                "SELECT g.name, g.path, coalesce(l.n, 0), coalesce(l.bytes, 0), g.last_run
                 FROM guests g
                 LEFT JOIN (
                     SELECT f.guest_id AS id, count(*) AS n, sum(o.size) AS bytes
                     FROM guest_links f NOT INDEXED
                     LEFT JOIN objects o ON o.id = f.object_id
                     GROUP BY f.guest_id
                 ) l ON l.id = g.id
                 ORDER BY g.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StatsRow {
                    name: r.get(0)?,
                    path: blob_path(r.get(1)?),
                    files_linked: r.get::<_, i64>(2)? as u64,
                    bytes_linked: r.get::<_, i64>(3)? as u64,
                    last_run: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

/// An object file for `store ls`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedObject {
    pub object_id: String,
    pub copy: u32,
    pub path: String,
    pub size: u64,
    pub added_run: i64,
}

/// A unify run for `store runs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRow {
    pub run: i64,
    pub command: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub files_linked: u64,
    pub bytes_saved: u64,
}

impl Catalog {
    /// Object files added by runs after `run` (all with `run` = 0), and
    /// every extra copy (`.1`, …) whatever its run: a copy starts when an
    /// old object reaches the link limit, in a later run than the object's
    /// `added_run`, and the catalog does not record which (copies are rare:
    /// only objects linked 65,000 times have one).
    pub fn objects_since(&self, run: i64) -> Result<Vec<ListedObject>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT object_id, copy, path, size, added_run FROM store_objects
                 WHERE added_run > ?1 OR copy > 0 ORDER BY path",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run], |r| {
                Ok(ListedObject {
                    object_id: r.get(0)?,
                    copy: r.get(1)?,
                    path: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    added_run: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The highest run not done (killed, or stopped by an error; or still
    /// going, but the caller holds the writer lock), if any.
    pub fn last_unfinished_run(&self) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT max(id) FROM runs WHERE finished_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    pub fn runs(&self) -> Result<Vec<RunRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run, command, started_at, finished_at, files_linked, bytes_saved
                 FROM unify_runs ORDER BY run",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunRow {
                    run: r.get(0)?,
                    command: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    files_linked: r.get::<_, i64>(4)? as u64,
                    bytes_saved: r.get::<_, i64>(5)? as u64,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A consistent copy of the catalog at `dest` (SQLite online backup),
    /// safe while a writer is active. Of the file as it is: an older schema
    /// stays that schema (not the copy read commands migrate in memory), so
    /// the unifs that wrote it can open the copy, as it can the file.
    /// Errors name `dest`: the catalog is only read.
    pub fn snapshot(&self, dest: &Path) -> Result<()> {
        let err = |e| super::sqlite(dest, e);
        // The catalog's copy: root's alone as the catalog is.
        let _ = super::create_private(dest);
        let mut out = rusqlite::Connection::open(dest).map_err(err)?;
        let source = self.file.as_ref().unwrap_or(&self.conn);
        let backup = rusqlite::backup::Backup::new(source, &mut out).map_err(err)?;
        // All pages in one step, under one read transaction: SQLite starts
        // a backup taken in steps over whenever another connection commits
        // between two, so beside a busy writer it never finished. (In WAL
        // mode the reader holds no writer up.)
        backup
            .run_to_completion(i32::MAX, std::time::Duration::from_millis(5), None)
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_digest_ignores_order_and_sees_every_change() {
        let (a, b) = (ObjectId([1; 32]), ObjectId([2; 32]));
        let d =
            |v: &[(&str, &ObjectId)]| links_digest(v.iter().map(|(p, id)| (Path::new(*p), *id)));
        let base = d(&[("usr/a", &a), ("usr/b", &b)]);
        assert_eq!(base, d(&[("usr/b", &b), ("usr/a", &a)]));
        assert_ne!(base, d(&[("usr/a", &a), ("usr/b", &a)]), "object changed");
        assert_ne!(base, d(&[("usr/a", &a), ("usr/c", &b)]), "path changed");
        assert_ne!(base, d(&[("usr/a", &a)]), "path gone");
        // Length prefixes keep path boundaries apart.
        assert_ne!(d(&[("ab", &a), ("c", &a)]), d(&[("a", &a), ("bc", &a)]));
    }
}
