//! Jobs as legacy AI Platform Training jobs (`ml.googleapis.com`), the shape
//! of the seeds (gcloud-notebook-training).
//!
//! Google shut AI Platform Training down on 2025-01-31; this executor stays
//! for API-compatible endpoints (`NBCI_ML_ENDPOINT`) and matches the ml v1
//! discovery document field for field.
//!
//! - submit: `POST {root}/v1/projects/{project}/jobs` with a `jobId` derived
//!   from the job's folder, and a custom-container `trainingInput` whose
//!   `args` are exactly the contract's (`["runner", "gs://BUCKET/{prefix}/job.json"]`).
//! - status: `GET {root}/v1/projects/{project}/jobs/{jobId}`.
//! - cancel: `POST {root}/v1/projects/{project}/jobs/{jobId}:cancel`.
//!
//! The handle is `projects/{project}/jobs/{jobId}`.
//!
//! # One job per folder
//! AI Platform takes the job's id from its creator and refuses a second job
//! with the same id (409 `ALREADY_EXISTS`), for ever. The id is a function
//! of the folder, so a retried submit (or two at once) cannot start a second
//! job: the 409 is answered as success with the same handle. The other side
//! of it: a folder can hold only one job even after it failed; re-runs get
//! folders of their own (`attempts/{n}`), so they get new ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::TokenSource;
use super::jobs::{self, JobSettings};
use super::rest::{ApiError, GoogleApi, SetupError, api_root};
use crate::domain::job::{Job, JobHandle, JobState};
use crate::domain::layout;
use crate::ports::executor::{ExecutorError, NotebookExecutor};

/// Longest job id AI Platform accepts.
pub const MAX_JOB_ID_CHARS: usize = 128;
/// The start of every id nbci gives a job (and so a letter first).
const JOB_ID_START: &str = "nbci_";

/// A training job as nbci creates it (the fields nbci sets, in Google's names).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MlJob {
    job_id: String,
    labels: BTreeMap<String, String>,
    training_input: TrainingInput,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TrainingInput {
    /// Always `CUSTOM`: the machine is the job's (`masterType`).
    scale_tier: &'static str,
    master_type: String,
    master_config: ReplicaConfig,
    region: String,
    /// Passed to the custom container's entrypoint (`nbci`).
    args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduling: Option<Scheduling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplicaConfig {
    image_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator_config: Option<AcceleratorConfig>,
}

#[derive(Debug, Serialize)]
struct AcceleratorConfig {
    /// `int64`, which Google's JSON spells as a string.
    count: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Scheduling {
    max_running_time: String,
}

/// What nbci reads of a job Google answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MlJobView {
    #[serde(default)]
    state: String,
    #[serde(default)]
    error_message: String,
}

/// The id of the job of a folder: `nbci_`, the folder's path with every
/// character but letters and digits as `_` (its end, when it is long), then
/// the folder's [`layout::flat_id`]; a letter first, then letters, digits
/// and underscores, at most [`MAX_JOB_ID_CHARS`]. The same folder always
/// gives the same id, and two folders never one (the hash).
pub fn job_id(prefix: &str) -> String {
    let hash = layout::flat_id(prefix);
    let mut readable = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && readable.ends_with('_')) {
            readable.push(c);
        }
    }
    let room = MAX_JOB_ID_CHARS - JOB_ID_START.len() - 1 - hash.len();
    // All ASCII now: any byte index is a character boundary.
    let tail = &readable[readable.len().saturating_sub(room)..];
    let tail = tail.trim_matches('_');
    if tail.is_empty() {
        format!("{JOB_ID_START}{hash}")
    } else {
        format!("{JOB_ID_START}{tail}_{hash}")
    }
}

/// Runs jobs as AI Platform Training jobs.
#[derive(Debug, Clone)]
pub struct AiPlatformExecutor {
    api: GoogleApi,
    settings: JobSettings,
}

impl AiPlatformExecutor {
    /// An executor for `settings`, calling the ml API with tokens from `tokens`.
    pub fn new(settings: JobSettings, tokens: Arc<dyn TokenSource>) -> Result<Self, SetupError> {
        settings.validate()?;
        let root = api_root(
            "NBCI_ML_ENDPOINT",
            settings.endpoint.as_deref(),
            "https://ml.googleapis.com".to_owned(),
        )?;
        let api = GoogleApi::new(root, tokens, settings.request_timeout)?;
        Ok(Self { api, settings })
    }

    /// The handle of the job with id `job_id`.
    fn handle(&self, job_id: &str) -> JobHandle {
        JobHandle(format!("projects/{}/jobs/{job_id}", self.settings.project))
    }

    /// Whether `handle` names one of this project's jobs (and so can be put
    /// in a URL as is).
    fn is_ours(&self, handle: &JobHandle) -> bool {
        let project = format!("projects/{}/jobs/", self.settings.project);
        handle.0.strip_prefix(&project).is_some_and(|id| {
            id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && id.len() <= MAX_JOB_ID_CHARS
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    }

    /// The job that runs `job`, as JSON (what submit sends; also for
    /// printing a dry run).
    pub fn training_job(&self, job: &Job) -> Value {
        let body = MlJob {
            job_id: job_id(&job.prefix),
            labels: jobs::labels(job),
            training_input: TrainingInput {
                scale_tier: "CUSTOM",
                master_type: self.settings.machine_type(job).to_owned(),
                master_config: ReplicaConfig {
                    image_uri: self.settings.image(job).to_owned(),
                    accelerator_config: jobs::accelerator(job).map(|(kind, count)| {
                        AcceleratorConfig {
                            count: count.to_string(),
                            kind,
                        }
                    }),
                },
                region: self.settings.region.clone(),
                args: self.settings.runner_args(job),
                scheduling: self.settings.job_timeout(job).map(|timeout| Scheduling {
                    max_running_time: jobs::google_duration(timeout),
                }),
                service_account: self.settings.service_account.clone(),
            },
        };
        // Plain structs of strings always serialize.
        serde_json::to_value(body).unwrap_or(Value::Null)
    }
}

/// AI Platform's job state as nbci's. States nbci does not know read as
/// pending: the sweep of lost jobs cancels a job that stays there past its
/// limit.
fn job_state(state: &str, error_message: &str) -> JobState {
    known_job_state(state, error_message).unwrap_or_else(|| {
        tracing::warn!(
            state,
            "an AI Platform job state nbci does not know: read as pending"
        );
        JobState::Pending
    })
}

/// The states of Google's published enum (ml v1 `Job.state`).
fn known_job_state(state: &str, error_message: &str) -> Option<JobState> {
    let message = |default: &str| {
        let message = error_message.trim();
        if message.is_empty() { default } else { message }.to_owned()
    };
    Some(match state {
        "STATE_UNSPECIFIED" | "QUEUED" | "PREPARING" => JobState::Pending,
        "RUNNING" => JobState::Running,
        "SUCCEEDED" => JobState::Succeeded,
        "FAILED" => JobState::Failed {
            message: message("the AI Platform job failed without a message"),
        },
        "CANCELLING" | "CANCELLED" => JobState::Cancelled {
            message: message("the AI Platform job was cancelled"),
        },
        _ => return None,
    })
}

#[async_trait]
impl NotebookExecutor for AiPlatformExecutor {
    async fn submit(&self, job: &Job) -> Result<JobHandle, ExecutorError> {
        let body = self.training_job(job);
        let id = job_id(&job.prefix);
        let path = format!("v1/projects/{}/jobs", self.settings.project);
        let created = self
            .api
            .call::<Value>(
                "create the AI Platform job",
                Method::POST,
                &path,
                &[],
                Some(&body),
            )
            .await;
        match created {
            Ok(_) => {
                tracing::info!(job_id = %id, folder = %job.prefix, "submitted an AI Platform job");
            }
            Err(error) if is_already_exists(&error) => {
                tracing::info!(
                    job_id = %id,
                    folder = %job.prefix,
                    "the folder's AI Platform job exists already: not creating another"
                );
            }
            Err(error) => return Err(error.into()),
        }
        Ok(self.handle(&id))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobState, ExecutorError> {
        if !self.is_ours(handle) {
            return Ok(JobState::Unknown);
        }
        let path = format!("v1/{}", handle.0);
        match self
            .api
            .call::<MlJobView>("read the AI Platform job", Method::GET, &path, &[], None)
            .await
        {
            Ok(found) => Ok(job_state(&found.state, &found.error_message)),
            Err(error) if error.http_status() == Some(404) => Ok(JobState::Unknown),
            Err(error) => Err(error.into()),
        }
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), ExecutorError> {
        if !self.is_ours(handle) {
            return Ok(());
        }
        let path = format!("v1/{}:cancel", handle.0);
        match self
            .api
            .call::<Value>(
                "cancel the AI Platform job",
                Method::POST,
                &path,
                &[],
                Some(&json!({})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.http_status() == Some(404) => Ok(()),
            // AI Platform refuses to cancel a job that has ended; success to
            // the port, but only if the job has indeed ended.
            Err(error) if error.google_status() == Some("FAILED_PRECONDITION") => {
                if self.status(handle).await?.is_ended() {
                    Ok(())
                } else {
                    Err(error.into())
                }
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// A 409 that says the id is taken (not `ABORTED`, also a 409, which asks
/// to try again).
fn is_already_exists(error: &ApiError) -> bool {
    error.http_status() == Some(409)
        && matches!(error.google_status(), None | Some("ALREADY_EXISTS"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wiremock::matchers::{any, body_json, header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::adapters::gcp::auth::FixedToken;
    use crate::adapters::gcp::discovery::{Direction, Discovery, ML};
    use crate::adapters::gcp::jobs::tests::{job, settings};

    const TOKEN: &str = "ya29.test-token";
    const PREFIX: &str = "ci/octo/demo/0123abc/notebooks/train.ipynb";
    const JOBS: &str = "/v1/projects/demo-project/jobs";
    const ML_JOB: &str = "GoogleCloudMlV1__Job";
    /// "Required." in the document, but for Python-package jobs only: a
    /// custom container needs neither.
    const PACKAGE_ONLY: &[&str] = &[
        "GoogleCloudMlV1__TrainingInput.packageUris",
        "GoogleCloudMlV1__TrainingInput.pythonModule",
    ];

    fn executor(server: &MockServer) -> AiPlatformExecutor {
        AiPlatformExecutor::new(settings(&server.uri()), Arc::new(FixedToken::new(TOKEN)))
            .expect("executor")
    }

    fn handle() -> JobHandle {
        JobHandle(format!("projects/demo-project/jobs/{}", job_id(PREFIX)))
    }

    async fn fail_on_unexpected(server: &MockServer) {
        Mock::given(any())
            .respond_with(ResponseTemplate::new(418).set_body_json(
                json!({"error": {"code": 418, "message": "unexpected request", "status": "UNEXPECTED"}}),
            ))
            .with_priority(u8::MAX)
            .expect(0)
            .named("fallback: unexpected request")
            .mount(server)
            .await;
    }

    async fn mount_create(server: &MockServer, response: ResponseTemplate, times: u64) {
        Mock::given(method("POST"))
            .and(path(JOBS))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(header("content-type", "application/json"))
            .respond_with(response)
            .expect(times)
            .named("create the job")
            .mount(server)
            .await;
    }

    async fn created_bodies(server: &MockServer) -> Vec<Value> {
        let requests: Vec<Request> = server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
            .collect()
    }

    /// A job as Google answers it, checked against the schema.
    fn answer(state: &str, error_message: Option<&str>) -> Value {
        let mut body = json!({
            "jobId": job_id(PREFIX),
            "trainingInput": {"scaleTier": "CUSTOM", "masterType": "n1-standard-4",
                              "masterConfig": {"imageUri": "gcr.io/x"}, "region": "us-central1",
                              "args": ["runner", "gs://nbci-demo/x/job.json"]},
            "createTime": "2026-11-30T03:00:00Z",
            "state": state,
            "etag": "Lxy1Ag=="
        });
        if let Some(message) = error_message {
            body["errorMessage"] = json!(message);
        }
        Discovery::load(ML).assert_valid(ML_JOB, &body, Direction::Response, &[]);
        body
    }

    #[test]
    fn job_ids_are_valid_deterministic_and_distinct() {
        let long = format!("ci/o/r/s/{}.ipynb", "deep/".repeat(60));
        for prefix in [
            PREFIX,
            "ci/Octo-Org/hello.world/0123abc/Ünïcode name.ipynb",
            "pipelines/train-and-deploy/runs/20261130T0300/1",
            long.as_str(),
            "___",
        ] {
            let id = job_id(prefix);
            assert!(id.len() <= MAX_JOB_ID_CHARS, "{id}");
            assert!(id.starts_with(|c: char| c.is_ascii_alphabetic()), "{id}");
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{id}"
            );
            assert_eq!(id, job_id(prefix));
        }
        assert_eq!(
            job_id(PREFIX),
            format!(
                "nbci_ci_octo_demo_0123abc_notebooks_train_ipynb_{}",
                layout::flat_id(PREFIX)
            )
        );
        // Paths that read alike still get ids of their own.
        assert_ne!(job_id("ci/a/b.c"), job_id("ci/a/b_c"));
        assert_ne!(
            job_id(&format!("{long}/attempts/2")),
            job_id(&format!("{long}/attempts/3"))
        );
    }

    #[tokio::test]
    async fn submit_sends_a_training_job_google_accepts() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_create(
            &server,
            ResponseTemplate::new(200).set_body_json(answer("QUEUED", None)),
            1,
        )
        .await;

        let submitted = executor(&server)
            .submit(&job(PREFIX))
            .await
            .expect("submitted");
        assert_eq!(submitted, handle());

        let bodies = created_bodies(&server).await;
        Discovery::load(ML).assert_valid(ML_JOB, &bodies[0], Direction::Request, PACKAGE_ONLY);
        assert_eq!(
            bodies[0],
            json!({
                "jobId": job_id(PREFIX),
                "labels": {"nbci_job": jobs::folder_label(PREFIX), "nbci_kind": "ci", "created_by": "nbci"},
                "trainingInput": {
                    "scaleTier": "CUSTOM",
                    "masterType": "n1-standard-4",
                    "masterConfig": {"imageUri": "us-docker.pkg.dev/demo-project/nbci/runner:1"},
                    "region": "us-central1",
                    "args": ["runner", format!("gs://nbci-demo/{PREFIX}/job.json")],
                    "scheduling": {"maxRunningTime": "3900s"}
                }
            })
        );
    }

    #[tokio::test]
    async fn submit_asks_for_the_job_s_accelerator_and_the_service_account() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_create(
            &server,
            ResponseTemplate::new(200).set_body_json(answer("QUEUED", None)),
            1,
        )
        .await;
        let mut settings = settings(&server.uri());
        settings.service_account = Some("nbci-runner@demo-project.iam.gserviceaccount.com".into());
        let executor =
            AiPlatformExecutor::new(settings, Arc::new(FixedToken::new(TOKEN))).expect("executor");
        let mut job = job(PREFIX);
        job.image = "gcr.io/deeplearning-platform-release/nbci-gpu:1".into();
        job.machine.machine_type = Some("n1-standard-8".into());
        job.machine.accelerator_type = Some("NVIDIA_TESLA_T4".into());
        job.timeout_s = None;

        executor.submit(&job).await.expect("submitted");

        let bodies = created_bodies(&server).await;
        Discovery::load(ML).assert_valid(ML_JOB, &bodies[0], Direction::Request, PACKAGE_ONLY);
        let input = &bodies[0]["trainingInput"];
        assert_eq!(input["masterType"], "n1-standard-8");
        assert_eq!(
            input["masterConfig"],
            json!({"imageUri": "gcr.io/deeplearning-platform-release/nbci-gpu:1",
                   "acceleratorConfig": {"count": "1", "type": "NVIDIA_TESLA_T4"}})
        );
        assert_eq!(
            input["serviceAccount"],
            "nbci-runner@demo-project.iam.gserviceaccount.com"
        );
        assert!(input.get("scheduling").is_none());
    }

    #[tokio::test]
    async fn an_accelerator_legacy_ai_platform_never_had_fails_the_schema_check() {
        let server = MockServer::start().await;
        let mut job = job(PREFIX);
        job.machine.accelerator_type = Some("NVIDIA_L4".into());
        let body = executor(&server).training_job(&job);
        let problems =
            Discovery::load(ML).problems(ML_JOB, &body, Direction::Request, PACKAGE_ONLY);
        assert!(
            problems.iter().any(|p| p.contains("NVIDIA_L4")),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn a_retried_submit_that_gets_409_answers_the_same_handle() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("POST"))
            .and(path(JOBS))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer("QUEUED", None)))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(JOBS))
            .respond_with(ResponseTemplate::new(409).set_body_json(json!({
                "error": {"code": 409, "message": "Field: job.job_id Error: A job with this id already exists.", "status": "ALREADY_EXISTS"}
            })))
            .with_priority(10)
            .expect(1)
            .mount(&server)
            .await;
        let executor = executor(&server);
        let first = executor.submit(&job(PREFIX)).await.expect("first");
        let second = executor.submit(&job(PREFIX)).await.expect("retry");
        assert_eq!(first, second);
        let bodies = created_bodies(&server).await;
        assert_eq!(bodies[0], bodies[1], "the retry sends the same job");
    }

    #[tokio::test]
    async fn an_aborted_409_is_transient() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_create(
            &server,
            ResponseTemplate::new(409).set_body_json(json!({
                "error": {"code": 409, "message": "Concurrent modification.", "status": "ABORTED"}
            })),
            1,
        )
        .await;
        let error = executor(&server)
            .submit(&job(PREFIX))
            .await
            .expect_err("aborted");
        assert!(matches!(error, ExecutorError::Unavailable(_)), "{error:?}");
    }

    #[tokio::test]
    async fn errors_are_sorted_into_rejected_and_unavailable() {
        for (status, message, transient) in [
            (
                400,
                "Field: master_type Error: Invalid machine type n1-standard-999.",
                false,
            ),
            (500, "Internal error encountered.", true),
            (503, "The service is currently unavailable.", true),
        ] {
            let server = MockServer::start().await;
            fail_on_unexpected(&server).await;
            mount_create(
                &server,
                ResponseTemplate::new(status)
                    .set_body_json(json!({"error": {"code": status, "message": message}})),
                1,
            )
            .await;
            let error = executor(&server)
                .submit(&job(PREFIX))
                .await
                .expect_err("refused");
            assert_eq!(error.is_transient(), transient, "{status}: {error}");
            assert!(error.to_string().contains(message), "{error}");
            if !transient {
                assert!(matches!(error, ExecutorError::Rejected(_)), "{error:?}");
            }
        }
    }

    #[tokio::test]
    async fn every_published_state_is_read() {
        let states = Discovery::load(ML).enum_values(ML_JOB, "state");
        assert_eq!(states.len(), 8, "{states:?}");
        for state in &states {
            assert!(
                known_job_state(state, "").is_some(),
                "{state} is not mapped"
            );
        }

        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let executor = executor(&server);
        let failure = "The replica master 0 exited with a non-zero status of 1.";
        // One job per state: scoped mocks would be simpler, but wiremock
        // 0.6 unmounts the wrong one once mocks of other priorities exist.
        for (i, (state, message, expected)) in [
            ("STATE_UNSPECIFIED", None, JobState::Pending),
            ("QUEUED", None, JobState::Pending),
            ("PREPARING", None, JobState::Pending),
            ("RUNNING", None, JobState::Running),
            ("SUCCEEDED", None, JobState::Succeeded),
            (
                "FAILED",
                Some(failure),
                JobState::Failed {
                    message: failure.into(),
                },
            ),
            (
                "CANCELLING",
                None,
                JobState::Cancelled {
                    message: "the AI Platform job was cancelled".into(),
                },
            ),
            (
                "CANCELLED",
                Some("Job cancelled by user."),
                JobState::Cancelled {
                    message: "Job cancelled by user.".into(),
                },
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let handle = JobHandle(format!("projects/demo-project/jobs/nbci_state_{i}"));
            Mock::given(method("GET"))
                .and(path(format!("/v1/{handle}")))
                .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
                .respond_with(ResponseTemplate::new(200).set_body_json(answer(state, message)))
                .expect(1)
                .mount(&server)
                .await;
            assert_eq!(executor.status(&handle).await, Ok(expected), "{state}");
        }
        assert_eq!(job_state("SOMETHING_NEW", ""), JobState::Pending);
    }

    #[tokio::test]
    async fn a_job_google_does_not_know_is_unknown() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("GET"))
            .and(path(format!("/v1/{}", handle())))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({
                "error": {"code": 404, "message": "Field: name Error: The specified job does not exist.", "status": "NOT_FOUND"}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let executor = executor(&server);
        assert_eq!(executor.status(&handle()).await, Ok(JobState::Unknown));
        for foreign in [
            "local:0badf00d:1",
            "projects/other-project/jobs/nbci_x",
            "projects/demo-project/jobs/../x",
            "projects/123/locations/us-central1/customJobs/1",
        ] {
            assert_eq!(
                executor.status(&JobHandle(foreign.into())).await,
                Ok(JobState::Unknown),
                "{foreign}"
            );
        }
    }

    #[tokio::test]
    async fn cancel_posts_to_the_job() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("POST"))
            .and(path(format!("/v1/{}:cancel", handle())))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(body_json(json!({})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        executor(&server)
            .cancel(&handle())
            .await
            .expect("cancelled");
    }

    #[tokio::test]
    async fn cancelling_an_ended_job_succeeds() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("POST"))
            .and(path(format!("/v1/{}:cancel", handle())))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": {"code": 400, "message": "Cannot cancel a job in state FAILED.", "status": "FAILED_PRECONDITION"}
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/v1/{}", handle())))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer("FAILED", Some("boom"))))
            .expect(1)
            .mount(&server)
            .await;
        executor(&server)
            .cancel(&handle())
            .await
            .expect("already ended");
    }

    #[test]
    fn the_default_endpoint_is_google_s_and_settings_are_checked() {
        let tokens: Arc<dyn TokenSource> = Arc::new(FixedToken::new("t"));
        let mut settings = settings("http://unused");
        settings.endpoint = None;
        let executor = AiPlatformExecutor::new(settings.clone(), tokens.clone()).expect("executor");
        assert_eq!(executor.api.root(), "https://ml.googleapis.com");
        settings.project = "a/b".into();
        let error = AiPlatformExecutor::new(settings, tokens).expect_err("bad project");
        assert!(
            error.to_string().contains("GOOGLE_CLOUD_PROJECT"),
            "{error}"
        );
    }
}
