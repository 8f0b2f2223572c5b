//! The launcher's errors. Each names the path, guest or limit it is about,
//! so the CLI can print it as is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    /// A set-up step of the guest failed; the message comes from the child.
    #[error("setting up the guest failed: {0}")]
    Setup(String),
    #[error("{command}: command not found in guest root {}", root.display())]
    CommandNotFound { command: String, root: PathBuf },
    #[error("cannot apply {limit}: {reason}")]
    Limit { limit: &'static str, reason: String },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("guest root {} is not a directory", .0.display())]
    NoRoot(PathBuf),
    #[error("{0} needs root (CAP_SYS_ADMIN in the initial user namespace)")]
    Permission(&'static str),
    #[error("no config for guest {name}: {} does not exist", path.display())]
    NoConfig { name: String, path: PathBuf },
    #[error("bad guest config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// `RUN_DIR/NAME/state.json` exists but does not parse (cut short by a
    /// crash, edited by hand).
    #[error("unreadable runtime record {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
    #[error("guest {name} is already running (init pid {pid})")]
    AlreadyRunning { name: String, pid: i32 },
    /// Processes of the guest that could not be ended.
    #[error("stopping guest {name} failed: {reason}")]
    Stop { name: String, reason: String },
    #[error("guest {name} is not running")]
    NotRunning { name: String },
    #[error("guest {name} runs without a runtime record (its start was interrupted); `unifs guest stop {name}` ends it")]
    Unrecorded { name: String },
    #[error(
        "the root of guest {name} is unreachable: its overlay daemon (`unifs mount`) has died or does not answer; \
         `unifs guest stop {name}` and `unifs guest start {name}` bring the guest back"
    )]
    RootLost { name: String },
    #[error(
        "guest {name} is frozen ({} says so): a command would freeze with it; thaw it first \
         (`echo {thaw} > {}`)", file.display(), file.display()
    )]
    Frozen {
        name: String,
        file: PathBuf,
        thaw: &'static str,
    },
    #[error("mounting the root of guest {name} failed: {reason}")]
    RootMount { name: String, reason: String },
    #[error("cannot serve guest root {} through the overlay: {reason}", root.display())]
    OverlayRoot { root: PathBuf, reason: String },
    #[error("network set-up failed: {0}")]
    Net(String),
    /// An error of the guest's keeper (the process that starts init and
    /// waits for it), as it said it.
    #[error("{0}")]
    Keeper(String),
    #[error("guest {name} has no console log ({}): it was never started with this run dir", path.display())]
    NoLog { name: String, path: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }
}
