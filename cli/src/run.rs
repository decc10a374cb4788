//! `nbci run NOTEBOOK`: one notebook, executed here.

use std::path::{Path, PathBuf};

use clap::Args;
use nbci_shared::adapters::local::engine::{
    DEFAULT_MAX_OUTPUT, EngineError, EngineSettings, PapermillEngine, Python, RunRequest,
};
use nbci_shared::domain::notebook::{Notebook, NotebookError, describe_file_type, parse_duration};
use nbci_shared::domain::outcome::Outcome;
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
        // Only a regular file (or nothing) is replaced: `--output /dev/zero`
        // would take writes for good, and a device node or FIFO is not ours
        // to delete (as root, a stale result is removed before the run).
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_file()
        {
            let kind = if meta.file_type().is_symlink() {
                "it is a symbolic link"
            } else {
                describe_file_type(&meta.file_type())
            };
            return Err(Failure::usage(format!(
                "{what} {}: {kind}; nbci writes only regular files",
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
    let outcome = outcome.map_err(|error| written_or_blamed(&request, error))?;
    ensure_written(&request, &outcome)?;
    println!("{}", crate::progress::verdict(&outcome));
    println!("  executed notebook: {}", request.output.display());
    println!("  result:            {}", request.result.display());
    Ok(u8::try_from(outcome.status.exit_code()).unwrap_or(4))
}

/// Checks, after a run, that the executed notebook was written whole. When
/// the disk filled up (or a file-size limit was hit) while papermill wrote it,
/// what is there is a truncated file: it and the result are removed, so that
/// nothing half-written stays under a final name, and the failure names the
/// file that could not be written (not the result, which is written last).
pub fn ensure_written(request: &RunRequest, outcome: &Outcome) -> Result<(), Failure> {
    match Notebook::read(&request.output) {
        Ok(_) => Ok(()),
        Err(NotebookError::NotJson { reason, .. }) => {
            let _ = std::fs::remove_file(&request.result);
            let _ = std::fs::remove_file(&request.output);
            let cause = outcome
                .message
                .as_deref()
                .filter(|m| !m.is_empty())
                .unwrap_or(&reason);
            Err(Failure::infra(format!(
                "cannot write {}: the executed notebook was cut short ({cause}); \
                 it and {} were removed",
                request.output.display(),
                request.result.display()
            )))
        }
        // Unreadable or not a notebook for another reason: the engine said
        // why in the result, which stays the verdict.
        Err(_) => Ok(()),
    }
}

/// An engine error as the command's failure; when the result could not be
/// written because the executed notebook could not be either (a full disk),
/// the notebook is named, since it failed first.
pub fn written_or_blamed(request: &RunRequest, error: EngineError) -> Failure {
    if let EngineError::Write { path, reason } = &error
        && *path == request.result
        && matches!(
            Notebook::read(&request.output),
            Err(NotebookError::NotJson { .. })
        )
    {
        let _ = std::fs::remove_file(&request.output);
        return Failure::infra(format!(
            "cannot write {}: the executed notebook was cut short; {} could not be written either ({reason}); nothing was kept",
            request.output.display(),
            request.result.display()
        ));
    }
    Failure::from(error)
}
