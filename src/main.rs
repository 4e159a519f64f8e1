//! The `tollgate` command line.

use std::path::PathBuf;
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
    },
    /// Validate CONFIG and print every problem with its key path.
    Check {
        /// Path to config.toml.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
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

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path, &Host::detect()) {
        Ok(snap) => {
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

fn run(path: &std::path::Path) -> ExitCode {
    let snap = match config::load(path, &Host::detect()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            print_config_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let cores = snap.server.cores.clone();
    let gateway = match runtime::start(snap) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in gateway.addrs() {
        eprintln!("tollgate: listening on http://{addr}");
    }
    eprintln!("tollgate: {} shard(s) on cores {cores:?}", cores.len());

    let stopper = gateway.stopper();
    match Signals::new([SIGTERM, SIGINT]) {
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
    gateway.join();
    eprintln!("tollgate: stopped");
    ExitCode::SUCCESS
}
