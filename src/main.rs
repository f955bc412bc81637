//! `groupwal`: measure a disk's fsync throughput with and without group commit, and inspect,
//! verify or salvage a log. Thin: parse the arguments, run the verb, turn any failure into one
//! line on stderr and an exit code (see [`cli::exit`]).
#![deny(unsafe_code)]

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Group-commit write-ahead log: disk benchmark and log tools.
#[derive(Parser, Debug)]
#[command(
    name = "groupwal",
    version,
    about = "groupwal: benchmark a disk's fdatasync throughput with and without group commit, \
             and inspect, verify or salvage a groupwal log",
    long_about = None,
    after_help = cli::EXIT_STATUS_HELP,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    #[command(
        about = cli::bench::ABOUT,
        long_about = cli::bench::LONG_ABOUT,
        after_help = cli::bench::after_help()
    )]
    Bench(cli::bench::BenchArgs),
    #[command(
        about = cli::inspect::ABOUT,
        long_about = cli::inspect::LONG_ABOUT,
        after_help = cli::EXIT_STATUS_HELP
    )]
    Inspect(cli::inspect::InspectArgs),
    #[command(
        about = cli::verify::ABOUT,
        long_about = cli::verify::LONG_ABOUT,
        after_help = cli::EXIT_STATUS_HELP
    )]
    Verify(cli::verify::VerifyArgs),
    #[command(
        about = cli::salvage::ABOUT,
        long_about = cli::salvage::LONG_ABOUT,
        after_help = cli::EXIT_STATUS_HELP
    )]
    Salvage(cli::salvage::SalvageArgs),
}

fn main() -> ExitCode {
    cli::sys::restore_default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(e),
    };
    let result = match cli.verb {
        Verb::Bench(args) => cli::bench::run(args),
        Verb::Inspect(args) => cli::inspect::run(args),
        Verb::Verify(args) => cli::verify::run(args),
        Verb::Salvage(args) => cli::salvage::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("groupwal: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
