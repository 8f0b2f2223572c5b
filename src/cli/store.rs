//! placeholder
use super::Global;
use std::process::ExitCode;
#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand { Verify }
pub fn run(_g: &Global, _a: StoreCommand) -> anyhow::Result<ExitCode> { anyhow::bail!("todo") }
