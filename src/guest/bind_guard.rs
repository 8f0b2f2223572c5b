//! A bind root (`--root-mount bind`, `root_mount = "bind"`) is the backing
//! directory itself: in a guest unified into the store, one write there
//! changes the file for every guest linking it, and its store object.
//! Refused before anything starts. Only the catalog is read (read-only,
//! without the writer lock: a run beside a unify must not be "busy"); a
//! store that is not there or cannot be read says nothing.

use super::{Error, Result};
use std::path::{Path, PathBuf};

/// Refuses `root` served as a bind root (`how` names the setting) when the
/// store at `store` records a guest that it is, lies inside or holds, or
/// when it lies inside a store or holds the one at `store`.
pub fn check(store: &Path, root: &Path, how: &'static str) -> Result<()> {
    let root = crate::unify::resolved(root);
    if let Some(store) = crate::store::Store::enclosing_store(&root) {
        let relation = "lies inside";
        return Err(Error::BindInStore {
            root,
            relation,
            store,
            how,
        });
    }
    if let Some((guest, relation)) = recorded_guest(store, &root) {
        return Err(Error::BindUnified {
            root,
            relation,
            guest,
            store: std::path::absolute(store).unwrap_or_else(|_| store.to_path_buf()),
            how,
        });
    }
    // A root above the store (`/var/lib` for /var/lib/unifs) would give the
    // guest the objects themselves.
    if crate::store::Store::exists(store) {
        let store = crate::unify::resolved(store);
        if store.starts_with(&root) {
            let relation = "holds";
            return Err(Error::BindInStore {
                root,
                relation,
                store,
                how,
            });
        }
    }
    Ok(())
}

/// The guest recorded in the store's catalog that `root` (canonical) is,
/// lies inside or holds, with which of these it is.
fn recorded_guest(store: &Path, root: &Path) -> Option<(PathBuf, &'static str)> {
    if !crate::store::Store::exists(store) {
        return None;
    }
    // Not Store::open: that makes a missing tmp/.
    let catalog = crate::catalog::Catalog::open_readonly(&store.join("catalog.db"))
        .inspect_err(|e| tracing::debug!("bind root check: catalog not read: {e}"))
        .ok()?;
    let guests = catalog.guests().ok()?;
    guests.into_iter().find_map(|g| {
        // As recorded (absolute, its parents' symlinks resolved when it was
        // unified): no look at it, whose stalled mount would hang the
        // check, and so every bind run, start and list.
        let path = g.path;
        let relation = if path == root {
            "is"
        } else if root.starts_with(&path) {
            "lies inside"
        } else if path.starts_with(root) {
            "holds"
        } else {
            return None;
        };
        Some((path, relation))
    })
}
