//! main.rs: command-line parsing and dispatch.
mod api;
mod cli_args;
mod collector;
mod completion;
mod config;
mod connlog;
mod dns;
mod doctor;
mod export_cli;
mod filter;
mod geoip;
mod identity;
mod logfile;
mod logging;
mod migrate;
mod model;
mod notify;
mod paths;
mod pipeline;
mod query_cli;
mod run;
mod service;
mod sink;
mod store;
mod window;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "picosnitch",
    version,
    about = "Monitor network traffic per executable with eBPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon in the background (through systemctl when picosnitch.service is installed).
    Start {
        /// Configuration file (default: /etc/picosnitch/config.toml under $PICOSNITCH_ROOT).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Stop the daemon; it writes everything it counted first.
    Stop,
    /// Stop, then start the daemon.
    Restart {
        /// Configuration file (default: /etc/picosnitch/config.toml under $PICOSNITCH_ROOT).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Whether the daemon runs, its hook set and counters, recorded losses, the end of error.log
    /// (exit status 3 when it does not run).
    Status,
    /// Write the hardened systemd units picosnitch.service and picosnitch.socket.
    Systemd {
        /// Configuration file the service uses (default: /etc/picosnitch/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write the units into this directory instead (a package's lib/systemd/system), without
        /// reloading systemd.
        #[arg(long)]
        unit_dir: Option<PathBuf>,
    },
    /// Run the monitor in the foreground (SIGTERM/SIGINT write everything and exit 0).
    StartNoDaemon {
        /// Configuration file (default: /etc/picosnitch/config.toml under $PICOSNITCH_ROOT).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file without starting anything (exit status 78 when invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// An unknown section or key is an error too (a generated file, checked where it is
        /// built).
        #[arg(long)]
        strict: bool,
    },
    /// Show what this kernel offers and which hook set would be attached.
    Doctor,
    /// Print the version.
    Version,
    /// Import picosnitch 1/2 history (snitch.db, picosnitch.db) and a picosnitch 1 config.json.
    ///
    /// Imports are resumable: a second run continues after the last imported row. A picosnitch 2
    /// database at this version's database path is moved aside (`.db.picosnitch2`) first.
    Migrate {
        /// Files to import: databases, or a config.json (written as --config-out).
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// Database to import into (default: /var/lib/picosnitch/picosnitch.db).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Where a converted config.json is written; never overwritten (default:
        /// /etc/picosnitch/config.toml).
        #[arg(long)]
        config_out: Option<PathBuf>,
    },
    /// Print traffic summed by any dimensions over a time range, as a table, JSON or CSV.
    Query(query_cli::Args),
    /// Print every stored row of a time range, each column resolved (executable, parent,
    /// addresses, domain, container, bytes), in time order, as CSV or JSON lines.
    Export(export_cli::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from these commands.
    Man,
    /// Look addresses up in the GeoIP databases; one JSON line per address.
    Geoip {
        /// Database to read (default: the `[geoip] databases` of the configuration).
        #[arg(long)]
        database: Vec<PathBuf>,
        /// Configuration file (default: /etc/picosnitch/config.toml under $PICOSNITCH_ROOT).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        addresses: Vec<std::net::IpAddr>,
    },
    /// Deliver desktop notifications as the calling user (started by the daemon, never as root).
    #[command(hide = true)]
    NotifyHelper,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Start { config } => service::control::start(config),
        Command::Stop => service::control::stop(),
        Command::Restart { config } => service::control::restart(config),
        Command::Status => service::report::status(),
        Command::Systemd { config, unit_dir } => service::units::systemd(config, unit_dir),
        Command::StartNoDaemon { config } => run::start_no_daemon(config),
        Command::CheckConfig { file, strict } => service::control::check_config(&file, strict),
        Command::Doctor => {
            let (text, ok) = doctor::report(&collector::Options::default());
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::NotifyHelper => {
            ExitCode::from(u8::try_from(notify::desktop::helper_main()).unwrap_or(1))
        }
        Command::Migrate {
            sources,
            db,
            config_out,
        } => match migrate::run(&sources, db, config_out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("picosnitch migrate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Query(args) => match query_cli::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("picosnitch query: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Export(args) => match export_cli::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("picosnitch export: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "picosnitch",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("picosnitch man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Geoip {
            database,
            config,
            addresses,
        } => geoip::cli(database, config, &addresses),
        Command::Version => {
            println!("picosnitch {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
