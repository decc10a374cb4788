//! `nbci pipeline run|status|deploy --dry-run|rollback`: the CD flow on this
//! machine, with the same state machine as in the cloud: the directory
//! bucket (`.git/nbci/pipelines` of the repository) and the local executor,
//! or Cloud Storage and a cloud executor when `NBCI_BUCKET` and
//! `NBCI_EXECUTOR` say so. A `local` deploy target copies the model into the
//! registry folder beside the bucket; `ai-platform` and `vertex` call Google.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use nbci_shared::adapters::local::git;
use nbci_shared::config::{Config, Service, Storage};
use nbci_shared::domain::layout;
use nbci_shared::domain::outcome::Status;
use nbci_shared::domain::pipeline::{
    Pipeline, PipelineRun, PipelineSpec, RunCause, RunPhase, RunTrigger,
};
use nbci_shared::domain::repo::{CommitSha, RepoRef};
use nbci_shared::flows::pipeline::Started;
use nbci_shared::ports::store::Precondition;
use nbci_shared::wiring::PipelineWorld;

use crate::Failure;

#[derive(Debug, Args)]
pub struct PipelineArgs {
    #[command(subcommand)]
    pub command: PipelineCommand,
}

/// Where the repository and the bucket are.
#[derive(Debug, Args, Clone)]
pub struct Place {
    /// The repository holding nbci.yaml [default: the current directory].
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The local bucket: run states, step outputs, the model registry
    /// [default: .git/nbci/pipelines in the repository].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Run a pipeline of nbci.yaml at a commit: its steps in order, the gate, the deployment.
    Run {
        /// The pipeline [default: the only one in nbci.yaml].
        pipeline: Option<String>,
        #[command(flatten)]
        place: Place,
        /// The commit to run [default: HEAD].
        #[arg(long, value_name = "REV", default_value = "HEAD")]
        commit: String,
    },
    /// Show the runs of a pipeline: steps, durations, gate, deployed version.
    Status {
        pipeline: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// Print the REST requests deploying the pipeline's model would send.
    Deploy {
        pipeline: Option<String>,
        #[command(flatten)]
        place: Place,
        /// Print the requests, one JSON object per line; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Put the version deployed before the current one back into service.
    Rollback {
        pipeline: String,
        #[command(flatten)]
        place: Place,
    },
}

pub async fn pipeline(args: PipelineArgs) -> Result<u8, Failure> {
    match args.command {
        PipelineCommand::Run {
            pipeline,
            place,
            commit,
        } => run(pipeline, &place, &commit).await,
        PipelineCommand::Status { pipeline, place } => status(pipeline, &place).await,
        PipelineCommand::Deploy {
            pipeline,
            place,
            dry_run,
        } => {
            if !dry_run {
                return Err(Failure::usage(
                    "`nbci pipeline deploy` only prints what it would send: add --dry-run \
                     (pipelines deploy at the end of `nbci pipeline run`)",
                ));
            }
            dry_run_deploy(pipeline, &place).await
        }
        PipelineCommand::Rollback { pipeline, place } => rollback(&pipeline, &place).await,
    }
}

/// The repository's top directory and the spec at `commit`.
fn read_spec(place: &Place, commit: &str) -> Result<(PathBuf, String, PipelineSpec), Failure> {
    let top = git::top_level(&place.repo)
        .map_err(|_| Failure::usage(format!("{} is not a git repository", place.repo.display())))?;
    let sha = git::resolve_commit(&top, commit).map_err(Failure::usage)?;
    let text = git::read_file_at(&top, &sha, "nbci.yaml")
        .map_err(Failure::usage)?
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: no nbci.yaml at the top of commit {}",
                top.display(),
                &sha[..7]
            ))
        })?;
    let files = git::files_at(&top, &sha).map_err(Failure::usage)?;
    let spec = PipelineSpec::parse(&String::from_utf8_lossy(&text), |path| files.contains(path))
        .map_err(|errors| Failure::usage(format!("nbci.yaml:\n{errors}")))?;
    Ok((top, sha, spec))
}

fn choose<'a>(spec: &'a PipelineSpec, name: Option<&str>) -> Result<&'a Pipeline, Failure> {
    match name {
        Some(name) => spec.pipeline(name).ok_or_else(|| {
            let names: Vec<&str> = spec.pipelines.keys().map(String::as_str).collect();
            Failure::usage(format!(
                "no pipeline {name:?} in nbci.yaml (it has: {})",
                names.join(", ")
            ))
        }),
        None if spec.pipelines.len() == 1 => spec
            .pipelines
            .values()
            .next()
            .ok_or_else(|| Failure::usage("nbci.yaml has no pipeline")),
        None => {
            let names: Vec<&str> = spec.pipelines.keys().map(String::as_str).collect();
            Err(Failure::usage(format!(
                "nbci.yaml has several pipelines: name one ({})",
                names.join(", ")
            )))
        }
    }
}

/// The configuration of `nbci pipeline`, with its bucket in `place`.
fn config(top: &Path, place: &Place) -> Result<Config, Failure> {
    let mut config = Config::from_env(Service::Pipeline).map_err(Failure::usage)?;
    let data_dir = match &place.data_dir {
        Some(dir) => dir.clone(),
        None => git::git_dir(top)
            .map_err(Failure::usage)?
            .join("nbci")
            .join("pipelines"),
    };
    config.data_dir = data_dir.clone();
    if matches!(config.storage, Storage::Directory(_)) {
        config.storage = Storage::Directory(data_dir);
    }
    Ok(config)
}

async fn world(config: Config) -> Result<PipelineWorld, Failure> {
    PipelineWorld::build(config, crate::progress::terminal(true))
        .await
        .map_err(|error| match error {
            nbci_shared::wiring::WiringError::Python(_) => Failure::infra(error),
            other => Failure::usage(other),
        })
}

/// A repository name usable in a bucket key.
fn local_repo(top: &Path) -> RepoRef {
    let name: String = top
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    RepoRef::new("local", name.trim_matches('.'))
        .or_else(|| RepoRef::new("local", "repo"))
        .unwrap_or_else(|| unreachable!("local/repo is a valid name"))
}

async fn run(name: Option<String>, place: &Place, commit: &str) -> Result<u8, Failure> {
    let (top, sha, spec) = read_spec(place, commit)?;
    let pipeline = choose(&spec, name.as_deref())?.clone();
    let world = world(config(&top, place)?).await?;
    world.recover().await;

    // The commit's source, as the cloud stages a GitHub tarball.
    let commit_sha = CommitSha::try_from(sha.clone()).map_err(Failure::infra)?;
    let source = layout::source_key(&local_repo(&top), &commit_sha);
    if world
        .store
        .generation(&source)
        .await
        .map_err(Failure::infra)?
        .is_none()
    {
        let scratch = tempfile::tempdir().map_err(Failure::infra)?;
        let archive = scratch.path().join("source.tar.gz");
        git::archive_commit(&top, &sha, &archive).map_err(Failure::infra)?;
        world
            .store
            .put_file(&source, &archive, "application/gzip", Precondition::None)
            .await
            .map_err(Failure::infra)?;
    }
    let trigger =
        RunTrigger::new(jiff::Timestamp::now(), &sha, RunCause::Manual).map_err(Failure::infra)?;
    let run_prefix = layout::pipeline_run_prefix(&pipeline.name, trigger.run_id.as_str());
    eprintln!(
        "▶ pipeline {} at {} ({} steps): run {}",
        pipeline.name,
        &sha[..7],
        pipeline.steps.len(),
        trigger.run_id
    );
    match world
        .pipelines
        .start(&pipeline, trigger, &source)
        .await
        .map_err(Failure::infra)?
    {
        Started::Running(_) => {}
        Started::Queued { replaced, .. } => {
            eprintln!(
                "  another run of {} is active: this one waits for it",
                pipeline.name
            );
            if let Some(replaced) = replaced {
                eprintln!("  (run {replaced}, which was waiting, is skipped)");
            }
        }
        Started::Skipped { reason } => {
            eprintln!("  nothing to do: {reason}");
            return Ok(0);
        }
    }
    let run = follow(&world, &run_prefix).await?;
    world.shutdown();
    println!("{}", table(&run));
    Ok(exit_code(&run))
}

/// Prints each transition of the run until it is over; returns it.
async fn follow(world: &PipelineWorld, run_prefix: &str) -> Result<PipelineRun, Failure> {
    let mut last: Option<String> = None;
    let started = Instant::now();
    loop {
        let run = world
            .pipelines
            .run(run_prefix)
            .await
            .map_err(Failure::infra)?
            .ok_or_else(|| Failure::infra(format!("{run_prefix}: the run's state is gone")))?;
        let line = transition(&run);
        if last.as_deref() != Some(line.as_str()) {
            eprintln!("  [{:>6.1} s] {line}", started.elapsed().as_secs_f64());
            last = Some(line);
        }
        if run.is_finished() {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One line saying where a run is.
fn transition(run: &PipelineRun) -> String {
    let step_name = |i: usize| {
        run.steps
            .get(i)
            .map_or_else(String::new, |s| s.notebook.clone())
    };
    match run.phase {
        RunPhase::Created => "created".into(),
        RunPhase::StepSubmitted { step } => format!(
            "step {}/{} {} running",
            step + 1,
            run.steps.len(),
            step_name(step)
        ),
        RunPhase::StepSucceeded { step } => format!(
            "step {}/{} {} succeeded",
            step + 1,
            run.steps.len(),
            step_name(step)
        ),
        RunPhase::Gating => "deciding the gate".into(),
        RunPhase::Deploying => match run.deploy.as_ref() {
            Some(deploy) if deploy.operation.is_some() => {
                format!("deploying version {} (waiting for it)", deploy.version)
            }
            Some(deploy) => format!("deploying version {}", deploy.version),
            None => "deploying".into(),
        },
        RunPhase::Deployed => format!(
            "deployed version {}",
            run.deploy
                .as_ref()
                .and_then(|d| d.deployed_version.clone())
                .unwrap_or_default()
        ),
        RunPhase::Completed => "completed (nothing to deploy)".into(),
        RunPhase::GateRejected => "the gate rejected the model: nothing deployed".into(),
        RunPhase::Failed => format!(
            "failed: {}",
            run.failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
    }
}

/// 0 deployed or completed; 1 a step failed or the gate refused; 3 a step
/// timed out; 4 an infrastructure error.
fn exit_code(run: &PipelineRun) -> u8 {
    match run.phase {
        RunPhase::Deployed | RunPhase::Completed => 0,
        RunPhase::GateRejected => 1,
        _ => {
            let worst = run
                .steps
                .iter()
                .filter_map(|s| s.outcome)
                .max()
                .unwrap_or(Status::Error);
            match worst {
                Status::Succeeded => 4,
                status => u8::try_from(status.exit_code()).unwrap_or(4),
            }
        }
    }
}

/// The final table of a run.
fn table(run: &PipelineRun) -> String {
    let mut out = format!(
        "\npipeline {}  run {}  commit {}  {}\n",
        run.pipeline,
        run.run_id,
        run.commit.get(..7).unwrap_or(&run.commit),
        run.phase.as_str()
    );
    for (index, step) in run.steps.iter().enumerate() {
        let (mark, detail) = match (&step.outcome, &step.result) {
            (Some(Status::Succeeded), Some(result)) => ("✓", format!("{:.1} s", result.duration_s)),
            (Some(_), Some(result)) => ("✗", result.headline.clone()),
            (Some(status), None) => ("✗", status.to_string()),
            (None, _) if step.submitted_at.is_some() => ("…", "running".into()),
            (None, _) => ("·", "not run".into()),
        };
        out.push_str(&format!(
            "  {mark} {}. {:<40} {detail}\n",
            index + 1,
            step.notebook
        ));
    }
    if let Some(gate) = &run.gate {
        out.push_str(&format!(
            "  gate: {}\n",
            if gate.passed { "passed" } else { "rejected" }
        ));
        for check in &gate.checks {
            out.push_str(&format!(
                "    {} {}\n",
                if check.passed { "✓" } else { "✗" },
                check.check
            ));
            if !check.reason.is_empty() {
                out.push_str(&format!("        {}\n", check.reason));
            }
        }
    }
    if let Some(deploy) = &run.deploy {
        out.push_str(&format!(
            "  deploy: version {}{}\n",
            deploy.version,
            deploy
                .deployed_version
                .as_ref()
                .map(|v| format!(" -> serving {v}"))
                .unwrap_or_default()
        ));
    }
    if let Some(failure) = &run.failure {
        out.push_str(&format!("  failure: {failure}\n"));
    }
    out
}

async fn status(name: Option<String>, place: &Place) -> Result<u8, Failure> {
    let (top, _, spec) = read_spec(place, "HEAD")?;
    let pipelines: Vec<Pipeline> = match name.as_deref() {
        Some(name) => vec![choose(&spec, Some(name))?.clone()],
        None => spec.pipelines.values().cloned().collect(),
    };
    let world = world(config(&top, place)?).await?;
    for pipeline in &pipelines {
        let runs = world
            .pipelines
            .runs(&pipeline.name)
            .await
            .map_err(Failure::infra)?;
        let deployed = world
            .pipelines
            .deployed(&pipeline.name)
            .await
            .map_err(Failure::infra)?;
        println!(
            "pipeline {}: {} run(s); serving: {}",
            pipeline.name,
            runs.len(),
            deployed
                .current
                .as_ref()
                .map_or_else(|| "nothing yet".to_owned(), |v| v.version.clone())
        );
        for run in runs.iter().rev().take(10) {
            print!("{}", table(run));
        }
    }
    world.shutdown();
    Ok(0)
}

async fn dry_run_deploy(name: Option<String>, place: &Place) -> Result<u8, Failure> {
    let (top, sha, spec) = read_spec(place, "HEAD")?;
    let pipeline = choose(&spec, name.as_deref())?.clone();
    let Some(deploy) = &pipeline.deploy else {
        return Err(Failure::usage(format!(
            "pipeline {} deploys nothing",
            pipeline.name
        )));
    };
    let mut config = config(&top, place)?;
    if deploy.target.as_str() != "local" && config.project.is_none() {
        return Err(Failure::usage(format!(
            "GOOGLE_CLOUD_PROJECT is not set: a {} deployment needs the project (and NBCI_REGION)",
            deploy.target.as_str()
        )));
    }
    // A dry run reads nothing from the bucket: it needs no lock on it.
    let scratch = tempfile::tempdir().map_err(Failure::infra)?;
    if matches!(config.storage, Storage::Directory(_)) {
        config.storage = Storage::Directory(scratch.path().to_owned());
        config.data_dir = scratch.path().to_owned();
    }
    let bucket = match &config.storage {
        Storage::Gcs { bucket, .. } => format!("gs://{bucket}"),
        Storage::Directory(_) => std::env::var("NBCI_BUCKET")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .map_or_else(
                || "gs://BUCKET".to_owned(),
                |b| format!("gs://{}", b.trim().trim_start_matches("gs://")),
            ),
    };
    let world = world(config).await?;
    let trigger =
        RunTrigger::new(jiff::Timestamp::now(), &sha, RunCause::Manual).map_err(Failure::infra)?;
    let run_prefix = layout::pipeline_run_prefix(&pipeline.name, trigger.run_id.as_str());
    let run = PipelineRun::create(
        &pipeline,
        trigger,
        "src/dry-run.tar.gz",
        &format!("{bucket}/{run_prefix}"),
        0.0,
    );
    let requests = world
        .pipelines
        .plan(&pipeline, &run)
        .map_err(Failure::usage)?;
    for request in requests {
        println!("{}", request.to_json_line());
    }
    world.shutdown();
    Ok(0)
}

async fn rollback(name: &str, place: &Place) -> Result<u8, Failure> {
    let (top, _, spec) = read_spec(place, "HEAD")?;
    let pipeline = choose(&spec, Some(name))?.clone();
    let world = world(config(&top, place)?).await?;
    let back = world
        .pipelines
        .rollback(&pipeline)
        .await
        .map_err(|error| match error {
            nbci_shared::flows::pipeline::PipelineError::Refused(reason) => Failure::usage(reason),
            other => Failure::infra(other),
        })?;
    println!(
        "pipeline {}: version {} serves again{}",
        pipeline.name,
        back.version,
        back.run_id
            .map(|run| format!(" (from run {run})"))
            .unwrap_or_default()
    );
    world.shutdown();
    Ok(0)
}
