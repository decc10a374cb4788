//! The local model registry: the Deployer port on one machine, where
//! `nbci pipeline run` deploys when the spec says `target: local`.
//!
//! ```text
//! {root}/{model}/{version}/model/          the run's model folder, copied
//! {root}/{model}/{version}/metadata.json   what was deployed, from where, when
//! {root}/{model}/{version}/metrics.json    the metrics the gate passed it on
//! {root}/{model}/CURRENT                   the version that serves (one line)
//! ```
//!
//! The files go below `model/` so that a model folder holding its own
//! `metadata.json` or `metrics.json` (a run without `model_dir` deploys its
//! whole folder, `metrics.json` included) cannot collide with the
//! registry's. A version is copied into a hidden staging folder beside its
//! place and renamed into place whole, so a reader (or a deploy that
//! crashed and is tried again) never sees half a version; the version is
//! there exactly when its `metadata.json` is. `CURRENT` is the pointer that
//! moves: written atomically (a reader sees the old version or the new,
//! never a part), and flushed to disk, since it decides what serves.
//! Versions are never deleted here, so every earlier version stays
//! available for a rollback ([`Deployer::set_serving`]), which only moves
//! the pointer.
//!
//! A deploy is over when `deploy` returns: the handle is
//! `local:{model}/{version}`, and `poll` only confirms the version is there.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::deploy::{DeployOperation, DeployRequest, DeployStatus, PlannedRequest};
use crate::domain::pipeline::{DeployedVersion, Metrics};
use crate::ports::RemoteError;
use crate::ports::deployer::Deployer;
use crate::util::fs::write_atomically;
use crate::util::time::now_rfc3339;

/// The pointer file naming the version that serves.
pub const CURRENT_FILE: &str = "CURRENT";
/// A version's record.
pub const METADATA_FILE: &str = "metadata.json";
/// The metrics a version was deployed on.
pub const METRICS_FILE: &str = "metrics.json";
/// Where a version's copy of the model folder is.
pub const MODEL_FOLDER: &str = "model";
/// The start of every handle of this deployer.
const HANDLE_PREFIX: &str = "local:";

/// `metadata.json` of a version: the request, and where and when it was copied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub model: String,
    pub version: String,
    /// The folder (or file) the model was copied from.
    pub source: String,
    pub framework: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339, when the copy was made.
    pub deployed_at: String,
    /// Files copied.
    pub files: u64,
}

/// A model registry in a folder of this machine.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    root: PathBuf,
}

impl LocalRegistry {
    /// The registry at `root` (created on the first deploy).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: crate::util::uri::absolute(&root.into()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every version of `model` the registry holds, oldest first.
    pub fn versions(&self, model: &str) -> Result<Vec<VersionRecord>, RemoteError> {
        check_name("model", model)?;
        let folder = self.root.join(model);
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error(&folder, &error)),
        };
        let mut versions = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_name("version", &name).is_ok()
                && entry.file_type().is_ok_and(|kind| kind.is_dir())
                && let Some(record) = read_record(&entry.path().join(METADATA_FILE))?
            {
                versions.push(record);
            }
        }
        versions.sort_by(|a, b| {
            (a.deployed_at.as_str(), a.version.as_str())
                .cmp(&(b.deployed_at.as_str(), b.version.as_str()))
        });
        Ok(versions)
    }

    /// The version of `model` serving now, with the metrics it was
    /// deployed on: the baseline of the gate's `better_than_deployed`.
    pub fn deployed(&self, model: &str) -> Result<Option<DeployedVersion>, RemoteError> {
        let Some(version) = self.current(model)? else {
            return Ok(None);
        };
        let path = self.root.join(model).join(&version).join(METRICS_FILE);
        let metrics = match std::fs::read(&path) {
            Ok(bytes) => Metrics::parse(&bytes)
                .map_err(|e| RemoteError::Permanent(format!("{}: {e}", path.display())))?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Metrics::default(),
            Err(error) => return Err(io_error(&path, &error)),
        };
        Ok(Some(DeployedVersion {
            version,
            run_id: None,
            metrics,
        }))
    }

    /// What `CURRENT` names, if it exists.
    fn current(&self, model: &str) -> Result<Option<String>, RemoteError> {
        check_name("model", model)?;
        let path = self.root.join(model).join(CURRENT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let version = text.trim();
                Ok((!version.is_empty()).then(|| version.to_owned()))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&path, &error)),
        }
    }

    /// Points `CURRENT` at `version`.
    fn point_at(&self, model: &str, version: &str) -> Result<(), RemoteError> {
        let path = self.root.join(model).join(CURRENT_FILE);
        write_atomically(&path, format!("{version}\n").as_bytes(), true)
            .map_err(|e| io_error(&path, &e))?;
        tracing::info!(model, version, registry = %self.root.display(), "the local registry serves the version");
        Ok(())
    }

    /// Copies the request's model into its version folder unless it is there.
    fn publish(&self, request: &DeployRequest) -> Result<(), RemoteError> {
        let source = source_path(&request.artifact_uri)?;
        let model_folder = self.root.join(&request.model);
        let place = model_folder.join(&request.version);
        let source_text = source.display().to_string();
        if let Some(found) = read_record(&place.join(METADATA_FILE))? {
            return same_source(&found, &source_text, &place);
        }
        if place.exists() {
            return Err(RemoteError::Permanent(format!(
                "{} exists without {METADATA_FILE}: not a version of the registry; move it away",
                place.display()
            )));
        }
        let source_meta = std::fs::metadata(&source).map_err(|e| io_error(&source, &e))?;
        if source_meta.is_dir() && self.root.starts_with(&source) {
            return Err(RemoteError::Permanent(format!(
                "the registry {} is inside the model folder {}: it would copy itself",
                self.root.display(),
                source.display()
            )));
        }
        std::fs::create_dir_all(&model_folder).map_err(|e| io_error(&model_folder, &e))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&model_folder)
            .map_err(|e| io_error(&model_folder, &e))?;
        let copy = staging.path().join(MODEL_FOLDER);
        let files = if source_meta.is_dir() {
            copy_tree(&source, &copy)?
        } else {
            std::fs::create_dir_all(&copy).map_err(|e| io_error(&copy, &e))?;
            let name = source.file_name().unwrap_or_default();
            std::fs::copy(&source, copy.join(name)).map_err(|e| io_error(&source, &e))?;
            1
        };
        let record = VersionRecord {
            model: request.model.clone(),
            version: request.version.clone(),
            source: source_text.clone(),
            framework: request.framework.clone(),
            runtime_version: request.runtime_version.clone(),
            python_version: request.python_version.clone(),
            labels: request.labels.clone(),
            deployed_at: now_rfc3339(),
            files,
        };
        for (file, value) in [
            (METRICS_FILE, serde_json::to_vec_pretty(&request.metrics)),
            (METADATA_FILE, serde_json::to_vec_pretty(&record)),
        ] {
            let path = staging.path().join(file);
            let bytes = value.map_err(|e| RemoteError::Permanent(e.to_string()))?;
            std::fs::write(&path, bytes).map_err(|e| io_error(&path, &e))?;
        }
        match std::fs::rename(staging.path(), &place) {
            Ok(()) => {
                // Renamed away: nothing is left for the guard to delete.
                let _ = staging.keep();
                tracing::info!(model = %request.model, version = %request.version, files, "copied the model into the local registry");
                Ok(())
            }
            // Another deploy of the version got there first (the staging
            // folder is deleted as the guard drops).
            Err(_) if place.join(METADATA_FILE).exists() => {
                match read_record(&place.join(METADATA_FILE))? {
                    Some(found) => same_source(&found, &source_text, &place),
                    None => Ok(()),
                }
            }
            Err(error) => Err(io_error(&place, &error)),
        }
    }

    /// Whether the handle is this deployer's for the request.
    fn handle(request: &DeployRequest) -> DeployOperation {
        DeployOperation(format!(
            "{HANDLE_PREFIX}{}/{}",
            request.model, request.version
        ))
    }
}

/// A repeated deploy of a version that is there: fine when it came from
/// the same place; otherwise the name belongs to another model's files.
fn same_source(found: &VersionRecord, source: &str, place: &Path) -> Result<(), RemoteError> {
    if found.source == source {
        Ok(())
    } else {
        Err(RemoteError::Permanent(format!(
            "{} holds a copy of {}, not of {source}: another deploy owns the version's name",
            place.display(),
            found.source
        )))
    }
}

/// A version's record, if the version is there.
fn read_record(path: &Path) -> Result<Option<VersionRecord>, RemoteError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RemoteError::Permanent(format!("{}: {e}", path.display()))),
        // `CURRENT/metadata.json`: a name that is a file, not a version.
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(io_error(path, &error)),
    }
}

/// Where the model's files are: a `file://` URI or a path of this machine.
fn source_path(uri: &str) -> Result<PathBuf, RemoteError> {
    let uri = uri.trim();
    let path = if uri.starts_with("file:") {
        url::Url::parse(uri)
            .ok()
            .and_then(|url| url.to_file_path().ok())
    } else if uri.contains("://") {
        None
    } else {
        Some(PathBuf::from(uri))
    };
    match path {
        Some(path) if path.is_absolute() => Ok(path),
        _ => Err(RemoteError::Permanent(format!(
            "the local registry copies models from this machine, and {uri:?} is not a file:// URI or an absolute path"
        ))),
    }
}

/// Copies the folder `from` to `to` (created), regular files and folders
/// only: a link is skipped with a warning, so that a link to a big or
/// outside folder (or one that loops) cannot blow the copy up. The number
/// of files copied.
fn copy_tree(from: &Path, to: &Path) -> Result<u64, RemoteError> {
    std::fs::create_dir_all(to).map_err(|e| io_error(to, &e))?;
    let mut files = 0u64;
    for entry in std::fs::read_dir(from).map_err(|e| io_error(from, &e))? {
        let entry = entry.map_err(|e| io_error(from, &e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io_error(&path, &e))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            files = files.saturating_add(copy_tree(&path, &target)?);
        } else if kind.is_file() {
            std::fs::copy(&path, &target).map_err(|e| io_error(&path, &e))?;
            files = files.saturating_add(1);
        } else {
            tracing::warn!(path = %path.display(), "not a regular file or folder: left out of the registry");
        }
    }
    Ok(files)
}

/// Whether `name` can be a folder of the registry (the spec's rule for
/// local model names: a letter or digit, then letters, digits, `_`, `-`, `.`).
fn check_name(what: &str, name: &str) -> Result<(), RemoteError> {
    let shaped = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if shaped {
        Ok(())
    } else {
        Err(RemoteError::Permanent(format!(
            "{name:?} cannot name a {what} folder of the local registry (letters, digits, `_`, `-`, `.`)"
        )))
    }
}

/// An I/O error as the port's: a missing or forbidden path will stay so;
/// anything else (a full disk) may pass.
fn io_error(path: &Path, error: &io::Error) -> RemoteError {
    let message = format!("{}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::PermissionDenied
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::AlreadyExists => RemoteError::Permanent(message),
        _ => RemoteError::transient(message),
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RemoteError::transient(format!("the registry's file work stopped: {e}")))?
}

#[async_trait]
impl Deployer for LocalRegistry {
    async fn deploy(&self, request: &DeployRequest) -> Result<DeployOperation, RemoteError> {
        check_name("model", &request.model)?;
        check_name("version", &request.version)?;
        let registry = self.clone();
        let request = request.clone();
        blocking(move || {
            registry.publish(&request)?;
            // The first version serves whatever the request says: a model
            // must serve something (as AI Platform's first version does).
            if request.set_default || registry.current(&request.model)?.is_none() {
                registry.point_at(&request.model, &request.version)?;
            }
            Ok(Self::handle(&request))
        })
        .await
    }

    async fn poll(
        &self,
        request: &DeployRequest,
        operation: &DeployOperation,
    ) -> Result<DeployStatus, RemoteError> {
        if *operation != Self::handle(request) {
            return Err(RemoteError::Permanent(format!(
                "{:?} is not a local deployment of version {} of model {}",
                operation.0, request.version, request.model
            )));
        }
        let place = self
            .root
            .join(&request.model)
            .join(&request.version)
            .join(METADATA_FILE);
        blocking(move || {
            Ok(match read_record(&place)? {
                Some(found) => DeployStatus::Deployed {
                    version: found.version,
                },
                None => DeployStatus::Failed {
                    message: format!("{} is gone", place.display()),
                },
            })
        })
        .await
    }

    async fn set_serving(&self, model: &str, version: &str) -> Result<(), RemoteError> {
        check_name("model", model)?;
        check_name("version", version)?;
        let registry = self.clone();
        let (model, version) = (model.to_owned(), version.to_owned());
        blocking(move || {
            let record = registry
                .root
                .join(&model)
                .join(&version)
                .join(METADATA_FILE);
            if read_record(&record)?.is_none() {
                let kept: Vec<String> = registry
                    .versions(&model)?
                    .into_iter()
                    .map(|v| v.version)
                    .collect();
                return Err(RemoteError::Permanent(format!(
                    "the local registry has no version {version} of model {model} (it has {})",
                    if kept.is_empty() {
                        "none".to_owned()
                    } else {
                        kept.join(", ")
                    }
                )));
            }
            registry.point_at(&model, &version)
        })
        .await
    }

    async fn serving(&self, model: &str) -> Result<Option<String>, RemoteError> {
        let registry = self.clone();
        let model = model.to_owned();
        blocking(move || registry.current(&model)).await
    }

    fn plan(&self, _request: &DeployRequest) -> Result<Vec<PlannedRequest>, RemoteError> {
        // Files on this machine: no REST request to show.
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ports::deployer::wait_for_deploy;
    use crate::util::retry::Backoff;
    use crate::util::uri::file_uri;

    /// A change made to a valid request.
    type Change = fn(&mut DeployRequest);

    struct Setup {
        _dir: tempfile::TempDir,
        runs: PathBuf,
        registry: LocalRegistry,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("bucket/objects/pipelines/p/runs");
        let registry = LocalRegistry::new(dir.path().join("registry"));
        Setup {
            _dir: dir,
            runs,
            registry,
        }
    }

    /// A run's model folder with a model file, a nested file, and the
    /// run's own metrics.json (a run without `model_dir` deploys it all).
    fn model_folder(runs: &Path, run: &str, content: &str) -> PathBuf {
        let folder = runs.join(run);
        std::fs::create_dir_all(folder.join("assets")).expect("folders");
        std::fs::write(folder.join("model.joblib"), content).expect("model");
        std::fs::write(folder.join("assets/vocab.txt"), "a\nb\n").expect("asset");
        std::fs::write(folder.join("metrics.json"), r#"{"accuracy": 0.5}"#).expect("metrics");
        folder
    }

    fn request(folder: &Path, version: &str, accuracy: f64) -> DeployRequest {
        DeployRequest {
            model: "demo_model".into(),
            version: version.into(),
            artifact_uri: file_uri(folder),
            framework: "SCIKIT_LEARN".into(),
            runtime_version: None,
            python_version: None,
            machine_type: None,
            image: None,
            set_default: true,
            labels: BTreeMap::from([("nbci-pipeline".to_owned(), "p".to_owned())]),
            metrics: BTreeMap::from([("accuracy".to_owned(), accuracy)]),
        }
    }

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));

    #[tokio::test]
    async fn deploys_copy_the_model_and_move_the_pointer_and_rollback_moves_it_back() {
        let s = setup();
        let first = request(&model_folder(&s.runs, "r1", "one"), "v1", 0.91);
        let second = request(&model_folder(&s.runs, "r2", "two"), "v2", 0.95);
        for (request, expected) in [(&first, "v1"), (&second, "v2")] {
            let status = wait_for_deploy(&s.registry, request, FAST, Duration::from_secs(5))
                .await
                .expect("deployed");
            assert_eq!(
                status,
                DeployStatus::Deployed {
                    version: expected.into()
                }
            );
            assert_eq!(
                s.registry
                    .serving("demo_model")
                    .await
                    .expect("serving")
                    .as_deref(),
                Some(expected)
            );
        }
        let v2 = s.registry.root().join("demo_model/v2");
        assert_eq!(
            std::fs::read_to_string(v2.join("model/model.joblib")).expect("copied"),
            "two"
        );
        assert_eq!(
            std::fs::read_to_string(v2.join("model/assets/vocab.txt")).expect("nested"),
            "a\nb\n"
        );
        assert_eq!(
            std::fs::read_to_string(v2.join("model/metrics.json")).expect("the run's own"),
            r#"{"accuracy": 0.5}"#,
            "the model's files keep their own metrics.json"
        );
        let record: VersionRecord =
            serde_json::from_slice(&std::fs::read(v2.join(METADATA_FILE)).expect("metadata"))
                .expect("a record");
        assert_eq!(record.files, 3);
        assert_eq!(record.framework, "SCIKIT_LEARN");
        let deployed = s
            .registry
            .deployed("demo_model")
            .expect("read")
            .expect("one");
        assert_eq!(deployed.version, "v2");
        assert_eq!(deployed.metrics.values.get("accuracy"), Some(&0.95));
        assert_eq!(
            std::fs::read_to_string(s.registry.root().join("demo_model/CURRENT")).expect("pointer"),
            "v2\n"
        );

        // Rollback: the pointer goes back; both versions stay.
        s.registry
            .set_serving("demo_model", "v1")
            .await
            .expect("rolled back");
        assert_eq!(
            s.registry
                .serving("demo_model")
                .await
                .expect("serving")
                .as_deref(),
            Some("v1")
        );
        let versions: Vec<String> = s
            .registry
            .versions("demo_model")
            .expect("versions")
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(versions, ["v1", "v2"]);
        for missing in ["v3", CURRENT_FILE] {
            let error = s
                .registry
                .set_serving("demo_model", missing)
                .await
                .expect_err("no such version");
            assert!(!error.is_transient(), "{error}");
            assert!(error.to_string().contains("v1, v2"), "{error}");
        }
        assert_eq!(
            s.registry
                .serving("demo_model")
                .await
                .expect("unchanged")
                .as_deref(),
            Some("v1")
        );
        let leftovers: Vec<_> = std::fs::read_dir(s.registry.root().join("demo_model"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn a_repeated_deploy_changes_nothing_and_a_foreign_version_is_refused() {
        let s = setup();
        let request = request(&model_folder(&s.runs, "r1", "one"), "v1", 0.9);
        let handle = s.registry.deploy(&request).await.expect("deployed");
        assert_eq!(handle.0, "local:demo_model/v1");
        let record = s.registry.root().join("demo_model/v1").join(METADATA_FILE);
        let before = std::fs::read(&record).expect("metadata");
        assert_eq!(s.registry.deploy(&request).await.expect("again"), handle);
        assert_eq!(std::fs::read(&record).expect("metadata"), before);

        let mut other = request.clone();
        other.artifact_uri = file_uri(&model_folder(&s.runs, "r9", "nine"));
        let error = s.registry.deploy(&other).await.expect_err("not ours");
        assert!(!error.is_transient());
        assert!(error.to_string().contains("another deploy"), "{error}");
    }

    #[tokio::test]
    async fn without_set_default_only_a_first_version_moves_the_pointer() {
        let s = setup();
        let mut first = request(&model_folder(&s.runs, "r1", "one"), "v1", 0.9);
        first.set_default = false;
        s.registry.deploy(&first).await.expect("first");
        assert_eq!(
            s.registry
                .serving("demo_model")
                .await
                .expect("s")
                .as_deref(),
            Some("v1")
        );
        let mut second = request(&model_folder(&s.runs, "r2", "two"), "v2", 0.9);
        second.set_default = false;
        let handle = s.registry.deploy(&second).await.expect("second");
        assert_eq!(
            s.registry.poll(&second, &handle).await.expect("poll"),
            DeployStatus::Deployed {
                version: "v2".into()
            }
        );
        assert_eq!(
            s.registry
                .serving("demo_model")
                .await
                .expect("s")
                .as_deref(),
            Some("v1")
        );
    }

    #[tokio::test]
    async fn what_cannot_be_deployed_here_is_refused() {
        let s = setup();
        let folder = model_folder(&s.runs, "r1", "one");
        let file = folder.join("model.joblib");
        let mut single = request(&file, "v1", 0.9);
        single.artifact_uri = file.display().to_string();
        s.registry
            .deploy(&single)
            .await
            .expect("a single file, by path");
        assert!(
            s.registry
                .root()
                .join("demo_model/v1/model/model.joblib")
                .is_file()
        );

        let cases: [(Change, &str); 5] = [
            (
                |r| r.artifact_uri = "gs://bucket/model".into(),
                "this machine",
            ),
            (|r| r.artifact_uri = "relative/model".into(), "this machine"),
            (
                |r| r.artifact_uri = "file:///nonexistent/model".into(),
                "No such file",
            ),
            (|r| r.model = "../escape".into(), "cannot name"),
            (|r| r.version = ".hidden".into(), "cannot name"),
        ];
        for (change, expected) in cases {
            let mut request = request(&folder, "v2", 0.9);
            change(&mut request);
            let error = s.registry.deploy(&request).await.expect_err(expected);
            assert!(!error.is_transient(), "{error}");
            assert!(error.to_string().contains(expected), "{expected}: {error}");
        }
        assert!(s.registry.plan(&single).expect("plan").is_empty());
        assert!(
            s.registry
                .poll(&single, &DeployOperation("projects/p/operations/1".into()))
                .await
                .is_err()
        );
        assert_eq!(
            s.registry.serving("never_deployed").await.expect("none"),
            None
        );
        assert!(
            s.registry
                .deployed("never_deployed")
                .expect("none")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_registry_inside_the_model_folder_is_refused_and_links_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("run");
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::write(folder.join("model.pkl"), "m").expect("model");
        std::os::unix::fs::symlink("/etc", folder.join("outside")).expect("link");
        let inside = LocalRegistry::new(folder.join("registry"));
        let error = inside
            .deploy(&request(&folder, "v1", 0.9))
            .await
            .expect_err("itself");
        assert!(error.to_string().contains("copy itself"), "{error}");

        let registry = LocalRegistry::new(dir.path().join("registry"));
        registry
            .deploy(&request(&folder, "v1", 0.9))
            .await
            .expect("deployed");
        let copied = registry.root().join("demo_model/v1/model");
        assert!(copied.join("model.pkl").is_file());
        assert!(!copied.join("outside").exists(), "the link is not followed");
    }
}
