//! `tongjiao`: the command line of the 房证同交 (certificate on handover day) suite.
//!
//! - `tongjiao dev`: the sandbox — survey-data, acceptance, tax-status and registration in one process
//!   on one port, an embedded SQLite store, a seeded demo county/developer/project, printed tokens, and
//!   with `--demo` a whole handover ending in printed 不动产权证书.
//! - `tongjiao counter …`: the counter (窗口) client.
//! - `tongjiao batch submit`, `tax push`, `survey upload`: file tools with idempotent request ids.
//! - `tongjiao token issue`: sign a token with the sandbox key.
//!
//! Data goes to stdout, progress and logs to stderr. Exit codes: 0 ok, 1 failure, 2 usage.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod demo_data;
pub mod dev;
pub mod error;
pub mod files;
pub mod ops;
pub mod print;
pub mod token;

use cli::{Cli, Command};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Dev(args) => dev::run(args, cli.output).await,
        Command::Counter(cmd) => commands::counter(&cli, cmd).await,
        Command::Batch(cmd) => commands::batch(&cli, cmd).await,
        Command::Tax(cmd) => commands::tax(&cli, cmd).await,
        Command::Survey(cmd) => commands::survey(&cli, cmd).await,
        Command::Token(cmd) => commands::token(&cli, cmd),
    }
}
