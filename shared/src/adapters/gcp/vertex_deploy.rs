//! Deploying to Vertex AI, the live successor of AI Platform Prediction.
//!
//! A deploy puts the run's model folder in the Model Registry as a new
//! version of the model, and serves it from an endpoint named after the
//! model, with all the traffic; the version that served before stays
//! deployed with none, so that a rollback is a traffic change, not a
//! redeploy:
//!
//! 1. Find the model: `GET v1/{parent}/models?filter=display_name="{model}"`
//!    (`parent` = `projects/{p}/locations/{region}`).
//! 2. Upload the version: `POST v1/{parent}/models:upload` with
//!    `{model: {displayName, artifactUri, containerSpec{imageUri}, labels,
//!    versionAliases}}` and `parentModel` when the model exists (so the
//!    registry gets a new version), else `modelId` (so that two first
//!    deploys cannot make two models). The serving image is the spec's
//!    `image`, else the pre-built CPU container of the framework
//!    ([`prebuilt_image`]). The answer is a long-running operation, waited
//!    for in place (`GET v1/{operation}`, seconds to minutes); its response
//!    names the model and the new version's id.
//! 3. Find the endpoint (`GET v1/{parent}/endpoints?filter=display_name="{model}"`)
//!    or create it (`POST v1/{parent}/endpoints?endpointId={id}`,
//!    long-running, waited for in place).
//! 4. Undeploy the model's deployed versions that get no traffic: they are
//!    neither the one serving nor, after this deploy, the one before it
//!    (`POST v1/{endpoint}:undeployModel`, not waited for: machines of old
//!    versions cost money, and each deploy would otherwise add one).
//! 5. `POST v1/{endpoint}:deployModel` with `deployedModel {model:
//!    {name}@{versionId}, id, displayName: the version, dedicatedResources
//!    {machineSpec, minReplicaCount: 1}}` and `trafficSplit {"0": 100}`
//!    ("0" is Google's name for the model being deployed; every model not in
//!    the map gets 0%): the previous model stays deployed with no traffic.
//!    With `set_default: false` the split is left as it is (the new version
//!    gets none), unless nothing serves yet. The operation's name is the
//!    handle; `poll` reads it (`GET v1/{operation}`) until it is done.
//!
//! A rollback ([`Deployer::set_serving`]) patches the endpoint's
//! `trafficSplit` (`PATCH v1/{endpoint}?updateMask=trafficSplit`) to send
//! everything to the deployed model of the version asked for.
//!
//! # One version and one deployment per run, whatever is retried
//! Every name is derived from the request, so a deploy repeated after an
//! answer was lost finds what the first attempt made instead of making it
//! again: the version by its alias (`GET v1/{model}@{alias}`, the version
//! name with `-` for `_`, since aliases take no `_`), the endpoint by its
//! display name or its id ([`resource_id`]), and the deployed model by its
//! id ([`deployed_model_id`], ten digits from the version's name), which
//! Vertex AI refuses to deploy twice on one endpoint. When the deployed
//! model is there already, or `deployModel` answers 409, the handle is the
//! endpoint's name, and `poll` reads the endpoint until the deployed model
//! shows. What this does not cover: a retry that comes while the first
//! upload is still running (past [`DeploySettings::operation_timeout`])
//! uploads again, and Vertex AI refuses the second upload's alias, which
//! fails the run although the first upload goes on.
//!
//! # Dry run
//! [`plan`] lists the requests of a model's first deploy, the one that
//! sends the most: the model's and the endpoint's lookups, the upload with
//! `modelId`, the endpoint's create, `deployModel`, and one `GET` of each
//! operation (repeated until it is done). Later deploys send `parentModel`
//! instead of `modelId`, look the version up by its alias first, and create
//! no endpoint. Placeholders: `{OPERATION_ID}` for an operation's id and
//! `{VERSION_ID}` for the version id the upload's answer gives. Resource
//! names are spelled with the project id; Google answers with the
//! project's number, and accepts both.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::auth::TokenSource;
use super::deploy::{
    Call, DeploySettings, OPERATION_PLACEHOLDER, Operation, OperationState, already_exists,
    gcs_artifact, google_labels, wait_for_operation,
};
use super::jobs::CREATED_BY_LABEL;
use super::rest::{GoogleApi, SetupError, is_resource_name};
use crate::domain::deploy::{DeployOperation, DeployRequest, DeployStatus, PlannedRequest};
use crate::ports::RemoteError;
use crate::ports::deployer::Deployer;

/// The placeholder of the dry run for the version id the upload gives.
pub const VERSION_PLACEHOLDER: &str = "{VERSION_ID}";
/// Longest display name Vertex AI accepts, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// Models or endpoints per page of a lookup by display name: a display
/// name names one or two of them, so one page is plenty.
const LIST_PAGE_SIZE: &str = "100";
/// Longest model or endpoint id Vertex AI accepts.
const MAX_ID_CHARS: usize = 63;

/// The pre-built CPU serving container of `framework` (Vertex AI's
/// "Prebuilt containers for inference"), from the Artifact Registry
/// repository nearest `region`; `None` for a framework without one. Pinned
/// to one framework version each: a model that needs another names its
/// container with the spec's `image`.
pub fn prebuilt_image(framework: &str, region: &str) -> Option<String> {
    let image = match framework {
        "SCIKIT_LEARN" => "sklearn-cpu.1-3",
        "TENSORFLOW" => "tf2-cpu.2-15",
        "XGBOOST" => "xgboost-cpu.1-7",
        "PYTORCH" => "pytorch-cpu.2-4",
        _ => return None,
    };
    let repository = if ["europe", "me-", "africa"]
        .iter()
        .any(|p| region.starts_with(p))
    {
        "europe"
    } else if ["asia", "australia"].iter().any(|p| region.starts_with(p)) {
        "asia"
    } else {
        "us"
    };
    Some(format!(
        "{repository}-docker.pkg.dev/vertex-ai/prediction/{image}:latest"
    ))
}

/// The version alias of a version name: Vertex AI's aliases are
/// `[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]`, so `_` becomes `-`.
pub fn version_alias(version: &str) -> String {
    version.replace('_', "-")
}

fn is_alias(alias: &str) -> bool {
    let bytes = alias.as_bytes();
    bytes.len() >= 2
        && bytes.len() <= 128
        && bytes[0].is_ascii_lowercase()
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// The id nbci gives the Vertex AI model and endpoint it creates for the
/// model `model` (any display name): `nbci-`, the name in lowercase letters,
/// digits and `-`, then 8 hex digits of its hash, so that two display names
/// never share an id; valid as both a model id and an endpoint id.
pub fn resource_id(model: &str) -> String {
    let hash = hex::encode(&Sha256::digest(model.as_bytes())[..4]);
    let mut slug = String::new();
    for c in model.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (slug.is_empty() || slug.ends_with('-'))) {
            slug.push(c);
        }
    }
    // All ASCII: any byte index is a character boundary.
    let room = MAX_ID_CHARS - "nbci-".len() - 1 - hash.len();
    let slug = slug[..slug.len().min(room)].trim_end_matches('-');
    if slug.is_empty() {
        format!("nbci-{hash}")
    } else {
        format!("nbci-{slug}-{hash}")
    }
}

/// The id of the deployed model of `version`: ten digits (Vertex AI takes
/// 1 to 10 digits), no leading zero, from the version name's hash, so the
/// same version always gets the same id and Vertex AI refuses a second
/// deployment of it on the endpoint.
pub fn deployed_model_id(version: &str) -> String {
    let digest = Sha256::digest(version.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let number = u64::from_be_bytes(bytes) % 9_000_000_000 + 1_000_000_000;
    number.to_string()
}

/// The id a model's resource name ends with (`projects/1/.../models/42@3` -> `42`).
fn model_id(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    name.rsplit('/').next().unwrap_or(name)
}

/// What nbci reads of a Model Google answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelView {
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    version_id: String,
    #[serde(default)]
    create_time: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListModels {
    #[serde(default)]
    models: Vec<ModelView>,
}

/// `UploadModelResponse`: the model and its new version.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Uploaded {
    #[serde(default)]
    model: String,
    #[serde(default)]
    model_version_id: String,
}

/// What nbci reads of an Endpoint Google answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointView {
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    create_time: String,
    #[serde(default)]
    deployed_models: Vec<DeployedModelView>,
    /// DeployedModel id -> percent of the traffic.
    #[serde(default)]
    traffic_split: BTreeMap<String, i64>,
}

impl EndpointView {
    fn traffic(&self, id: &str) -> i64 {
        self.traffic_split.get(id).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeployedModelView {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    display_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListEndpoints {
    #[serde(default)]
    endpoints: Vec<EndpointView>,
}

/// Where an upload puts the version.
#[derive(Debug, Clone, PartialEq)]
enum UploadInto {
    /// A new model with this id.
    New(String),
    /// A new version of this model (its resource name).
    Parent(String),
}

/// The aiplatform v1 calls of a deploy, built without sending anything:
/// what [`VertexDeployer`] sends and [`plan`] prints.
#[derive(Debug, Clone)]
struct VertexCalls {
    project: String,
    region: String,
    serving_machine_type: String,
}

impl From<&DeploySettings> for VertexCalls {
    fn from(settings: &DeploySettings) -> Self {
        Self {
            project: settings.project.clone(),
            region: settings.region.clone(),
            serving_machine_type: settings.serving_machine_type.clone(),
        }
    }
}

impl VertexCalls {
    fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }

    /// `display_name="..."`, quoted as Google's list filters quote.
    fn display_name_filter(display_name: &str) -> String {
        let escaped = display_name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("display_name=\"{escaped}\"")
    }

    fn list_models(&self, display_name: &str) -> Call {
        Call::get(
            "look the Vertex AI model up",
            format!("v1/{}/models", self.parent()),
        )
        .with_query("filter", Self::display_name_filter(display_name))
        .with_query("pageSize", LIST_PAGE_SIZE)
    }

    fn get_model_version(&self, model: &str, alias: &str) -> Call {
        Call::get(
            "look the Vertex AI model version up",
            format!("v1/{model}@{alias}"),
        )
    }

    fn upload(&self, request: &DeployRequest, image: &str, into: &UploadInto) -> Call {
        let mut body = json!({
            "model": {
                "displayName": request.model,
                "artifactUri": request.artifact_uri.trim(),
                "containerSpec": {"imageUri": image},
                "labels": google_labels(&request.labels),
                "versionAliases": [version_alias(&request.version)],
            }
        });
        match into {
            UploadInto::New(id) => body["modelId"] = json!(id),
            UploadInto::Parent(name) => body["parentModel"] = json!(name),
        }
        Call::post(
            "upload the model to Vertex AI",
            format!("v1/{}/models:upload", self.parent()),
            body,
        )
    }

    fn get_operation(&self, what: &'static str, name: &str) -> Call {
        Call::get(what, format!("v1/{name}"))
    }

    fn list_endpoints(&self, display_name: &str) -> Call {
        Call::get(
            "look the Vertex AI endpoint up",
            format!("v1/{}/endpoints", self.parent()),
        )
        .with_query("filter", Self::display_name_filter(display_name))
        .with_query("pageSize", LIST_PAGE_SIZE)
    }

    fn create_endpoint(&self, model: &str) -> Call {
        Call::post(
            "create the Vertex AI endpoint",
            format!("v1/{}/endpoints", self.parent()),
            json!({
                "displayName": model,
                "labels": {CREATED_BY_LABEL: "nbci"},
            }),
        )
        .with_query("endpointId", resource_id(model))
    }

    fn get_endpoint(&self, name: &str) -> Call {
        Call::get("read the Vertex AI endpoint", format!("v1/{name}"))
    }

    fn deploy_model(
        &self,
        endpoint: &str,
        model_version: &str,
        request: &DeployRequest,
        route_traffic: bool,
    ) -> Call {
        let machine_type = request
            .machine_type
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.serving_machine_type);
        let mut body = json!({
            "deployedModel": {
                "model": model_version,
                "id": deployed_model_id(&request.version),
                "displayName": request.version,
                "dedicatedResources": {
                    "machineSpec": {"machineType": machine_type},
                    "minReplicaCount": 1,
                },
            }
        });
        if route_traffic {
            body["trafficSplit"] = json!({"0": 100});
        }
        Call::post(
            "deploy the model on the Vertex AI endpoint",
            format!("v1/{endpoint}:deployModel"),
            body,
        )
    }

    fn undeploy_model(&self, endpoint: &str, id: &str) -> Call {
        Call::post(
            "undeploy an old version from the Vertex AI endpoint",
            format!("v1/{endpoint}:undeployModel"),
            json!({"deployedModelId": id}),
        )
    }

    fn route_all_traffic(&self, endpoint: &EndpointView, id: &str) -> Call {
        Call::patch(
            "move the Vertex AI endpoint's traffic",
            format!("v1/{}", endpoint.name),
            json!({
                "displayName": endpoint.display_name,
                "trafficSplit": {id: 100},
            }),
        )
        .with_query("updateMask", "trafficSplit")
    }
}

/// Checks what Vertex AI would refuse before anything is sent; the serving
/// image.
fn check(calls: &VertexCalls, request: &DeployRequest) -> Result<String, RemoteError> {
    if request.model.trim().is_empty()
        || request.model.chars().count() > MAX_DISPLAY_NAME_CHARS
        || request.model.chars().any(char::is_control)
    {
        return Err(RemoteError::Permanent(format!(
            "{:?} is not a Vertex AI display name (1 to 128 characters)",
            request.model
        )));
    }
    if !is_alias(&version_alias(&request.version)) {
        return Err(RemoteError::Permanent(format!(
            "{:?} cannot be a Vertex AI version alias (a lowercase letter, then letters, digits, `-` or `_`)",
            request.version
        )));
    }
    gcs_artifact("Vertex AI", request)?;
    match request.image.as_deref().map(str::trim) {
        Some(image) if !image.is_empty() => Ok(image.to_owned()),
        _ => prebuilt_image(&request.framework, &calls.region).ok_or_else(|| {
            RemoteError::Permanent(format!(
                "Vertex AI has no pre-built serving container for {:?}: name one with the deploy's `image`",
                request.framework
            ))
        }),
    }
}

/// The requests of a model's first deploy, in order, without sending any
/// (see the module's "Dry run").
pub fn plan(
    settings: &DeploySettings,
    request: &DeployRequest,
) -> Result<Vec<PlannedRequest>, RemoteError> {
    settings
        .validate()
        .map_err(|e| RemoteError::Permanent(e.to_string()))?;
    let root = settings
        .vertex_root()
        .map_err(|e| RemoteError::Permanent(e.to_string()))?;
    let calls = VertexCalls::from(settings);
    let image = check(&calls, request)?;
    let id = resource_id(&request.model);
    let model = format!("{}/models/{id}", calls.parent());
    let endpoint = format!("{}/endpoints/{id}", calls.parent());
    let planned = [
        calls.list_models(&request.model),
        calls.upload(request, &image, &UploadInto::New(id.clone())),
        calls.get_operation(
            "read the upload",
            &format!("{model}/operations/{OPERATION_PLACEHOLDER}"),
        ),
        calls.list_endpoints(&request.model),
        calls.create_endpoint(&request.model),
        calls.get_operation(
            "read the endpoint's creation",
            &format!("{endpoint}/operations/{OPERATION_PLACEHOLDER}"),
        ),
        calls.deploy_model(
            &endpoint,
            &format!("{model}@{VERSION_PLACEHOLDER}"),
            request,
            true,
        ),
        calls.get_operation(
            "read the deployment",
            &format!("{endpoint}/operations/{OPERATION_PLACEHOLDER}"),
        ),
    ];
    Ok(planned.iter().map(|call| call.planned(&root)).collect())
}

/// Of the resources listed, the one a display name means: nbci's own (by
/// its id) when it is there, else the oldest, so the choice never changes.
/// `fields` gives (resource name, display name, creation time).
fn pick<T: Clone>(
    found: &[T],
    display_name: &str,
    fields: impl Fn(&T) -> (&str, &str, &str),
) -> Option<T> {
    let own = resource_id(display_name);
    let mut candidates: Vec<&T> = found
        .iter()
        .filter(|item| {
            let (name, display, _) = fields(item);
            // The filter is the server's to apply: check it.
            display == display_name && is_resource_name(name)
        })
        .collect();
    candidates.sort_by(|a, b| fields(a).2.cmp(fields(b).2));
    candidates
        .iter()
        .find(|item| model_id(fields(item).0) == own)
        .or(candidates.first())
        .map(|item| (*item).clone())
}

/// What a deploy handle names.
#[derive(Debug, PartialEq)]
enum Handle {
    /// `.../endpoints/{e}/operations/{o}`: the operation of a `deployModel`.
    Operation { endpoint: String, name: String },
    /// `.../endpoints/{e}`: an endpoint where the model is (being) deployed.
    Endpoint(String),
}

impl Handle {
    fn parse(operation: &DeployOperation) -> Option<Self> {
        let name = operation.0.as_str();
        if !is_resource_name(name) {
            return None;
        }
        match name.split('/').collect::<Vec<_>>().as_slice() {
            [
                "projects",
                _,
                "locations",
                _,
                "endpoints",
                _,
                "operations",
                _,
            ] => {
                let endpoint = name.rsplitn(3, '/').nth(2)?.to_owned();
                Some(Self::Operation {
                    endpoint,
                    name: name.to_owned(),
                })
            }
            ["projects", _, "locations", _, "endpoints", _] => {
                Some(Self::Endpoint(name.to_owned()))
            }
            _ => None,
        }
    }
}

/// Deploys models to Vertex AI endpoints.
#[derive(Debug, Clone)]
pub struct VertexDeployer {
    api: GoogleApi,
    calls: VertexCalls,
    settings: DeploySettings,
}

impl VertexDeployer {
    /// A deployer for `settings`, calling Vertex AI with tokens from `tokens`.
    pub fn new(settings: DeploySettings, tokens: Arc<dyn TokenSource>) -> Result<Self, SetupError> {
        settings.validate()?;
        let api = GoogleApi::new(settings.vertex_root()?, tokens, settings.request_timeout)?;
        Ok(Self {
            api,
            calls: VertexCalls::from(&settings),
            settings,
        })
    }

    /// The model of that display name, if there is one.
    async fn find_model(&self, display_name: &str) -> Result<Option<ModelView>, RemoteError> {
        let list: ListModels = self.calls.list_models(display_name).send(&self.api).await?;
        Ok(pick(&list.models, display_name, |m| {
            (
                m.name.as_str(),
                m.display_name.as_str(),
                m.create_time.as_str(),
            )
        }))
    }

    /// Where the request's version stands in the registry: the model of its
    /// display name, if there is one, and (model, version id) when the
    /// version was uploaded already.
    async fn find_version(&self, request: &DeployRequest) -> Result<VersionLookup, RemoteError> {
        let Some(model) = self.find_model(&request.model).await? else {
            return Ok(VersionLookup::NoModel);
        };
        let alias = version_alias(&request.version);
        match self
            .calls
            .get_model_version(&model.name, &alias)
            .send::<ModelView>(&self.api)
            .await
        {
            Ok(found) if !found.version_id.is_empty() => {
                Ok(VersionLookup::Uploaded(model.name, found.version_id))
            }
            Ok(_) => Err(RemoteError::transient(format!(
                "Vertex AI answered {}@{alias} without a version id",
                model.name
            ))),
            Err(error) if error.http_status() == Some(404) => {
                Ok(VersionLookup::NoVersion(model.name))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The model version of the request, uploaded unless it was: (model, version id).
    async fn ensure_version(
        &self,
        request: &DeployRequest,
        image: &str,
    ) -> Result<(String, String), RemoteError> {
        let into = match self.find_version(request).await? {
            VersionLookup::Uploaded(model, version) => {
                tracing::info!(%model, %version, "the version was uploaded already");
                return Ok((model, version));
            }
            VersionLookup::NoVersion(parent) => UploadInto::Parent(parent),
            VersionLookup::NoModel => UploadInto::New(resource_id(&request.model)),
        };
        let operation = match self
            .calls
            .upload(request, image, &into)
            .send::<Operation>(&self.api)
            .await
        {
            Ok(operation) => operation,
            Err(error) => {
                // An earlier attempt's upload may have made the version (or
                // the model) meanwhile: then that one is ours.
                if let Ok(VersionLookup::Uploaded(model, version)) =
                    self.find_version(request).await
                {
                    return Ok((model, version));
                }
                return Err(error.into());
            }
        };
        let response = match operation.state() {
            OperationState::Succeeded(response) => response,
            OperationState::Failed(message) => {
                return Err(RemoteError::Permanent(format!(
                    "Vertex AI refused the model upload: {message}"
                )));
            }
            OperationState::Running if is_resource_name(&operation.name) => {
                wait_for_operation(
                    &self.api,
                    &self.settings,
                    "upload the model to Vertex AI",
                    &operation.name,
                )
                .await?
            }
            OperationState::Running => {
                return Err(RemoteError::transient(
                    "Vertex AI answered the upload without a usable operation name",
                ));
            }
        };
        let uploaded: Uploaded = serde_json::from_value(response).unwrap_or_default();
        if !is_resource_name(&uploaded.model) || uploaded.model_version_id.is_empty() {
            return Err(RemoteError::transient(format!(
                "the upload's answer names no model version: {:?}@{:?}",
                uploaded.model, uploaded.model_version_id
            )));
        }
        tracing::info!(
            model = %uploaded.model,
            version = %uploaded.model_version_id,
            "uploaded the model to Vertex AI"
        );
        Ok((uploaded.model, uploaded.model_version_id))
    }

    /// The endpoint of that display name, if there is one.
    async fn find_endpoint(&self, display_name: &str) -> Result<Option<EndpointView>, RemoteError> {
        let list: ListEndpoints = self
            .calls
            .list_endpoints(display_name)
            .send(&self.api)
            .await?;
        Ok(pick(&list.endpoints, display_name, |e| {
            (
                e.name.as_str(),
                e.display_name.as_str(),
                e.create_time.as_str(),
            )
        }))
    }

    /// The model's endpoint, created unless it exists.
    async fn ensure_endpoint(&self, model: &str) -> Result<EndpointView, RemoteError> {
        if let Some(found) = self.find_endpoint(model).await? {
            return Ok(found);
        }
        let operation = match self
            .calls
            .create_endpoint(model)
            .send::<Operation>(&self.api)
            .await
        {
            Ok(operation) => operation,
            // An earlier attempt created it: it has nbci's id for the model.
            Err(error) if already_exists(&error) => {
                let name = format!("{}/endpoints/{}", self.calls.parent(), resource_id(model));
                return Ok(self.calls.get_endpoint(&name).send(&self.api).await?);
            }
            Err(error) => return Err(error.into()),
        };
        let response = match operation.state() {
            OperationState::Succeeded(response) => response,
            OperationState::Failed(message) => {
                return Err(RemoteError::Permanent(format!(
                    "Vertex AI refused to create the endpoint: {message}"
                )));
            }
            OperationState::Running if is_resource_name(&operation.name) => {
                wait_for_operation(
                    &self.api,
                    &self.settings,
                    "create the Vertex AI endpoint",
                    &operation.name,
                )
                .await?
            }
            OperationState::Running => {
                return Err(RemoteError::transient(
                    "Vertex AI answered the endpoint's creation without a usable operation name",
                ));
            }
        };
        let created: EndpointView = serde_json::from_value(response).unwrap_or_default();
        if !is_resource_name(&created.name) {
            return Err(RemoteError::transient(
                "the endpoint's creation answered no usable endpoint name",
            ));
        }
        tracing::info!(endpoint = %created.name, "created the Vertex AI endpoint");
        Ok(created)
    }

    /// Undeploys the model's deployed versions that get no traffic (step 4
    /// of the module's list). Not waited for, and a failure only logged:
    /// the deploy does not depend on it, and the next one tries again.
    async fn undeploy_idle(&self, endpoint: &EndpointView, model: &str) {
        for idle in endpoint
            .deployed_models
            .iter()
            .filter(|d| model_id(&d.model) == model_id(model) && endpoint.traffic(&d.id) == 0)
        {
            match self
                .calls
                .undeploy_model(&endpoint.name, &idle.id)
                .send::<Operation>(&self.api)
                .await
            {
                Ok(_) => tracing::info!(
                    endpoint = %endpoint.name,
                    deployed_model = %idle.id,
                    version = %idle.display_name,
                    "undeploying a version that gets no traffic"
                ),
                Err(error) => tracing::warn!(
                    endpoint = %endpoint.name,
                    deployed_model = %idle.id,
                    %error,
                    "could not undeploy a version that gets no traffic"
                ),
            }
        }
    }

    /// Where a deployment found on the endpoint stands.
    async fn endpoint_status(
        &self,
        endpoint: &str,
        request: &DeployRequest,
    ) -> Result<DeployStatus, RemoteError> {
        let found: EndpointView = self.calls.get_endpoint(endpoint).send(&self.api).await?;
        let id = deployed_model_id(&request.version);
        if found.deployed_models.iter().any(|d| d.id == id) {
            Ok(DeployStatus::Deployed {
                version: request.version.clone(),
            })
        } else {
            Ok(DeployStatus::Pending)
        }
    }
}

/// What the registry holds of a request's version.
#[derive(Debug)]
enum VersionLookup {
    /// No model of the display name.
    NoModel,
    /// The model (its resource name), without the version.
    NoVersion(String),
    /// The model and the version's id.
    Uploaded(String, String),
}

#[async_trait]
impl Deployer for VertexDeployer {
    async fn deploy(&self, request: &DeployRequest) -> Result<DeployOperation, RemoteError> {
        let image = check(&self.calls, request)?;
        let (model, version_id) = self.ensure_version(request, &image).await?;
        let endpoint = self.ensure_endpoint(&request.model).await?;
        let id = deployed_model_id(&request.version);
        if endpoint.deployed_models.iter().any(|d| d.id == id) {
            tracing::info!(endpoint = %endpoint.name, deployed_model = %id, "the version is deployed already");
            return Ok(DeployOperation(endpoint.name));
        }
        self.undeploy_idle(&endpoint, &model).await;
        let serves_nothing = endpoint.traffic_split.values().all(|percent| *percent == 0);
        let call = self.calls.deploy_model(
            &endpoint.name,
            &format!("{model}@{version_id}"),
            request,
            request.set_default || serves_nothing,
        );
        match call.send::<Operation>(&self.api).await {
            Ok(operation) if is_resource_name(&operation.name) => {
                tracing::info!(endpoint = %endpoint.name, operation = %operation.name, "deploying on Vertex AI");
                Ok(DeployOperation(operation.name))
            }
            // Taken but answered unusably, or deployed or being deployed by
            // an earlier attempt whose answer was lost: the endpoint will
            // show the deployed model.
            Ok(_) => Ok(DeployOperation(endpoint.name)),
            Err(error) if already_exists(&error) => Ok(DeployOperation(endpoint.name)),
            Err(error) => Err(error.into()),
        }
    }

    async fn poll(
        &self,
        request: &DeployRequest,
        operation: &DeployOperation,
    ) -> Result<DeployStatus, RemoteError> {
        match Handle::parse(operation) {
            Some(Handle::Operation { endpoint, name }) => {
                match self
                    .calls
                    .get_operation("read the Vertex AI deployment", &name)
                    .send::<Operation>(&self.api)
                    .await
                {
                    Ok(found) => Ok(match found.state() {
                        OperationState::Running => DeployStatus::Pending,
                        OperationState::Failed(message) => DeployStatus::Failed { message },
                        OperationState::Succeeded(_) => DeployStatus::Deployed {
                            version: request.version.clone(),
                        },
                    }),
                    // An operation Google no longer keeps: the endpoint tells.
                    Err(error) if error.http_status() == Some(404) => {
                        self.endpoint_status(&endpoint, request).await
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Some(Handle::Endpoint(endpoint)) => self.endpoint_status(&endpoint, request).await,
            None => Err(RemoteError::Permanent(format!(
                "{:?} is not a Vertex AI deployment",
                operation.0
            ))),
        }
    }

    async fn set_serving(&self, model: &str, version: &str) -> Result<(), RemoteError> {
        let Some(endpoint) = self.find_endpoint(model).await? else {
            return Err(RemoteError::Permanent(format!(
                "Vertex AI has no endpoint for model {model:?}"
            )));
        };
        let id = deployed_model_id(version);
        let Some(target) = endpoint
            .deployed_models
            .iter()
            .find(|d| d.id == id || d.display_name == version)
        else {
            return Err(RemoteError::Permanent(format!(
                "version {version} of model {model:?} is not deployed on {} (only the version \
                 serving and the one before it are kept)",
                endpoint.name
            )));
        };
        self.calls
            .route_all_traffic(&endpoint, &target.id)
            .send::<Value>(&self.api)
            .await?;
        tracing::info!(endpoint = %endpoint.name, version, "all traffic to the version");
        Ok(())
    }

    async fn serving(&self, model: &str) -> Result<Option<String>, RemoteError> {
        let Some(endpoint) = self.find_endpoint(model).await? else {
            return Ok(None);
        };
        Ok(endpoint
            .deployed_models
            .iter()
            .filter(|d| endpoint.traffic(&d.id) > 0)
            .max_by_key(|d| endpoint.traffic(&d.id))
            .map(|d| {
                if d.display_name.is_empty() {
                    d.id.clone()
                } else {
                    d.display_name.clone()
                }
            }))
    }

    fn plan(&self, request: &DeployRequest) -> Result<Vec<PlannedRequest>, RemoteError> {
        plan(&self.settings, request)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wiremock::matchers::{any, header, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::adapters::gcp::auth::FixedToken;
    use crate::adapters::gcp::deploy::tests::request;
    use crate::adapters::gcp::discovery::{AIPLATFORM_DEPLOY, Direction, Discovery};
    use crate::ports::deployer::wait_for_deploy;
    use crate::util::retry::Backoff;

    /// A change made to a valid request.
    type Change = fn(&mut DeployRequest);

    const TOKEN: &str = "ya29.vertex-deploy";
    const PARENT: &str = "projects/demo-project/locations/us-central1";
    /// Google names the project by number in what it answers.
    const MODEL: &str = "projects/123456789012/locations/us-central1/models/nbci-demo-model-1";
    const ENDPOINT: &str = "projects/123456789012/locations/us-central1/endpoints/4242";
    const UPLOAD_OP: &str =
        "projects/123456789012/locations/us-central1/models/nbci-demo-model-1/operations/77";
    const CREATE_OP: &str =
        "projects/123456789012/locations/us-central1/endpoints/4242/operations/78";
    const DEPLOY_OP: &str =
        "projects/123456789012/locations/us-central1/endpoints/4242/operations/79";
    const OLD_VERSION: &str = "v20261129t030000z_fedcba9";
    const OLDER_VERSION: &str = "v20261128t030000z_aaaaaaa";
    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));

    fn deployer(server: &MockServer) -> VertexDeployer {
        let settings = DeploySettings {
            vertex_endpoint: Some(server.uri()),
            poll: FAST,
            ..DeploySettings::new("demo-project", "us-central1")
        };
        VertexDeployer::new(settings, Arc::new(FixedToken::new(TOKEN))).expect("deployer")
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

    fn google_error(code: u16, status: &str) -> ResponseTemplate {
        ResponseTemplate::new(code).set_body_json(json!({"error": {
            "code": code,
            "message": format!("{status} from the test"),
            "status": status
        }}))
    }

    /// An answer of `method_id`, checked against its response schema.
    fn answer(method_id: &str, body: Value) -> ResponseTemplate {
        let discovery = Discovery::load(AIPLATFORM_DEPLOY);
        discovery.assert_valid(
            &discovery.response_schema(method_id),
            &body,
            Direction::Response,
            &[],
        );
        ResponseTemplate::new(200).set_body_json(body)
    }

    /// A long-running operation, done with `response` (checked as its
    /// schema, then given its `@type`) or still running.
    fn operation(name: &str, done: Option<(&str, Value)>) -> Value {
        let Some((schema, response)) = done else {
            return json!({"name": name});
        };
        Discovery::load(AIPLATFORM_DEPLOY).assert_valid(
            schema,
            &response,
            Direction::Response,
            &[],
        );
        let mut typed = response;
        typed["@type"] = json!(format!(
            "type.googleapis.com/google.cloud.aiplatform.v1.{}",
            schema.trim_start_matches("GoogleCloudAiplatformV1")
        ));
        json!({"name": name, "done": true, "response": typed})
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

    /// `GET at` answers `first` `times` times, then `then` `then_times` times.
    async fn mount_sequence(
        server: &MockServer,
        at: &str,
        (first, times): (ResponseTemplate, u64),
        (then, then_times): (ResponseTemplate, u64),
    ) {
        Mock::given(method("GET"))
            .and(path(at))
            .respond_with(first)
            .up_to_n_times(times)
            .expect(times)
            .mount(server)
            .await;
        mount(server, "GET", at, then, then_times).await;
    }

    async fn mount_list(server: &MockServer, kind: &str, body: Value) {
        let method_id = format!("aiplatform.projects.locations.{kind}.list");
        Mock::given(method("GET"))
            .and(path(format!("/v1/{PARENT}/{kind}")))
            .and(query_param("filter", "display_name=\"demo_model\""))
            .respond_with(answer(&method_id, body))
            .named(format!("list {kind}"))
            .mount(server)
            .await;
    }

    /// The endpoint with `deployed` (version, percent of the traffic).
    fn endpoint(deployed: &[(&str, i64)]) -> Value {
        let deployed_models: Vec<Value> = deployed
            .iter()
            .map(|(version, _)| {
                json!({
                    "id": deployed_model_id(version),
                    "model": MODEL,
                    "modelVersionId": "1",
                    "displayName": version,
                    "dedicatedResources": {
                        "machineSpec": {"machineType": "n1-standard-2"},
                        "minReplicaCount": 1
                    }
                })
            })
            .collect();
        let split: serde_json::Map<String, Value> = deployed
            .iter()
            .map(|(version, percent)| (deployed_model_id(version), json!(percent)))
            .collect();
        json!({
            "name": ENDPOINT,
            "displayName": "demo_model",
            "createTime": "2026-11-01T03:00:00Z",
            "deployedModels": deployed_models,
            "trafficSplit": split
        })
    }

    /// Every request the server received, each checked against the
    /// aiplatform v1 discovery document: (method id, body).
    async fn checked_requests(server: &MockServer) -> Vec<(String, Option<Value>)> {
        let discovery = Discovery::load(AIPLATFORM_DEPLOY);
        let requests: Vec<Request> = server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .map(|r| {
                let body: Option<Value> = serde_json::from_slice(&r.body).ok();
                let id =
                    discovery.assert_call(r.method.as_str(), r.url.as_str(), body.as_ref(), &[]);
                (id, body)
            })
            .collect()
    }

    fn body_of<'a>(calls: &'a [(String, Option<Value>)], id: &str) -> &'a Value {
        calls
            .iter()
            .find(|(i, _)| i == id)
            .and_then(|(_, body)| body.as_ref())
            .unwrap_or_else(|| panic!("no {id} with a body"))
    }

    #[tokio::test]
    async fn a_first_deploy_uploads_creates_the_endpoint_and_deploys_with_all_traffic() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(&server, "models", json!({})).await;
        mount(
            &server,
            "POST",
            &format!("/v1/{PARENT}/models:upload"),
            answer(
                "aiplatform.projects.locations.models.upload",
                operation(UPLOAD_OP, None),
            ),
            1,
        )
        .await;
        let uploaded = json!({"model": MODEL, "modelVersionId": "1"});
        mount_sequence(
            &server,
            &format!("/v1/{UPLOAD_OP}"),
            (
                answer(
                    "aiplatform.projects.locations.models.operations.get",
                    operation(UPLOAD_OP, None),
                ),
                1,
            ),
            (
                answer(
                    "aiplatform.projects.locations.models.operations.get",
                    operation(
                        UPLOAD_OP,
                        Some(("GoogleCloudAiplatformV1UploadModelResponse", uploaded)),
                    ),
                ),
                1,
            ),
        )
        .await;
        mount_list(&server, "endpoints", json!({"endpoints": []})).await;
        Mock::given(method("POST"))
            .and(path(format!("/v1/{PARENT}/endpoints")))
            .and(query_param(
                "endpointId",
                resource_id("demo_model").as_str(),
            ))
            .respond_with(answer(
                "aiplatform.projects.locations.endpoints.create",
                operation(CREATE_OP, None),
            ))
            .expect(1)
            .mount(&server)
            .await;
        let created = json!({"name": ENDPOINT, "displayName": "demo_model"});
        mount(
            &server,
            "GET",
            &format!("/v1/{CREATE_OP}"),
            answer(
                "aiplatform.projects.locations.endpoints.operations.get",
                operation(
                    CREATE_OP,
                    Some(("GoogleCloudAiplatformV1Endpoint", created)),
                ),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            &format!("/v1/{ENDPOINT}:deployModel"),
            answer(
                "aiplatform.projects.locations.endpoints.deployModel",
                operation(DEPLOY_OP, None),
            ),
            1,
        )
        .await;
        // Pending twice, then done.
        let deployed = json!({"deployedModel": {
            "id": deployed_model_id(&request().version),
            "model": MODEL
        }});
        mount_sequence(
            &server,
            &format!("/v1/{DEPLOY_OP}"),
            (
                answer(
                    "aiplatform.projects.locations.endpoints.operations.get",
                    operation(DEPLOY_OP, None),
                ),
                2,
            ),
            (
                answer(
                    "aiplatform.projects.locations.endpoints.operations.get",
                    operation(
                        DEPLOY_OP,
                        Some(("GoogleCloudAiplatformV1DeployModelResponse", deployed)),
                    ),
                ),
                1,
            ),
        )
        .await;

        let deployer = deployer(&server);
        let status = wait_for_deploy(&deployer, &request(), FAST, Duration::from_secs(10))
            .await
            .expect("deployed");
        assert_eq!(
            status,
            DeployStatus::Deployed {
                version: request().version
            }
        );

        let calls = checked_requests(&server).await;
        assert_eq!(
            body_of(&calls, "aiplatform.projects.locations.models.upload"),
            &json!({
                "model": {
                    "displayName": "demo_model",
                    "artifactUri": "gs://nbci-demo/pipelines/p/runs/r/model",
                    "containerSpec": {
                        "imageUri": "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
                    },
                    "labels": {
                        "created_by": "nbci",
                        "nbci-pipeline": "train-and-deploy",
                        "nbci-run": "20261130t030000z-0123abc"
                    },
                    "versionAliases": ["v20261130t030000z-0123abc"]
                },
                "modelId": resource_id("demo_model")
            })
        );
        assert_eq!(
            body_of(&calls, "aiplatform.projects.locations.endpoints.create"),
            &json!({"displayName": "demo_model", "labels": {"created_by": "nbci"}})
        );
        assert_eq!(
            body_of(
                &calls,
                "aiplatform.projects.locations.endpoints.deployModel"
            ),
            &json!({
                "deployedModel": {
                    "model": format!("{MODEL}@1"),
                    "id": deployed_model_id(&request().version),
                    "displayName": "v20261130t030000z_0123abc",
                    "dedicatedResources": {
                        "machineSpec": {"machineType": "n1-standard-2"},
                        "minReplicaCount": 1
                    }
                },
                "trafficSplit": {"0": 100}
            })
        );
    }

    #[tokio::test]
    async fn a_new_version_keeps_the_serving_one_at_zero_and_undeploys_older_idle_ones() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(
            &server,
            "models",
            json!({"models": [
                {"name": MODEL, "displayName": "demo_model", "versionId": "2",
                 "createTime": "2026-11-01T03:00:00Z"},
                // Another model's, from an endpoint that ignores the filter.
                {"name": "projects/1/locations/us-central1/models/9", "displayName": "other"}
            ]}),
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{MODEL}@v20261130t030000z-0123abc"),
            google_error(404, "NOT_FOUND"),
            1,
        )
        .await;
        // Done in the answer itself: nothing to wait for.
        let uploaded = json!({"model": MODEL, "modelVersionId": "3"});
        mount(
            &server,
            "POST",
            &format!("/v1/{PARENT}/models:upload"),
            answer(
                "aiplatform.projects.locations.models.upload",
                operation(
                    UPLOAD_OP,
                    Some(("GoogleCloudAiplatformV1UploadModelResponse", uploaded)),
                ),
            ),
            1,
        )
        .await;
        mount_list(
            &server,
            "endpoints",
            json!({"endpoints": [endpoint(&[(OLD_VERSION, 100), (OLDER_VERSION, 0)])]}),
        )
        .await;
        mount(
            &server,
            "POST",
            &format!("/v1/{ENDPOINT}:undeployModel"),
            answer(
                "aiplatform.projects.locations.endpoints.undeployModel",
                operation(&format!("{ENDPOINT}/operations/80"), None),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            &format!("/v1/{ENDPOINT}:deployModel"),
            answer(
                "aiplatform.projects.locations.endpoints.deployModel",
                operation(DEPLOY_OP, None),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{DEPLOY_OP}"),
            answer(
                "aiplatform.projects.locations.endpoints.operations.get",
                json!({"name": DEPLOY_OP, "done": true, "response": {
                    "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeployModelResponse"
                }}),
            ),
            1,
        )
        .await;

        let deployer = deployer(&server);
        let request = request();
        let handle = deployer.deploy(&request).await.expect("started");
        assert_eq!(handle.0, DEPLOY_OP);
        assert_eq!(
            deployer.poll(&request, &handle).await.expect("done"),
            DeployStatus::Deployed {
                version: request.version.clone()
            }
        );

        let calls = checked_requests(&server).await;
        let upload = body_of(&calls, "aiplatform.projects.locations.models.upload");
        assert_eq!(upload["parentModel"], MODEL);
        assert!(upload.get("modelId").is_none());
        assert_eq!(
            body_of(
                &calls,
                "aiplatform.projects.locations.endpoints.undeployModel"
            ),
            &json!({"deployedModelId": deployed_model_id(OLDER_VERSION)}),
            "only the idle older version goes; the serving one stays"
        );
        let deploy = body_of(
            &calls,
            "aiplatform.projects.locations.endpoints.deployModel",
        );
        assert_eq!(deploy["deployedModel"]["model"], format!("{MODEL}@3"));
        assert_eq!(deploy["trafficSplit"], json!({"0": 100}));
    }

    #[tokio::test]
    async fn without_set_default_the_new_version_gets_no_traffic_unless_nothing_serves() {
        for (serving, routed) in [(100, false), (0, true)] {
            let server = MockServer::start().await;
            mount_list(
                &server,
                "models",
                json!({"models": [{"name": MODEL, "displayName": "demo_model"}]}),
            )
            .await;
            let found = json!({"name": MODEL, "versionId": "3"});
            mount(
                &server,
                "GET",
                &format!("/v1/{MODEL}@v20261130t030000z-0123abc"),
                answer("aiplatform.projects.locations.models.get", found),
                1,
            )
            .await;
            // A serving version of another model shares the endpoint.
            let mut shared = endpoint(&[]);
            shared["deployedModels"] =
                json!([{"id": "1", "model": "projects/1/locations/r/models/other"}]);
            shared["trafficSplit"] = json!({"1": serving});
            mount_list(&server, "endpoints", json!({"endpoints": [shared]})).await;
            mount(
                &server,
                "POST",
                &format!("/v1/{ENDPOINT}:deployModel"),
                answer(
                    "aiplatform.projects.locations.endpoints.deployModel",
                    operation(DEPLOY_OP, None),
                ),
                1,
            )
            .await;
            let mut request = request();
            request.set_default = false;
            deployer(&server).deploy(&request).await.expect("started");
            let calls = checked_requests(&server).await;
            let deploy = body_of(
                &calls,
                "aiplatform.projects.locations.endpoints.deployModel",
            );
            assert_eq!(deploy.get("trafficSplit").is_some(), routed, "{deploy}");
            assert!(
                !calls.iter().any(|(id, _)| id.ends_with("undeployModel")),
                "another model's deployment is not nbci's to undeploy"
            );
        }
    }

    #[tokio::test]
    async fn a_retried_deploy_finds_the_version_and_the_deployment_instead_of_repeating_them() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(
            &server,
            "models",
            json!({"models": [{"name": MODEL, "displayName": "demo_model"}]}),
        )
        .await;
        let found = json!({
            "name": MODEL,
            "displayName": "demo_model",
            "versionId": "3",
            "versionAliases": ["v20261130t030000z-0123abc"]
        });
        mount(
            &server,
            "GET",
            &format!("/v1/{MODEL}@v20261130t030000z-0123abc"),
            answer("aiplatform.projects.locations.models.get", found),
            1,
        )
        .await;
        let version = request().version;
        let deployed = endpoint(&[(OLD_VERSION, 0), (version.as_str(), 100)]);
        mount_list(
            &server,
            "endpoints",
            json!({"endpoints": [deployed.clone()]}),
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{ENDPOINT}"),
            answer("aiplatform.projects.locations.endpoints.get", deployed),
            1,
        )
        .await;

        let deployer = deployer(&server);
        let handle = deployer.deploy(&request()).await.expect("found");
        assert_eq!(handle.0, ENDPOINT);
        assert_eq!(
            deployer.poll(&request(), &handle).await.expect("polled"),
            DeployStatus::Deployed { version }
        );
        let ids: Vec<String> = checked_requests(&server)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert!(
            !ids.iter()
                .any(|id| id.ends_with("upload") || id.ends_with("deployModel")),
            "{ids:?}"
        );
    }

    #[tokio::test]
    async fn a_deploy_model_answered_409_is_followed_on_the_endpoint() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(
            &server,
            "models",
            json!({"models": [{"name": MODEL, "displayName": "demo_model"}]}),
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{MODEL}@v20261130t030000z-0123abc"),
            answer(
                "aiplatform.projects.locations.models.get",
                json!({"name": MODEL, "versionId": "3"}),
            ),
            1,
        )
        .await;
        mount_list(
            &server,
            "endpoints",
            json!({"endpoints": [endpoint(&[(OLD_VERSION, 100)])]}),
        )
        .await;
        mount(
            &server,
            "POST",
            &format!("/v1/{ENDPOINT}:deployModel"),
            google_error(409, "ALREADY_EXISTS"),
            1,
        )
        .await;
        let version = request().version;
        mount_sequence(
            &server,
            &format!("/v1/{ENDPOINT}"),
            (
                answer(
                    "aiplatform.projects.locations.endpoints.get",
                    endpoint(&[(OLD_VERSION, 100)]),
                ),
                1,
            ),
            (
                answer(
                    "aiplatform.projects.locations.endpoints.get",
                    endpoint(&[(OLD_VERSION, 0), (version.as_str(), 100)]),
                ),
                1,
            ),
        )
        .await;
        let deployer = deployer(&server);
        let handle = deployer.deploy(&request()).await.expect("being deployed");
        assert_eq!(handle.0, ENDPOINT);
        assert_eq!(
            deployer.poll(&request(), &handle).await.expect("not yet"),
            DeployStatus::Pending
        );
        assert_eq!(
            deployer.poll(&request(), &handle).await.expect("there"),
            DeployStatus::Deployed { version }
        );
        checked_requests(&server).await;
    }

    #[tokio::test]
    async fn failed_operations_fail_with_google_s_message() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(&server, "models", json!({})).await;
        mount(
            &server,
            "POST",
            &format!("/v1/{PARENT}/models:upload"),
            answer(
                "aiplatform.projects.locations.models.upload",
                operation(UPLOAD_OP, None),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{UPLOAD_OP}"),
            answer(
                "aiplatform.projects.locations.models.operations.get",
                json!({"name": UPLOAD_OP, "done": true, "error": {
                    "code": 3, "message": "Model directory gs://nbci-demo/x is empty"
                }}),
            ),
            1,
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{DEPLOY_OP}"),
            answer(
                "aiplatform.projects.locations.endpoints.operations.get",
                json!({"name": DEPLOY_OP, "done": true, "error": {
                    "code": 9, "message": "Machine type n1-standard-2 is not available"
                }}),
            ),
            1,
        )
        .await;
        let deployer = deployer(&server);
        let error = deployer.deploy(&request()).await.expect_err("refused");
        assert!(!error.is_transient());
        assert!(error.to_string().contains("is empty"), "{error}");
        let status = deployer
            .poll(&request(), &DeployOperation(DEPLOY_OP.into()))
            .await
            .expect("polled");
        assert_eq!(
            status,
            DeployStatus::Failed {
                message: "Machine type n1-standard-2 is not available".into()
            }
        );
        checked_requests(&server).await;
    }

    #[tokio::test]
    async fn an_upload_still_running_past_the_limit_is_tried_again_later() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(&server, "models", json!({})).await;
        mount(
            &server,
            "POST",
            &format!("/v1/{PARENT}/models:upload"),
            answer(
                "aiplatform.projects.locations.models.upload",
                operation(UPLOAD_OP, None),
            ),
            1,
        )
        .await;
        Mock::given(method("GET"))
            .and(path(format!("/v1/{UPLOAD_OP}")))
            .respond_with(answer(
                "aiplatform.projects.locations.models.operations.get",
                operation(UPLOAD_OP, None),
            ))
            .mount(&server)
            .await;
        let settings = DeploySettings {
            vertex_endpoint: Some(server.uri()),
            poll: FAST,
            operation_timeout: Duration::from_millis(50),
            ..DeploySettings::new("demo-project", "us-central1")
        };
        let deployer =
            VertexDeployer::new(settings, Arc::new(FixedToken::new(TOKEN))).expect("deployer");
        let error = deployer
            .deploy(&request())
            .await
            .expect_err("still running");
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("still running"), "{error}");
    }

    #[tokio::test]
    async fn an_endpoint_an_earlier_attempt_created_is_found_by_its_id() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        mount_list(
            &server,
            "models",
            json!({"models": [{"name": MODEL, "displayName": "demo_model"}]}),
        )
        .await;
        mount(
            &server,
            "GET",
            &format!("/v1/{MODEL}@v20261130t030000z-0123abc"),
            answer(
                "aiplatform.projects.locations.models.get",
                json!({"name": MODEL, "versionId": "3"}),
            ),
            1,
        )
        .await;
        // Listed before it existed (or by an index that lags), then 409.
        mount_list(&server, "endpoints", json!({})).await;
        mount(
            &server,
            "POST",
            &format!("/v1/{PARENT}/endpoints"),
            google_error(409, "ALREADY_EXISTS"),
            1,
        )
        .await;
        let ours = format!("{PARENT}/endpoints/{}", resource_id("demo_model"));
        let mut found = endpoint(&[]);
        found["name"] = json!(ours);
        mount(
            &server,
            "GET",
            &format!("/v1/{ours}"),
            answer("aiplatform.projects.locations.endpoints.get", found),
            1,
        )
        .await;
        mount(
            &server,
            "POST",
            &format!("/v1/{ours}:deployModel"),
            answer(
                "aiplatform.projects.locations.endpoints.deployModel",
                operation(&format!("{ours}/operations/5"), None),
            ),
            1,
        )
        .await;
        let handle = deployer(&server).deploy(&request()).await.expect("started");
        assert_eq!(handle.0, format!("{ours}/operations/5"));
        let calls = checked_requests(&server).await;
        assert_eq!(
            body_of(
                &calls,
                "aiplatform.projects.locations.endpoints.deployModel"
            )["trafficSplit"],
            json!({"0": 100}),
            "an endpoint that serves nothing gets the new version's traffic"
        );
    }

    #[tokio::test]
    async fn rollback_sends_all_traffic_to_the_kept_version() {
        let server = MockServer::start().await;
        fail_on_unexpected(&server).await;
        let version = request().version;
        mount_list(
            &server,
            "endpoints",
            json!({"endpoints": [endpoint(&[(OLD_VERSION, 0), (version.as_str(), 100)])]}),
        )
        .await;
        Mock::given(method("PATCH"))
            .and(path(format!("/v1/{ENDPOINT}")))
            .and(query_param("updateMask", "trafficSplit"))
            .respond_with(answer(
                "aiplatform.projects.locations.endpoints.patch",
                endpoint(&[(OLD_VERSION, 100), (version.as_str(), 0)]),
            ))
            .expect(1)
            .mount(&server)
            .await;
        let deployer = deployer(&server);
        assert_eq!(
            deployer
                .serving("demo_model")
                .await
                .expect("serving")
                .as_deref(),
            Some(version.as_str())
        );
        deployer
            .set_serving("demo_model", OLD_VERSION)
            .await
            .expect("rolled back");
        let error = deployer
            .set_serving("demo_model", OLDER_VERSION)
            .await
            .expect_err("not kept");
        assert!(
            !error.is_transient() && error.to_string().contains("not deployed"),
            "{error}"
        );
        let calls = checked_requests(&server).await;
        assert_eq!(
            body_of(&calls, "aiplatform.projects.locations.endpoints.patch"),
            &json!({
                "displayName": "demo_model",
                "trafficSplit": {deployed_model_id(OLD_VERSION): 100}
            })
        );
    }

    #[test]
    fn the_dry_run_lists_a_first_deploy_google_accepts() {
        let settings = DeploySettings::new("demo-project", "europe-west4");
        let mut request = request();
        request.machine_type = Some("n1-standard-4".into());
        let planned = plan(&settings, &request).expect("plan");
        let discovery = Discovery::load(AIPLATFORM_DEPLOY);
        let ids: Vec<String> = planned
            .iter()
            .map(|p| discovery.assert_call(&p.method, &p.url, p.body.as_ref(), &[]))
            .collect();
        assert_eq!(
            ids,
            [
                "aiplatform.projects.locations.models.list",
                "aiplatform.projects.locations.models.upload",
                "aiplatform.projects.locations.models.operations.get",
                "aiplatform.projects.locations.endpoints.list",
                "aiplatform.projects.locations.endpoints.create",
                "aiplatform.projects.locations.endpoints.operations.get",
                "aiplatform.projects.locations.endpoints.deployModel",
                "aiplatform.projects.locations.endpoints.operations.get",
            ]
        );
        let root = "https://europe-west4-aiplatform.googleapis.com/v1/projects/demo-project/locations/europe-west4";
        let id = resource_id("demo_model");
        assert_eq!(
            planned[0].url,
            format!("{root}/models?filter=display_name%3D%22demo_model%22&pageSize=100")
        );
        assert_eq!(
            planned[1]
                .body
                .as_ref()
                .map(|b| &b["model"]["containerSpec"]["imageUri"]),
            Some(&json!(
                "europe-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
            ))
        );
        assert_eq!(
            planned[2].url,
            format!("{root}/models/{id}/operations/{{OPERATION_ID}}")
        );
        assert_eq!(planned[4].url, format!("{root}/endpoints?endpointId={id}"));
        assert_eq!(planned[6].url, format!("{root}/endpoints/{id}:deployModel"));
        let deploy = planned[6].body.as_ref().expect("body");
        assert_eq!(
            deploy["deployedModel"]["model"],
            format!("projects/demo-project/locations/europe-west4/models/{id}@{{VERSION_ID}}")
        );
        assert_eq!(
            deploy["deployedModel"]["dedicatedResources"]["machineSpec"]["machineType"],
            "n1-standard-4"
        );
        assert_eq!(deploy["trafficSplit"], json!({"0": 100}));
        for line in planned.iter().map(PlannedRequest::to_json_line) {
            let value: Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(value.as_object().map(|o| o.len()), Some(3), "{line}");
        }
    }

    #[test]
    fn requests_vertex_would_refuse_are_not_planned() {
        let settings = DeploySettings::new("demo-project", "us-central1");
        let cases: [(Change, &str); 4] = [
            (|r| r.framework = "CAFFE".into(), "image"),
            (|r| r.artifact_uri = "file:///x".into(), "Cloud Storage"),
            (|r| r.model = String::new(), "display name"),
            (|r| r.version = "V_1".into(), "alias"),
        ];
        for (change, expected) in cases {
            let mut request = request();
            change(&mut request);
            let error = plan(&settings, &request).expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        }
        let mut request = request();
        request.framework = "CAFFE".into();
        request.image = Some("us-docker.pkg.dev/p/r/server:1".into());
        let planned = plan(&settings, &request).expect("own image");
        assert_eq!(
            planned[1]
                .body
                .as_ref()
                .map(|b| &b["model"]["containerSpec"]["imageUri"]),
            Some(&json!("us-docker.pkg.dev/p/r/server:1"))
        );
    }

    #[test]
    fn derived_names_are_valid_and_stable() {
        let long = "x".repeat(200);
        for model in [
            "demo_model",
            "Demo Model ü",
            "9lives",
            "",
            long.as_str(),
            "--",
        ] {
            let id = resource_id(model);
            assert!(id.len() <= MAX_ID_CHARS, "{id}");
            assert!(id.starts_with("nbci-"), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{id}"
            );
            assert!(!id.ends_with('-'), "{id}");
            assert_eq!(id, resource_id(model));
        }
        assert_ne!(resource_id("demo_model"), resource_id("demo-model"));
        let id = deployed_model_id("v20261130t030000z_0123abc");
        assert_eq!(id.len(), 10);
        assert!(id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0'));
        assert_ne!(id, deployed_model_id("v20261130t030000z_0123abd"));
        assert_eq!(
            version_alias("v20261130t030000z_0123abc"),
            "v20261130t030000z-0123abc"
        );
        assert!(is_alias("v20261130t030000z-0123abc"));
        assert!(!is_alias("v_1") && !is_alias("1v") && !is_alias("v-"));
        assert_eq!(model_id("projects/1/locations/r/models/42@3"), "42");
        assert_eq!(
            prebuilt_image("XGBOOST", "asia-east1").as_deref(),
            Some("asia-docker.pkg.dev/vertex-ai/prediction/xgboost-cpu.1-7:latest")
        );
        assert_eq!(
            prebuilt_image("TENSORFLOW", "us-central1").as_deref(),
            Some("us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest")
        );
        assert_eq!(prebuilt_image("", "us-central1"), None);
    }

    #[test]
    fn handles_name_a_deployment_operation_or_an_endpoint() {
        assert_eq!(
            Handle::parse(&DeployOperation(DEPLOY_OP.into())),
            Some(Handle::Operation {
                endpoint: ENDPOINT.into(),
                name: DEPLOY_OP.into()
            })
        );
        assert_eq!(
            Handle::parse(&DeployOperation(ENDPOINT.into())),
            Some(Handle::Endpoint(ENDPOINT.into()))
        );
        for other in ["local:m/v", UPLOAD_OP, "projects/p/operations/1"] {
            assert_eq!(
                Handle::parse(&DeployOperation(other.into())),
                None,
                "{other}"
            );
        }
    }
}
