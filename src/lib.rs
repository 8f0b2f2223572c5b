//! unifs: copy-on-write hardlink unification of Linux guest trees.
//!
//! - [`backup`]: guest manifests and restore, for backup tools.
//! - [`store`]: object ids, the store layout, atomic ingest, verify and gc.
//! - [`catalog`]: the SQLite index of the store.
//! - [`unify`]: scan → plan → apply (vunify).
//! - [`fs`]: the FUSE overlay that breaks shared links on first write (vfs-mount).
//! - [`guest`]: namespaces, root set-up and lifecycle of guests.
//! - [`sys`]: safe wrappers around the syscalls the rest needs.
//! - [`cli`]: the command line; thin.

pub mod backup;
pub mod catalog;
pub mod cli;
pub mod fs;
pub mod guest;
pub mod store;
pub mod sys;
pub mod unify;
pub mod words;
