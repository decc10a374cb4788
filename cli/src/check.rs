//! `nbci check`: the notebooks a commit added or modified, run in parallel.
//!
//! They run in a clean export of the commit (never the working tree, so the
//! verdict is the commit's), one kernel each, at most `--jobs` at a time.

use std::path::{Path, PathBuf};

use clap::Args;
use nbci_shared::adapters::local::engine::{EngineError, PapermillEngine, Python, RunRequest};
use nbci_shared::adapters::local::git as changes;
use nbci_shared::adapters::local::reports as report;
use nbci_shared::domain::notebook::{Notebook, NotebookError};
use nbci_shared::domain::outcome::Outcome;
use nbci_shared::domain::params;

use crate::Failure;
use crate::run::Limits;

/// How many skipped links the note names; the rest are counted.
const MAX_LINKS_NAMED: usize = 5;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The git repository.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub repo: PathBuf,
    /// The commit to check.
    #[arg(long, default_value = "HEAD", value_name = "REV")]
    pub commit: String,
    /// Compare against this commit [default: the commit's first parent].
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Notebooks run at once [default: the number of cores].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Write JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a Markdown summary here.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Where executed notebooks and results go, as {DIR}/{notebook-path}/output.ipynb
    /// and result.json [default: .git/nbci/check/{commit}].
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// A parameter for every notebook (NAME=VALUE, typed as papermill types it).
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    #[command(flatten)]
    pub limits: Limits,
}

pub async fn check(args: CheckArgs) -> Result<u8, Failure> {
    let repo = args.repo.clone();
    if !repo.is_dir() {
        return Err(Failure::usage(format!(
            "--repo {} is not a directory",
            repo.display()
        )));
    }
    if !changes::is_repository(&repo) {
        return Err(Failure::usage(format!(
            "{} is not a git repository",
            repo.display()
        )));
    }
    let commit = changes::resolve_commit(&repo, &args.commit).map_err(Failure::usage)?;
    let base = match &args.base {
        Some(base) => Some(changes::resolve_commit(&repo, base).map_err(Failure::usage)?),
        None => changes::first_parent(&repo, &commit).map_err(Failure::usage)?,
    };
    let parameters =
        params::collect(&[] as &[PathBuf], &args.parameters).map_err(Failure::usage)?;
    let notebooks =
        changes::changed_notebooks(&repo, base.as_deref(), &commit).map_err(Failure::infra)?;
    let short = &commit[..commit.len().min(12)];
    let range = match &base {
        Some(base) => format!("{}..{short}", &base[..base.len().min(12)]),
        None => format!("{short} (root commit)"),
    };
    let out_dir = match &args.out_dir {
        Some(dir) => dir.clone(),
        None => changes::git_dir(&repo)
            .map_err(Failure::infra)?
            .join("nbci")
            .join("check")
            .join(&commit),
    };

    if notebooks.is_empty() {
        println!("nbci check {range}: no notebooks added or modified");
        write_reports(&args, &[], None)?;
        return Ok(0);
    }
    let jobs = args
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    eprintln!(
        "nbci check {range}: {}, {jobs} at a time; outputs in {}",
        report::counted(notebooks.len(), "notebook", "notebooks"),
        out_dir.display()
    );

    // The drivers start (Python, papermill's imports) while the commit is exported.
    let mut settings = args.limits.engine_settings(jobs);
    // A slot that runs several notebooks gets its kernels forked, cheaper.
    settings.fork_kernels = notebooks.len() > jobs;
    let engine = PapermillEngine::with_settings(Python::discover(None)?, settings);
    engine.warm_up();
    crate::stop_on_signals(&engine);
    let checkout = nbci_shared::util::fs::private_tempdir("nbci-check-", None)
        .map_err(|error| Failure::infra(format!("cannot create a temporary directory: {error}")))?;
    let exported =
        changes::export_commit(&repo, &commit, checkout.path()).map_err(Failure::infra)?;
    let note = exported.skipped_note(MAX_LINKS_NAMED);
    if let Some(note) = &note {
        eprintln!("nbci check: note: {note}");
    }

    // Every notebook is queued at once; the engine runs `jobs` at a time.
    let progress = crate::progress::terminal(true);
    let mut tasks = tokio::task::JoinSet::new();
    // Tasks start in any order; each queues its notebook only after the one
    // before has, so that they run in the order listed.
    let mut previous_queued: Option<tokio::sync::oneshot::Receiver<()>> = None;
    for (order, notebook) in notebooks.iter().enumerate() {
        let (queued, next_may_queue) = tokio::sync::oneshot::channel();
        let may_queue = previous_queued.replace(next_may_queue);
        let request = RunRequest {
            name: notebook.clone(),
            input: checkout.path().join(notebook),
            output: out_dir.join(notebook).join("output.ipynb"),
            result: out_dir.join(notebook).join("result.json"),
            parameters: parameters.clone(),
            kernel: args.limits.kernel.clone(),
            cell_timeout: args.limits.cell_timeout,
            timeout: args.limits.timeout,
            image: "local".into(),
            output_uri: None,
        };
        let engine = engine.clone();
        let progress = progress.clone();
        let behind_link = exported.skipped_link_for(notebook).map(|link| {
            format!(
                "{notebook} needs the symbolic link {} -> {}, which leads out of the repository: nbci does not follow it",
                link.path, link.target
            )
        });
        tasks.spawn(async move {
            if let Some(may_queue) = may_queue {
                // An error only says the task before has ended: go on.
                let _ = may_queue.await;
            }
            let outcome = match behind_link {
                Some(reason) => {
                    drop(queued);
                    invalid_notebook(&request, &reason).map_err(RunError::from)
                }
                None => run_one(&engine, request, &progress, queued).await,
            };
            (order, outcome)
        });
    }
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(notebooks.len());
    let mut not_run = 0;
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (order, outcome) =
            joined.map_err(|error| Failure::infra(format!("a notebook task failed: {error}")))?;
        match outcome {
            Ok(outcome) => {
                eprintln!("{}", crate::progress::verdict(&outcome));
                outcomes.push((order, outcome));
            }
            Err(RunError::Stopped) => not_run += 1,
            Err(RunError::Failure(error)) => {
                failure.get_or_insert(error);
            }
        }
    }
    // Kernels stopped, and whatever they started killed, before nbci exits.
    engine.shutdown().await;
    if let Some(failure) = failure {
        return Err(failure);
    }
    outcomes.sort_by_key(|(order, _)| *order);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();

    println!("{}", report::table(&outcomes));
    if let Some(note) = &note {
        println!("note: {note}");
    }
    write_reports(&args, &outcomes, note.as_deref())?;
    if not_run > 0 {
        return Err(Failure::infra(format!(
            "stopped by a signal: {} did not run",
            report::counted(not_run, "notebook", "notebooks")
        )));
    }
    Ok(u8::try_from(report::overall_status(&outcomes).exit_code()).unwrap_or(4))
}

/// Why one notebook of the check has no outcome.
enum RunError {
    /// nbci was stopped before the notebook started.
    Stopped,
    Failure(Failure),
}

impl From<Failure> for RunError {
    fn from(failure: Failure) -> Self {
        Self::Failure(failure)
    }
}

/// Runs one notebook of the commit; a file in the commit that is not a valid
/// notebook is that notebook's failure (the commit is wrong, not the command).
async fn run_one(
    engine: &PapermillEngine,
    request: RunRequest,
    progress: &nbci_shared::adapters::local::engine::ProgressSink,
    queued: tokio::sync::oneshot::Sender<()>,
) -> Result<Outcome, RunError> {
    let committed = match Notebook::read(&request.input) {
        Ok(notebook) => notebook,
        // Named by its path in the repository, not in the temporary checkout.
        Err(NotebookError::Unreadable { reason, .. }) => {
            let reason = format!("{}: cannot read the notebook: {reason}", request.name);
            return Ok(invalid_notebook(&request, &reason)?);
        }
        Err(error) => return Ok(invalid_notebook(&request, &error.to_string())?),
    };
    // Bad metadata is the notebook's failure whatever the command line says:
    // the same verdict as `nbci run` and CI give.
    let environment = match committed.environment() {
        Ok(environment) => environment,
        Err(reason) => {
            return Ok(invalid_notebook(
                &request,
                &format!("{}: {reason}", request.name),
            )?);
        }
    };
    let mut request = request;
    request.timeout = request.timeout.or(environment.timeout);
    // The engine queues the notebook at the run's first poll.
    let mut run = std::pin::pin!(engine.run(&request, &committed, progress));
    let first =
        std::future::poll_fn(|context| std::task::Poll::Ready(run.as_mut().poll(context))).await;
    let _ = queued.send(());
    let ran = match first {
        std::task::Poll::Ready(ran) => ran,
        std::task::Poll::Pending => run.await,
    };
    match ran {
        Ok(outcome) => {
            crate::run::ensure_written(&request, &outcome)?;
            Ok(outcome)
        }
        Err(EngineError::Stopped) => Err(RunError::Stopped),
        Err(error) => Err(RunError::Failure(crate::run::written_or_blamed(
            &request, error,
        ))),
    }
}

fn invalid_notebook(request: &RunRequest, reason: &str) -> Result<Outcome, Failure> {
    let outcome = Outcome::invalid_notebook(
        &request.name,
        reason,
        nbci_shared::util::uri::file_uri(&request.input),
        request.parameters.clone(),
        &request.image,
        nbci_shared::util::time::now_rfc3339(),
    );
    if let Some(parent) = request.result.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Failure::infra(e.to_string()))?;
    }
    nbci_shared::util::fs::write_atomically(&request.result, &outcome.to_json(), true).map_err(
        |error| {
            Failure::infra(format!(
                "cannot write {}: {error}",
                request.result.display()
            ))
        },
    )?;
    Ok(outcome)
}

fn write_reports(
    args: &CheckArgs,
    outcomes: &[Outcome],
    note: Option<&str>,
) -> Result<(), Failure> {
    let write = |path: &Path, text: String| {
        nbci_shared::util::fs::write_atomically(path, text.as_bytes(), true)
            .map_err(|error| Failure::infra(format!("cannot write {}: {error}", path.display())))
    };
    if let Some(path) = &args.junit {
        write(path, report::junit_xml("nbci", outcomes))?;
    }
    if let Some(path) = &args.summary {
        let mut summary = report::markdown("nbci check", outcomes);
        if let Some(note) = note {
            summary.push_str(&format!("\n> **Note**: {note}\n"));
        }
        write(path, summary)?;
    }
    Ok(())
}
