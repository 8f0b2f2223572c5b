//! `unifs run` and `unifs guest …`. Not built yet: issue 4.

use super::Global;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The command to run.
    #[arg(trailing_var_arg = true)]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(clap::Subcommand, Debug)]
pub enum GuestCommand {
    /// List named guests.
    List,
}

pub fn run(_g: &Global, _a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`unifs run` is not built yet")
}

pub fn guest(_g: &Global, _c: GuestCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`unifs guest` is not built yet")
}
