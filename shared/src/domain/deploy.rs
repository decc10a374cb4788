//! What a deployment asks for and how it ends: the words of the Deployer
//! port, shared by the AI Platform, Vertex AI and local deployers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A model version to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The model's name (AI Platform model, Vertex AI model display name).
    pub model: String,
    /// The new version's name: a letter first, then letters, digits, underscores.
    pub version: String,
    /// Where the trained model's files are (`gs://...` or a local folder).
    pub artifact_uri: String,
    /// `SCIKIT_LEARN`, `TENSORFLOW`, `XGBOOST`.
    pub framework: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    /// Make it the version that serves (AI Platform `setDefault`, all of
    /// Vertex AI's traffic).
    #[serde(default)]
    pub set_default: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A deployment in progress: the long-running operation's name as the
/// platform returned it (or a local id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeployOperation(pub String);

/// Where a deployment is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeployStatus {
    Pending,
    /// Done; the version that now serves.
    Deployed {
        version: String,
    },
    Failed {
        message: String,
    },
}
