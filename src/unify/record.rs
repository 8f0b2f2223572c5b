//! The catalog side of a unify run: one writer, batched into transactions,
//! fed with what the linking threads did.

use super::apply::CatalogOp;
use super::hash::cache_row;
use super::listings::keepable;
use super::scan::FileRec;
use super::{Guest, Result};
use crate::catalog::Catalog;
use crate::store::ObjectId;
use std::collections::HashSet;
use std::path::Path;

/// Catalog writes between commits: bounds what a killed run must redo (it
/// is recovered from the store markers either way).
const COMMIT_EVERY: usize = 32768;

pub struct Writer<'a> {
    pub catalog: &'a Catalog,
    pub run: i64,
    pending: usize,
    /// Guests whose links this run changed (their digest is cleared in the
    /// transaction of the first change, and set again at the end).
    pub touched: HashSet<i64>,
    /// [`super::listings::clock`] before the run's first stat: on a coarse ctime
    /// clock a file changed within a tick of it may have changed again
    /// after it was hashed with the same stat, so its hash is not kept
    /// (the next run reads it again).
    racy_from: Option<i128>,
}

impl<'a> Writer<'a> {
    /// Opens the run's first transaction.
    pub fn new(catalog: &'a Catalog, run: i64, racy_from: Option<i128>) -> Result<Writer<'a>> {
        catalog.begin()?;
        Ok(Writer {
            catalog,
            run,
            pending: 0,
            touched: HashSet::new(),
            racy_from,
        })
    }

    fn tick(&mut self) -> Result<()> {
        self.pending += 1;
        if self.pending >= COMMIT_EVERY {
            self.catalog.commit()?;
            self.catalog.begin()?;
            self.pending = 0;
        }
        Ok(())
    }

    pub fn record(
        &mut self,
        op: CatalogOp,
        guests: &[Guest],
        candidates: &[FileRec],
    ) -> Result<()> {
        match op {
            CatalogOp::Object(row) => self.catalog.insert_object(&row, self.run)?,
            CatalogOp::ObjectFile { id, copy, dev, ino } => {
                self.catalog.set_object_file(&id, copy, dev, ino)?
            }
            CatalogOp::GuestLink { file, id } => {
                let rec = &candidates[file];
                let guest = guests[rec.guest as usize].row.id;
                self.touch(guest)?;
                self.catalog
                    .set_guest_link(guest, &rec.rel, &id, self.run)?
            }
            CatalogOp::Hash(h) => {
                let st = &candidates[h.file].stat;
                if let Some(content) = h.content.filter(|_| keepable(st, self.racy_from)) {
                    self.catalog
                        .put_hash(st.dev, st.ino, &cache_row(st, h.id, content))?
                }
            }
        }
        self.tick()
    }

    fn touch(&mut self, guest: i64) -> Result<()> {
        if self.touched.insert(guest) {
            self.catalog.set_links_digest(guest, None)?;
        }
        Ok(())
    }

    pub fn guest_link(&mut self, guest: i64, rel: &Path, id: &ObjectId) -> Result<()> {
        self.touch(guest)?;
        self.catalog.set_guest_link(guest, rel, id, self.run)?;
        self.tick()
    }

    pub fn delete_guest_link(&mut self, guest: i64, rel: &Path) -> Result<()> {
        self.touch(guest)?;
        self.catalog.delete_guest_link(guest, rel)?;
        self.tick()
    }
}
