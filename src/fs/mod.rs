//! The FUSE overlay (vfs-mount). Not built yet.
