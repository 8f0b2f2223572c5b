//! placeholder
use super::Global;
use std::process::ExitCode;
#[derive(clap::Args, Debug)]
pub struct UnifyArgs {}
pub fn run(_g: &Global, _a: UnifyArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("todo") }
