//! `unifs completions SHELL`: clap_complete's script for bash, zsh or
//! fish, plus a few lines of our own that complete guest names for `unifs
//! guest start|stop|…` from the config dir (`NAME.toml` files), read by
//! the shell itself: nothing of unifs runs at a TAB.

use super::print::out;
use clap::CommandFactory;

#[derive(clap::Args, Debug)]
#[command(after_help = COMPLETIONS_HELP)]
pub struct CompletionsArgs {
    /// The shell to print the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

const COMPLETIONS_HELP: &str = "\
Guest names after `unifs guest start|stop|…` come from the NAME.toml files in
--config-dir on the line, else UNIFS_CONFIG_DIR, else /etc/unifs/guests.

Install (README.md, \"Install\"):
  mkdir -p /usr/local/share/bash-completion/completions
  unifs completions bash > /usr/local/share/bash-completion/completions/unifs
  unifs completions zsh  > /usr/local/share/zsh/site-functions/_unifs
  unifs completions fish > /etc/fish/completions/unifs.fish";

pub fn run(a: CompletionsArgs) -> anyhow::Result<std::process::ExitCode> {
    out!("{}", script(a.shell));
    Ok(std::process::ExitCode::SUCCESS)
}

/// The whole script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "unifs", &mut buf);
    let generated = without_hidden(shell, &String::from_utf8_lossy(&buf), &hidden_options(&cmd));
    let subs = named_guest_commands(&cmd).join(" ");
    match shell {
        Shell::Bash => {
            let valued = valued_options(&cmd).join(" ");
            format!(
                "{generated}\n{}",
                BASH_NAMES
                    .replace("@SUBS@", &subs)
                    .replace("@VALUED@", &valued)
            )
        }
        Shell::Zsh => zsh(&generated),
        Shell::Fish => format!("{generated}\n{}", FISH_NAMES.replace("@SUBS@", &subs)),
    }
}

/// The `guest` subcommands whose positional argument is a guest's NAME.
fn named_guest_commands(cmd: &clap::Command) -> Vec<String> {
    let Some(guest) = cmd.find_subcommand("guest") else {
        return Vec::new();
    };
    guest
        .get_subcommands()
        .filter(|s| s.get_positionals().any(|a| a.get_id() == "name"))
        .map(|s| s.get_name().to_string())
        .collect()
}

/// Every option of `unifs` and of `unifs guest …` that takes a value: the
/// word after it is that value, not a positional argument.
fn valued_options(cmd: &clap::Command) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let guest = cmd.find_subcommand("guest");
    let commands = std::iter::once(cmd)
        .chain(guest)
        .chain(guest.into_iter().flat_map(|g| g.get_subcommands()));
    for c in commands {
        for a in c.get_opts() {
            if !a.get_action().takes_values() {
                continue;
            }
            let long = a.get_long().map(|l| format!("--{l}"));
            let short = a.get_short().map(|s| format!("-{s}"));
            all.extend(long.into_iter().chain(short));
        }
    }
    all.sort();
    all.dedup();
    all
}

/// The long names of hidden options (`guest start --after-reboot`, the
/// keeper's own), anywhere: clap_complete offers them like the others.
fn hidden_options(cmd: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    for sub in cmd.get_subcommands() {
        names.extend(hidden_options(sub));
    }
    names
}

/// `generated` without the options `hidden`: out of bash's `opts="…"`
/// lists, and without zsh's and fish's line for each.
fn without_hidden(shell: Shell, generated: &str, hidden: &[String]) -> String {
    let mut out = String::new();
    for line in generated.lines() {
        let mut line = line.to_string();
        let mut dropped = false;
        for long in hidden {
            match shell {
                Shell::Bash if line.trim_start().starts_with("opts=\"") => {
                    line = line.replace(&format!(" --{long}"), "");
                }
                // Whole lines: zsh's are continued (` \`), and a blank
                // one would end the `_arguments` call.
                Shell::Zsh => dropped |= line.starts_with(&format!("'--{long}=")),
                Shell::Fish => dropped |= line.contains(&format!(" -l {long} ")),
                Shell::Bash => {}
            }
        }
        if !dropped {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// clap's zsh script with guest names for the NAME of `guest` commands
/// (there, and only there, the positional is `name`), and the function
/// that lists them defined before the script's last lines run it.
fn zsh(generated: &str) -> String {
    let mut out = String::new();
    for line in generated.lines() {
        let line = match line.trim_start().starts_with("':name -- ") {
            true => line.replace(":_default'", ":_unifs_guest_names'"),
            false => line.to_string(),
        };
        if line.starts_with("if [ \"$funcstack[1]\" = \"_unifs\" ]") {
            out.push_str(ZSH_NAMES);
            out.push('\n');
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

const BASH_NAMES: &str = r#"# unifs: guest names (NAME.toml in --config-dir, UNIFS_CONFIG_DIR or
# /etc/unifs/guests) for the NAME of `unifs guest @SUBS@`.
_unifs_guest_names() {
    local dir=${UNIFS_CONFIG_DIR:-/etc/unifs/guests} i f
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --config-dir) dir=${COMP_WORDS[i+1]} ;;
            --config-dir=*) dir=${COMP_WORDS[i]#--config-dir=} ;;
        esac
    done
    for f in "$dir"/*.toml; do
        [[ -f $f ]] || continue
        f=${f##*/}
        printf '%s\n' "${f%.toml}"
    done
}

_unifs_with_guests() {
    _unifs "$@"
    local cur=${COMP_WORDS[COMP_CWORD]} i w skip= words=()
    [[ $cur == -* ]] && return 0
    # The words before the cursor that are neither options nor their values.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ -n $skip ]]; then skip=; continue; fi
        case $w in
            --) return 0 ;;
            --*=*) ;;
            -*) [[ " @VALUED@ " == *" $w "* ]] && skip=1 ;;
            *) words+=("$w") ;;
        esac
    done
    [[ -n $skip ]] && return 0
    if [[ ${#words[@]} -eq 2 && ${words[0]} == guest && " @SUBS@ " == *" ${words[1]} "* ]]; then
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$(_unifs_guest_names)" -- "$cur"))
    fi
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _unifs_with_guests -o nosort -o bashdefault -o default unifs
else
    complete -F _unifs_with_guests -o bashdefault -o default unifs
fi
"#;

const ZSH_NAMES: &str = r#"# unifs: guest names (NAME.toml in --config-dir, UNIFS_CONFIG_DIR or
# /etc/unifs/guests) for the NAME of `unifs guest start|stop|…`.
(( $+functions[_unifs_guest_names] )) ||
_unifs_guest_names() {
    local dir=${UNIFS_CONFIG_DIR:-/etc/unifs/guests} i expl
    for ((i = 1; i < CURRENT; i++)); do
        case $words[i] in
            --config-dir) dir=$words[i+1] ;;
            --config-dir=*) dir=${words[i]#--config-dir=} ;;
        esac
    done
    local -a names
    names=( $dir/*.toml(N.:t:r) )
    _wanted guests expl 'guest' compadd -a names
}
"#;

const FISH_NAMES: &str = r#"# unifs: guest names (NAME.toml in --config-dir, UNIFS_CONFIG_DIR or
# /etc/unifs/guests) for the NAME of `unifs guest @SUBS@`.
function __unifs_guest_names
    set -l dir /etc/unifs/guests
    set -q UNIFS_CONFIG_DIR; and set dir $UNIFS_CONFIG_DIR
    set -l words (commandline -opc)
    for i in (seq (count $words))
        switch $words[$i]
            case --config-dir
                set -l j (math $i + 1)
                set -q words[$j]; and set dir $words[$j]
            case '--config-dir=*'
                set dir (string replace -- --config-dir= '' $words[$i])
        end
    end
    for f in $dir/*.toml
        test -f $f; and basename $f .toml
    end
end
complete -c unifs -n "__fish_seen_subcommand_from guest; and __fish_seen_subcommand_from @SUBS@" -f -a "(__unifs_guest_names)"
"#;
