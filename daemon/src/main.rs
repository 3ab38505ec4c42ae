//! main.rs: command-line parsing and dispatch.
mod collector;
mod config;
mod doctor;
mod identity;
mod model;
mod notify;
mod paths;
mod pipeline;
mod run;
mod sink;
mod store;
mod window;

use clap::{Parser, Subcommand};
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
    /// Run the monitor in the foreground (SIGTERM/SIGINT write everything and exit 0).
    StartNoDaemon {
        /// Configuration file (default: /etc/picosnitch/config.toml under $PICOSNITCH_ROOT).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show what this kernel offers and which hook set would be attached.
    Doctor,
    /// Print the version.
    Version,
    /// Deliver desktop notifications as the calling user (started by the daemon, never as root).
    #[command(hide = true)]
    NotifyHelper,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::StartNoDaemon { config } => run::start_no_daemon(config),
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
        Command::Version => {
            println!("picosnitch {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
