//! `nbci`: run Jupyter notebooks like tests, locally and in CI.
//!
//! Exit codes (contract): 0 all passed; 1 a notebook failed; 2 bad input or
//! usage; 3 timed out; 4 an infrastructure error.

mod check;
mod pipeline;
mod progress;
mod run;
mod runner;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad input or usage (clap uses it for usage errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code for an infrastructure error.
const EXIT_INFRA: u8 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "nbci",
    version,
    about = "CI/CD for Jupyter notebooks: run them like tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Execute one notebook with papermill and write the executed notebook and result.json.
    Run(run::RunArgs),
    /// Execute the notebooks a commit added or modified, in parallel.
    Check(check::CheckArgs),
    /// Serve GitHub App webhooks and run notebook checks on this machine.
    Serve(serve::ServeArgs),
    /// Run one cloud job: gs://BUCKET/PREFIX/job.json (the runner image's entrypoint).
    Runner(runner::RunnerArgs),
    /// Run notebook pipelines (prepare -> train -> evaluate -> gate -> deploy) and manage deployments.
    Pipeline(pipeline::PipelineArgs),
}

/// A failure that ends the command with a given exit code and one message line.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Bad input or usage: exit 2.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }

    /// Infrastructure (interpreter, disk, git): exit 4.
    pub fn infra(message: impl std::fmt::Display) -> Self {
        Self {
            code: EXIT_INFRA,
            message: message.to_string(),
        }
    }
}

impl From<nbci_shared::adapters::local::engine::EngineError> for Failure {
    fn from(error: nbci_shared::adapters::local::engine::EngineError) -> Self {
        Self::infra(error)
    }
}

/// On SIGTERM or SIGINT (Ctrl-C), `engine` stops its notebooks cleanly:
/// each running one ends with its executed notebook and a result saying so,
/// and no process it started is left. A second SIGINT exits at once (the
/// drivers, seeing their input close, still stop their kernels).
pub fn stop_on_signals(engine: &nbci_shared::adapters::local::engine::PapermillEngine) {
    use tokio::signal::unix::{SignalKind, signal};
    let engine = engine.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("nbci: stopping: the running notebooks are saved, the others do not run");
        engine.terminate();
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        std::process::exit(130);
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nbci: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_INFRA);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Check(args) => check::check(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Runner(args) => runner::runner(args).await,
            Command::Pipeline(args) => pipeline::pipeline(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("nbci: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
