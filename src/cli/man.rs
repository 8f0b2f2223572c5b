//! `unifs man [DIR]`: manual pages from the clap definitions (clap_mangen),
//! so they say what `--help` says. unifs(1) and a page per subcommand,
//! `unifs-guest-start(1)`, …, in `DIR/man1`; the two other names the binary
//! answers to, vunify(8) and vfs-mount(8), in `DIR/man8`: they are
//! installed in sbin, as util-vserver's tools were, and section 8 is
//! sbin's. Without DIR, unifs(1) on stdout.

use super::print::{out, outln};
use anyhow::Context;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = MAN_HELP)]
pub struct ManArgs {
    /// A man directory to write every page into, below DIR/man1 and
    /// DIR/man8 (made if missing) [default: unifs(1) on standard output].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

const MAN_HELP: &str = "\
Each page written is printed, a line each. Install (README.md, \"Install\"):
  unifs man /usr/local/share/man && mandb -q
Read one without installing: unifs man | man -l -";

/// The aliases: (name, the subcommand it is, what it is said to be).
const ALIASES: [(&str, &str); 2] = [("vunify", "unify"), ("vfs-mount", "mount")];

pub fn run(a: ManArgs) -> anyhow::Result<std::process::ExitCode> {
    let Some(dir) = a.dir else {
        let mut cmd = root();
        cmd.build();
        out!("{}", String::from_utf8_lossy(&page(cmd, "1")?));
        return Ok(std::process::ExitCode::SUCCESS);
    };
    for (path, text) in pages()? {
        let path = dir.join(path);
        write(&path, &text)?;
        outln!("{}", super::output::path(&path));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Every page, by its path below a man directory (`man1/unifs.1`, …).
pub fn pages() -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut cmd = root();
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages)?;
    for (alias, sub) in ALIASES {
        let Some(sub) = cmd.find_subcommand(sub) else {
            continue;
        };
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        // Its own name said once: "… store objects (vunify)" ends it.
        let about = about.trim_end_matches(&format!(" ({alias})")).to_string();
        let about = format!("unifs {}, by its other name: {about}", sub.get_name());
        let alias_cmd = sub
            .clone()
            .name(alias)
            .display_name(alias)
            .bin_name(alias)
            .about(about);
        let path = PathBuf::from(format!("man8/{alias}.8"));
        pages.push((path, page(alias_cmd, "8")?));
    }
    Ok(pages)
}

/// `unifs` as the pages show it: no `help` subcommand (`--help` is there).
/// Its about without the "unifs: " `--help` starts with (NAME says it).
fn root() -> clap::Command {
    let cmd = super::Cli::command().disable_help_subcommand(true);
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let about = about.strip_prefix("unifs: ").unwrap_or(&about).to_string();
    cmd.about(about)
}

fn collect(cmd: &clap::Command, pages: &mut Vec<(PathBuf, Vec<u8>)>) -> anyhow::Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    pages.push((
        PathBuf::from(format!("man1/{name}.1")),
        page(cmd.clone(), "1")?,
    ));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages)?;
    }
    Ok(())
}

/// One page: clap_mangen's, its after-help under NOTES (clap_mangen says
/// EXTRA), the environment variables its options read, and a SEE ALSO of
/// the page above it.
fn page(cmd: clap::Command, section: &str) -> anyhow::Result<Vec<u8>> {
    let display = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let see_also = match display.rsplit_once('-') {
        _ if section == "8" => format!("\\fBunifs-{}\\fR(1), \\fBunifs\\fR(1)", alias_of(&display)),
        Some((parent, _)) => format!("\\fB{parent}\\fR(1)"),
        None => "\\fBmount.fuse3\\fR(8), \\fBsystemd-nspawn\\fR(1)".to_string(),
    };
    let env: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let var = a.get_env()?.to_string_lossy().into_owned();
            Some((var, format!("--{}", a.get_long()?)))
        })
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    let man = clap_mangen::Man::new(cmd)
        .section(section)
        .source(format!("unifs {version}"))
        .manual("unifs manual");
    let mut text = Vec::new();
    man.render(&mut text).context("rendering a manual page")?;
    let mut text = String::from_utf8_lossy(&text).replace(".SH EXTRA\n", ".SH NOTES\n");
    if !env.is_empty() {
        text.push_str(".SH ENVIRONMENT\n");
        for (var, long) in env {
            let long = long.replace('-', "\\-");
            text.push_str(&format!(
                ".TP\n\\fB{var}\\fR\nThe default of \\fB{long}\\fR.\n"
            ));
        }
        if display == "unifs" {
            text.push_str(ROOT_ENV);
        }
    }
    text.push_str(".SH \"SEE ALSO\"\n");
    text.push_str(&see_also);
    text.push_str(
        "\n.PP\nThe documentation in docs/ of the unifs source: guests.md, mount.md, unify.md, \
         store-format.md, backup.md, security.md.\n",
    );
    Ok(text.into_bytes())
}

/// What every command reads besides its options' variables.
const ROOT_ENV: &str = "\
.TP\n\\fBRUST_LOG\\fR\nWhat is logged on stderr, as tracing's EnvFilter reads it (\\fB\\-v\\fR without it).\n\
.TP\n\\fBNO_COLOR\\fR\nSet to anything, log lines are never coloured (else only on a terminal).\n";

/// The subcommand an alias (vunify, vfs-mount) stands for.
fn alias_of(alias: &str) -> &'static str {
    ALIASES
        .iter()
        .find(|(a, _)| *a == alias)
        .map_or("unify", |(_, sub)| sub)
}

/// Writes `text` at `path`, making its directory: through a temp name and
/// a rename, so a reader (man, mandb) never sees half a page.
fn write(path: &Path, text: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", super::output::path(dir)))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", super::output::path(&tmp)))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!(
            "renaming {} to {}",
            super::output::path(&tmp),
            super::output::path(path)
        )
    })
}
