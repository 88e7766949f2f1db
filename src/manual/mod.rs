//! The manual: the cowfs(1) page and the shell completions, generated from the clap definition
//! (so they list exactly what the parser takes) around the hand-written sections in
//! `description.roff` and `sections.roff`. The generated files are checked into the tree (where
//! `make install` takes them from) and a test fails when they fall behind; `make docs` writes
//! them again through `cowfs generate`.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use crate::cli::Cli;

/// The synopsis lines of the fuse-overlayfs and mount(8) forms, after those of the subcommands.
const SYNOPSIS: &str = include_str!("synopsis.roff");
/// What the page says in DESCRIPTION, before the generated OPTIONS.
const DESCRIPTION: &str = include_str!("description.roff");
/// The hand-written sections after the generated COMMANDS: -o options, layers, the on-disk
/// format, container storage, mount(8), exit status, environment, files, see also.
const SECTIONS: &str = include_str!("sections.roff");

/// One generated file of the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Artifact {
    ManPage,
    BashCompletions,
    ZshCompletions,
    FishCompletions,
}

impl Artifact {
    /// Every generated file, in the order `make docs` writes them.
    pub const ALL: [Artifact; 4] = [
        Artifact::ManPage,
        Artifact::BashCompletions,
        Artifact::ZshCompletions,
        Artifact::FishCompletions,
    ];

    /// The name `cowfs generate NAME` takes.
    pub fn name(self) -> &'static str {
        match self {
            Artifact::ManPage => "man",
            Artifact::BashCompletions => "bash",
            Artifact::ZshCompletions => "zsh",
            Artifact::FishCompletions => "fish",
        }
    }

    pub fn from_name(name: &str) -> Option<Artifact> {
        Artifact::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Where the file lives in the source tree, relative to its root.
    pub fn path_in_tree(self) -> &'static str {
        match self {
            Artifact::ManPage => "man/cowfs.1",
            Artifact::BashCompletions => "completions/cowfs.bash",
            Artifact::ZshCompletions => "completions/_cowfs",
            Artifact::FishCompletions => "completions/cowfs.fish",
        }
    }

    /// The file's whole text, as `make docs` writes it.
    pub fn render(self) -> String {
        match self {
            Artifact::ManPage => man_page(),
            Artifact::BashCompletions => completions(Shell::Bash),
            Artifact::ZshCompletions => completions(Shell::Zsh),
            Artifact::FishCompletions => completions(Shell::Fish),
        }
    }
}

/// The command as the manual shows it: the parser's, built, without clap's `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// cowfs(1): generated title, name, synopsis, options, commands and version, with the
/// hand-written description and sections between.
pub fn man_page() -> String {
    let cmd = command();
    let man = Man::new(cmd.clone())
        .title("COWFS")
        .section("1")
        .manual("User Commands");
    let mut page = String::new();
    page.push_str(&rendered(|w| man.render_title(w), true));
    page.push_str(&rendered(|w| man.render_name_section(w), false));
    page.push_str(&synopsis_section(&cmd));
    page.push_str(".SH DESCRIPTION\n");
    page.push_str(DESCRIPTION);
    page.push_str(&rendered(|w| man.render_options_section(w), false));
    page.push_str(&commands_section(&cmd));
    page.push_str(SECTIONS);
    page.push_str(&rendered(|w| man.render_version_section(w), false));
    page
}

/// One part of the page as clap_mangen renders it. Each part starts with the same roff preamble
/// (a string for apostrophes); only the first keeps it.
fn rendered(
    render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    keep_preamble: bool,
) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec never fails.
    let _ = render(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if keep_preamble {
        text
    } else {
        without_preamble(text)
    }
}

fn without_preamble(text: String) -> String {
    let preamble = Roff::new().render();
    match text.strip_prefix(preamble.as_str()) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// SYNOPSIS: a line per visible subcommand, then the forms without one.
fn synopsis_section(cmd: &clap::Command) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    for (i, sub) in visible_subcommands(cmd).enumerate() {
        if i > 0 {
            roff.control("br", []);
        }
        roff.text(subcommand_usage(sub));
    }
    without_preamble(roff.render()) + SYNOPSIS
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// `cowfs NAME [OPTIONS] ARG...`
fn subcommand_usage(sub: &clap::Command) -> Vec<Inline> {
    let mut usage = vec![bold(format!("cowfs {}", sub.get_name()))];
    if sub.get_arguments().any(is_listed_option) {
        usage.push(roman(" [OPTIONS]"));
    }
    for positional in sub.get_positionals().filter(|a| !a.is_hide_set()) {
        usage.push(roman(" "));
        usage.push(italic(value_name(positional)));
    }
    usage
}

/// COMMANDS: each visible subcommand with its arguments, its whole help text, and the options
/// it has beyond the top-level ones (one page for all, rather than a page per subcommand).
fn commands_section(cmd: &clap::Command) -> String {
    let top_level: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in visible_subcommands(cmd) {
        roff.control("TP", []);
        roff.text(subcommand_usage(sub));
        let help = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for (i, paragraph) in help.split("\n\n").enumerate() {
            if i > 0 {
                roff.control("IP", []);
            }
            roff.text([roman(paragraph.replace('\n', " "))]);
        }
        let own: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| is_listed_option(a))
            .filter(|a| !top_level.contains(&a.get_id().as_str()))
            .collect();
        if !own.is_empty() {
            roff.control("RS", []);
            for arg in own {
                roff.control("TP", []);
                roff.text(flag_usage(arg));
                if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
                    roff.text([roman(help.to_string())]);
                }
            }
            roff.control("RE", []);
        }
    }
    without_preamble(roff.render())
}

/// An option a subcommand lists: not a positional, not hidden, and not clap's own --help.
fn is_listed_option(arg: &clap::Arg) -> bool {
    !arg.is_positional()
        && !arg.is_hide_set()
        && !matches!(
            arg.get_action(),
            clap::ArgAction::Help | clap::ArgAction::HelpShort | clap::ArgAction::HelpLong
        )
}

fn value_name(arg: &clap::Arg) -> String {
    let name = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    if many { format!("{name}...") } else { name }
}

fn flag_usage(arg: &clap::Arg) -> Vec<Inline> {
    let mut parts = Vec::new();
    if let Some(short) = arg.get_short() {
        parts.push(bold(format!("-{short}")));
    }
    if let Some(long) = arg.get_long() {
        if !parts.is_empty() {
            parts.push(roman(", "));
        }
        parts.push(bold(format!("--{long}")));
    }
    if arg.get_num_args().is_some_and(|n| n.takes_values()) {
        parts.push(roman(" "));
        parts.push(italic(value_name(arg)));
    }
    parts
}

/// A shell's completion script for cowfs.
pub fn completions(shell: Shell) -> String {
    let mut cmd = command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cowfs", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
