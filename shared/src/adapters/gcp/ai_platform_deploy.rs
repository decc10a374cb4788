//! Deploying to AI Platform Prediction (`ml.googleapis.com`): what the user
//! asked for, the REST form of the seeds' `gcloud ai-platform versions create`.
//!
//! - deploy: ensure the model (`GET v1/projects/{p}/models/{m}`; on 404
//!   `POST v1/projects/{p}/models` with its name and region: a 409 there
//!   means another deploy created it first, which is as good), then
//!   `POST v1/projects/{p}/models/{m}/versions` with the Version. Google
//!   answers with a long-running operation, whose name is the handle.
//! - poll: `GET v1/{operation}`: not done is pending, an `error` fails the
//!   deployment with Google's message; once done, `POST
//!   v1/projects/{p}/models/{m}/versions/{v}:setDefault` when the request
//!   sets the default (the first version of a model is the default anyway),
//!   then deployed.
//! - rollback ([`Deployer::set_serving`]): `:setDefault` on the version to
//!   put back; AI Platform keeps every version until someone deletes it.
//!
//! Google shut AI Platform Prediction down for new work on 2025-01-31;
//! this deployer matches the ml v1 discovery document field for field and
//! serves API-compatible endpoints (`NBCI_ML_ENDPOINT`).
//!
//! # One version per run, whatever is retried
//! The version's name comes from the run, and AI Platform refuses a second
//! version of a name with 409 `ALREADY_EXISTS`. A deploy retried after its
//! answer was lost therefore cannot create two versions: on that 409 it
//! reads the existing version (`GET .../versions/{v}`), checks that it
//! serves the same model folder (else the name belongs to something else
//! and the deploy fails), and answers the version's own name as the handle.
//! Polling such a handle reads the version's `state` (`CREATING` pending,
//! `READY` done, `FAILED` failed with its `errorMessage`) instead of an
//! operation. An operation that Google no longer knows (404) is read the
//! same way.
//!
//! # Dry run
//! [`plan`] lists the requests of a deploy: the model's `GET`, its create
//! (sent only when the `GET` answers 404), the version's create, one
//! `GET` of the operation (repeated until it is done) whose id is the
//! placeholder `{OPERATION_ID}`, and `:setDefault` when asked for.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::TokenSource;
use super::deploy::{
    Call, DeploySettings, OPERATION_PLACEHOLDER, Operation, OperationState, already_exists,
    gcs_artifact, google_labels, segment,
};
use super::rest::{GoogleApi, SetupError, is_resource_name};
use crate::domain::deploy::{DeployOperation, DeployRequest, DeployStatus, PlannedRequest};
use crate::ports::RemoteError;
use crate::ports::deployer::Deployer;

/// The frameworks of AI Platform's `Version.framework`.
const FRAMEWORKS: [&str; 3] = ["TENSORFLOW", "SCIKIT_LEARN", "XGBOOST"];
/// Longest model or version name AI Platform accepts.
const MAX_NAME_CHARS: usize = 128;

/// A Version as nbci creates it (the fields nbci sets, in Google's names).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    name: String,
    deployment_uri: String,
    runtime_version: String,
    framework: String,
    python_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    machine_type: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
}

/// What nbci reads of a Version Google answers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionView {
    #[serde(default)]
    name: String,
    #[serde(default)]
    deployment_uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error_message: String,
}

/// What nbci reads of a Model Google answers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelView {
    default_version: Option<VersionView>,
}

/// The ml v1 calls of a deploy, built without sending anything: what
/// [`AiPlatformDeployer`] sends and [`plan`] prints.
#[derive(Debug, Clone)]
struct MlCalls {
    project: String,
    region: String,
}

impl MlCalls {
    fn model_path(&self, model: &str) -> String {
        format!("v1/projects/{}/models/{model}", self.project)
    }

    fn version_path(&self, model: &str, version: &str) -> String {
        format!("{}/versions/{version}", self.model_path(model))
    }

    fn get_model(&self, model: &str) -> Call {
        Call::get("read the AI Platform model", self.model_path(model))
    }

    fn create_model(&self, model: &str) -> Call {
        Call::post(
            "create the AI Platform model",
            format!("v1/projects/{}/models", self.project),
            json!({"name": model, "regions": [self.region]}),
        )
    }

    fn create_version(&self, request: &DeployRequest, deployment_uri: String) -> Call {
        let version = Version {
            name: request.version.clone(),
            deployment_uri,
            runtime_version: request.runtime_version.clone().unwrap_or_default(),
            framework: request.framework.clone(),
            python_version: request.python_version.clone().unwrap_or_default(),
            machine_type: request
                .machine_type
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
            labels: google_labels(&request.labels),
        };
        Call::post(
            "create the AI Platform model version",
            format!("{}/versions", self.model_path(&request.model)),
            // Plain structs of strings always serialize.
            serde_json::to_value(version).unwrap_or(Value::Null),
        )
    }

    fn get_version(&self, model: &str, version: &str) -> Call {
        Call::get(
            "read the AI Platform model version",
            self.version_path(model, version),
        )
    }

    fn set_default(&self, model: &str, version: &str) -> Call {
        Call::post(
            "make the AI Platform version the default",
            format!("{}:setDefault", self.version_path(model, version)),
            json!({}),
        )
    }

    fn get_operation(&self, name: &str) -> Call {
        Call::get("read the AI Platform operation", format!("v1/{name}"))
    }

    /// The handle of a version found rather than created.
    fn version_name(&self, model: &str, version: &str) -> String {
        format!(
            "projects/{}/models/{model}/versions/{version}",
            self.project
        )
    }
}

/// Checks what AI Platform would refuse before anything is sent: names that
/// cannot be URL segments or AI Platform names, a framework it lacks, a
/// model folder off Cloud Storage, the versions `Version` requires.
fn check(request: &DeployRequest) -> Result<String, RemoteError> {
    for (what, name) in [("model", &request.model), ("version", &request.version)] {
        let shaped = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().count() <= MAX_NAME_CHARS
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !shaped {
            return Err(RemoteError::Permanent(format!(
                "{name:?} is not an AI Platform {what} name (a letter, then letters, digits and underscores)"
            )));
        }
    }
    if !FRAMEWORKS.contains(&request.framework.as_str()) {
        return Err(RemoteError::Permanent(format!(
            "AI Platform serves TENSORFLOW, SCIKIT_LEARN or XGBOOST models, not {:?}",
            request.framework
        )));
    }
    for (key, value) in [
        ("runtime_version", &request.runtime_version),
        ("python_version", &request.python_version),
    ] {
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Err(RemoteError::Permanent(format!(
                "AI Platform needs the deploy's {key} (Version.{})",
                if key == "runtime_version" {
                    "runtimeVersion"
                } else {
                    "pythonVersion"
                }
            )));
        }
    }
    gcs_artifact("AI Platform", request)
}

/// The requests a deploy of `request` sends, in order, without sending any
/// (see the module's "Dry run").
pub fn plan(
    settings: &DeploySettings,
    request: &DeployRequest,
) -> Result<Vec<PlannedRequest>, RemoteError> {
    settings
        .validate()
        .map_err(|e| RemoteError::Permanent(e.to_string()))?;
    let root = settings
        .ml_root()
        .map_err(|e| RemoteError::Permanent(e.to_string()))?;
    let calls = MlCalls {
        project: settings.project.clone(),
        region: settings.region.clone(),
    };
    let uri = check(request)?;
    let operation = format!(
        "projects/{}/operations/{OPERATION_PLACEHOLDER}",
        calls.project
    );
    let mut planned = vec![
        calls.get_model(&request.model),
        calls.create_model(&request.model),
        calls.create_version(request, uri),
        calls.get_operation(&operation),
    ];
    if request.set_default {
        planned.push(calls.set_default(&request.model, &request.version));
    }
    Ok(planned.iter().map(|call| call.planned(&root)).collect())
}

/// What a deploy handle names.
#[derive(Debug, PartialEq)]
enum Handle {
    /// `projects/{p}/operations/{id}`: the operation of a version's create.
    Operation(String),
    /// `projects/{p}/models/{m}/versions/{v}`: a version found by a retried deploy.
    Version { model: String, version: String },
}

impl Handle {
    fn parse(operation: &DeployOperation) -> Option<Self> {
        let name = operation.0.as_str();
        if !is_resource_name(name) {
            return None;
        }
        match name.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", _, "operations", _] => Some(Self::Operation(name.to_owned())),
            ["projects", _, "models", model, "versions", version] => Some(Self::Version {
                model: (*model).to_owned(),
                version: (*version).to_owned(),
            }),
            _ => None,
        }
    }
}

/// Deploys model versions to AI Platform Prediction.
#[derive(Debug, Clone)]
pub struct AiPlatformDeployer {
    api: GoogleApi,
    calls: MlCalls,
    settings: DeploySettings,
}

impl AiPlatformDeployer {
    /// A deployer for `settings`, calling the ml API with tokens from `tokens`.
    pub fn new(settings: DeploySettings, tokens: Arc<dyn TokenSource>) -> Result<Self, SetupError> {
        settings.validate()?;
        let api = GoogleApi::new(settings.ml_root()?, tokens, settings.request_timeout)?;
        let calls = MlCalls {
            project: settings.project.clone(),
            region: settings.region.clone(),
        };
        Ok(Self {
            api,
            calls,
            settings,
        })
    }

    /// Creates the model unless it exists.
    async fn ensure_model(&self, model: &str) -> Result<(), RemoteError> {
        match self.calls.get_model(model).send::<Value>(&self.api).await {
            Ok(_) => return Ok(()),
            Err(error) if error.http_status() == Some(404) => {}
            Err(error) => return Err(error.into()),
        }
        match self
            .calls
            .create_model(model)
            .send::<Value>(&self.api)
            .await
        {
            Ok(_) => {
                tracing::info!(model, region = %self.settings.region, "created the AI Platform model");
                Ok(())
            }
            // Another deploy created it between our GET and POST.
            Err(error) if already_exists(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The version of a retried deploy: it must serve the same folder.
    async fn existing_version(
        &self,
        request: &DeployRequest,
        uri: &str,
    ) -> Result<DeployOperation, RemoteError> {
        let found: VersionView = self
            .calls
            .get_version(&request.model, &request.version)
            .send(&self.api)
            .await?;
        if found.deployment_uri.trim_end_matches('/') != uri.trim_end_matches('/') {
            return Err(RemoteError::Permanent(format!(
                "version {} of model {} exists already and serves {:?}, not {uri:?}: \
                 another deploy owns the name",
                request.version, request.model, found.deployment_uri
            )));
        }
        tracing::info!(
            model = %request.model,
            version = %request.version,
            state = %found.state,
            "the version exists already (a retried deploy): following it"
        );
        Ok(DeployOperation(
            self.calls.version_name(&request.model, &request.version),
        ))
    }

    /// The version's state as the deployment's.
    async fn version_status(&self, request: &DeployRequest) -> Result<DeployStatus, RemoteError> {
        let found: VersionView = self
            .calls
            .get_version(&request.model, &request.version)
            .send(&self.api)
            .await?;
        match found.state.as_str() {
            "READY" => self.finish(request).await,
            "FAILED" => Ok(DeployStatus::Failed {
                message: non_empty(found.error_message, "the version failed without a message"),
            }),
            "DELETING" => Ok(DeployStatus::Failed {
                message: "the version is being deleted".into(),
            }),
            // CREATING, UPDATING, UNKNOWN, or a state added since.
            _ => Ok(DeployStatus::Pending),
        }
    }

    /// What follows a version that is up: the default moved when asked.
    async fn finish(&self, request: &DeployRequest) -> Result<DeployStatus, RemoteError> {
        if request.set_default {
            self.calls
                .set_default(&request.model, &request.version)
                .send::<Value>(&self.api)
                .await?;
        }
        Ok(DeployStatus::Deployed {
            version: request.version.clone(),
        })
    }
}

fn non_empty(text: String, default: &str) -> String {
    if text.trim().is_empty() {
        default.to_owned()
    } else {
        text
    }
}

#[async_trait]
impl Deployer for AiPlatformDeployer {
    async fn deploy(&self, request: &DeployRequest) -> Result<DeployOperation, RemoteError> {
        let uri = check(request)?;
        self.ensure_model(&request.model).await?;
        match self
            .calls
            .create_version(request, uri.clone())
            .send::<Operation>(&self.api)
            .await
        {
            Ok(operation) if is_resource_name(&operation.name) => {
                tracing::info!(
                    model = %request.model,
                    version = %request.version,
                    operation = %operation.name,
                    "creating the AI Platform version"
                );
                Ok(DeployOperation(operation.name))
            }
            // Google took the version but its answer is unusable: the retry
            // this error asks for meets the 409 and follows the version.
            Ok(operation) => Err(RemoteError::transient(format!(
                "AI Platform answered the version's create without a usable operation name: {:?}",
                operation.name.chars().take(200).collect::<String>()
            ))),
            Err(error) if already_exists(&error) => self.existing_version(request, &uri).await,
            Err(error) => Err(error.into()),
        }
    }

    async fn poll(
        &self,
        request: &DeployRequest,
        operation: &DeployOperation,
    ) -> Result<DeployStatus, RemoteError> {
        match Handle::parse(operation) {
            Some(Handle::Operation(name)) => {
                match self
                    .calls
                    .get_operation(&name)
                    .send::<Operation>(&self.api)
                    .await
                {
                    Ok(found) => match found.state() {
                        OperationState::Running => Ok(DeployStatus::Pending),
                        OperationState::Failed(message) => Ok(DeployStatus::Failed { message }),
                        OperationState::Succeeded(_) => self.finish(request).await,
                    },
                    // Google forgets finished operations after a while; the
                    // version itself says how it went.
                    Err(error) if error.http_status() == Some(404) => {
                        self.version_status(request).await
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Some(Handle::Version { model, version })
                if model == request.model && version == request.version =>
            {
                self.version_status(request).await
            }
            _ => Err(RemoteError::Permanent(format!(
                "{:?} is not an AI Platform deployment of version {} of model {}",
                operation.0, request.version, request.model
            ))),
        }
    }

    async fn set_serving(&self, model: &str, version: &str) -> Result<(), RemoteError> {
        segment("model", model)?;
        segment("version", version)?;
        match self
            .calls
            .set_default(model, version)
            .send::<Value>(&self.api)
            .await
        {
            Ok(_) => {
                tracing::info!(model, version, "AI Platform serves the version by default");
                Ok(())
            }
            Err(error) if error.http_status() == Some(404) => Err(RemoteError::Permanent(format!(
                "AI Platform has no version {version} of model {model}"
            ))),
            Err(error) => Err(error.into()),
        }
    }

    async fn serving(&self, model: &str) -> Result<Option<String>, RemoteError> {
        segment("model", model)?;
        match self
            .calls
            .get_model(model)
            .send::<ModelView>(&self.api)
            .await
        {
            Ok(found) => Ok(found
                .default_version
                .and_then(|v| v.name.rsplit('/').next().map(str::to_owned))
                .filter(|name| !name.is_empty())),
            Err(error) if error.http_status() == Some(404) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn plan(&self, request: &DeployRequest) -> Result<Vec<PlannedRequest>, RemoteError> {
        plan(&self.settings, request)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wiremock::matchers::{any, body_json, header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::adapters::gcp::auth::tests::fake_metadata_server;
    use crate::adapters::gcp::auth::{AdcTokenSource, FixedToken};
    use crate::adapters::gcp::deploy::tests::request;
    use crate::adapters::gcp::discovery::{Direction, Discovery, ML_DEPLOY};
    use crate::ports::deployer::wait_for_deploy;
    use crate::util::retry::Backoff;

    /// A change made to a valid request.
    type Change = fn(&mut DeployRequest);

    const TOKEN: &str = "ya29.deploy-token";
    const MODEL: &str = "/v1/projects/demo-project/models/demo_model";
    const MODELS: &str = "/v1/projects/demo-project/models";
    const VERSIONS: &str = "/v1/projects/demo-project/models/demo_model/versions";
    const VERSION: &str =
        "/v1/projects/demo-project/models/demo_model/versions/v20261130t030000z_0123abc";
    /// AI Platform names operations after what they do; the project by number.
    const OPERATION: &str = "projects/123456789012/operations/create_demo_model_v20261130t030000z_0123abc-1764471600000";
    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));

    fn settings(server: &MockServer) -> DeploySettings {
        DeploySettings {
            ml_endpoint: Some(server.uri()),
            poll: FAST,
            ..DeploySettings::new("demo-project", "us-central1")
        }
    }

    fn deployer(server: &MockServer) -> AiPlatformDeployer {
        AiPlatformDeployer::new(settings(server), Arc::new(FixedToken::new(TOKEN)))
            .expect("deployer")
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

    fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(code)
            .set_body_json(json!({"error": {"code": code, "message": message, "status": status}}))
    }

    /// An answer of `method_id`, checked against its response schema.
    fn answer(method_id: &str, body: Value) -> ResponseTemplate {
        let ml = Discovery::load(ML_DEPLOY);
        ml.assert_valid(
            &ml.response_schema(method_id),
            &body,
            Direction::Response,
            &[],
        );
        ResponseTemplate::new(200).set_body_json(body)
    }

    fn operation(done: bool, error: Option<Value>) -> Value {
        let mut body = json!({
            "name": OPERATION,
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.ml.v1.OperationMetadata",
                "createTime": "2026-11-30T03:00:00Z",
                "operationType": "CREATE_VERSION",
                "modelName": "projects/demo-project/models/demo_model",
                "version": {"name": "projects/demo-project/models/demo_model/versions/v20261130t030000z_0123abc"}
            }
        });
        if done {
            body["done"] = json!(true);
        }
        if let Some(error) = error {
            body["error"] = error;
        }
        body
    }

    async fn mount(
        server: &MockServer,
        verb: &str,
        at: &str,
        response: ResponseTemplate,
        times: u64,
    ) {
        Mock::given(method(verb))
            .and(path(at))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(response)
            .expect(times)
            .named(format!("{verb} {at}"))
            .mount(server)
            .await;
    }

    /// Every request the server received, each checked against the ml v1
    /// discovery document: (method id, body).
    async fn checked_requests(server: &MockServer) -> Vec<(String, Option<Value>)> {
        let ml = Discovery::load(ML_DEPLOY);
        let requests: Vec<Request> = server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .map(|r| {
                let body: Option<Value> = serde_json::from_slice(&r.body).ok();
                let id = ml.assert_call(r.method.as_str(), r.url.as_str(), body.as_ref(), &[]);
                (id, body)
            })
            .collect()
    }

    fn version_body() -> Value {
        json!({
            "name": "v20261130t030000z_0123abc",
            "deploymentUri": "gs://nbci-demo/pipelines/p/runs/r/model",
            "runtimeVersion": "2.11",
            "framework": "SCIKIT_LEARN",
            "pythonVersion": "3.7",
            "labels": {
                "created_by": "nbci",
                "nbci-pipeline": "train-and-deploy",
                "nbci-run": "20261130t030000z-0123abc"
            }
        })
    }

    #[tokio::test]
    async fn a_missing_model_is_created_then_the_version_polled_until_done_and_made_default() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount(
            &server,
            "GET",
            MODEL,
            google_error(
                404,
                "NOT_FOUND",
                "Field: name Error: The model resource: \"demo_model\" was not found.",
            ),
            1,
        )
        .await;
        Mock::given(method("POST"))
            .and(path(MODELS))
            .and(body_json(
                json!({"name": "demo_model", "regions": ["us-central1"]}),
            ))
            .respond_with(answer(
                "ml.projects.models.create",
                json!({"name": "projects/demo-project/models/demo_model", "regions": ["us-central1"], "etag": "YWJj"}),
            ))
            .expect(1)
            .mount(&server)
            .await;
        mount(
            &server,
            "POST",
            VERSIONS,
            answer("ml.projects.models.versions.create", operation(false, None)),
            1,
        )
        .await;
        // Pending twice, then done.
        let at = format!("/v1/{OPERATION}");
        Mock::given(method("GET"))
            .and(path(at.as_str()))
            .respond_with(answer("ml.projects.operations.get", operation(false, None)))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        mount(
            &server,
            "GET",
            &at,
            answer("ml.projects.operations.get", operation(true, None)),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            &format!("{VERSION}:setDefault"),
            answer(
                "ml.projects.models.versions.setDefault",
                json!({"name": "projects/demo-project/models/demo_model/versions/v20261130t030000z_0123abc", "isDefault": true, "state": "READY"}),
            ),
            1,
        )
        .await;

        let deployer = deployer(&server);
        let status = wait_for_deploy(&deployer, &request(), FAST, Duration::from_secs(10))
            .await
            .expect("deployed");
        assert_eq!(
            status,
            DeployStatus::Deployed {
                version: "v20261130t030000z_0123abc".into()
            }
        );

        let calls = checked_requests(&server).await;
        let ids: Vec<&str> = calls.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "ml.projects.models.get",
                "ml.projects.models.create",
                "ml.projects.models.versions.create",
                "ml.projects.operations.get",
                "ml.projects.operations.get",
                "ml.projects.operations.get",
                "ml.projects.models.versions.setDefault",
            ]
        );
        assert_eq!(calls[2].1.as_ref(), Some(&version_body()));
    }

    #[tokio::test]
    async fn an_existing_model_gets_a_version_with_its_machine_and_no_default_when_not_asked() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount(
            &server,
            "GET",
            MODEL,
            answer(
                "ml.projects.models.get",
                json!({"name": "projects/demo-project/models/demo_model", "regions": ["us-central1"]}),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            VERSIONS,
            answer("ml.projects.models.versions.create", operation(false, None)),
            1,
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{OPERATION}"),
            answer("ml.projects.operations.get", operation(true, None)),
            1,
        )
        .await;
        let mut request = request();
        request.set_default = false;
        request.machine_type = Some("n1-standard-4".into());
        let deployer = deployer(&server);
        let handle = deployer.deploy(&request).await.expect("started");
        assert_eq!(handle.0, OPERATION, "the name as Google answered it");
        assert_eq!(
            deployer.poll(&request, &handle).await.expect("polled"),
            DeployStatus::Deployed {
                version: request.version.clone()
            }
        );
        let calls = checked_requests(&server).await;
        assert_eq!(
            calls[1].1.as_ref().map(|b| &b["machineType"]),
            Some(&json!("n1-standard-4"))
        );
    }

    #[tokio::test]
    async fn an_operation_pending_twice_then_in_error_fails_with_google_s_message() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let at = format!("/v1/{OPERATION}");
        Mock::given(method("GET"))
            .and(path(at.as_str()))
            .respond_with(answer("ml.projects.operations.get", operation(false, None)))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        let error = json!({
            "code": 3,
            "message": "Create Version failed. Bad model detected with error: \"Failed to load model\""
        });
        mount(
            &server,
            "GET",
            &at,
            answer("ml.projects.operations.get", operation(true, Some(error))),
            1,
        )
        .await;
        let deployer = deployer(&server);
        let handle = DeployOperation(OPERATION.into());
        for _ in 0..2 {
            assert_eq!(
                deployer.poll(&request(), &handle).await.expect("pending"),
                DeployStatus::Pending
            );
        }
        let status = deployer.poll(&request(), &handle).await.expect("polled");
        let DeployStatus::Failed { message } = status else {
            panic!("{status:?}");
        };
        assert!(message.contains("Failed to load model"), "{message}");
        // No setDefault for a failed version: the fallback would have failed.
    }

    #[tokio::test]
    async fn a_retried_create_that_meets_409_follows_the_existing_version() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount(
            &server,
            "GET",
            MODEL,
            answer(
                "ml.projects.models.get",
                json!({"name": "projects/demo-project/models/demo_model"}),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            VERSIONS,
            google_error(
                409,
                "ALREADY_EXISTS",
                "Field: version.name Error: A version with the same name already exists.",
            ),
            1,
        )
        .await;
        // Read by the deploy, then twice by polls: creating, then ready.
        let view = |state: &str| {
            answer(
                "ml.projects.models.versions.get",
                json!({
                    "name": "projects/demo-project/models/demo_model/versions/v20261130t030000z_0123abc",
                    "deploymentUri": "gs://nbci-demo/pipelines/p/runs/r/model/",
                    "state": state,
                    "runtimeVersion": "2.11",
                    "pythonVersion": "3.7",
                    "framework": "SCIKIT_LEARN"
                }),
            )
        };
        Mock::given(method("GET"))
            .and(path(VERSION))
            .respond_with(view("CREATING"))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        mount(&server, "GET", VERSION, view("READY"), 1).await;
        mount(
            &server,
            "POST",
            &format!("{VERSION}:setDefault"),
            answer(
                "ml.projects.models.versions.setDefault",
                json!({"name": "x", "isDefault": true}),
            ),
            1,
        )
        .await;

        let deployer = deployer(&server);
        let request = request();
        let handle = deployer
            .deploy(&request)
            .await
            .expect("the existing version");
        assert_eq!(
            handle.0,
            "projects/demo-project/models/demo_model/versions/v20261130t030000z_0123abc"
        );
        assert_eq!(
            deployer.poll(&request, &handle).await.expect("creating"),
            DeployStatus::Pending
        );
        assert_eq!(
            deployer.poll(&request, &handle).await.expect("ready"),
            DeployStatus::Deployed {
                version: request.version.clone()
            }
        );
        let created: Vec<_> = checked_requests(&server)
            .await
            .into_iter()
            .filter(|(id, _)| id == "ml.projects.models.versions.create")
            .collect();
        assert_eq!(created.len(), 1, "no second create");
    }

    #[tokio::test]
    async fn a_409_for_a_version_of_other_files_is_refused() {
        let server = MockServer::start().await;
        mount(
            &server,
            "GET",
            MODEL,
            answer("ml.projects.models.get", json!({"name": "m"})),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            VERSIONS,
            google_error(409, "ALREADY_EXISTS", "exists"),
            1,
        )
        .await;
        mount(
            &server,
            "GET",
            VERSION,
            answer(
                "ml.projects.models.versions.get",
                json!({"name": "x", "deploymentUri": "gs://elsewhere/model", "state": "READY"}),
            ),
            1,
        )
        .await;
        let error = deployer(&server)
            .deploy(&request())
            .await
            .expect_err("not ours");
        assert!(!error.is_transient());
        assert!(
            error.to_string().contains("gs://elsewhere/model"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_model_created_meanwhile_and_transient_failures_are_told_apart() {
        let server = MockServer::start().await;
        mount(
            &server,
            "GET",
            MODEL,
            google_error(404, "NOT_FOUND", "no"),
            2,
        )
        .await;
        mount(
            &server,
            "POST",
            MODELS,
            google_error(409, "ALREADY_EXISTS", "exists"),
            1,
        )
        .await;
        Mock::given(method("POST"))
            .and(path(VERSIONS))
            .respond_with(google_error(503, "UNAVAILABLE", "try later"))
            .expect(1)
            .mount(&server)
            .await;
        let deployer = deployer(&server);
        let error = deployer.deploy(&request()).await.expect_err("503");
        assert!(error.is_transient(), "{error}");

        // A 409 ABORTED is a conflict worth retrying, not "it exists".
        server.reset().await;
        mount(
            &server,
            "GET",
            MODEL,
            google_error(404, "NOT_FOUND", "no"),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            MODELS,
            google_error(409, "ABORTED", "concurrent"),
            1,
        )
        .await;
        let error = deployer.deploy(&request()).await.expect_err("aborted");
        assert!(error.is_transient(), "{error}");
    }

    #[tokio::test]
    async fn requests_ai_platform_would_refuse_are_not_sent() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let deployer = deployer(&server);
        let cases: [(Change, &str); 5] = [
            (|r| r.framework = "PYTORCH".into(), "PYTORCH"),
            (|r| r.runtime_version = None, "runtime_version"),
            (
                |r| r.artifact_uri = "file:///tmp/model".into(),
                "Cloud Storage",
            ),
            (|r| r.model = "demo-model".into(), "model name"),
            (|r| r.version = "1abc".into(), "version name"),
        ];
        for (change, expected) in cases {
            let mut request = request();
            change(&mut request);
            let error = deployer.deploy(&request).await.expect_err(expected);
            assert!(!error.is_transient());
            assert!(error.to_string().contains(expected), "{error}");
            assert!(deployer.plan(&request).is_err(), "{expected}");
        }
    }

    #[tokio::test]
    async fn rollback_makes_the_old_version_default_and_serving_reads_it() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let old = "/v1/projects/demo-project/models/demo_model/versions/v20261129t030000z_fedcba9";
        mount(
            &server,
            "POST",
            &format!("{old}:setDefault"),
            answer(
                "ml.projects.models.versions.setDefault",
                json!({"name": "projects/demo-project/models/demo_model/versions/v20261129t030000z_fedcba9", "isDefault": true}),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "GET",
            MODEL,
            answer(
                "ml.projects.models.get",
                json!({
                    "name": "projects/demo-project/models/demo_model",
                    "defaultVersion": {"name": "projects/demo-project/models/demo_model/versions/v20261129t030000z_fedcba9"}
                }),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            "/v1/projects/demo-project/models/demo_model/versions/gone:setDefault",
            google_error(404, "NOT_FOUND", "no such version"),
            1,
        )
        .await;
        let deployer = deployer(&server);
        deployer
            .set_serving("demo_model", "v20261129t030000z_fedcba9")
            .await
            .expect("rolled back");
        assert_eq!(
            deployer
                .serving("demo_model")
                .await
                .expect("read")
                .as_deref(),
            Some("v20261129t030000z_fedcba9")
        );
        let error = deployer
            .set_serving("demo_model", "gone")
            .await
            .expect_err("no such version");
        assert!(
            !error.is_transient() && error.to_string().contains("gone"),
            "{error}"
        );
        assert!(deployer.set_serving("demo_model", "../x").await.is_err());
        checked_requests(&server).await;
    }

    #[tokio::test]
    async fn tokens_come_from_application_default_credentials() {
        let metadata = fake_metadata_server("ya29.from-metadata").await;
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        Mock::given(method("GET"))
            .and(path(MODEL))
            .and(header("authorization", "Bearer ya29.from-metadata"))
            .respond_with(answer(
                "ml.projects.models.get",
                json!({"name": "projects/demo-project/models/demo_model"}),
            ))
            .expect(1)
            .mount(&server)
            .await;
        let tokens = AdcTokenSource::from_metadata_server(&metadata.uri()).expect("ADC");
        let deployer =
            AiPlatformDeployer::new(settings(&server), Arc::new(tokens)).expect("deployer");
        assert_eq!(deployer.serving("demo_model").await.expect("read"), None);
    }

    #[test]
    fn the_dry_run_lists_every_request_google_accepts() {
        let settings = DeploySettings::new("demo-project", "europe-west1");
        let planned = plan(&settings, &request()).expect("plan");
        let ml = Discovery::load(ML_DEPLOY);
        let ids: Vec<String> = planned
            .iter()
            .map(|p| ml.assert_call(&p.method, &p.url, p.body.as_ref(), &[]))
            .collect();
        assert_eq!(
            ids,
            [
                "ml.projects.models.get",
                "ml.projects.models.create",
                "ml.projects.models.versions.create",
                "ml.projects.operations.get",
                "ml.projects.models.versions.setDefault",
            ]
        );
        let lines: Vec<String> = planned.iter().map(PlannedRequest::to_json_line).collect();
        assert_eq!(
            lines[0],
            r#"{"method":"GET","url":"https://ml.googleapis.com/v1/projects/demo-project/models/demo_model","body":null}"#
        );
        assert_eq!(
            serde_json::from_str::<Value>(&lines[1]).expect("JSON")["body"],
            json!({"name": "demo_model", "regions": ["europe-west1"]})
        );
        assert_eq!(planned[2].body.as_ref(), Some(&version_body()));
        assert_eq!(
            planned[3].url,
            "https://ml.googleapis.com/v1/projects/demo-project/operations/{OPERATION_ID}"
        );
        assert_eq!(
            planned[4].url,
            "https://ml.googleapis.com/v1/projects/demo-project/models/demo_model/versions/v20261130t030000z_0123abc:setDefault"
        );

        let mut request = request();
        request.set_default = false;
        let endpoint = DeploySettings {
            ml_endpoint: Some("http://127.0.0.1:8089".into()),
            ..settings
        };
        let planned = plan(&endpoint, &request).expect("plan");
        assert_eq!(planned.len(), 4, "no setDefault");
        assert!(
            planned
                .iter()
                .all(|p| p.url.starts_with("http://127.0.0.1:8089/v1/"))
        );
    }

    #[test]
    fn handles_name_an_operation_or_a_version() {
        assert_eq!(
            Handle::parse(&DeployOperation(OPERATION.into())),
            Some(Handle::Operation(OPERATION.into()))
        );
        assert_eq!(
            Handle::parse(&DeployOperation("projects/p/models/m/versions/v1".into())),
            Some(Handle::Version {
                model: "m".into(),
                version: "v1".into()
            })
        );
        for other in [
            "local:m/v1",
            "projects/p/locations/r/endpoints/1",
            "projects/p/../x",
        ] {
            assert_eq!(
                Handle::parse(&DeployOperation(other.into())),
                None,
                "{other}"
            );
        }
    }
}
