//! One typed configuration, read once from the environment.
//!
//! [`VARIABLES`] declares every environment variable any nbci service reads:
//! its name, default, meaning and which services read it. [`Config::from_lookup`]
//! parses the ones a [`Service`] reads into typed settings, failing fast with
//! one [`ConfigError`] that names the variable. [`variables_of`] lists what a
//! service reads: the README's table and the Terraform environment are held
//! to it by tests.
//!
//! Secrets are kept in [`Secret`] and never printed, not even in errors.

use std::path::PathBuf;
use std::time::Duration;

use crate::adapters::local::engine::{DEFAULT_MAX_HTML, DEFAULT_MAX_OUTPUT};
use crate::domain::notebook::parse_duration;
use crate::http::HttpLimits;
use crate::util::secret::Secret;

/// The smallest body budget: one webhook payload (GitHub's 25 MiB) must fit.
const MIN_BODY_MEMORY_MIB: usize = 26;

/// A program that reads configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// The `github-webhook` Cloud Run service.
    GithubWebhook,
    /// The `gcs-events` Cloud Run service.
    GcsEvents,
    /// The `scheduler` Cloud Run service.
    Scheduler,
    /// `nbci serve`: all three in one process.
    Serve,
    /// `nbci pipeline`: pipelines run on this machine (and deploy dry runs).
    Pipeline,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::GithubWebhook => "github-webhook",
            Service::GcsEvents => "gcs-events",
            Service::Scheduler => "scheduler",
            Service::Serve => "nbci serve",
            Service::Pipeline => "nbci pipeline",
        }
    }
}

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    /// What an unset variable means, in words (`None`: required where read).
    pub default: Option<&'static str>,
    pub meaning: &'static str,
    pub services: &'static [Service],
    /// Whether its value is a secret (never shown).
    pub secret: bool,
}

use Service::{GcsEvents, GithubWebhook, Pipeline, Scheduler, Serve};

const ALL: &[Service] = &[GithubWebhook, GcsEvents, Scheduler, Serve];
/// What `nbci pipeline` reads besides the local settings: Google's, to deploy
/// to AI Platform or Vertex AI and to print what a deployment would send.
const GOOGLE: &[Service] = &[GithubWebhook, GcsEvents, Scheduler, Serve, Pipeline];
const LOCAL_RUNS: &[Service] = &[Serve, Pipeline];
/// Services that drive checks: all of them (the webhook creates them,
/// gcs-events completes them, the scheduler completes lost jobs).
const CHECKS: &[Service] = ALL;
const WEBHOOK: &[Service] = &[GithubWebhook, Serve];
/// Services whose routes Google calls with an OIDC token they verify themselves.
const OIDC: &[Service] = &[GithubWebhook, Scheduler, Serve];
const TICKS: &[Service] = &[Scheduler, Serve];
/// Only `nbci serve` runs on one machine (directory bucket, local executor).
const LOCAL: &[Service] = &[Serve];

/// Every variable any service reads (**contract**: the deployment and the
/// README list exactly these).
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "PORT",
        default: Some("8080"),
        meaning: "TCP port to listen on (Cloud Run sets it)",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "GITHUB_WEBHOOK_SECRET",
        default: None,
        meaning: "the GitHub App's webhook secret: verifies X-Hub-Signature-256 and signs details links",
        services: WEBHOOK,
        secret: true,
    },
    Variable {
        name: "GITHUB_APP_ID",
        default: None,
        meaning: "the GitHub App's id (or client id)",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "GITHUB_APP_PRIVATE_KEY",
        default: None,
        meaning: "the GitHub App's private key: PEM text, or the path of a PEM file",
        services: CHECKS,
        secret: true,
    },
    Variable {
        name: "GITHUB_API_URL",
        default: Some("https://api.github.com"),
        meaning: "GitHub's REST API root (GitHub Enterprise Server: https://HOST/api/v3)",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_PUBLIC_URL",
        default: Some("none (nbci serve: its own address)"),
        meaning: "where executed notebooks are served, for the check runs' details links",
        services: WEBHOOK,
        secret: false,
    },
    Variable {
        name: "NBCI_DATA_DIR",
        default: Some(".nbci-data"),
        meaning: "the directory bucket: staged sources, check states, executed notebooks",
        services: LOCAL,
        secret: false,
    },
    Variable {
        name: "NBCI_EXECUTOR",
        default: Some("local in nbci serve, vertex in the cloud services"),
        meaning: "where notebooks run: local (papermill on this machine), vertex (Vertex AI CustomJobs) or ai-platform (AI Platform Training jobs)",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_JOBS",
        default: Some("the number of cores"),
        meaning: "notebooks the local executor runs at once",
        services: LOCAL_RUNS,
        secret: false,
    },
    Variable {
        name: "NBCI_MAX_OUTPUT",
        default: Some("256MB"),
        meaning: "the most output one notebook may produce (e.g. 256MB, 1GiB); past it the kernel is stopped and the notebook fails",
        services: LOCAL,
        secret: false,
    },
    Variable {
        name: "NBCI_MAX_HTML",
        default: Some("32MB"),
        meaning: "executed notebooks larger than this are not rendered as HTML; a short page says so",
        services: LOCAL,
        secret: false,
    },
    Variable {
        name: "NBCI_MAX_NOTEBOOKS",
        default: Some("50"),
        meaning: "notebooks checked per commit; past it a neutral check says so",
        services: WEBHOOK,
        secret: false,
    },
    Variable {
        name: "NBCI_JOB_TIMEOUT",
        default: Some("1h"),
        meaning: "whole-notebook limit of jobs whose notebook sets none (metadata.nbci.timeout)",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_LOST_JOB_GRACE",
        default: Some("10m"),
        meaning: "how long past its timeout a job may run before it is cancelled and its check timed out",
        services: TICKS,
        secret: false,
    },
    Variable {
        name: "NBCI_RETRY_MAX",
        default: Some("5m"),
        meaning: "the longest wait between attempts of a step that failed transiently (GitHub down)",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_LEASE_TTL",
        default: Some("5m"),
        meaning: "how long a worker holds a check or a pipeline run while it performs one step: one killed mid-step delays that check this long (keep it well above a step's own retries)",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_PYTHON",
        default: Some("a .venv above nbci or the working directory, else python3"),
        meaning: "the Python interpreter with papermill that runs notebooks locally",
        services: LOCAL_RUNS,
        secret: false,
    },
    Variable {
        name: "NBCI_BUCKET",
        default: Some("none: nbci serve uses NBCI_DATA_DIR; the cloud services require it"),
        meaning: "the Cloud Storage bucket (name or gs://name) for sources, check states and results; an absolute path (or file://path) is a directory bucket, whose services run notebooks here (one machine: tests, benchmarks)",
        services: GOOGLE,
        secret: false,
    },
    Variable {
        name: "STORAGE_EMULATOR_HOST",
        default: Some("unset"),
        meaning: "a Cloud Storage emulator (host:port or URL): storage calls go there, anonymously",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_REGION",
        default: Some("us-central1"),
        meaning: "the region of Vertex AI jobs and endpoints (and AI Platform's region)",
        services: GOOGLE,
        secret: false,
    },
    Variable {
        name: "NBCI_RUNNER_IMAGE",
        default: None,
        meaning: "the image cloud jobs run (entrypoint nbci; required for vertex and ai-platform)",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_RUNNER_SERVICE_ACCOUNT",
        default: Some("the project's default compute account"),
        meaning: "the service account cloud jobs run as",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_VERTEX_ENDPOINT",
        default: Some("https://{region}-aiplatform.googleapis.com"),
        meaning: "the Vertex AI API root (tests and API-compatible services)",
        services: GOOGLE,
        secret: false,
    },
    Variable {
        name: "NBCI_ML_ENDPOINT",
        default: Some("https://ml.googleapis.com"),
        meaning: "the AI Platform (ml v1) API root (tests and API-compatible services)",
        services: GOOGLE,
        secret: false,
    },
    Variable {
        name: "NBCI_DISPATCH_TOPIC",
        default: Some("unset: the hand-off stays in the process"),
        meaning: "a Pub/Sub topic (projects/P/topics/T) the webhook hands triggers to; its push subscription posts them to /dispatch",
        services: WEBHOOK,
        secret: false,
    },
    Variable {
        name: "PUBSUB_EMULATOR_HOST",
        default: Some("unset"),
        meaning: "a Pub/Sub emulator (host:port): the dispatch topic is reached there, anonymously",
        services: WEBHOOK,
        secret: false,
    },
    Variable {
        name: "NBCI_OIDC_AUDIENCE",
        default: Some("unset: no token is required"),
        meaning: "the audience Google-signed ID tokens must carry on /tick and /dispatch (the service's URL)",
        services: OIDC,
        secret: false,
    },
    Variable {
        name: "NBCI_OIDC_EMAIL",
        default: Some("unset: any Google-signed token for the audience"),
        meaning: "the service account those ID tokens must name (Cloud Scheduler's, Pub/Sub push's)",
        services: OIDC,
        secret: false,
    },
    Variable {
        name: "NBCI_OIDC_JWKS_URL",
        default: Some("https://www.googleapis.com/oauth2/v3/certs"),
        meaning: "where Google's ID-token signing keys are read",
        services: OIDC,
        secret: false,
    },
    Variable {
        name: "NBCI_HTTP_MAX_CONNECTIONS",
        default: Some("512"),
        meaning: "connections served at once; past it new ones wait in the kernel's backlog",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_HTTP_HEADER_TIMEOUT",
        default: Some("30s"),
        meaning: "time for a request's headers to arrive (and for an idle keep-alive connection to send its next request)",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_HTTP_BODY_TIMEOUT",
        default: Some("30s"),
        meaning: "time for a request's whole body to arrive",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_HTTP_REQUEST_TIMEOUT",
        default: Some("5m"),
        meaning: "time a handler has to answer; then the caller gets 503",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_HTTP_STALL_TIMEOUT",
        default: Some("60s"),
        meaning: "time a client may take none of an answer (a download) before its connection is closed",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "NBCI_HTTP_BODY_MEMORY_MIB",
        default: Some("64"),
        meaning: "MiB of request bodies held in memory at once, all requests together (at least 26: one webhook payload)",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "RUST_LOG",
        default: Some("info"),
        meaning: "log filter (tracing's EnvFilter syntax)",
        services: GOOGLE,
        secret: false,
    },
    Variable {
        name: "K_SERVICE",
        default: Some("unset"),
        meaning: "set by Cloud Run: logs become one JSON object per line for Cloud Logging",
        services: ALL,
        secret: false,
    },
    Variable {
        name: "GOOGLE_CLOUD_PROJECT",
        default: Some("unset"),
        meaning: "the Google Cloud project: where cloud jobs run and models deploy; also the trace field of log lines",
        services: GOOGLE,
        secret: false,
    },
];

/// The variables `service` reads, in declaration order.
pub fn variables_of(service: Service) -> impl Iterator<Item = &'static Variable> {
    VARIABLES
        .iter()
        .filter(move |variable| variable.services.contains(&service))
}

/// Why the configuration is unusable; names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Occurs when a required variable is unset or empty.
    #[error("{name} is not set ({meaning})")]
    Missing {
        name: &'static str,
        meaning: &'static str,
    },
    /// Occurs when a variable's value cannot be used. Secret values are not repeated.
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where notebooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// papermill subprocesses on this machine (`nbci serve` only).
    Local,
    /// Vertex AI CustomJobs.
    Vertex,
    /// Legacy AI Platform Training jobs (API-compatible endpoints).
    AiPlatform,
}

/// The bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A directory on this machine (`NBCI_DATA_DIR`).
    Directory(PathBuf),
    /// A Cloud Storage bucket (`NBCI_BUCKET`), through an emulator when
    /// `STORAGE_EMULATOR_HOST` is set.
    Gcs {
        bucket: String,
        emulator: Option<String>,
    },
}

/// The GitHub App's settings.
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    pub app_id: String,
    /// The private key's PEM text (read from the file when a path was given).
    pub private_key: Secret,
    pub api_url: String,
}

/// Google Cloud settings of the cloud executors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSettings {
    pub project: String,
    pub region: String,
    pub runner_image: String,
    pub runner_service_account: Option<String>,
    pub vertex_endpoint: Option<String>,
    pub ml_endpoint: Option<String>,
}

/// What Google-signed ID tokens must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    pub audience: String,
    pub email: Option<String>,
    pub jwks_url: Option<String>,
}

/// Everything a service reads, typed.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: Service,
    pub port: u16,
    /// `GITHUB_WEBHOOK_SECRET` (services that receive webhooks).
    pub webhook_secret: Option<Secret>,
    /// The App (services that touch check runs).
    pub github: Option<GitHubSettings>,
    pub public_url: Option<String>,
    pub storage: Storage,
    /// Where the directory bucket is, or local scratch space beside a cloud one.
    pub data_dir: PathBuf,
    pub executor: ExecutorKind,
    /// Google Cloud settings; present when `executor` is a cloud one.
    pub cloud: Option<CloudSettings>,
    /// `GOOGLE_CLOUD_PROJECT`, when set.
    pub project: Option<String>,
    pub region: String,
    /// `NBCI_VERTEX_ENDPOINT`, `NBCI_ML_ENDPOINT`: API roots for tests and
    /// API-compatible services (jobs and deployments).
    pub vertex_endpoint: Option<String>,
    pub ml_endpoint: Option<String>,
    pub dispatch_topic: Option<String>,
    /// `PUBSUB_EMULATOR_HOST`, when the topic is an emulator's.
    pub pubsub_emulator: Option<String>,
    pub oidc: Option<OidcSettings>,
    pub jobs: usize,
    /// `NBCI_MAX_OUTPUT`: the cap on one notebook's output (`nbci serve`).
    pub max_output: u64,
    /// `NBCI_MAX_HTML`: executed notebooks larger than this are not rendered.
    pub max_html: u64,
    pub max_notebooks: usize,
    pub job_timeout: Duration,
    pub lost_job_grace: Duration,
    pub retry_max: Duration,
    /// `NBCI_LEASE_TTL`: how long a check's or a run's lease holds.
    pub lease_ttl: Duration,
    pub python: Option<PathBuf>,
    /// What the server allows its clients (`NBCI_HTTP_*`).
    pub http: HttpLimits,
}

impl Config {
    /// Reads `service`'s configuration from the process environment.
    pub fn from_env(service: Service) -> Result<Self, ConfigError> {
        Self::from_lookup(service, |name| std::env::var(name).ok())
    }

    /// Reads `service`'s configuration through `lookup` (tests pass a map).
    /// Only the variables the service reads are looked up.
    pub fn from_lookup(
        service: Service,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let reads = |name: &str| variables_of(service).any(|variable| variable.name == name);
        let value = |name: &'static str| -> Option<String> {
            if !reads(name) {
                return None;
            }
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let meaning = |name: &'static str| {
            VARIABLES
                .iter()
                .find(|v| v.name == name)
                .map_or("", |v| v.meaning)
        };
        let required = |name: &'static str| -> Result<String, ConfigError> {
            value(name).ok_or_else(|| ConfigError::Missing {
                name,
                meaning: meaning(name),
            })
        };
        let invalid = |name: &'static str, reason: String| ConfigError::Invalid { name, reason };
        let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match value(name) {
                None => Ok(default),
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        invalid(
                            name,
                            format!("expected a positive whole number, got {text:?}"),
                        )
                    }),
            }
        };
        let duration = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match value(name) {
                None => Ok(default),
                Some(text) => parse_duration(&text).map_err(|reason| invalid(name, reason)),
            }
        };
        let size = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match value(name) {
                None => Ok(default),
                Some(text) => {
                    crate::util::size::parse_size(&text).map_err(|reason| invalid(name, reason))
                }
            }
        };
        let http_url = |name: &'static str| -> Result<Option<String>, ConfigError> {
            match value(name) {
                None => Ok(None),
                Some(text) => {
                    let trimmed = text.trim_end_matches('/').to_owned();
                    match url::Url::parse(&trimmed) {
                        Ok(parsed)
                            if matches!(parsed.scheme(), "http" | "https")
                                && parsed.query().is_none() =>
                        {
                            Ok(Some(trimmed))
                        }
                        _ => Err(invalid(
                            name,
                            format!("{text:?} is not an http(s) URL without a query"),
                        )),
                    }
                }
            }
        };

        let port = match value("PORT") {
            None => 8080,
            Some(text) => text.parse::<u16>().map_err(|_| {
                invalid("PORT", format!("expected a TCP port number, got {text:?}"))
            })?,
        };
        let webhook_secret = if reads("GITHUB_WEBHOOK_SECRET") {
            Some(Secret::new(required("GITHUB_WEBHOOK_SECRET")?))
        } else {
            None
        };
        let github = if reads("GITHUB_APP_ID") {
            let app_id = required("GITHUB_APP_ID")?;
            let key = required("GITHUB_APP_PRIVATE_KEY")?;
            let private_key = crate::adapters::github::app_auth::private_key_pem(&key)
                .map_err(|reason| invalid("GITHUB_APP_PRIVATE_KEY", reason))?;
            let api_url =
                http_url("GITHUB_API_URL")?.unwrap_or_else(|| "https://api.github.com".into());
            Some(GitHubSettings {
                app_id,
                private_key: Secret::new(private_key),
                api_url,
            })
        } else {
            None
        };
        let mut data_dir =
            value("NBCI_DATA_DIR").map_or_else(|| PathBuf::from(".nbci-data"), PathBuf::from);
        // An absolute path (or file://path) is a directory bucket: the
        // services as separate processes on one machine (tests, benchmarks).
        let directory_bucket = value("NBCI_BUCKET").and_then(|bucket| {
            let path = bucket.strip_prefix("file://").unwrap_or(&bucket);
            path.starts_with('/').then(|| PathBuf::from(path))
        });
        let storage = match value("NBCI_BUCKET") {
            Some(_) if directory_bucket.is_some() => {
                let dir = directory_bucket.clone().unwrap_or_default();
                data_dir.clone_from(&dir);
                Storage::Directory(dir)
            }
            Some(bucket) => {
                let name = bucket
                    .strip_prefix("gs://")
                    .unwrap_or(&bucket)
                    .trim_end_matches('/');
                if !valid_bucket_name(name) {
                    return Err(invalid(
                        "NBCI_BUCKET",
                        format!(
                            "{bucket:?} is not a bucket name (3-63 lowercase letters, digits, -, _ and .)"
                        ),
                    ));
                }
                Storage::Gcs {
                    bucket: name.to_owned(),
                    emulator: value("STORAGE_EMULATOR_HOST"),
                }
            }
            None if matches!(service, Service::Serve | Service::Pipeline) => {
                Storage::Directory(data_dir.clone())
            }
            None => {
                return Err(ConfigError::Missing {
                    name: "NBCI_BUCKET",
                    meaning: "the Cloud Storage bucket; the directory bucket is for `nbci serve` only",
                });
            }
        };
        let executor = match value("NBCI_EXECUTOR").as_deref() {
            None if matches!(service, Service::Serve | Service::Pipeline) => ExecutorKind::Local,
            None if directory_bucket.is_some() => ExecutorKind::Local,
            None => ExecutorKind::Vertex,
            Some("local") if service == Service::Serve || directory_bucket.is_some() => {
                ExecutorKind::Local
            }
            Some("vertex") => ExecutorKind::Vertex,
            Some("ai-platform") => ExecutorKind::AiPlatform,
            Some("local") => {
                return Err(invalid(
                    "NBCI_EXECUTOR",
                    format!(
                        "local runs notebooks on this machine: only `nbci serve` does that, not {}",
                        service.name()
                    ),
                ));
            }
            Some(other) => {
                return Err(invalid(
                    "NBCI_EXECUTOR",
                    format!("{other:?} is not one of local, vertex, ai-platform"),
                ));
            }
        };
        let project = value("GOOGLE_CLOUD_PROJECT");
        let region = value("NBCI_REGION").unwrap_or_else(|| "us-central1".into());
        let cloud = match executor {
            ExecutorKind::Local => None,
            ExecutorKind::Vertex | ExecutorKind::AiPlatform => {
                if !matches!(storage, Storage::Gcs { .. }) {
                    return Err(ConfigError::Missing {
                        name: "NBCI_BUCKET",
                        meaning: "cloud jobs read their source from, and write results to, a Cloud Storage bucket",
                    });
                }
                Some(CloudSettings {
                    project: project.clone().ok_or(ConfigError::Missing {
                        name: "GOOGLE_CLOUD_PROJECT",
                        meaning: "the project cloud jobs run in",
                    })?,
                    region: region.clone(),
                    runner_image: required("NBCI_RUNNER_IMAGE")?,
                    runner_service_account: value("NBCI_RUNNER_SERVICE_ACCOUNT"),
                    vertex_endpoint: http_url("NBCI_VERTEX_ENDPOINT")?,
                    ml_endpoint: http_url("NBCI_ML_ENDPOINT")?,
                })
            }
        };
        let dispatch_topic = match value("NBCI_DISPATCH_TOPIC") {
            None => None,
            Some(topic) => {
                let parts: Vec<&str> = topic.split('/').collect();
                let valid = parts.len() == 4
                    && parts[0] == "projects"
                    && parts[2] == "topics"
                    && !parts[1].is_empty()
                    && !parts[3].is_empty();
                if !valid {
                    return Err(invalid(
                        "NBCI_DISPATCH_TOPIC",
                        format!("{topic:?} is not projects/PROJECT/topics/TOPIC"),
                    ));
                }
                Some(topic)
            }
        };
        let oidc = match value("NBCI_OIDC_AUDIENCE") {
            None => None,
            Some(audience) => Some(OidcSettings {
                audience,
                email: value("NBCI_OIDC_EMAIL"),
                jwks_url: http_url("NBCI_OIDC_JWKS_URL")?,
            }),
        };
        let defaults = HttpLimits::default();
        let body_memory_mib = count("NBCI_HTTP_BODY_MEMORY_MIB", defaults.body_memory >> 20)?;
        if body_memory_mib < MIN_BODY_MEMORY_MIB {
            return Err(invalid(
                "NBCI_HTTP_BODY_MEMORY_MIB",
                format!(
                    "{body_memory_mib} MiB cannot hold one webhook payload (25 MiB): at least {MIN_BODY_MEMORY_MIB}"
                ),
            ));
        }
        let http = HttpLimits {
            max_connections: count("NBCI_HTTP_MAX_CONNECTIONS", defaults.max_connections)?,
            header_timeout: duration("NBCI_HTTP_HEADER_TIMEOUT", defaults.header_timeout)?,
            body_timeout: duration("NBCI_HTTP_BODY_TIMEOUT", defaults.body_timeout)?,
            request_timeout: duration("NBCI_HTTP_REQUEST_TIMEOUT", defaults.request_timeout)?,
            stall_timeout: duration("NBCI_HTTP_STALL_TIMEOUT", defaults.stall_timeout)?,
            body_memory: body_memory_mib.saturating_mul(1 << 20),
        };
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Self {
            service,
            port,
            webhook_secret,
            github,
            public_url: http_url("NBCI_PUBLIC_URL")?,
            storage,
            data_dir,
            executor,
            cloud,
            project,
            region,
            vertex_endpoint: http_url("NBCI_VERTEX_ENDPOINT")?,
            ml_endpoint: http_url("NBCI_ML_ENDPOINT")?,
            dispatch_topic,
            pubsub_emulator: value("PUBSUB_EMULATOR_HOST"),
            oidc,
            jobs: count("NBCI_JOBS", cores)?,
            max_output: size("NBCI_MAX_OUTPUT", DEFAULT_MAX_OUTPUT)?,
            max_html: size("NBCI_MAX_HTML", DEFAULT_MAX_HTML)?,
            max_notebooks: count("NBCI_MAX_NOTEBOOKS", 50)?,
            job_timeout: duration("NBCI_JOB_TIMEOUT", Duration::from_secs(3600))?,
            lost_job_grace: duration("NBCI_LOST_JOB_GRACE", Duration::from_secs(600))?,
            retry_max: duration("NBCI_RETRY_MAX", Duration::from_secs(300))?,
            lease_ttl: duration("NBCI_LEASE_TTL", Duration::from_secs(300))?,
            python: value("NBCI_PYTHON").map(PathBuf::from),
            http,
        })
    }
}

/// Cloud Storage's bucket-name rules, in short: 3 to 63 characters of
/// lowercase letters, digits, `-`, `_` and `.`, starting and ending with a
/// letter or digit.
fn valid_bucket_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && edge(name.chars().next())
        && edge(name.chars().last())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----";

    #[test]
    fn every_variable_is_declared_once_and_read_by_someone() {
        let mut seen = std::collections::HashSet::new();
        for variable in VARIABLES {
            assert!(seen.insert(variable.name), "{} twice", variable.name);
            assert!(!variable.services.is_empty(), "{}", variable.name);
            assert!(!variable.meaning.is_empty(), "{}", variable.name);
        }
        assert!(
            variables_of(Service::Serve).count() >= variables_of(Service::GithubWebhook).count()
        );
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        let error = Config::from_lookup(Service::GithubWebhook, lookup(&[])).expect_err("missing");
        assert!(
            matches!(
                error,
                ConfigError::Missing {
                    name: "GITHUB_WEBHOOK_SECRET",
                    ..
                }
            ),
            "{error}"
        );
        let base = [
            ("GITHUB_WEBHOOK_SECRET", "s3cret"),
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_PRIVATE_KEY", KEY),
            ("NBCI_BUCKET", "gs://my-bucket"),
            ("GOOGLE_CLOUD_PROJECT", "p"),
            ("NBCI_RUNNER_IMAGE", "us-docker.pkg.dev/p/r/runner:1"),
        ];
        for (name, value) in [
            ("PORT", "http"),
            ("NBCI_BUCKET", "Not_A_Bucket!"),
            ("NBCI_DISPATCH_TOPIC", "topics/t"),
            ("NBCI_MAX_NOTEBOOKS", "many"),
            ("NBCI_JOB_TIMEOUT", "soon"),
            ("NBCI_JOB_TIMEOUT", "1e30"),
            ("NBCI_EXECUTOR", "cloud"),
            ("NBCI_EXECUTOR", "local"),
            ("GITHUB_API_URL", "ftp://x"),
            ("NBCI_PUBLIC_URL", "not a url"),
            ("NBCI_HTTP_MAX_CONNECTIONS", "0"),
            ("NBCI_HTTP_HEADER_TIMEOUT", "never"),
            ("NBCI_HTTP_BODY_MEMORY_MIB", "8"),
            ("NBCI_HTTP_REQUEST_TIMEOUT", "1e30"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, value));
            let error = Config::from_lookup(Service::GithubWebhook, lookup(&vars)).expect_err(name);
            assert!(error.to_string().starts_with(name), "{name}: {error}");
        }
        let config = Config::from_lookup(Service::GithubWebhook, lookup(&base)).expect("valid");
        assert_eq!(config.job_timeout, Duration::from_secs(3600));
        assert_eq!(config.http, HttpLimits::default());
        assert_eq!(config.port, 8080);
        assert_eq!(config.executor, ExecutorKind::Vertex, "the cloud default");
        assert_eq!(
            config.storage,
            Storage::Gcs {
                bucket: "my-bucket".into(),
                emulator: None
            }
        );
        // A cloud executor names what it lacks.
        let without_image: Vec<_> = base
            .iter()
            .copied()
            .filter(|(n, _)| *n != "NBCI_RUNNER_IMAGE")
            .collect();
        let error =
            Config::from_lookup(Service::GithubWebhook, lookup(&without_image)).expect_err("image");
        assert!(
            matches!(
                error,
                ConfigError::Missing {
                    name: "NBCI_RUNNER_IMAGE",
                    ..
                }
            ),
            "{error}"
        );
        // nbci serve needs nothing of Google's.
        let local = Config::from_lookup(Service::Serve, lookup(&base[..3])).expect("serve");
        assert_eq!(
            (local.executor, local.storage),
            (ExecutorKind::Local, Storage::Directory(".nbci-data".into()))
        );
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "secrets never print"
        );
    }

    #[test]
    fn an_absolute_path_as_the_bucket_is_a_directory_bucket_with_local_jobs() {
        let base = [
            ("GITHUB_WEBHOOK_SECRET", "s3cret"),
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_PRIVATE_KEY", KEY),
        ];
        for bucket in ["/dev/shm/nbci-bucket", "file:///dev/shm/nbci-bucket"] {
            let mut vars = base.to_vec();
            vars.push(("NBCI_BUCKET", bucket));
            for service in [Service::GithubWebhook, Service::GcsEvents] {
                let config = Config::from_lookup(service, lookup(&vars)).expect(bucket);
                assert_eq!(
                    (config.storage, config.executor, config.data_dir),
                    (
                        Storage::Directory("/dev/shm/nbci-bucket".into()),
                        ExecutorKind::Local,
                        PathBuf::from("/dev/shm/nbci-bucket")
                    ),
                    "{bucket}"
                );
            }
            // Cloud jobs need Cloud Storage.
            vars.push(("NBCI_EXECUTOR", "vertex"));
            let error = Config::from_lookup(Service::GithubWebhook, lookup(&vars))
                .expect_err("vertex over a directory");
            assert!(error.to_string().starts_with("NBCI_BUCKET"), "{error}");
        }
    }

    #[test]
    fn output_and_html_caps_are_sizes() {
        let serve = |vars: &[(&str, &str)]| {
            let mut all = vec![
                ("GITHUB_WEBHOOK_SECRET", "s"),
                ("GITHUB_APP_ID", "1"),
                ("GITHUB_APP_PRIVATE_KEY", KEY),
            ];
            all.extend_from_slice(vars);
            Config::from_lookup(Service::Serve, lookup(&all))
        };
        let config = serve(&[]).expect("defaults");
        assert_eq!(
            (config.max_output, config.max_html),
            (DEFAULT_MAX_OUTPUT, DEFAULT_MAX_HTML)
        );
        let config =
            serve(&[("NBCI_MAX_OUTPUT", "64MB"), ("NBCI_MAX_HTML", "1 MiB")]).expect("valid");
        assert_eq!((config.max_output, config.max_html), (64_000_000, 1 << 20));
        let error = serve(&[("NBCI_MAX_OUTPUT", "lots")]).expect_err("invalid");
        assert!(
            error.to_string().starts_with("NBCI_MAX_OUTPUT is invalid"),
            "{error}"
        );
    }

    #[test]
    fn a_service_reads_only_its_variables() {
        // gcs-events receives no webhooks: it needs no webhook secret.
        let vars = [
            ("NBCI_MAX_NOTEBOOKS", "x"),
            ("NBCI_JOBS", "x"),
            ("PORT", "9000"),
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_PRIVATE_KEY", KEY),
            ("NBCI_BUCKET", "b-1"),
            ("NBCI_EXECUTOR", "ai-platform"),
            ("GOOGLE_CLOUD_PROJECT", "p"),
            ("NBCI_RUNNER_IMAGE", "img"),
        ];
        let config = Config::from_lookup(Service::GcsEvents, lookup(&vars)).expect("valid");
        assert!(config.webhook_secret.is_none());
        assert_eq!(config.max_notebooks, 50, "not its variable: not read");
        assert_eq!(config.port, 9000);
    }
}
