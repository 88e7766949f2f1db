#![deny(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use cowfs::cli::{Cli, Command, MOUNT_USAGE, MountArgs};
use cowfs::daemon::{self, RunSettings};
use cowfs::error::{SetupError, SetupResult};
use cowfs::manual::Artifact;
use cowfs::mount_helper::{self, HelperCall};

fn init_logging(args: &MountArgs) -> SetupResult<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match &args.log_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &args.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| SetupError::io("log file", path, e))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    // Panics are logged where the logs go (a daemon has no stderr).
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    Ok(())
}

fn mount(args: MountArgs) -> SetupResult<()> {
    init_logging(&args)?;
    if let Some(mountpoint) = args.paths.last() {
        daemon::clear_dead_mount(std::path::Path::new(mountpoint))?;
    }
    let plan = args.plan()?;
    for unknown in &plan.options.unknown {
        eprintln!("cowfs: warning: unknown option '{unknown}' ignored");
    }
    let default_threads = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let settings = RunSettings {
        foreground: args.foreground,
        threads: args.threads.map_or(default_threads.max(4), usize::from),
        pid_file: args.pid_file.clone(),
    };
    daemon::run(plan, settings)
}

/// How a command failed, after it said why on stderr.
enum Failed {
    Usage,
    Setup,
}

fn run(cli: Cli) -> Result<(), Failed> {
    let result = match cli.command {
        Some(Command::Mount(args)) => mount(args),
        Some(Command::Umount { mountpoint }) => daemon::umount(&mountpoint),
        Some(Command::Stats(args)) => {
            daemon::find_cowfs_mount(&args.mountpoint).and_then(|mount| {
                let socket = cowfs::stats_socket::socket_path(mount.owner, &mount.dev);
                cowfs::stats_socket::print(&socket, &args.mountpoint, args.json, args.watch)
            })
        }
        Some(Command::Diff(args)) => cowfs::changes_cli::diff(args),
        Some(Command::Export(args)) => cowfs::changes_cli::export(args),
        Some(Command::Generate { artifact }) => generate(&artifact),
        None if cli.mount.paths.is_empty() && cli.mount.options.is_empty() => {
            eprintln!("cowfs: error: nothing to do; see cowfs --help");
            return Err(Failed::Usage);
        }
        None if cli.mount.options.is_empty() => {
            let first = cli.mount.paths[0].to_string_lossy().into_owned();
            eprintln!(
                "cowfs: error: unrecognized subcommand '{first}'\n\n{MOUNT_USAGE}\n\nFor more information, try '--help'."
            );
            return Err(Failed::Usage);
        }
        None => mount(cli.mount),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e @ SetupError::Usage(_)) => {
            eprintln!("cowfs: error: {}\n\n{MOUNT_USAGE}", e.one_line());
            Err(Failed::Usage)
        }
        Err(e) => {
            eprintln!("cowfs: error: {}", e.one_line());
            Err(Failed::Setup)
        }
    }
}

/// Prints a generated file of the tree (the man page, a shell's completions).
fn generate(artifact: &str) -> SetupResult<()> {
    use std::io::Write;
    let artifact = Artifact::from_name(artifact)
        .ok_or_else(|| SetupError::Usage(format!("nothing called '{artifact}' to generate")))?;
    std::io::stdout()
        .write_all(artifact.render().as_bytes())
        .map_err(|e| SetupError::step("writing to stdout", e))
}

/// Run by mount(8) as /sbin/mount.fuse.cowfs: its arguments, and its exit codes.
fn run_as_mount_helper(args: &[OsString]) -> ExitCode {
    let command = match mount_helper::parse(args) {
        Ok(HelperCall::Fake) => return ExitCode::SUCCESS,
        Ok(HelperCall::Mount(command)) => command,
        Err(message) => {
            eprintln!("cowfs: error: {message}");
            return ExitCode::from(mount_helper::EXIT_USAGE);
        }
    };
    let cli = match Cli::try_parse_from(command) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(mount_helper::EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Usage) => ExitCode::from(mount_helper::EXIT_USAGE),
        Err(Failed::Setup) => ExitCode::from(mount_helper::EXIT_MOUNT_FAILED),
    }
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|name| mount_helper::is_helper_name(name))
    {
        return run_as_mount_helper(&argv[1..]);
    }
    match run(Cli::parse_from(argv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Usage) => ExitCode::from(2),
        Err(Failed::Setup) => ExitCode::FAILURE,
    }
}
