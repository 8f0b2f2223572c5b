//! Guests, VServer's security contexts on stock namespaces: a process tree
//! that sees only its own root, PIDs, hostname and IPC, with a reduced
//! capability set, no new privileges and cgroup limits.
//!
//! - [`spec`]: what a guest is (root, command, network, limits, privileges).
//! - [`sys`]: the syscall seam; all `unsafe` of the launcher.
//! - `rootfs`: the set-up sequence inside the namespaces, pivot_root included.
//! - [`seccomp`]: the syscall filter the guest runs under.
//! - [`cgroup`]: limits on cgroup v2 and v1.
//! - [`devices`]: `--device`, a host character device given to a guest.
//! - [`launch`]: clone, handshake, wait.
//! - [`run_keeper`]: what ends `unifs run`'s guest when the run is killed;
//!   [`keeper_report`]: its report when it could not; `run_stdio`: its
//!   stdio that is a host file or device, given to the guest as pipes.
//! - [`overlay`]: `unifs run`'s root through the copy-on-write overlay;
//!   [`host_mounts`]: what its mount namespace keeps of the host's.
//! - [`ps`]: a running guest's processes, seen from the host.
//! - [`logs`]: a named guest's console log; `relay`: its keeper's copy
//!   of the guest's `/dev/console` (init's stdout and stderr) into it.
//! - [`user`]: `--user NAME`, looked up in the guest's own /etc/passwd.
//! - [`config`], [`state`], [`lifecycle`]: named guests (TOML config,
//!   runtime state under /run/unifs, start/stop/exec/status); `kept`:
//!   the run dirs keepers hold open, read where a mount covers them.

mod at_once;
mod bind_guard;
pub mod caps;
pub mod cgroup;
mod command_pid;
pub mod config;
pub mod console;
pub mod devices;
mod error;
pub mod host_mounts;
mod keeper_panic;
pub mod keeper_report;
mod keeper_signals;
mod kept;
mod kernel_log;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod net;
mod oom_notice;
mod oom_watch;
pub mod overlay;
mod port_lock;
pub mod ps;
mod relay;
mod rootfs;
pub mod run_keeper;
mod run_stdio;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sys;
pub mod user;

pub use bind_guard::check as check_bind_root;
pub use error::{Error, Result};
pub use keeper_signals::{end_by, held_across_exec};
pub use rootfs::require_mounted_root;
pub use spec::{
    parse_memory, parse_size, Bind, GuestSpec, Limits, NetMode, NetSpec, Rlimit, SyscallFilter,
    Tmpfs,
};
