//! `hub`: the command line of the Gridsense hub.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use protocol::Catalog;

/// Gridsense hub: takes events from enrolled edge boxes, matches them to grid cells and runs
/// them as cases around the closed loop.
#[derive(Debug, Parser)]
#[command(name = "hub", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the event categories (codes and keys to use in the responsibility list).
    Categories {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hub::telemetry::init();
    match cli.command {
        Command::Categories { json } => print_categories(json),
    }
}

fn print_categories(json: bool) -> ExitCode {
    let catalog = Catalog::embedded();
    if !json {
        print!("{}", catalog.to_table());
        return ExitCode::SUCCESS;
    }
    for c in catalog.categories() {
        match serde_json::to_string(c) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: failed to encode category {}: {e}", c.code);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
