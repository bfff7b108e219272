//! `edge-agent`: the command line of the Gridsense edge box.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use protocol::Catalog;

/// Gridsense edge agent: watches cameras and sensors on a community edge box, raises events and
/// syncs them to the hub.
#[derive(Debug, Parser)]
#[command(name = "edge-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the event categories (codes and keys to use in rules).
    Categories {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    edge_agent::telemetry::init();
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
