//! The command line: clap structs and dispatch. Thin: parse, call the
//! library, print. `anyhow` lives here and nowhere else.

mod backup;
mod completions;
mod demo;
mod guest;
mod man;
mod mount;
mod output;
mod print;
mod privilege;
mod store;
mod temp;
mod unify;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use print::errln;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// unifs: share identical files of many Linux guests through hardlinks into a
/// content-addressed store, mount each guest through a copy-on-write overlay,
/// and start guests in their own namespaces.
#[derive(Parser, Debug)]
#[command(name = "unifs", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// The store: objects/, catalog.db, tmp/, cache/ and lock.
    #[arg(
        long,
        global = true,
        env = "UNIFS_STORE",
        default_value = "/var/lib/unifs",
        value_name = "DIR",
        // Empty accepted here (clap's PathBuf parser would say "a value is
        // required for --store" when it is UNIFS_STORE that is empty), and
        // refused in main with a message naming both.
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub store: PathBuf,
    /// More log output (repeat for more); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replace identical files across guests by hardlinks to store objects (vunify).
    Unify(unify::UnifyArgs),
    /// Inspect and maintain the store: init, verify, gc, forget, stats, ls, runs, snapshot.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Describe a guest tree completely (JSON lines or BSD mtree), for backups.
    Manifest(backup::ManifestArgs),
    /// Rebuild a guest from its manifest, the store and its private files.
    Restore(backup::RestoreArgs),
    /// Build sample guests in ./unifs-demo, unify them and show what was saved.
    Demo(demo::DemoArgs),
    /// Mount a guest's backing directory through the copy-on-write overlay (vfs-mount).
    Mount(mount::MountArgs),
    /// Unmount a unifs mount.
    Umount(mount::UmountArgs),
    /// Run a command as a one-shot guest in new namespaces.
    Run(guest::RunArgs),
    /// Start, stop, enter and list named guests.
    #[command(subcommand)]
    Guest(guest::GuestCommand),
    /// Print the shell completion script for bash, zsh or fish.
    Completions(completions::CompletionsArgs),
    /// Write the manual pages (unifs(1), one per subcommand, vunify(8), vfs-mount(8)).
    Man(man::ManArgs),
}

/// Entry point of the binary. Answers as `vunify` and `vfs-mount` too.
pub fn main() -> ExitCode {
    // First: the mount daemon and the guest launcher hold fds into host
    // trees and the store, which another process of the same uid could
    // reach through /proc/PID/fd or ptrace.
    crate::sys::set_not_dumpable();
    crate::sys::one_arena_under_address_limit();
    if let Some(path) = std::env::var_os(crate::guest::state::PROBE_ENV) {
        // It may sleep in the request for good: holding no fd of its caller
        // (a shell's `3>lock`, a pipe) past the caller's end.
        crate::guest::sys::close_fds();
        let code = crate::guest::state::probe_statfs(std::path::Path::new(&path));
        return ExitCode::from(code as u8);
    }
    crate::sys::default_sigpipe();
    crate::sys::default_sigchld();
    // (But for a keeper's start after its guest's reboot, which holds the
    // signals its keeper held.)
    if !crate::guest::held_across_exec() {
        crate::sys::unblock_signals();
    }
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own exit is 2 for a usage error; the documented status
            // of a refused command is 1 (--help and --version: 0).
            let printed = e.print();
            return match (e.use_stderr(), printed) {
                (true, _) => ExitCode::FAILURE,
                (false, Ok(())) => ExitCode::SUCCESS,
                // --help or --version that did not reach stdout.
                (false, Err(err)) => stdout_failed(err),
            };
        }
    };
    // Colour codes only for a terminal: not in a log file or the journal,
    // nor where NO_COLOR (no-color.org) is set to anything.
    let log_file = matches!(&cli.command, Command::Mount(m) if m.log.is_some());
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    init_logging(
        cli.global.verbose,
        std::io::IsTerminal::is_terminal(&std::io::stderr()) && !log_file && !no_color,
    );
    if cli.global.store.as_os_str().is_empty() {
        errln!(
            "unifs: the store path is empty (UNIFS_STORE set to an empty string, or --store \"\"): \
             name the store's directory, or unset UNIFS_STORE for the default /var/lib/unifs"
        );
        return ExitCode::FAILURE;
    }
    // From the arguments alone: refused before any config or record is
    // read (what they decide is checked in the command, on what it reads).
    if let Some(command) = changes_things(&cli.command) {
        let needs = privilege::needed(&cli.command);
        let root_only = privilege::root_only(&cli.command);
        let decided = privilege::decided(&cli.command);
        let checked = require_host_root(&command)
            .and_then(|()| privilege::require(&command, &needs, root_only, &decided));
        if let Err(e) = checked {
            errln!("unifs: {e}");
            return ExitCode::FAILURE;
        }
    }
    let store_user = matches!(
        &cli.command,
        Command::Unify(_)
            | Command::Store(_)
            | Command::Manifest(_)
            | Command::Restore(_)
            | Command::Mount(_)
    );
    let store_answers = match store_user {
        true => crate::fs::StallCheck::new()
            .map_err(|e| anyhow::anyhow!("reading /proc/self/mountinfo: {e}"))
            .and_then(|stalls| refuse_stalled_store(&cli.global.store, &stalls)),
        false => Ok(()),
    };
    let result = store_answers.and_then(|()| match cli.command {
        Command::Unify(a) => unify::run(&cli.global, a),
        Command::Store(c) => store::run(&cli.global, c),
        Command::Demo(a) => demo::run(&cli.global, a),
        Command::Manifest(a) => backup::manifest(&cli.global, a),
        Command::Restore(a) => backup::restore(&cli.global, a),
        Command::Mount(a) => mount::mount(&cli.global, a),
        Command::Umount(a) => mount::umount(&cli.global, a),
        Command::Run(a) => guest::run(&cli.global, a),
        Command::Guest(c) => guest::guest(&cli.global, c),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    });
    let failed = print::stdout_failure();
    match result {
        Ok(code) => match failed {
            Some(err) => stdout_failed(err),
            None => code,
        },
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            // Some errors list paths a line each (restore's).
            let text = render(&err);
            let lines: Vec<_> = text.split('\n').map(output::clean).collect();
            errln!("unifs: {}", lines.join("\n"));
            ExitCode::FAILURE
        }
    }
}

/// Refuses a store in a FUSE mount whose daemon does not answer (stopped,
/// hung): the command would wait for good at its first look at it.
pub(super) fn refuse_stalled_store(
    store: &std::path::Path,
    stalls: &crate::fs::StallCheck,
) -> anyhow::Result<()> {
    stalls
        .refuse(store)
        .map_err(|e| anyhow::anyhow!("store {}: {e}", output::path(store)))
}

/// Starts rayon's global pool, which `store verify` and `manifest` hash
/// with, before any work: under a low RLIMIT_AS or RLIMIT_NPROC its
/// threads cannot all start, and rayon panics at its first use.
fn start_global_threads() -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new().build_global().map_err(|e| {
        anyhow::anyhow!(
            "cannot start the worker threads (one a core, or RAYON_NUM_THREADS): {e}; {}: \
                 raise them (`ulimit -v unlimited`, `ulimit -u`)",
            crate::fs::ready::task_limits_text()
        )
    })
}

/// The end of a command whose output did not reach stdout (see
/// [`print`]): exit 1, saying so, unless its reader is gone (a pipe to
/// `head`), which is no failure.
fn stdout_failed(err: std::io::Error) -> ExitCode {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        return ExitCode::SUCCESS;
    }
    errln!("unifs: cannot write to standard output: {err}");
    ExitCode::FAILURE
}

/// The name of `command` (`unify`, `store gc`, …) if it changes files,
/// mounts or processes: those need the host's root. What only reads
/// (`store stats`, `guest status`, …) runs anywhere.
fn changes_things(command: &Command) -> Option<String> {
    use guest::GuestCommand as G;
    use store::StoreCommand as S;
    let name = match command {
        Command::Unify(_) => "unify",
        Command::Demo(_) => "demo",
        Command::Manifest(_) => "manifest",
        Command::Restore(_) => "restore",
        Command::Mount(_) => "mount",
        Command::Run(_) => "run",
        Command::Umount(_) | Command::Completions(_) | Command::Man(_) => return None,
        Command::Store(S::Stats { .. } | S::Ls { .. } | S::Runs { .. }) => return None,
        Command::Store(S::Init { .. }) => "store init",
        Command::Store(S::Verify { .. }) => "store verify",
        Command::Store(S::Gc { .. }) => "store gc",
        Command::Store(S::Forget { .. }) => "store forget",
        Command::Store(S::Snapshot { .. }) => "store snapshot",
        Command::Guest(G::List { .. } | G::Status { .. } | G::Logs { .. } | G::Ps { .. }) => {
            return None
        }
        Command::Guest(G::Start { .. }) => "guest start",
        Command::Guest(G::Stop { .. }) => "guest stop",
        Command::Guest(G::Restart { .. }) => "guest restart",
        Command::Guest(G::Enter { .. }) => "guest enter",
        Command::Guest(G::Exec { .. }) => "guest exec",
        Command::Guest(G::Update { .. }) => "guest update",
    };
    Some(name.to_string())
}

/// Fails unless uid 0 here is the host's root. In a user namespace of its
/// own (`unshare -Ur`) uid 0 passes every check of root, but owns nothing
/// of the host's: a command would get half-way (a store made, then a chown
/// or a mount refused). A uid map that cannot be read is not held against it.
pub(crate) fn require_host_root(command: &str) -> anyhow::Result<()> {
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        return Ok(());
    };
    let lines: Vec<Vec<u64>> = map
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .collect();
    if lines.iter().any(|l| l[..] == [0, 0, 4294967295]) {
        return Ok(());
    }
    // The line that maps uid 0: INSIDE OUTSIDE COUNT.
    let host = lines.iter().find_map(|l| match l[..] {
        [0, outside, count] if count > 0 => Some(outside),
        _ => None,
    });
    let here = match host {
        // Root's own `unshare -Ur`: the same uid, none of its power.
        Some(0) => "uid 0 here maps to the host's root, but holds no capabilities outside \
                    this user namespace"
            .into(),
        Some(uid) => format!("uid 0 here maps to uid {uid}"),
        None => "uid 0 is not mapped here".into(),
    };
    anyhow::bail!("unifs {command} must run as root in the host's user namespace ({here})")
}

/// [`Cli`] from `args` ([`aliased_args`]); asked as `vunify` or `vfs-mount`,
/// its usage lines (`--help`, errors) name that program, not `unifs unify`
/// or `unifs mount`.
fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    let called = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if let Some(alias @ ("vunify" | "vfs-mount")) = called.as_deref() {
        let sub = if alias == "vunify" { "unify" } else { "mount" };
        cmd.build();
        let usage = cmd
            .find_subcommand_mut(sub)
            .map(|c| c.render_usage().to_string());
        let rest = usage
            .as_deref()
            .and_then(|u| u.strip_prefix(&format!("Usage: unifs {sub}")))
            .map(str::to_owned);
        if let Some(rest) = rest {
            cmd = cmd.mut_subcommand(sub, |c| c.override_usage(format!("{alias}{rest}")));
        }
    }
    let args = aliased_args(args);
    let matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// `vunify ARGS` is `unifs unify ARGS`; `vfs-mount ARGS` is `unifs mount ARGS`.
fn aliased_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sub = match name.as_str() {
        "vunify" => Some("unify"),
        "vfs-mount" => Some("mount"),
        _ => None,
    };
    if let Some(sub) = sub {
        args[0] = OsString::from("unifs");
        args.insert(1, OsString::from(sub));
    }
    args
}

fn init_logging(verbose: u8, ansi: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    // fuser warns "Failed to umount filesystem" on every clean unmount
    // (the mount is gone already when its session ends): not for the log.
    let default = match verbose {
        0 => "warn,fuser::session=error",
        1 => "info,fuser::session=error",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || CleanLog { colour: ansi })
        .with_ansi(ansi)
        // A failed write is reported with eprintln!, which panics when
        // stderr itself fails: a mount daemon whose log's disk is full died.
        .log_internal_errors(false)
        .with_target(false)
        .finish()
        .with(QuietGoneReplies)
        .try_init();
}

/// stderr (the mount daemon's --log, a guest's log), with what a message
/// carries raw escaped ([`crate::sys::log_line`]): tracing escapes an ESC
/// in a message, not a newline, CR or bidi control, so a guest's name
/// printed without [`crate::sys::shown`] would forge a line of the log.
struct CleanLog {
    colour: bool,
}

impl std::io::Write for CleanLog {
    /// tracing writes each event, a line, with one `write_all`: here at
    /// once, so the line's end is the buffer's.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = crate::sys::log_line(buf, self.colour);
        // (A look of `guest list`'s, written in the list's order.)
        if !crate::sys::held_log::keep(&line) {
            std::io::stderr().write_all(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Leaves out fuser's `Failed to send FUSE reply: … (os error 2)`: the
/// kernel's ENOENT for a reply to a request it no longer has. fuser answers
/// every FUSE_INTERRUPT (a guest process signalled while it waits, e.g. on
/// a copy) with ENOSYS, and the kernel looks the interrupted request up on
/// the /dev/fuse fd the answer comes on: it is gone once answered, and
/// never there when another thread (each reads an fd of its own) serves it.
/// Nothing failed; libfuse leaves ENOENT out of its log too.
struct QuietGoneReplies;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QuietGoneReplies {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        *event.metadata().level() != tracing::Level::ERROR || !is_gone_reply(event)
    }
}

fn is_gone_reply(event: &tracing::Event<'_>) -> bool {
    struct Message(String);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    let mut m = Message(String::new());
    event.record(&mut m);
    m.0.starts_with("Failed to send FUSE reply: ") && m.0.ends_with("(os error 2)")
}

/// An error and its causes on one line, `outer: inner: …`, leaving out a
/// cause whose text an outer message already includes. (Most error types
/// here and in the crates below print their source in their own message
/// and also return it as `source()`; printed naively, the chain says every
/// OS error two or three times.)
pub(crate) fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    crate::sys::explain_fd_limit(&out)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let store = crate::store::Error::Io {
            path: "g/c".into(),
            source: io,
        };
        let err = anyhow::Error::from(store).context("unify");
        assert_eq!(
            render(&err),
            "unify: g/c: No such file or directory (os error 2)"
        );
        let plain = anyhow::anyhow!("outer").context("context");
        assert_eq!(render(&plain), "context: outer");
    }

    /// Every argument of every command says in `--help` what it is.
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.is_hide_set() || arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "unifs", &mut missing);
        assert!(missing.is_empty(), "no help: {missing:?}");
    }

    #[test]
    fn demo_refuses_a_number_of_guests_it_cannot_build() {
        for n in ["1", "7"] {
            assert!(Cli::try_parse_from(["unifs", "demo", "--guests", n]).is_err());
        }
        assert!(Cli::try_parse_from(["unifs", "demo", "--guests", "6"]).is_ok());
    }

    #[test]
    fn vunify_name_means_unify() {
        let args = aliased_args(vec!["/usr/sbin/vunify".into(), "g1".into()]);
        assert_eq!(
            args,
            vec![OsString::from("unifs"), "unify".into(), "g1".into()]
        );
        let args = aliased_args(vec!["unifs".into(), "stats".into()]);
        assert_eq!(args, vec![OsString::from("unifs"), "stats".into()]);
    }
}
