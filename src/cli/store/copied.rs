//! `store gc` in a store copied or restored beside the store it came from
//! (`cp -a`, `rsync -aH`, a backup's objects and catalog snapshot put in a
//! new directory while the original lives on). Its catalog names the
//! original's guests and, for each object, the original's inode: every
//! object file there is "replaced" (or, restored in part, missing), and
//! the guests still link the inodes listed. gc's repairs would then link
//! the original's objects into this store (both stores' object files one
//! inode: each counts the other's links, neither frees what the other
//! holds), or take this store's files for the objects and so disarm
//! unify's check for the original's guests ([`crate::unify::Error::OtherStoresGuests`]).

use super::super::output::{counted, path};
use crate::catalog::Catalog;
use crate::store::Store;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Guest paths of the catalog linking the inode it lists for an object
/// whose file is now another inode or gone, where that inode has links
/// outside the catalog's guest directories: another store's objects.
struct Found {
    /// Such paths.
    count: u64,
    /// The first one, and the object file the catalog lists it under.
    example: PathBuf,
    object: PathBuf,
    /// Their guest roots, in the catalog's order.
    guests: Vec<PathBuf>,
}

/// Refuses (before gc writes anything) a catalog whose guests link another
/// store's objects (see the module's comment). Only a catalog last used
/// with another `objects/` (or that does not say) is looked at: in the
/// store's own, a link outside its guests is a guest directory renamed
/// (a damaged guest put aside before its restore), not another store. A
/// store restored in the place of a lost one is not refused (its guests'
/// inodes have no link outside their directories any more: a guest's own
/// hardlink or renamed file is one of its links).
pub(super) fn refuse_other_stores_guests(store: &Store, catalog: &Catalog) -> anyhow::Result<()> {
    let seen_dir = catalog.config(crate::catalog::OBJECTS_DIR)?;
    if seen_dir.as_deref() == Some(store.objects_identity().as_str()) {
        return Ok(());
    }
    let Some(found) = other_stores_guests(store, catalog)? else {
        return Ok(());
    };
    anyhow::bail!(message(store.root(), &found, seen_dir.as_deref()))
}

fn other_stores_guests(store: &Store, catalog: &Catalog) -> anyhow::Result<Option<Found>> {
    let mut rows: Vec<_> = catalog.object_inodes()?.into_iter().collect();
    rows.sort_by_key(|(_, f)| (f.id, f.copy));
    // Inodes with more links than the catalog's guest paths to them: the
    // count of links, and the catalog's paths (guest root, file) to them.
    let mut suspects = Vec::new();
    for (inode, f) in rows {
        if let Some(st) = store.stat_object(&f.id, f.copy)? {
            if (st.dev, st.ino) == inode {
                continue;
            }
        }
        let mut nlink = 0;
        let mut linking = Vec::new();
        for (root, rel) in catalog.links_to(&f.id)? {
            let file = root.join(&rel);
            if let Ok(st) = crate::sys::lstat(&file) {
                if (st.dev, st.ino) == inode {
                    nlink = st.nlink;
                    linking.push((root, file));
                }
            }
        }
        if linking.is_empty() || nlink <= linking.len() as u64 {
            continue;
        }
        suspects.push((inode, nlink, f, linking));
    }
    if suspects.is_empty() {
        return Ok(None);
    }
    // A guest's own names for the file (a hardlink it made, the file
    // renamed: the catalog lists neither) are not another store's.
    let wanted = suspects.iter().map(|(inode, nlink, ..)| (*inode, *nlink));
    let in_guests = links_in_guests(catalog, wanted.collect())?;
    let mut found: Option<Found> = None;
    for (inode, nlink, f, linking) in suspects {
        if in_guests.get(&inode).copied().unwrap_or(0) >= nlink {
            continue;
        }
        let o = found.get_or_insert_with(|| Found {
            count: 0,
            example: linking[0].1.clone(),
            object: store.object_path(&f.id, f.copy),
            guests: Vec::new(),
        });
        o.count += linking.len() as u64;
        for (root, _) in linking {
            if !o.guests.contains(&root) {
                o.guests.push(root);
            }
        }
    }
    Ok(found)
}

/// How many names in the catalog's guest directories link each of
/// `wanted` (inode, its link count), as unify counts a guest's links
/// (`unseen_links`): a walk of each directory on its filesystem, names
/// matched by the directory entry's inode number first, so only those
/// are looked at. It stops once every inode has all its links found.
/// Counts, not paths: in a copy beside its original every guest link is
/// one (the walk then ends only with the guests).
fn links_in_guests(
    catalog: &Catalog,
    wanted: HashMap<(u64, u64), u64>,
) -> anyhow::Result<HashMap<(u64, u64), u64>> {
    use walkdir::DirEntryExt;
    let inos: HashSet<u64> = wanted.keys().map(|&(_, ino)| ino).collect();
    let mut found: HashMap<(u64, u64), u64> = HashMap::new();
    // Inodes with links still to find.
    let mut left = wanted.len();
    let roots: Vec<PathBuf> = catalog.guests()?.into_iter().map(|g| g.path).collect();
    for root in &roots {
        // A guest inside another's directory is walked with it: its names
        // count once.
        if roots.iter().any(|r| r != root && root.starts_with(r)) {
            continue;
        }
        let walk = walkdir::WalkDir::new(root)
            .follow_links(false)
            .same_file_system(true);
        // An entry that cannot be read counts as a link not found: the
        // refusal stands, as it did before the walk.
        for e in walk.into_iter().flatten() {
            if !e.file_type().is_file() || !inos.contains(&e.ino()) {
                continue;
            }
            let Ok(st) = crate::sys::lstat(e.path()) else {
                continue;
            };
            let Some(&nlink) = wanted.get(&(st.dev, st.ino)) else {
                continue;
            };
            let n = found.entry((st.dev, st.ino)).or_default();
            *n += 1;
            if *n == nlink {
                left -= 1;
                if left == 0 {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}

fn message(store: &Path, found: &Found, copied_from: Option<&str>) -> String {
    /// Guests named; more are counted.
    const NAMED: usize = 5;
    let mut names: Vec<String> = found.guests.iter().take(NAMED).map(|g| path(g)).collect();
    if found.guests.len() > NAMED {
        names.push(format!("and {} more", found.guests.len() - NAMED));
    }
    let copy = match copied_from {
        Some(dir) => format!(
            " This store's catalog was last used with another objects/ directory (device:inode \
             {dir}): this store is most likely a copy or a restore of that store."
        ),
        None => String::new(),
    };
    let mount = crate::store::mount_point_of(&found.example);
    format!(
        "store {store}: {} of the guests {} ({} first) {} of another store: \
         each is the inode this store's catalog lists for its object ({} for the first), which \
         this store's objects/ now has as another file or not at all, and it has links outside \
         this catalog's guest directories (`find {} -xdev -samefile {}` shows them: the objects/ of the \
         store they belong to).{copy} gc would link those inodes into this store's objects/ (or \
         take this store's files for them), tying that store's guests to this one. Nothing was \
         changed. Run gc with the store they belong to (--store, or UNIFS_STORE). If they are \
         not this store's guests (it is a copy, and its own are elsewhere), drop them from its \
         catalog (`unifs --store {word} store forget GUEST_DIR...`) once its own guests are \
         restored or unified (gc removes every object no guest links), then run gc again. If \
         the links `find` shows are in no objects/ (a guest directory moved, or copied with \
         `cp -al`, beside a store restored in the place of a lost one), unify those directories \
         with this store (`unifs --store {word} unify --all DIR...`; for a guest moved, `store \
         forget` its old path first), then run gc again (see docs/backup.md)",
        counted(found.count, "file", "files"),
        names.join(", "),
        path(&found.example),
        super::super::output::word(found.count, "links an object", "link objects"),
        path(&found.object),
        // Commands to paste: each path one shell word.
        crate::sys::shell_word(&mount),
        crate::sys::shell_word(&found.example),
        store = path(store),
        word = crate::sys::shell_word(store),
    )
}
