//! The `charter` binary: parses the command line and dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "charter",
    version,
    about = "License issuer and renewal authority"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the issuer (HTTP API, renewal, JWKS).
    Serve(Box<charter::serve::ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(charter::serve::MigrateArgs),
    /// Run the instance-side licensing endpoints standalone (demos, tests).
    Instance(Box<charter::instance::InstanceArgs>),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(charter::cli::keys::KeysCommand),
    /// Sign, inspect and verify license tokens offline.
    #[command(subcommand)]
    Token(charter::cli::token::TokenCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => charter::serve::run(*args),
        Command::Migrate(args) => charter::serve::migrate(args),
        Command::Instance(args) => charter::instance::run(*args),
        Command::Keys(cmd) => charter::cli::keys::run(cmd),
        Command::Token(cmd) => return charter::cli::token::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
