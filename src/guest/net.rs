//! Networks: `host` shares the host's, `none` is a namespace with loopback
//! only (brought up by the child), `veth` adds a veth pair to the host.

use super::{GuestSpec, NetMode, Result};
use nix::unistd::Pid;

/// The host's half of the network set-up, while the child waits.
pub fn setup_host_side(spec: &GuestSpec, _pid: Pid) -> Result<()> {
    match spec.net.mode {
        NetMode::Host | NetMode::None => Ok(()),
        NetMode::Veth => Err(super::Error::Net("--net veth is not built yet".into())),
    }
}
