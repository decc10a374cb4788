//! What a deployment asks for and how it ends: the words of the Deployer
//! port, shared by the AI Platform, Vertex AI and local deployers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A model version to deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The model's name (AI Platform model, Vertex AI model display name).
    pub model: String,
    /// The new version's name: a letter first, then letters, digits, underscores.
    pub version: String,
    /// Where the trained model's files are (`gs://...` or a local folder).
    pub artifact_uri: String,
    /// `SCIKIT_LEARN`, `TENSORFLOW`, `XGBOOST`, `PYTORCH` (Vertex AI only).
    pub framework: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    /// Vertex AI: the serving container, instead of the pre-built one that
    /// `framework` picks (a model that needs its own server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Make it the version that serves (AI Platform `setDefault`, all of
    /// Vertex AI's traffic).
    #[serde(default)]
    pub set_default: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The metrics the gate passed the model on: kept beside the version
    /// where the target can hold them (the local registry), so that the
    /// version's merit travels with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
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

/// One REST request a deploy would send, for `nbci pipeline deploy --dry-run`
/// (**contract**: printed as one JSON object per line,
/// `{"method": ..., "url": ..., "body": {...}}`, `body` null when the
/// request has none).
///
/// A dry run cannot know what Google will answer, so parts of a URL or body
/// that only an earlier answer gives are placeholders in capitals between
/// braces (`{OPERATION_ID}`); each deployer documents its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRequest {
    /// `GET`, `POST`, `PATCH`.
    pub method: String,
    /// The full URL, query included.
    pub url: String,
    pub body: Option<Value>,
}

impl PlannedRequest {
    /// The request as its line of the dry run.
    pub fn to_json_line(&self) -> String {
        // Strings and JSON values always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_planned_request_is_one_line_with_three_keys() {
        let get = PlannedRequest {
            method: "GET".into(),
            url: "https://ml.googleapis.com/v1/projects/p/models/m".into(),
            body: None,
        };
        let line = get.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Value>(&line).expect("JSON"),
            json!({"method": "GET", "url": "https://ml.googleapis.com/v1/projects/p/models/m", "body": null})
        );
        let post = PlannedRequest {
            body: Some(json!({"name": "m", "description": "two\nlines"})),
            ..get
        };
        let line = post.to_json_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            serde_json::from_str::<PlannedRequest>(&line).expect("read back"),
            post
        );
    }
}
