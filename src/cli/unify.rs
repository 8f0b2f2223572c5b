//! `unifs unify` (vunify).

use super::output::{self, bytes, count, counted, guest_name, parse_size, print_problems};
use super::print::{errln, out, outln};
use super::Global;
use crate::unify::{self, exclude::DEFAULT_EXCLUDES, Excludes};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Replace identical files across guests by hardlinks to one store object.
///
/// Only regular, non-empty files at least --min-size long are considered;
/// files differing in content, mode, owner, mtime or xattrs are never
/// linked together. A guest's own hardlinks are left alone. Every guest must
/// be on the store's filesystem. Run as root. Re-runs are cheap: unchanged
/// files are not read again.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "EXCLUDES: one glob per line, matched against the path inside the \
guest (leading /); a pattern without / matches a name at any depth; a match on a directory \
covers everything below it; +PATTERN includes again; the first match wins. --exclude and \
--exclude-from rules come first, then the default list (see `unifs unify --print-default-excludes`).

EXIT STATUS: 0 done, nothing to report; 1 failed (refused before it changed anything, or \
stopped: see the error); 23 finished, but left files or guests as they were that it should \
have handled: files that changed or were open for writing while unify ran, files it could not \
read or link, files or nodes hardlinked across guests (a `cp -al` clone) that it could not give \
copies of their own or that have links outside the guests given, guests of --all whose \
directory is gone or now on another filesystem, \
directories nested deeper than 1000 levels and paths of 4096 bytes or more (left alone) \
(listed as warnings, and in --json's problems)."
)]
pub struct UnifyArgs {
    /// Guest root directories.
    #[arg(value_name = "GUEST_DIR")]
    pub guests: Vec<PathBuf>,
    /// Also every guest the store's catalog knows.
    #[arg(long)]
    pub all: bool,
    /// Leave files smaller than this alone (e.g. 4k, 1M).
    #[arg(long, default_value = "1", value_parser = parse_size, value_name = "SIZE")]
    pub min_size: u64,
    /// Leave paths matching PATTERN alone (repeatable; `+PATTERN` includes again).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Read exclude rules from FILE (repeatable; `-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Do not apply the built-in exclude list (/dev, /proc, /var, /etc/shadow, …).
    #[arg(long)]
    pub no_default_excludes: bool,
    /// Print the built-in exclude list and exit.
    #[arg(long)]
    pub print_default_excludes: bool,
    /// Change nothing; report what would be linked and saved, as
    /// predicted from hashes: files linking would then leave alone (an
    /// object changed on the host or with inode flags, no xattr room for
    /// the marker, another project ID, in use) and extra copies at the
    /// link limit are not foreseen.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Compare bytes before linking, not only hashes; and read every
    /// directory, not trusting the listings kept from the last run.
    #[arg(long)]
    pub paranoid: bool,
    /// Leave mtime out of object ids (only when the store is created).
    #[arg(long)]
    pub ignore_mtime: bool,
    /// Link guest files that are another store's objects (a guest of that
    /// store) to this store's objects of the same content, moving the
    /// guests into this store; without it, unify refuses them.
    #[arg(long)]
    pub move_from_other_store: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Treat an object as full at N links (for tests of link-limit handling).
    /// A test hook (src/sys/test_hooks.rs): without the feature, no flag.
    #[cfg_attr(
        feature = "test-hooks",
        arg(long, hide = true, env = "UNIFS_TEST_LINK_MAX", value_name = "N")
    )]
    #[cfg_attr(not(feature = "test-hooks"), arg(skip))]
    pub link_max: Option<u64>,
}

/// `e`, naming the file size limit where one is set and `e` is a write
/// failure it may have caused: SQLite says only "disk I/O error" (or
/// "database or disk is full") for the EFBIG of a catalog write past it.
fn past_file_size_limit(e: anyhow::Error) -> anyhow::Error {
    let text = super::render(&e);
    let io = ["disk I/O error", "disk is full", "File too large"]
        .iter()
        .any(|t| text.contains(t));
    match crate::sys::file_size_limit() {
        Some(limit) if io && !text.contains("RLIMIT_FSIZE") => anyhow::anyhow!(
            "{text}: the file size limit (RLIMIT_FSIZE, `ulimit -f`) is {limit} bytes, and a \
             write past it fails; raise it (`ulimit -f unlimited`) and run again"
        ),
        _ => e,
    }
}

pub fn run(g: &Global, a: UnifyArgs) -> anyhow::Result<ExitCode> {
    if a.print_default_excludes {
        out!("{DEFAULT_EXCLUDES}");
        return Ok(ExitCode::SUCCESS);
    }
    if !a.dry_run && !is_root() {
        anyhow::bail!(
            "unify must run as root: it sets trusted.* xattrs and takes leases on guest files \
             (try --dry-run to see what it would do)"
        );
    }
    // A write past the caller's RLIMIT_FSIZE (an object copy, the
    // catalog) fails with EFBIG, which names the limit, rather than
    // SIGXFSZ killing unify halfway.
    crate::sys::ignore_sigxfsz();
    unify::start_workers()?;
    let excludes = build_excludes(&a)?;
    let opts = unify::Options {
        guests: a.guests,
        all: a.all,
        min_size: a.min_size.max(1),
        excludes,
        dry_run: a.dry_run,
        paranoid: a.paranoid,
        ignore_mtime: a.ignore_mtime.then_some(true),
        link_max: a.link_max,
        move_from_other_store: a.move_from_other_store,
        progress: !a.json && !a.no_progress && std::io::stderr().is_terminal(),
    };
    let summary = unify::unify(&g.store, &opts).map_err(|e| past_file_size_limit(e.into()))?;
    if a.json {
        outln!("{}", super::output::json(&summary)?);
    } else {
        print_problems(&summary.notices, true);
        print_problems(&summary.problems, g.verbose > 0);
        print_summary(&summary);
    }
    if summary.problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // A warning about the run's own records in the store (STORE/tmp) is
    // no file or guest left as it was: it is counted apart.
    let mut own: Vec<String> = Vec::new();
    for p in summary.store_problems() {
        let p = p.path.display().to_string();
        if !own.contains(&p) {
            own.push(p);
        }
    }
    let own_count = summary.store_problems().count();
    let left = summary.problems.len() - own_count;
    let listed = if a.json {
        "in the JSON output's problems"
    } else {
        "above"
    };
    let own_text = format!(
        "{} about its own records in the store ({})",
        counted(own_count as u64, "warning", "warnings"),
        own.join(", ")
    );
    let left_text = counted(
        left as u64,
        "file or guest as it was",
        "files or guests as they were",
    );
    let what = match (left, own_count) {
        (_, 0) => format!(", but left {left_text}"),
        (0, _) => format!(" and left no file or guest as it was, but gave {own_text}"),
        _ => format!(", but left {left_text}, and gave {own_text}"),
    };
    errln!("unifs: unify finished{what} (listed {listed}); exit status {EXIT_PROBLEMS}");
    Ok(ExitCode::from(EXIT_PROBLEMS))
}

/// Exit status of a run that finished but lists problems: files or guests
/// it had to leave as they were (rsync's "partial transfer due to error").
pub const EXIT_PROBLEMS: u8 = 23;

fn build_excludes(a: &UnifyArgs) -> anyhow::Result<Excludes> {
    let mut lists: Vec<(String, String)> = Vec::new();
    // In a list file such lines are skipped; an option given one excluded
    // nothing without a word (`--exclude "$UNSET"`).
    if let Some(p) = a.exclude.iter().find(|p| {
        let p = p.trim();
        p.is_empty() || p.starts_with('#')
    }) {
        anyhow::bail!(
            "--exclude {p:?} is no rule (empty, or a # comment): give a glob such as \
             /var/cache (a name starting with # is written \\#…)"
        );
    }
    if !a.exclude.is_empty() {
        lists.push(("--exclude".into(), a.exclude.join("\n")));
    }
    for f in &a.exclude_from {
        if f.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                .context("cannot read the exclude list from standard input")?;
            lists.push(("standard input".into(), text));
            continue;
        }
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read exclude list {}", output::path(f)))?;
        lists.push((output::path(f), text));
    }
    if !a.no_default_excludes {
        lists.push(("the default list".into(), DEFAULT_EXCLUDES.to_string()));
    }
    Ok(Excludes::new(
        lists.iter().map(|(o, t)| (o.clone(), t.as_str())),
    )?)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The guests' names for the summary's first line: all of a few, else the
/// first three and how many more (`--json` lists them all); thousands of
/// names made a line of tens of kilobytes.
fn guest_list(names: &[String]) -> String {
    const ALL_UP_TO: usize = 5;
    const FIRST: usize = 3;
    if names.len() <= ALL_UP_TO {
        return names.join(", ");
    }
    format!(
        "{} and {} more",
        names[..FIRST].join(", "),
        count((names.len() - FIRST) as u64)
    )
}

fn print_summary(s: &unify::Summary) {
    let would = if s.dry_run { "would be " } else { "" };
    outln!(
        "{}unify: {} ({}), {} scanned ({})",
        if s.dry_run { "dry run: " } else { "" },
        counted(s.guests.len() as u64, "guest", "guests"),
        guest_list(
            &s.guests
                .iter()
                .zip(&s.guest_roots)
                .map(|(name, root)| guest_name(name, root))
                .collect::<Vec<_>>()
        ),
        counted(s.files_scanned, "file", "files"),
        bytes(s.bytes_scanned)
    );
    outln!(
        "  directories: {} read, {} unchanged since the last run (its listings used)",
        count(s.dirs_read),
        count(s.dirs_from_cache)
    );
    outln!(
        "  left alone: {} excluded, {} empty or below --min-size, {} in guest hardlink groups",
        count(s.files_excluded),
        count(s.files_too_small),
        count(s.guest_hardlinks_left)
    );
    for (n, why) in [
        (s.files_sparse, "with holes (sparse), not read"),
        (
            s.files_no_xattr_room,
            "with no room for the store's xattr beside their own (ext4 xattr space full)",
        ),
        (
            s.files_other_project,
            "of another project ID (lsattr -p) than their object, which a hardlink would share",
        ),
        (
            s.files_with_inode_flags,
            "with inode flags (chattr), which a hardlink would share",
        ),
    ] {
        if n > 0 {
            outln!("  left alone: {} {why}", count(n));
        }
    }
    if s.files_apart_by_metadata > 0 {
        let mtime = match s.files_apart_by_mtime {
            0 => String::new(),
            n => format!(
                "; {} only in mtime (a store made with --ignore-mtime links those whose content \
                 matches: docs/unify.md)",
                count(n)
            ),
        };
        outln!(
            "  left apart: {} with another guest's path and size but not its mtime, mode or \
             owner (one inode has one of each){mtime}",
            counted(s.files_apart_by_metadata, "file", "files")
        );
    }
    outln!(
        "  hashed {} ({}), {} from cache; {} already linked",
        counted(s.files_hashed, "file", "files"),
        bytes(s.bytes_hashed),
        count(s.cache_hits),
        count(s.files_already_linked)
    );
    outln!(
        "  {} {would}linked, {}: {} {would}saved",
        counted(s.files_linked, "file", "files"),
        counted(s.objects_added, "new object", "new objects"),
        bytes(s.bytes_saved)
    );
    if s.bytes_copied > 0 {
        outln!(
            "  ({} of copies {would}made taken off what was saved)",
            bytes(s.bytes_copied)
        );
    }
    if s.skipped_changed + s.skipped_in_use + s.objects_copied + s.extra_copies > 0 {
        outln!(
            "  skipped {} that changed and {} in use; {} copied from files open for writing; {} \
             for the link limit",
            counted(s.skipped_changed, "file", "files"),
            count(s.skipped_in_use),
            counted(s.objects_copied, "object", "objects"),
            counted(s.extra_copies, "extra copy", "extra copies")
        );
    }
    if s.files_gone > 0 {
        outln!(
            "  {} went away while unify ran (deleted or moved by a running guest)",
            counted(s.files_gone, "file", "files")
        );
    }
    if s.clone_paths_split > 0 {
        outln!(
            "  {} hardlinked across guests (a `cp -al` clone) {}given copies of their own",
            counted(s.clone_paths_split, "path", "paths"),
            would
        );
    }
    if s.stale_tmp_removed > 0 {
        outln!(
            "  removed {} left by an interrupted run",
            counted(s.stale_tmp_removed, "temp name", "temp names")
        );
    }
    if s.objects_recovered > 0 {
        outln!(
            "  recorded {} an interrupted run added to the store",
            counted(s.objects_recovered, "object file", "object files")
        );
    }
    if s.dir_mtimes_recovered > 0 {
        outln!(
            "  put back the mtimes of {} an interrupted run changed",
            counted(s.dir_mtimes_recovered, "directory", "directories")
        );
    }
    match s.run {
        Some(run) => outln!("  run {run}, {:.2} s", s.seconds),
        None => outln!("  {:.2} s", s.seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::guest_list;

    #[test]
    fn the_summary_names_a_few_guests_and_counts_the_rest() {
        let names = |n: usize| (0..n).map(|i| format!("g{i}")).collect::<Vec<_>>();
        assert_eq!(guest_list(&names(1)), "g0");
        assert_eq!(guest_list(&names(5)), "g0, g1, g2, g3, g4");
        assert_eq!(guest_list(&names(6)), "g0, g1, g2 and 3 more");
        assert_eq!(guest_list(&names(4000)), "g0, g1, g2 and 3,997 more");
    }
}
