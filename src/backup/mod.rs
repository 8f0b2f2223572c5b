//! The store as a backup source: guest manifests (JSON lines and BSD mtree)
//! and restoring a guest from a manifest, the store and its private files.

pub mod flags;
pub mod manifest;
pub mod mtree;
pub mod restore;
