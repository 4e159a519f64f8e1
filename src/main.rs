//! The `tollgate` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use tollgate::config::{self, ConfigError, Host};
use tollgate::runtime;

/// A line to stderr in one write, never panicking (see
/// `tollgate::observe::stderr_line`).
macro_rules! say {
    ($($t:tt)*) => {
        tollgate::observe::stderr_line(format_args!($($t)*))
    };
}

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
        /// Start every usage-plan quota afresh: the quota store
        /// (`state_dir/quotas.redb`) is kept aside as
        /// `quotas.redb.reset-UNIXTIME` and a new one begins (the way out
        /// when the store is unreadable). Ignored by a binary upgrade's
        /// successor, which continues its predecessor's counters.
        #[arg(long)]
        reset_quotas: bool,
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
    /// Ask a running gateway to load its configuration file again (through
    /// its admin listener, `POST /reload`). Same as SIGHUP, but prints the
    /// outcome: what changed, or every error while the old configuration
    /// keeps running.
    Reload {
        /// The gateway's config.toml: the admin address and token are read
        /// from it (`server.admin`).
        config: Option<PathBuf>,
        /// Admin address, instead of reading it from CONFIG.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Admin bearer token (or TOLLGATE_ADMIN_TOKEN).
        #[arg(long, env = "TOLLGATE_ADMIN_TOKEN")]
        token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, profile } => check(&config, profile.as_deref()),
        Command::Run {
            config,
            profile,
            reset_quotas,
        } => run(&config, profile.as_deref(), reset_quotas),
        Command::Reload {
            config,
            admin,
            token,
        } => reload(config.as_deref(), admin, token),
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
        ConfigError::Read { .. } => say!("tollgate: {e}"),
        ConfigError::Invalid { issues, .. } => {
            say!("tollgate: {file}: {} error(s):", issues.len());
            for i in issues {
                say!("  {i}");
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
            if let Some(w) =
                tollgate::tune::nofile_warning(&snap, tollgate::tune::nofile_hard_limit())
            {
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

/// How long a binary upgrade waits for the new process to serve.
const UPGRADE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn run(path: &Path, profile: Option<&Path>, reset_quotas: bool) -> ExitCode {
    // First, before any thread exists: sockets handed over by a
    // predecessor (binary upgrade), and our own command line for a
    // successor.
    let mut inherited = runtime::Inherited::from_env();
    let exe = std::env::current_exe().ok();
    let snap = match config::load_with_profile(path, profile, &Host::detect()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            print_config_error(&e);
            return ExitCode::FAILURE;
        }
    };
    for w in &snap.warnings {
        say!("tollgate: warning: {w}");
    }
    if let Some(w) = tollgate::tune::nofile_warning(&snap, tollgate::tune::nofile_hard_limit()) {
        say!("tollgate: warning: {w}");
    }
    if reset_quotas && !inherited.is_successor() {
        let unix = tollgate::clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match tollgate::throttle::store::QuotaStore::reset(&snap.state_dir, unix) {
            Ok(Some(aside)) => say!(
                "tollgate: --reset-quotas: quota counters start afresh; the old store is kept as {}",
                aside.display()
            ),
            Ok(None) => say!("tollgate: --reset-quotas: no quota store yet"),
            Err(e) => {
                say!("tollgate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let cores = snap.server.cores.clone();
    let admin_settings = snap.server.admin.clone();
    // Handlers first: a signal that arrives once "listening" is printed
    // must drain, not kill the process with the default action.
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2]);
    let gateway = match runtime::start_with(snap, &mut inherited) {
        Ok(g) => g,
        Err(e) => {
            say!("tollgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = gateway.control();
    control.set_source(path.to_path_buf(), profile.map(Path::to_path_buf));
    if let Some(exe) = exe {
        control.set_command(exe, std::env::args_os().skip(1).collect());
    }
    let admin = match admin_settings.map(|a| {
        let started = match inherited.take_admin(a.addr) {
            Some(l) => tollgate::admin::start_on(control.clone(), l, &a),
            None => tollgate::admin::start(control.clone(), &a),
        };
        started.map_err(|e| (a.addr, e))
    }) {
        Some(Ok(a)) => Some(a),
        Some(Err((addr, e))) => {
            say!("tollgate: cannot start the admin listener on {addr}: {e} (set server.admin.addr, or enabled = false)");
            gateway.stop();
            gateway.join();
            return ExitCode::FAILURE;
        }
        None => None,
    };
    let admin_fd = admin.as_ref().map(tollgate::admin::Admin::fd);
    match signals {
        Ok(mut signals) => {
            let control = control.clone();
            let upgrading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            std::thread::spawn(move || {
                let mut stopping = false;
                for sig in signals.forever() {
                    match sig {
                        SIGHUP => match control.reload_from_source() {
                            Ok(r) => {
                                say!(
                                    "tollgate: SIGHUP: configuration reloaded (generation {})",
                                    r.generation
                                );
                                for w in &r.restart_needed {
                                    say!("tollgate: warning: {w} changed; it takes effect at the next start");
                                }
                            }
                            Err(e) => {
                                say!("tollgate: SIGHUP: reload refused, the running configuration stays:");
                                for i in e.issues() {
                                    say!("  {i}");
                                }
                            }
                        },
                        SIGUSR1 => control.reopen_logs(),
                        // On a thread of its own: waiting for the successor
                        // must not hold up a SIGTERM.
                        SIGUSR2 if !stopping && !control.stopping() => {
                            if upgrading.swap(true, std::sync::atomic::Ordering::AcqRel) {
                                say!("tollgate: upgrade already in progress");
                                continue;
                            }
                            let (control, upgrading) = (control.clone(), upgrading.clone());
                            std::thread::spawn(move || {
                                match control.upgrade(admin_fd, UPGRADE_WAIT) {
                                    Ok(pid) => {
                                        say!("tollgate: upgrade: new process {pid} serves; draining this one");
                                        control.stop();
                                    }
                                    Err(e) => say!("tollgate: upgrade failed, still serving: {e}"),
                                }
                                upgrading.store(false, std::sync::atomic::Ordering::Release);
                            });
                        }
                        SIGUSR2 => {}
                        // The first SIGTERM/SIGINT drains (after an upgrade
                        // the process drains already: the same, no harm); a
                        // second one exits at once.
                        _ if !stopping => {
                            say!("tollgate: signal {sig}: draining in-flight requests");
                            control.stop();
                            stopping = true;
                        }
                        _ => {
                            say!("tollgate: second signal: exiting now");
                            std::process::exit(130);
                        }
                    }
                }
            });
        }
        Err(e) => say!("tollgate: cannot install signal handlers: {e}"),
    }
    let snap = control.snapshot();
    for (addr, l) in gateway.addrs().into_iter().zip(&snap.server.listeners) {
        let scheme = if snap.tls.for_listener(l.addr).is_some() {
            "https"
        } else {
            "http"
        };
        say!("tollgate: listening on {scheme}://{addr}");
    }
    if let Some(dev) = &snap.tls.dev_cert {
        say!(
            "tollgate: TLS: self-signed development certificate {} (SHA-256 {}); trust it with `curl --cacert {}`",
            dev.cert_path.display(),
            dev.fingerprint,
            dev.cert_path.display()
        );
    }
    if let Some(a) = &admin {
        say!("tollgate: admin on http://{}", a.addr());
    }
    // A predecessor waits for this before it drains. Sockets it handed
    // over that this configuration does not use are closed now.
    inherited.signal_ready();
    drop(inherited);
    say!("tollgate: {} shard(s) on cores {cores:?}", cores.len());
    gateway.join();
    drop(admin);
    say!("tollgate: stopped");
    ExitCode::SUCCESS
}

fn reload(
    config: Option<&Path>,
    admin: Option<std::net::SocketAddr>,
    token: Option<String>,
) -> ExitCode {
    // The token: --token / TOLLGATE_ADMIN_TOKEN, else the config's
    // `server.admin.token` (a `token_sha256` cannot be sent).
    let token = match (token, config) {
        (Some(t), _) => Some(t),
        (None, Some(path)) => match admin_token_of(path) {
            Ok(t) => t,
            Err(e) => {
                say!("tollgate: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (None, None) => None,
    };
    let addr = match (admin, config) {
        (Some(a), _) => a,
        (None, Some(path)) => match admin_addr_of(path) {
            Ok(Some(a)) => a,
            Ok(None) => {
                say!(
                    "tollgate: {}: server.admin is disabled; send SIGHUP instead",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                say!("tollgate: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (None, None) => match tollgate::config::schema::DEFAULT_ADMIN_ADDR.parse() {
            Ok(a) => a,
            Err(_) => return ExitCode::FAILURE,
        },
    };
    match tollgate::admin::request_reload(addr, token.as_deref()) {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            say!("tollgate: reload answered {status}:");
            eprint!("{body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            say!("tollgate: cannot reach the admin listener on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The admin token in a config file (`server.admin.token`), read
/// leniently like [`admin_addr_of`]; an error when only its digest is
/// there, which cannot be sent.
fn admin_token_of(path: &Path) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| e.message().trim().to_string())?;
    let admin = value.get("server").and_then(|s| s.get("admin"));
    let token = admin
        .and_then(|a| a.get("token"))
        .and_then(toml::Value::as_str);
    match token {
        Some(t) => Ok(Some(t.to_string())),
        None if admin.and_then(|a| a.get("token_sha256")).is_some() => Err(
            "server.admin.token_sha256 is a digest, not the token: pass it with --token or TOLLGATE_ADMIN_TOKEN".into(),
        ),
        None => Ok(None),
    }
}

/// The admin address in a config file, read leniently: the file may hold
/// the very errors the reload is meant to report.
fn admin_addr_of(path: &Path) -> Result<Option<std::net::SocketAddr>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| e.message().trim().to_string())?;
    let admin = value.get("server").and_then(|s| s.get("admin"));
    if admin
        .and_then(|a| a.get("enabled"))
        .and_then(toml::Value::as_bool)
        == Some(false)
    {
        return Ok(None);
    }
    let addr = admin
        .and_then(|a| a.get("addr"))
        .and_then(toml::Value::as_str)
        .unwrap_or(tollgate::config::schema::DEFAULT_ADMIN_ADDR);
    addr.parse()
        .map(Some)
        .map_err(|_| format!("server.admin.addr `{addr}` is not an IP:port address"))
}
