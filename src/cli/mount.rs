//! `unifs mount` / `unifs umount` (vfs-mount). Not built yet: issue 3.

use super::Global;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The guest's backing directory.
    pub guest_dir: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    pub mountpoint: PathBuf,
}

pub fn mount(_g: &Global, _a: MountArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`unifs mount` is not built yet")
}

pub fn umount(_g: &Global, _a: UmountArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`unifs umount` is not built yet")
}
