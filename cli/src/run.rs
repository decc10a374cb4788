//! `nbci run NOTEBOOK`: one notebook, executed here.

use std::path::{Path, PathBuf};

use clap::Args;
use nbci_shared::adapters::local::engine::{
    DEFAULT_MAX_OUTPUT, EngineSettings, PapermillEngine, Python, RunRequest,
};
use nbci_shared::domain::notebook::{Notebook, parse_duration};
use nbci_shared::domain::params;
use nbci_shared::util::size::parse_size;

use crate::Failure;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The notebook to execute; it runs in its own directory.
    pub notebook: PathBuf,
    /// A parameter, typed as papermill types it (int, float, True/False, None, else string).
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// A YAML file of parameters (-p values override it).
    #[arg(short = 'f', long = "parameters-file", value_name = "params.yaml")]
    pub parameter_files: Vec<PathBuf>,
    /// Where to write the executed notebook [default: NAME.out.ipynb beside the input].
    #[arg(long, value_name = "OUT.ipynb")]
    pub output: Option<PathBuf>,
    /// Where to write the result object [default: NAME.result.json beside the input].
    #[arg(long, value_name = "RESULT.json")]
    pub result: Option<PathBuf>,
    #[command(flatten)]
    pub limits: Limits,
}

/// Options shared by `run` and `check`.
#[derive(Debug, Args)]
pub struct Limits {
    /// Stop a cell running longer than this (seconds, or e.g. 90s, 10m).
    #[arg(long, value_name = "S", value_parser = parse_duration)]
    pub cell_timeout: Option<std::time::Duration>,
    /// Stop the notebook running longer than this [default: metadata.nbci.timeout, else none].
    #[arg(long, value_name = "S", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// The kernel to use instead of the notebook's kernelspec.
    #[arg(long, value_name = "NAME")]
    pub kernel: Option<String>,
    /// Fail a notebook whose outputs pass this size (e.g. 256MB, 1GiB) [default: 256MB].
    #[arg(long, value_name = "SIZE", env = "NBCI_MAX_OUTPUT", value_parser = parse_size)]
    pub max_output: Option<u64>,
}

impl Limits {
    /// The engine's settings for `slots` notebooks at once under these limits.
    pub fn engine_settings(&self, slots: usize) -> EngineSettings {
        EngineSettings {
            slots,
            max_output: Some(self.max_output.unwrap_or(DEFAULT_MAX_OUTPUT)),
            ..EngineSettings::default()
        }
    }
}

/// `dir/name.ipynb` -> `dir/name<suffix>`.
pub fn beside(notebook: &Path, suffix: &str) -> PathBuf {
    let stem = notebook
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "notebook".into());
    notebook.with_file_name(format!("{stem}{suffix}"))
}

pub async fn run(args: RunArgs) -> Result<u8, Failure> {
    // Everything that can be wrong with the input is checked before anything runs or is written.
    let committed = Notebook::read(&args.notebook).map_err(Failure::usage)?;
    let parameters =
        params::collect(&args.parameter_files, &args.parameters).map_err(Failure::usage)?;
    let environment = committed
        .environment()
        .map_err(|reason| Failure::usage(format!("{}: {reason}", args.notebook.display())))?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| beside(&args.notebook, ".out.ipynb"));
    let result = args
        .result
        .clone()
        .unwrap_or_else(|| beside(&args.notebook, ".result.json"));
    let input_abs = nbci_shared::util::uri::absolute(&args.notebook);
    for (what, path) in [("--output", &output), ("--result", &result)] {
        if nbci_shared::util::uri::absolute(path) == input_abs {
            return Err(Failure::usage(format!(
                "{what} {} would overwrite the input notebook",
                path.display()
            )));
        }
        if path.is_dir() {
            return Err(Failure::usage(format!(
                "{what} {} is a directory",
                path.display()
            )));
        }
    }
    if nbci_shared::util::uri::absolute(&output) == nbci_shared::util::uri::absolute(&result) {
        return Err(Failure::usage("--output and --result name the same file"));
    }

    let engine =
        PapermillEngine::with_settings(Python::discover(None)?, args.limits.engine_settings(1));
    crate::stop_on_signals(&engine);
    let request = RunRequest {
        name: args.notebook.display().to_string(),
        input: args.notebook.clone(),
        output,
        result,
        parameters,
        kernel: args.limits.kernel.clone(),
        cell_timeout: args.limits.cell_timeout,
        timeout: args.limits.timeout.or(environment.timeout),
        image: "local".into(),
        output_uri: None,
    };
    let outcome = engine
        .run(&request, &committed, &crate::progress::terminal(false))
        .await;
    // Kernels stopped, and whatever they started killed, before nbci exits.
    engine.shutdown().await;
    let outcome = outcome?;
    println!("{}", crate::progress::verdict(&outcome));
    println!("  executed notebook: {}", request.output.display());
    println!("  result:            {}", request.result.display());
    Ok(u8::try_from(outcome.status.exit_code()).unwrap_or(4))
}
