//! `minilab`: one binary for every part of the system.

mod process;
mod store;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "minilab",
    version,
    about = "Kubernetes-native image processing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything on this machine: api, worker, web page, an embedded S3-compatible
    /// store and an in-process queue. No AWS account, no cluster.
    Up(up::UpArgs),
    /// Run one image through a recipe and write the outputs to a directory.
    Process(process::ProcessArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MINILAB_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,s3s=off,s3s_fs=warn,aws=warn")
            }),
        )
        .init();
    let result = match cli.command {
        Command::Up(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(up::run(args))),
        Command::Process(args) => process::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
