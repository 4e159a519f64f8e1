//! The `tollgate` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use tollgate::config::{self, ConfigError, Host};
use tollgate::runtime;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Self-hosted API gateway: thread-per-core, io_uring, Amazon API Gateway semantics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway with CONFIG; SIGTERM/SIGINT drain and stop it.
    Run {
        /// Path to config.toml.
        config: PathBuf,
        /// Tuning profile merged over CONFIG (e.g. tuning/edge-16c.toml).
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Validate CONFIG and print every problem with its key path.
    Check {
        /// Path to config.toml.
        config: PathBuf,
        /// Tuning profile merged over CONFIG.
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Inspect this host and print a tuning profile with warnings.
    Tune,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, profile } => check(&config, profile.as_deref()),
        Command::Run { config, profile } => run(&config, profile.as_deref()),
        Command::Tune => {
            let report = tollgate::tune::inspect();
            let rec = tollgate::tune::recommend(&report);
            print!("{}", tollgate::tune::render(&report, &rec));
            ExitCode::SUCCESS
        }
    }
}

fn print_config_error(e: &ConfigError) {
    let file = match e {
        ConfigError::Read { file, .. } | ConfigError::Invalid { file, .. } => file,
    };
    match e {
        ConfigError::Read { .. } => eprintln!("tollgate: {e}"),
        ConfigError::Invalid { issues, .. } => {
            eprintln!("tollgate: {file}: {} error(s):", issues.len());
            for i in issues {
                eprintln!("  {i}");
            }
        }
    }
}

fn check(path: &Path, profile: Option<&Path>) -> ExitCode {
    match config::load_with_profile(path, profile, &Host::detect()) {
        Ok(snap) => {
            for w in &snap.warnings {
                println!("warning: {w}");
            }
            let routes: usize = snap.apis.iter().map(|a| a.routes.len()).sum();
            println!(
                "{}: OK ({} API(s), {} route(s), {} listener(s), {} shard(s))",
                path.display(),
                snap.apis.len(),
                routes,
                snap.server.listeners.len(),
                snap.server.cores.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_config_error(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path, profile: Option<&Path>) -> ExitCode {
    let snap = match config::load_with_profile(path, profile, &Host::detect()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            print_config_error(&e);
            return ExitCode::FAILURE;
        }
    };
    for w in &snap.warnings {
        eprintln!("tollgate: warning: {w}");
    }
    let cores = snap.server.cores.clone();
    // Handlers first: a signal that arrives once "listening" is printed
    // must drain, not kill the process with the default action.
    let signals = Signals::new([SIGTERM, SIGINT]);
    let gateway = match runtime::start(snap) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stopper = gateway.stopper();
    match signals {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                let mut first = true;
                for sig in signals.forever() {
                    if first {
                        eprintln!("tollgate: signal {sig}: draining in-flight requests");
                        stopper.stop();
                        first = false;
                    } else {
                        eprintln!("tollgate: second signal: exiting now");
                        std::process::exit(130);
                    }
                }
            });
        }
        Err(e) => eprintln!("tollgate: cannot install signal handlers: {e}"),
    }
    for addr in gateway.addrs() {
        eprintln!("tollgate: listening on http://{addr}");
    }
    eprintln!("tollgate: {} shard(s) on cores {cores:?}", cores.len());
    gateway.join();
    eprintln!("tollgate: stopped");
    ExitCode::SUCCESS
}
