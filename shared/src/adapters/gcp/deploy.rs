//! What the AI Platform and Vertex AI deployers share: their settings, the
//! long-running operations both APIs answer with, one call built once and
//! then either sent or printed by the dry run, and the labels and model
//! folders Google accepts.
//!
//! Each deployer builds every request through [`Call`], so the dry run
//! (`nbci pipeline deploy --dry-run`) prints exactly the method, URL and
//! body that a deploy sends: there is one code path for both.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::jobs::{CREATED_BY_LABEL, is_valid_label, label_value};
use super::rest::{ApiError, GoogleApi, SetupError, api_root, check_segment};
use crate::domain::deploy::{DeployRequest, PlannedRequest};
use crate::ports::RemoteError;
use crate::util::retry::Backoff;

/// AI Platform Prediction's global endpoint (models carry their region).
pub const DEFAULT_ML_ROOT: &str = "https://ml.googleapis.com";
/// The machine a Vertex AI deployed model runs on when the spec names none:
/// the smallest general-purpose machine the pre-built containers support.
pub const DEFAULT_SERVING_MACHINE: &str = "n1-standard-2";
/// Between two looks at an operation a deployer waits for in place.
pub const DEFAULT_POLL: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(30));
/// How long a deployer waits in place for an operation that must end
/// before the next request can be built (a Vertex AI model upload, an
/// endpoint's creation); both take seconds to a few minutes.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The placeholder of the dry run for an operation id that only Google's
/// answer gives.
pub const OPERATION_PLACEHOLDER: &str = "{OPERATION_ID}";

/// Where and how models are deployed on Google Cloud: one per service, from
/// its configuration (`GOOGLE_CLOUD_PROJECT`, `NBCI_REGION`, and
/// `NBCI_ML_ENDPOINT` or `NBCI_VERTEX_ENDPOINT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySettings {
    /// The project models are deployed in (its id, as in `projects/{project}/...`).
    pub project: String,
    /// The region models serve from: AI Platform's `regions` of a new model,
    /// Vertex AI's location (and its default endpoint's host).
    pub region: String,
    /// The ml API root instead of Google's (`NBCI_ML_ENDPOINT`: wiremock,
    /// an API-compatible service): `http(s)://host[:port][/path]`, without `/v1`.
    pub ml_endpoint: Option<String>,
    /// The Vertex AI API root instead of `https://{region}-aiplatform.googleapis.com`
    /// (`NBCI_VERTEX_ENDPOINT`), without `/v1`.
    pub vertex_endpoint: Option<String>,
    /// Between looks at an operation a deployer waits for itself.
    pub poll: Backoff,
    /// The longest such wait; past it the deploy fails transiently and is
    /// tried again later, finding what the first attempt created.
    pub operation_timeout: Duration,
    /// Limit of one API call.
    pub request_timeout: Duration,
    /// Vertex AI: the machine of a deployed model when the spec names none.
    pub serving_machine_type: String,
}

impl DeploySettings {
    /// Settings with the defaults for everything but what has none.
    pub fn new(project: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            region: region.into(),
            ml_endpoint: None,
            vertex_endpoint: None,
            poll: DEFAULT_POLL,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            request_timeout: Duration::from_secs(30),
            serving_machine_type: DEFAULT_SERVING_MACHINE.to_owned(),
        }
    }

    /// Checks what would otherwise fail only at the first deploy: the names
    /// that go into URLs, the endpoints.
    pub fn validate(&self) -> Result<(), SetupError> {
        check_segment("GOOGLE_CLOUD_PROJECT", &self.project)?;
        check_segment("NBCI_REGION", &self.region)?;
        self.ml_root()?;
        self.vertex_root()?;
        Ok(())
    }

    /// The ml API root: `NBCI_ML_ENDPOINT`, else Google's.
    pub fn ml_root(&self) -> Result<String, SetupError> {
        api_root(
            "NBCI_ML_ENDPOINT",
            self.ml_endpoint.as_deref(),
            DEFAULT_ML_ROOT.to_owned(),
        )
    }

    /// The Vertex AI API root: `NBCI_VERTEX_ENDPOINT`, else the region's.
    pub fn vertex_root(&self) -> Result<String, SetupError> {
        api_root(
            "NBCI_VERTEX_ENDPOINT",
            self.vertex_endpoint.as_deref(),
            format!("https://{}-aiplatform.googleapis.com", self.region),
        )
    }
}

/// One call to a Google API, built once and then sent or printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// What the call does, for errors and logs ("create the model version").
    pub what: &'static str,
    pub method: Method,
    /// Below the API root: `v1/projects/...`.
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Call {
    pub fn get(what: &'static str, path: String) -> Self {
        Self {
            what,
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn post(what: &'static str, path: String, body: Value) -> Self {
        Self {
            what,
            method: Method::POST,
            path,
            query: Vec::new(),
            body: Some(body),
        }
    }

    pub fn patch(what: &'static str, path: String, body: Value) -> Self {
        Self {
            method: Method::PATCH,
            ..Self::post(what, path, body)
        }
    }

    /// The call with `key=value` added to its query.
    pub fn with_query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    /// The call as the dry run prints it, against the API root `root`; the
    /// query is encoded as reqwest encodes it when the call is sent.
    pub fn planned(&self, root: &str) -> PlannedRequest {
        let mut url = format!("{}/{}", root.trim_end_matches('/'), self.path);
        if !self.query.is_empty() {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(self.query.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            url.push('?');
            url.push_str(&query);
        }
        PlannedRequest {
            method: self.method.to_string(),
            url,
            body: self.body.clone(),
        }
    }

    /// Sends the call; the answer read as `T`.
    pub async fn send<T: DeserializeOwned>(&self, api: &GoogleApi) -> Result<T, ApiError> {
        let query: Vec<(&str, &str)> = self.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        api.call(
            self.what,
            self.method.clone(),
            &self.path,
            &query,
            self.body.as_ref(),
        )
        .await
    }
}

/// A long-running operation as both APIs answer it (ml
/// `GoogleLongrunning__Operation`, aiplatform `GoogleLongrunningOperation`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Operation {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub done: bool,
    pub error: Option<OperationError>,
    pub response: Option<Value>,
}

/// `google.rpc.Status`: why an operation failed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OperationError {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// How an operation stands.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationState {
    Running,
    /// Ended in error: Google's message (with its code when there is no message).
    Failed(String),
    /// Ended well: its `response` (`{}` when it has none).
    Succeeded(Value),
}

impl Operation {
    pub fn state(&self) -> OperationState {
        if let Some(error) = &self.error {
            let message = error.message.trim();
            return OperationState::Failed(if message.is_empty() {
                format!("the operation failed with code {}", error.code)
            } else {
                message.to_owned()
            });
        }
        if !self.done {
            return OperationState::Running;
        }
        OperationState::Succeeded(
            self.response
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
        )
    }
}

/// Waits in place for the operation `name` to end, looking every
/// `settings.poll`: its response when it succeeds; a permanent error with
/// Google's message when it fails; a transient one when it is still running
/// after `settings.operation_timeout` (or Google stays unreachable that
/// long), so that the deploy is tried again later.
pub async fn wait_for_operation(
    api: &GoogleApi,
    settings: &DeploySettings,
    what: &'static str,
    name: &str,
) -> Result<Value, RemoteError> {
    let started = Instant::now();
    let call = Call::get(what, format!("v1/{name}"));
    let mut looks = 0u32;
    loop {
        let error = match call.send::<Operation>(api).await {
            Ok(operation) => match operation.state() {
                OperationState::Succeeded(response) => return Ok(response),
                OperationState::Failed(message) => {
                    return Err(RemoteError::Permanent(format!("{what}: {message}")));
                }
                OperationState::Running => None,
            },
            Err(error) if error.is_transient() => Some(error),
            Err(error) => return Err(error.into()),
        };
        if started.elapsed() >= settings.operation_timeout {
            return Err(RemoteError::transient(match error {
                Some(error) => format!("{what}: {error}"),
                None => format!(
                    "{what}: still running after {}s ({name}); the deploy is tried again later",
                    settings.operation_timeout.as_secs()
                ),
            }));
        }
        looks = looks.saturating_add(1);
        tokio::time::sleep(settings.poll.delay(looks)).await;
    }
}

/// Whether Google refused a create because the resource exists already
/// (`409 ALREADY_EXISTS`; a 409 `ABORTED` is a conflict worth retrying).
pub fn already_exists(error: &ApiError) -> bool {
    error.http_status() == Some(409)
        && matches!(error.google_status(), None | Some("ALREADY_EXISTS"))
}

/// The request's labels as Google accepts them (values lowercased, other
/// characters as `-`; keys Google would refuse are left out, with a
/// warning), and that nbci made the resource.
pub fn google_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut valid = BTreeMap::new();
    for (key, value) in labels {
        let value = label_value(value);
        if is_valid_label(key, &value) {
            valid.insert(key.clone(), value);
        } else {
            tracing::warn!(key, "a label Google would refuse: left out");
        }
    }
    valid.insert(CREATED_BY_LABEL.to_owned(), "nbci".to_owned());
    valid
}

/// The request's model folder, which must be on Cloud Storage: Google's
/// services read the model from there.
pub fn gcs_artifact(target: &str, request: &DeployRequest) -> Result<String, RemoteError> {
    let uri = request.artifact_uri.trim();
    match uri.strip_prefix("gs://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(uri.to_owned()),
        _ => Err(RemoteError::Permanent(format!(
            "{target} reads models from Cloud Storage, and {uri:?} is not a gs:// folder \
             (is NBCI_BUCKET set for this pipeline's runs?)"
        ))),
    }
}

/// `text` as one segment of a URL path, or a permanent error naming `what`.
pub fn segment(what: &'static str, text: &str) -> Result<(), RemoteError> {
    check_segment(what, text).map_err(|e| RemoteError::Permanent(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_name_the_variable_that_is_wrong() {
        let settings = DeploySettings::new("demo-project", "us-central1");
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(
            settings.vertex_root().as_deref(),
            Ok("https://us-central1-aiplatform.googleapis.com")
        );
        assert_eq!(settings.ml_root().as_deref(), Ok(DEFAULT_ML_ROOT));
        for (settings, variable) in [
            (
                DeploySettings::new("a/b", "us-central1"),
                "GOOGLE_CLOUD_PROJECT",
            ),
            (DeploySettings::new("p", ""), "NBCI_REGION"),
            (
                DeploySettings {
                    ml_endpoint: Some("ftp://x".into()),
                    ..DeploySettings::new("p", "r")
                },
                "NBCI_ML_ENDPOINT",
            ),
            (
                DeploySettings {
                    vertex_endpoint: Some("http://x/?q".into()),
                    ..DeploySettings::new("p", "r")
                },
                "NBCI_VERTEX_ENDPOINT",
            ),
        ] {
            let error = settings.validate().expect_err(variable);
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn a_call_prints_as_it_is_sent() {
        let call = Call::get("list", "v1/projects/p/locations/r/models".into())
            .with_query("filter", "display_name=\"demo model\"")
            .with_query("pageSize", "100");
        let planned = call.planned("http://127.0.0.1:9/");
        assert_eq!(planned.method, "GET");
        assert_eq!(
            planned.url,
            "http://127.0.0.1:9/v1/projects/p/locations/r/models?filter=display_name%3D%22demo+model%22&pageSize=100"
        );
        assert_eq!(planned.body, None);
        let post = Call::post("create", "v1/x".into(), json!({"a": 1})).planned("https://h");
        assert_eq!(
            (post.method.as_str(), post.body),
            ("POST", Some(json!({"a": 1})))
        );
        assert_eq!(
            Call::patch("p", "v1/x".into(), json!({}))
                .planned("h")
                .method,
            "PATCH"
        );
    }

    #[test]
    fn operations_read_as_running_failed_or_succeeded() {
        let read = |value: Value| {
            serde_json::from_value::<Operation>(value)
                .expect("operation")
                .state()
        };
        assert_eq!(read(json!({"name": "x"})), OperationState::Running);
        assert_eq!(
            read(json!({"name": "x", "done": true})),
            OperationState::Succeeded(json!({}))
        );
        assert_eq!(
            read(json!({"done": true, "response": {"model": "m"}})),
            OperationState::Succeeded(json!({"model": "m"}))
        );
        assert_eq!(
            read(json!({"done": true, "error": {"code": 3, "message": "bad model"}})),
            OperationState::Failed("bad model".into())
        );
        assert_eq!(
            read(json!({"done": true, "error": {"code": 13}})),
            OperationState::Failed("the operation failed with code 13".into())
        );
    }

    #[test]
    fn labels_are_made_valid_and_say_who_made_them() {
        let labels = google_labels(&BTreeMap::from([
            ("nbci-pipeline".to_owned(), "train-and-deploy".to_owned()),
            ("nbci-run".to_owned(), "20261130T0300Z-ABC".to_owned()),
            ("Bad Key".to_owned(), "x".to_owned()),
        ]));
        assert_eq!(
            labels,
            BTreeMap::from([
                ("created_by".to_owned(), "nbci".to_owned()),
                ("nbci-pipeline".to_owned(), "train-and-deploy".to_owned()),
                ("nbci-run".to_owned(), "20261130t0300z-abc".to_owned()),
            ])
        );
    }

    #[test]
    fn models_must_be_on_cloud_storage() {
        let mut request = crate::adapters::gcp::deploy::tests::request();
        assert_eq!(
            gcs_artifact("AI Platform", &request).as_deref(),
            Ok("gs://nbci-demo/pipelines/p/runs/r/model")
        );
        for bad in ["file:///tmp/model", "gs://", "gs:///x", "/tmp/model"] {
            request.artifact_uri = bad.into();
            let error = gcs_artifact("AI Platform", &request).expect_err(bad);
            assert!(!error.is_transient());
            assert!(error.to_string().contains("Cloud Storage"), "{error}");
        }
    }

    /// The request of the tests of both deployers.
    pub(crate) fn request() -> DeployRequest {
        DeployRequest {
            model: "demo_model".into(),
            version: "v20261130t030000z_0123abc".into(),
            artifact_uri: "gs://nbci-demo/pipelines/p/runs/r/model".into(),
            framework: "SCIKIT_LEARN".into(),
            runtime_version: Some("2.11".into()),
            python_version: Some("3.7".into()),
            machine_type: None,
            image: None,
            set_default: true,
            labels: BTreeMap::from([
                ("nbci-pipeline".to_owned(), "train-and-deploy".to_owned()),
                ("nbci-run".to_owned(), "20261130t030000z-0123abc".to_owned()),
            ]),
            metrics: BTreeMap::from([("accuracy".to_owned(), 0.93)]),
        }
    }
}
