//! Jobs as Vertex AI CustomJobs: the default executor in the cloud.
//!
//! - submit: `POST {root}/v1/projects/{project}/locations/{region}/customJobs`
//!   with one worker pool running the runner image with exactly the
//!   contract's arguments (`["runner", "gs://BUCKET/{prefix}/job.json"]`).
//!   The handle is the `name` Google answers, kept as it is: it names the
//!   project by number (`projects/123456789012/locations/...`), not by the id
//!   nbci was configured with.
//! - status: `GET {root}/v1/{name}`, Vertex's `JobState` read as nbci's.
//! - cancel: `POST {root}/v1/{name}:cancel`.
//!
//! The root is `https://{region}-aiplatform.googleapis.com` unless the
//! settings name another (`NBCI_VERTEX_ENDPOINT`).
//!
//! # One job per folder
//! A CustomJob takes no id from its creator, so nothing on Google's side
//! refuses a second job for the same folder. Every job carries its folder's
//! id as the label [`FOLDER_LABEL`], and submit
//! first lists the jobs with that label: a job found that has not failed or
//! been cancelled is answered instead of creating another. That covers the
//! retry that matters, a dispatch that died (or timed out) after Google
//! accepted the job but before its handle was recorded.
//!
//! It does not cover two submits of one folder at the same moment: both may
//! list nothing and both create. The flows never do that: a job is submitted
//! only by whoever won the folder's create-only claim (the check's state
//! machine), so submits of one folder follow one another. Were two jobs ever
//! started, both write the same folder, and the check is completed once:
//! every transition of its state is generation-conditional.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::TokenSource;
use super::jobs::{self, FOLDER_LABEL, JobSettings};
use super::rest::{ApiError, GoogleApi, SetupError, api_root, is_resource_name};
use crate::domain::job::{Job, JobHandle, JobState};
use crate::ports::executor::{ExecutorError, NotebookExecutor};

/// Longest display name Vertex AI accepts, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// Jobs per page of the list that looks for a folder's job.
const LIST_PAGE_SIZE: &str = "100";
/// Pages read at most; a folder has a handful of jobs at most, so more pages
/// mean the endpoint ignores the filter.
const MAX_LIST_PAGES: usize = 20;

/// A CustomJob as nbci creates it (the fields nbci sets, in Google's names).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomJob {
    display_name: String,
    job_spec: CustomJobSpec,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomJobSpec {
    worker_pool_specs: Vec<WorkerPoolSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduling: Option<Scheduling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkerPoolSpec {
    machine_spec: MachineSpec,
    /// `int64`, which Google's JSON spells as a string.
    replica_count: String,
    container_spec: ContainerSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MachineSpec {
    machine_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator_type: Option<String>,
    /// `int32`: a JSON number.
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator_count: Option<u32>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerSpec {
    image_uri: String,
    args: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Scheduling {
    timeout: String,
}

/// What nbci reads of a CustomJob Google answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomJobView {
    #[serde(default)]
    name: String,
    #[serde(default)]
    state: String,
    error: Option<Status>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    create_time: String,
}

/// `google.rpc.Status`: why a job failed or was cancelled.
#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListCustomJobs {
    #[serde(default)]
    custom_jobs: Vec<CustomJobView>,
    next_page_token: Option<String>,
}

/// Runs jobs as Vertex AI CustomJobs.
#[derive(Debug, Clone)]
pub struct VertexExecutor {
    api: GoogleApi,
    settings: JobSettings,
}

impl VertexExecutor {
    /// An executor for `settings`, calling Vertex AI with tokens from `tokens`.
    pub fn new(settings: JobSettings, tokens: Arc<dyn TokenSource>) -> Result<Self, SetupError> {
        settings.validate()?;
        let root = api_root(
            "NBCI_VERTEX_ENDPOINT",
            settings.endpoint.as_deref(),
            format!("https://{}-aiplatform.googleapis.com", settings.region),
        )?;
        let api = GoogleApi::new(root, tokens, settings.request_timeout)?;
        Ok(Self { api, settings })
    }

    /// `projects/{project}/locations/{region}`: where jobs are created.
    fn parent(&self) -> String {
        format!(
            "projects/{}/locations/{}",
            self.settings.project, self.settings.region
        )
    }

    /// The CustomJob that runs `job`, as JSON (what submit sends; also for
    /// printing a dry run).
    pub fn custom_job(&self, job: &Job) -> Value {
        let accelerator = jobs::accelerator(job);
        let body = CustomJob {
            display_name: jobs::display_name(job, MAX_DISPLAY_NAME_CHARS),
            job_spec: CustomJobSpec {
                worker_pool_specs: vec![WorkerPoolSpec {
                    machine_spec: MachineSpec {
                        machine_type: self.settings.machine_type(job).to_owned(),
                        accelerator_count: accelerator.as_ref().map(|(_, count)| *count),
                        accelerator_type: accelerator.map(|(kind, _)| kind),
                    },
                    replica_count: "1".to_owned(),
                    container_spec: ContainerSpec {
                        image_uri: self.settings.image(job).to_owned(),
                        args: self.settings.runner_args(job),
                    },
                }],
                scheduling: self.settings.job_timeout(job).map(|timeout| Scheduling {
                    timeout: jobs::google_duration(timeout),
                }),
                service_account: self.settings.service_account.clone(),
            },
            labels: jobs::labels(job),
        };
        // Plain structs of strings and numbers always serialize.
        serde_json::to_value(body).unwrap_or(Value::Null)
    }

    /// The newest job of `job`'s folder that has not failed or been
    /// cancelled, if there is one.
    async fn find_folder_job(&self, job: &Job) -> Result<Option<CustomJobView>, ApiError> {
        let label = jobs::folder_label(&job.prefix);
        let filter = format!("labels.{FOLDER_LABEL}=\"{label}\"");
        let path = format!("v1/{}/customJobs", self.parent());
        let mut found: Option<CustomJobView> = None;
        let mut page_token = String::new();
        for _ in 0..MAX_LIST_PAGES {
            let mut query = vec![("filter", filter.as_str()), ("pageSize", LIST_PAGE_SIZE)];
            if !page_token.is_empty() {
                query.push(("pageToken", page_token.as_str()));
            }
            let page: ListCustomJobs = self
                .api
                .call(
                    "list the folder's Vertex AI jobs",
                    Method::GET,
                    &path,
                    &query,
                    None,
                )
                .await?;
            for candidate in page.custom_jobs {
                // The filter is the server's to apply; an endpoint that
                // ignores it must not make another folder's job ours.
                let ours = candidate.labels.get(FOLDER_LABEL) == Some(&label)
                    && is_resource_name(&candidate.name);
                let live = !matches!(
                    job_state(&candidate.state, None),
                    JobState::Failed { .. } | JobState::Cancelled { .. }
                );
                if ours
                    && live
                    && found
                        .as_ref()
                        .is_none_or(|f| candidate.create_time > f.create_time)
                {
                    found = Some(candidate);
                }
            }
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = token,
                _ => return Ok(found),
            }
        }
        Ok(found)
    }
}

/// Vertex AI's `JobState` as nbci's. States nbci does not know (Google adds
/// some now and then) read as pending: the job is not taken for ended, and
/// the sweep of lost jobs cancels it once it outlives its limit.
fn job_state(state: &str, error: Option<&Status>) -> JobState {
    known_job_state(state, error).unwrap_or_else(|| {
        tracing::warn!(
            state,
            "a Vertex AI job state nbci does not know: read as pending"
        );
        JobState::Pending
    })
}

/// The states of Google's published enum (aiplatform v1 `CustomJob.state`).
fn known_job_state(state: &str, error: Option<&Status>) -> Option<JobState> {
    let message = |default: &str| {
        error
            .map(|e| e.message.trim())
            .filter(|m| !m.is_empty())
            .unwrap_or(default)
            .to_owned()
    };
    Some(match state {
        // Not started (or, for UNSPECIFIED, not known to have started): a
        // job that stays there is cancelled by the sweep past its limit.
        "JOB_STATE_UNSPECIFIED" | "JOB_STATE_QUEUED" | "JOB_STATE_PENDING" | "JOB_STATE_PAUSED" => {
            JobState::Pending
        }
        "JOB_STATE_RUNNING" | "JOB_STATE_UPDATING" => JobState::Running,
        // Ended by itself: its result.json says how the notebook did
        // (PARTIALLY_SUCCEEDED is for jobs of many tasks; ours has one).
        "JOB_STATE_SUCCEEDED" | "JOB_STATE_PARTIALLY_SUCCEEDED" => JobState::Succeeded,
        "JOB_STATE_FAILED" => JobState::Failed {
            message: message("the Vertex AI job failed without a message"),
        },
        "JOB_STATE_EXPIRED" => JobState::Failed {
            message: message("the Vertex AI job expired before it ran"),
        },
        "JOB_STATE_CANCELLING" | "JOB_STATE_CANCELLED" => JobState::Cancelled {
            message: message("the Vertex AI job was cancelled"),
        },
        _ => return None,
    })
}

#[async_trait]
impl NotebookExecutor for VertexExecutor {
    async fn submit(&self, job: &Job) -> Result<JobHandle, ExecutorError> {
        if let Some(existing) = self.find_folder_job(job).await? {
            tracing::info!(
                handle = %existing.name,
                state = %existing.state,
                folder = %job.prefix,
                "the folder's Vertex AI job exists already: not creating another"
            );
            return Ok(JobHandle(existing.name));
        }
        let path = format!("v1/{}/customJobs", self.parent());
        let created: CustomJobView = self
            .api
            .call(
                "create the Vertex AI job",
                Method::POST,
                &path,
                &[],
                Some(&self.custom_job(job)),
            )
            .await?;
        if !is_resource_name(&created.name) {
            // Google took the job but its name is unusable: the retry that
            // this error asks for finds the job by its label.
            return Err(ExecutorError::Unavailable(format!(
                "Vertex AI answered the created job without a usable name: {:?}",
                created.name.chars().take(200).collect::<String>()
            )));
        }
        tracing::info!(handle = %created.name, folder = %job.prefix, "submitted a Vertex AI job");
        Ok(JobHandle(created.name))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobState, ExecutorError> {
        if !is_resource_name(&handle.0) {
            // Another executor's handle (a local job's): not a job Vertex has.
            return Ok(JobState::Unknown);
        }
        let path = format!("v1/{}", handle.0);
        match self
            .api
            .call::<CustomJobView>("read the Vertex AI job", Method::GET, &path, &[], None)
            .await
        {
            Ok(found) => Ok(job_state(&found.state, found.error.as_ref())),
            Err(error) if error.http_status() == Some(404) => Ok(JobState::Unknown),
            Err(error) => Err(error.into()),
        }
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), ExecutorError> {
        if !is_resource_name(&handle.0) {
            return Ok(());
        }
        let path = format!("v1/{}:cancel", handle.0);
        match self
            .api
            .call::<Value>(
                "cancel the Vertex AI job",
                Method::POST,
                &path,
                &[],
                Some(&json!({})),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Nothing left to stop.
            Err(error) if error.http_status() == Some(404) => Ok(()),
            // Vertex refuses to cancel a job that has ended; that is success
            // to the port, but only if the job has indeed ended.
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wiremock::matchers::{any, body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::adapters::gcp::auth::AdcTokenSource;
    use crate::adapters::gcp::auth::FixedToken;
    use crate::adapters::gcp::auth::tests::fake_metadata_server;
    use crate::adapters::gcp::discovery::{AIPLATFORM, Direction, Discovery};
    use crate::adapters::gcp::jobs::tests::{job, settings};
    use crate::ports::RemoteError;
    use crate::util::secret::Secret;

    const TOKEN: &str = "ya29.test-token";
    const PREFIX: &str = "ci/octo/demo/0123abc/notebooks/train.ipynb";
    const PARENT: &str = "/v1/projects/demo-project/locations/us-central1/customJobs";
    /// Google names the project by number in what it answers.
    const NAME: &str = "projects/123456789012/locations/us-central1/customJobs/4567";
    const CUSTOM_JOB: &str = "GoogleCloudAiplatformV1CustomJob";

    fn executor(server: &MockServer) -> VertexExecutor {
        VertexExecutor::new(settings(&server.uri()), Arc::new(FixedToken::new(TOKEN)))
            .expect("executor")
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

    /// A CustomJob as Google answers it, checked against the schema.
    fn answer(name: &str, state: &str, labels: Value) -> Value {
        let body = json!({
            "name": name,
            "displayName": "nbci notebooks/train.ipynb",
            "jobSpec": {"workerPoolSpecs": [{
                "machineSpec": {"machineType": "n1-standard-4"},
                "replicaCount": "1",
                "containerSpec": {"imageUri": "us-docker.pkg.dev/demo-project/nbci/runner:1",
                                  "args": ["runner", "gs://nbci-demo/x/job.json"]}
            }]},
            "state": state,
            "createTime": "2026-11-30T03:00:00.123456Z",
            "updateTime": "2026-11-30T03:00:00.123456Z",
            "labels": labels
        });
        Discovery::load(AIPLATFORM).assert_valid(CUSTOM_JOB, &body, Direction::Response, &[]);
        body
    }

    fn folder_labels(prefix: &str) -> Value {
        json!({FOLDER_LABEL: jobs::folder_label(prefix), "nbci_kind": "ci", "created_by": "nbci"})
    }

    async fn mount_list(server: &MockServer, jobs: Value) {
        let filter = format!("labels.nbci_job=\"{}\"", jobs::folder_label(PREFIX));
        Mock::given(method("GET"))
            .and(path(PARENT))
            .and(query_param("filter", filter.as_str()))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(jobs))
            .expect(1)
            .named("list the folder's jobs")
            .mount(server)
            .await;
    }

    async fn mount_create(server: &MockServer, response: ResponseTemplate, times: u64) {
        Mock::given(method("POST"))
            .and(path(PARENT))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(header("content-type", "application/json"))
            .respond_with(response)
            .expect(times)
            .named("create the job")
            .mount(server)
            .await;
    }

    async fn created_body(server: &MockServer) -> Value {
        let requests: Vec<Request> = server.received_requests().await.unwrap_or_default();
        let create = requests
            .iter()
            .find(|r| r.method.as_str() == "POST")
            .expect("a create request");
        serde_json::from_slice(&create.body).expect("a JSON body")
    }

    #[tokio::test]
    async fn submit_sends_a_custom_job_google_accepts() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(&server, json!({})).await;
        mount_create(
            &server,
            ResponseTemplate::new(200).set_body_json(answer(
                NAME,
                "JOB_STATE_QUEUED",
                folder_labels(PREFIX),
            )),
            1,
        )
        .await;

        let handle = executor(&server)
            .submit(&job(PREFIX))
            .await
            .expect("submitted");
        assert_eq!(handle.0, NAME, "the name exactly as Google answered it");

        let body = created_body(&server).await;
        Discovery::load(AIPLATFORM).assert_valid(CUSTOM_JOB, &body, Direction::Request, &[]);
        assert_eq!(
            body,
            json!({
                "displayName": "nbci notebooks/train.ipynb",
                "jobSpec": {
                    "workerPoolSpecs": [{
                        "machineSpec": {"machineType": "n1-standard-4"},
                        "replicaCount": "1",
                        "containerSpec": {
                            "imageUri": "us-docker.pkg.dev/demo-project/nbci/runner:1",
                            "args": ["runner", format!("gs://nbci-demo/{PREFIX}/job.json")]
                        }
                    }],
                    "scheduling": {"timeout": "3900s"}
                },
                "labels": folder_labels(PREFIX)
            })
        );
        for (key, value) in body["labels"].as_object().expect("labels") {
            assert!(
                jobs::is_valid_label(key, value.as_str().unwrap_or("")),
                "{key}"
            );
        }
    }

    #[tokio::test]
    async fn submit_asks_for_the_job_s_accelerator_image_and_the_service_account() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(&server, json!({"customJobs": []})).await;
        mount_create(
            &server,
            ResponseTemplate::new(200).set_body_json(answer(
                NAME,
                "JOB_STATE_PENDING",
                folder_labels(PREFIX),
            )),
            1,
        )
        .await;
        let mut settings = settings(&server.uri());
        settings.service_account = Some("nbci-runner@demo-project.iam.gserviceaccount.com".into());
        let executor =
            VertexExecutor::new(settings, Arc::new(FixedToken::new(TOKEN))).expect("executor");
        let mut job = job(PREFIX);
        job.image = "us-docker.pkg.dev/demo-project/nbci/gpu-runner:2".into();
        job.machine.machine_type = Some("n1-standard-8".into());
        job.machine.accelerator_type = Some("nvidia-tesla-t4".into());
        job.machine.accelerator_count = Some(2);
        job.timeout_s = None;

        executor.submit(&job).await.expect("submitted");

        let body = created_body(&server).await;
        Discovery::load(AIPLATFORM).assert_valid(CUSTOM_JOB, &body, Direction::Request, &[]);
        let spec = &body["jobSpec"];
        assert_eq!(
            spec["workerPoolSpecs"][0]["machineSpec"],
            json!({"machineType": "n1-standard-8", "acceleratorType": "NVIDIA_TESLA_T4", "acceleratorCount": 2})
        );
        assert_eq!(
            spec["workerPoolSpecs"][0]["containerSpec"]["imageUri"],
            "us-docker.pkg.dev/demo-project/nbci/gpu-runner:2"
        );
        assert_eq!(
            spec["serviceAccount"],
            "nbci-runner@demo-project.iam.gserviceaccount.com"
        );
        assert!(
            spec.get("scheduling").is_none(),
            "no limit: Google's default"
        );
    }

    #[tokio::test]
    async fn an_accelerator_google_does_not_have_fails_the_schema_check() {
        let server = MockServer::start().await;
        let mut job = job(PREFIX);
        job.machine.accelerator_type = Some("nvidia-tesla-t5".into());
        let body = executor(&server).custom_job(&job);
        let problems =
            Discovery::load(AIPLATFORM).problems(CUSTOM_JOB, &body, Direction::Request, &[]);
        assert!(
            problems.iter().any(|p| p.contains("NVIDIA_TESLA_T5")),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn a_retried_submit_answers_the_folder_s_live_job() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let running = "projects/123456789012/locations/us-central1/customJobs/2";
        mount_list(
            &server,
            json!({"customJobs": [
                answer("projects/123456789012/locations/us-central1/customJobs/3", "JOB_STATE_FAILED", folder_labels(PREFIX)),
                answer(running, "JOB_STATE_RUNNING", folder_labels(PREFIX)),
                // Another folder's job, from an endpoint that ignores the filter.
                answer("projects/123456789012/locations/us-central1/customJobs/9", "JOB_STATE_RUNNING", folder_labels("ci/other")),
            ]}),
        )
        .await;
        mount_create(&server, ResponseTemplate::new(500), 0).await;

        let handle = executor(&server).submit(&job(PREFIX)).await.expect("found");
        assert_eq!(handle.0, running);
    }

    #[tokio::test]
    async fn a_folder_whose_jobs_failed_gets_a_new_one() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(
            &server,
            json!({"customJobs": [
                answer("projects/123456789012/locations/us-central1/customJobs/3", "JOB_STATE_FAILED", folder_labels(PREFIX)),
                answer("projects/123456789012/locations/us-central1/customJobs/4", "JOB_STATE_CANCELLED", folder_labels(PREFIX)),
            ]}),
        )
        .await;
        mount_create(
            &server,
            ResponseTemplate::new(200).set_body_json(answer(
                NAME,
                "JOB_STATE_QUEUED",
                folder_labels(PREFIX),
            )),
            1,
        )
        .await;
        let handle = executor(&server)
            .submit(&job(PREFIX))
            .await
            .expect("submitted");
        assert_eq!(handle.0, NAME);
    }

    #[tokio::test]
    async fn the_list_is_read_page_by_page() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let filter = format!("labels.nbci_job=\"{}\"", jobs::folder_label(PREFIX));
        Mock::given(method("GET"))
            .and(path(PARENT))
            .and(query_param("pageToken", "page-2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "customJobs": [answer(NAME, "JOB_STATE_SUCCEEDED", folder_labels(PREFIX))]
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(PARENT))
            .and(query_param("filter", filter.as_str()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"nextPageToken": "page-2"})),
            )
            .with_priority(10)
            .expect(1)
            .mount(&server)
            .await;
        let handle = executor(&server).submit(&job(PREFIX)).await.expect("found");
        assert_eq!(handle.0, NAME, "a succeeded job is the folder's job too");
    }

    #[tokio::test]
    async fn errors_are_sorted_into_rejected_and_unavailable() {
        for (status, body, transient) in [
            (
                400,
                json!({"error": {"code": 400, "message": "Accelerator \"NVIDIA_TESLA_T4\" is not supported for machine type \"e2-standard-4\".", "status": "INVALID_ARGUMENT"}}),
                false,
            ),
            (
                403,
                json!({"error": {"code": 403, "message": "Permission 'aiplatform.customJobs.create' denied", "status": "PERMISSION_DENIED"}}),
                false,
            ),
            (
                429,
                json!({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}),
                true,
            ),
            (
                503,
                json!({"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}),
                true,
            ),
        ] {
            let server = MockServer::start().await;
            fail_on_unexpected(&server).await;
            mount_list(&server, json!({})).await;
            mount_create(
                &server,
                ResponseTemplate::new(status).set_body_json(body.clone()),
                1,
            )
            .await;
            let error = executor(&server)
                .submit(&job(PREFIX))
                .await
                .expect_err("refused");
            assert_eq!(error.is_transient(), transient, "{status}: {error}");
            match (&error, transient) {
                (ExecutorError::Rejected(message), false)
                | (ExecutorError::Unavailable(message), true) => {
                    let google = body["error"]["message"].as_str().unwrap_or_default();
                    assert!(message.contains(google), "{message}");
                }
                _ => panic!("{status}: {error:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_failed_list_creates_nothing() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("GET"))
            .and(path(PARENT))
            .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
            .expect(1)
            .mount(&server)
            .await;
        mount_create(&server, ResponseTemplate::new(200), 0).await;
        let error = executor(&server)
            .submit(&job(PREFIX))
            .await
            .expect_err("unavailable");
        assert!(matches!(error, ExecutorError::Unavailable(_)), "{error:?}");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable() {
        // A port nothing listens on (a dropped MockServer goes back to
        // wiremock's pool and keeps answering).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let uri = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        let executor = VertexExecutor::new(settings(&uri), Arc::new(FixedToken::new(TOKEN)))
            .expect("executor");
        let error = executor.submit(&job(PREFIX)).await.expect_err("no server");
        assert!(matches!(error, ExecutorError::Unavailable(_)), "{error:?}");
        let error = executor
            .status(&JobHandle(NAME.into()))
            .await
            .expect_err("no server");
        assert!(error.is_transient(), "{error:?}");
    }

    #[tokio::test]
    async fn no_token_no_request() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        for (error, transient) in [
            (RemoteError::transient("metadata server unreachable"), true),
            (RemoteError::Permanent("no credentials".into()), false),
        ] {
            let executor =
                VertexExecutor::new(settings(&server.uri()), Arc::new(FixedToken(Err(error))))
                    .expect("executor");
            let error = executor.submit(&job(PREFIX)).await.expect_err("no token");
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }

    #[tokio::test]
    async fn the_bearer_token_is_the_metadata_server_s() {
        let metadata = fake_metadata_server("ya29.from-the-metadata-server").await;
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("GET"))
            .and(path(format!("/v1/{NAME}")))
            .and(header(
                "authorization",
                "Bearer ya29.from-the-metadata-server",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer(
                NAME,
                "JOB_STATE_RUNNING",
                json!({}),
            )))
            .expect(2)
            .mount(&server)
            .await;
        let tokens = AdcTokenSource::from_metadata_server(&metadata.uri()).expect("tokens");
        let executor =
            VertexExecutor::new(settings(&server.uri()), Arc::new(tokens)).expect("executor");
        for _ in 0..2 {
            let state = executor
                .status(&JobHandle(NAME.into()))
                .await
                .expect("status");
            assert_eq!(state, JobState::Running);
        }
    }

    #[tokio::test]
    async fn every_published_state_is_read() {
        let discovery = Discovery::load(AIPLATFORM);
        let states = discovery.enum_values(CUSTOM_JOB, "state");
        assert!(states.len() >= 12, "{states:?}");
        for state in &states {
            assert!(
                known_job_state(state, None).is_some(),
                "{state} is not mapped"
            );
        }

        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let executor = executor(&server);
        // One job per state: scoped mocks would be simpler, but wiremock
        // 0.6 unmounts the wrong one once mocks of other priorities exist.
        for (i, (state, expected)) in [
            ("JOB_STATE_QUEUED", JobState::Pending),
            ("JOB_STATE_PENDING", JobState::Pending),
            ("JOB_STATE_RUNNING", JobState::Running),
            ("JOB_STATE_SUCCEEDED", JobState::Succeeded),
            (
                "JOB_STATE_FAILED",
                JobState::Failed {
                    message: "The replica workerpool0-0 exited with a non-zero status of 4.".into(),
                },
            ),
            (
                "JOB_STATE_CANCELLING",
                JobState::Cancelled {
                    message: "CANCELLED: by nbci".into(),
                },
            ),
            (
                "JOB_STATE_CANCELLED",
                JobState::Cancelled {
                    message: "CANCELLED: by nbci".into(),
                },
            ),
            ("JOB_STATE_SOMETHING_NEW", JobState::Pending),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("projects/123456789012/locations/us-central1/customJobs/{i}");
            let mut body = answer(&name, "JOB_STATE_RUNNING", json!({}));
            body["state"] = json!(state);
            if let JobState::Failed { message } | JobState::Cancelled { message } = &expected {
                body["error"] = json!({"code": 9, "message": message});
                Discovery::load(AIPLATFORM).assert_valid(
                    CUSTOM_JOB,
                    &body,
                    Direction::Response,
                    &[],
                );
            }
            Mock::given(method("GET"))
                .and(path(format!("/v1/{name}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .expect(1)
                .mount(&server)
                .await;
            let read = executor.status(&JobHandle(name)).await.expect("status");
            assert_eq!(read, expected, "{state}");
        }
        assert_eq!(
            job_state("JOB_STATE_FAILED", None),
            JobState::Failed {
                message: "the Vertex AI job failed without a message".into()
            }
        );
    }

    #[tokio::test]
    async fn a_job_google_does_not_know_is_unknown() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("GET"))
            .and(path(format!("/v1/{NAME}")))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({
                "error": {"code": 404, "message": "The CustomJob does not exist.", "status": "NOT_FOUND"}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let executor = executor(&server);
        assert_eq!(
            executor.status(&JobHandle(NAME.into())).await,
            Ok(JobState::Unknown)
        );
        // A local job's handle never reaches Google.
        assert_eq!(
            executor.status(&JobHandle("local:0badf00d:1".into())).await,
            Ok(JobState::Unknown)
        );
    }

    #[tokio::test]
    async fn cancel_posts_to_the_job_s_name() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("POST"))
            .and(path(format!("/v1/{NAME}:cancel")))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(body_json(json!({})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        executor(&server)
            .cancel(&JobHandle(NAME.into()))
            .await
            .expect("cancelled");
    }

    #[tokio::test]
    async fn cancelling_an_ended_job_succeeds_and_a_refused_cancel_of_a_live_one_fails() {
        for (state, ok) in [("JOB_STATE_SUCCEEDED", true), ("JOB_STATE_RUNNING", false)] {
            let server = MockServer::start().await;
            fail_on_unexpected(&server).await;
            Mock::given(method("POST"))
                .and(path(format!("/v1/{NAME}:cancel")))
                .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                    "error": {"code": 400, "message": "The job is in a terminal state.", "status": "FAILED_PRECONDITION"}
                })))
                .expect(1)
                .mount(&server)
                .await;
            Mock::given(method("GET"))
                .and(path(format!("/v1/{NAME}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(answer(
                    NAME,
                    state,
                    json!({}),
                )))
                .expect(1)
                .mount(&server)
                .await;
            let result = executor(&server).cancel(&JobHandle(NAME.into())).await;
            assert_eq!(result.is_ok(), ok, "{state}: {result:?}");
            if let Err(error) = result {
                assert!(matches!(error, ExecutorError::Rejected(_)), "{error:?}");
            }
        }
    }

    #[tokio::test]
    async fn cancelling_a_job_google_does_not_know_succeeds() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("POST"))
            .and(path(format!("/v1/{NAME}:cancel")))
            .respond_with(ResponseTemplate::new(404))
            .expect(1)
            .mount(&server)
            .await;
        let executor = executor(&server);
        executor
            .cancel(&JobHandle(NAME.into()))
            .await
            .expect("nothing to stop");
        executor
            .cancel(&JobHandle("local:0badf00d:1".into()))
            .await
            .expect("not Vertex's");
    }

    #[test]
    fn the_default_endpoint_is_regional_and_settings_are_checked() {
        let tokens: Arc<dyn TokenSource> = Arc::new(FixedToken(Ok(Secret::new("t"))));
        let mut settings = settings("http://unused");
        settings.endpoint = None;
        let executor = VertexExecutor::new(settings.clone(), tokens.clone()).expect("executor");
        assert_eq!(
            executor.api.root(),
            "https://us-central1-aiplatform.googleapis.com"
        );
        settings.region = "us-central1/../x".into();
        assert!(VertexExecutor::new(settings.clone(), tokens.clone()).is_err());
        settings.region = "europe-west4".into();
        settings.endpoint = Some("ftp://nope".into());
        let error = VertexExecutor::new(settings, tokens).expect_err("bad endpoint");
        assert!(
            error.to_string().contains("NBCI_VERTEX_ENDPOINT"),
            "{error}"
        );
    }
}
