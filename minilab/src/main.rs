//! `minilab`: one binary for every part of the system.

#[cfg(feature = "cluster")]
mod aws;
#[cfg(feature = "cluster")]
mod cdn;
mod flags;
mod hosts;
mod limits;
#[cfg(feature = "cluster")]
mod operator;
mod process;
#[cfg(feature = "cluster")]
mod publish;
mod store;
mod up;
mod webhooks;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "minilab",
    version,
    about = "Kubernetes-native image processing"
)]
#[cfg_attr(
    not(feature = "cluster"),
    command(
        after_help = "This build has `up` and `process`. The subcommands that run on \
        AWS and Kubernetes (api, worker, operator, crd, publish-web) are in builds with \
        `--features cluster`, as the container image is."
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs (on stderr) are written: `text` for people (coloured only on a
    /// terminal), `json` one object per line for a cluster's log collector.
    #[arg(
        long,
        global = true,
        env = "MINILAB_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by `MINILAB_LOG` (tracing's directives), in `format`.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MINILAB_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,s3s=off,s3s_fs=warn,aws=warn")
    });
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything on this machine: api, worker, web page, an embedded S3-compatible
    /// store and an in-process queue. No AWS account, no cluster.
    Up(up::UpArgs),
    #[cfg(feature = "cluster")]
    /// Serve the API on AWS: presigned uploads, status and recipes.
    Api(Box<aws::ApiArgs>),
    #[cfg(feature = "cluster")]
    /// Consume the uploads bucket's events from SQS and process the images.
    Worker(aws::WorkerArgs),
    /// Run one image through a recipe and write the outputs to a directory.
    Process(process::ProcessArgs),
    #[cfg(feature = "cluster")]
    /// Reconcile ImageJobs on a cluster: status from the buckets, one active replica.
    Operator(operator::OperatorArgs),
    #[cfg(feature = "cluster")]
    /// Print the ImageJob CustomResourceDefinition (YAML).
    Crd,
    #[cfg(feature = "cluster")]
    /// Put the upload page into the site bucket (content types, cache headers, the
    /// page's API base URL); the Helm chart's hook Job runs it.
    PublishWeb(publish::PublishWebArgs),
}

type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

fn main() -> ExitCode {
    let kept = minilab_memory::keep_freed_memory();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    if !kept {
        tracing::debug!("freed memory goes back to the system: not glibc, or it refused");
    }
    let block_on = |future| {
        tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(future))
    };
    let result = match cli.command {
        Command::Up(args) => block_on(Box::pin(up::run(args)) as BoxedRun),
        #[cfg(feature = "cluster")]
        Command::Api(args) => block_on(Box::pin(aws::run_api(*args))),
        #[cfg(feature = "cluster")]
        Command::Worker(args) => block_on(Box::pin(aws::run_worker(args))),
        Command::Process(args) => process::run(args),
        #[cfg(feature = "cluster")]
        Command::Operator(args) => block_on(Box::pin(operator::run(args))),
        #[cfg(feature = "cluster")]
        Command::Crd => operator::print_crd(),
        #[cfg(feature = "cluster")]
        Command::PublishWeb(args) => block_on(Box::pin(publish::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
