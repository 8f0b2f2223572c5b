//! placeholder
use super::Global;
use std::process::ExitCode;
#[derive(clap::Args, Debug)]
pub struct DemoArgs {}
pub fn run(_g: &Global, _a: DemoArgs) -> anyhow::Result<ExitCode> { anyhow::bail!("todo") }
