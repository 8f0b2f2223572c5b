//! `unifs run` and `unifs guest …`: parse, call `guest`, print.

use super::Global;
use crate::guest::{caps, parse_size, Bind, GuestSpec, Limits, NetMode, NetSpec};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    // Boxed: these options would make `Command` very uneven in size.
    #[command(flatten)]
    pub opts: Box<RunOptions>,
}

/// Options of a one-shot guest.
#[derive(clap::Args, Debug)]
pub struct RunOptions {
    /// The guest's root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Host name inside the guest [default: the root's directory name].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network: host (share the host's), none (loopback only), veth (own addresses).
    #[arg(long, value_enum, default_value_t = NetMode::None)]
    pub net: NetMode,
    /// With --net veth: the guest's address, ADDR/PREFIX.
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<String>,
    /// With --net veth: the host end's address, ADDR/PREFIX (routed).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub host_ip: Option<String>,
    /// With --net veth: put the host end on this bridge instead.
    #[arg(long, value_name = "BRIDGE")]
    pub bridge: Option<String>,
    /// With --net veth: the guest's default gateway.
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
    /// Bind a host path into the guest (repeatable).
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    pub binds: Vec<String>,
    /// Set an environment variable in the guest (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Numeric user id the command runs as.
    #[arg(long, default_value_t = 0)]
    pub uid: u32,
    /// Numeric group id the command runs as.
    #[arg(long, default_value_t = 0)]
    pub gid: u32,
    /// Keep a capability beyond the default set (repeatable; `all` for all).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability of the default set (repeatable; `all` for all).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Memory limit (e.g. 256M, 2G); the kernel kills a process past it.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU time limit as a number of CPUs (e.g. 0.5).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Relative block I/O weight, 10..=1000 (needs the BFQ scheduler on v1).
    #[arg(long, value_name = "W")]
    pub io_weight: Option<u32>,
    /// Run the command under a small init that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// The command and its arguments, resolved inside the guest.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum GuestCommand {
    /// List named guests.
    List,
}

pub fn run(_g: &Global, a: RunArgs) -> anyhow::Result<ExitCode> {
    let a = *a.opts;
    let root = std::fs::canonicalize(&a.root)
        .with_context(|| format!("guest root {}", a.root.display()))?;
    let name = format!("run-{}", std::process::id());
    let mut spec = GuestSpec::new(&name, root.clone(), a.command.clone());
    spec.hostname = a.hostname.clone().unwrap_or_else(|| {
        root.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "guest".into())
    });
    spec.net = NetSpec {
        mode: a.net,
        ip: a.ip.clone(),
        host_ip: a.host_ip.clone(),
        bridge: a.bridge.clone(),
        gateway: a.gateway.clone(),
    };
    spec.binds = a
        .binds
        .iter()
        .map(|b| b.parse::<Bind>())
        .collect::<Result<_, _>>()?;
    spec.env = a.env.clone();
    for e in &spec.env {
        anyhow::ensure!(e.contains('='), "--env {e:?}: expected KEY=VALUE");
    }
    spec.uid = a.uid;
    spec.gid = a.gid;
    spec.caps = caps::keep_mask(&a.cap_add, &a.cap_drop)?;
    spec.limits = Limits {
        memory: a.memory.as_deref().map(parse_size).transpose()?,
        cpus: a.cpus,
        pids: a.pids,
        io_weight: a.io_weight,
    };
    spec.init = a.init;
    let code = crate::guest::launch::run(&spec)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn guest(_g: &Global, _c: GuestCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`unifs guest` is not built yet")
}
