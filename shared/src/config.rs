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

use crate::domain::notebook::parse_duration;
use crate::util::secret::Secret;

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
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::GithubWebhook => "github-webhook",
            Service::GcsEvents => "gcs-events",
            Service::Scheduler => "scheduler",
            Service::Serve => "nbci serve",
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

use Service::{GcsEvents, GithubWebhook, Scheduler, Serve};

const ALL: &[Service] = &[GithubWebhook, GcsEvents, Scheduler, Serve];
/// Services that drive checks. (gcs-events and the scheduler join them when
/// they complete checks from finalize events and ticks.)
const CHECKS: &[Service] = &[GithubWebhook, Serve];
const WEBHOOK: &[Service] = &[GithubWebhook, Serve];

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
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_DATA_DIR",
        default: Some(".nbci-data"),
        meaning: "the directory bucket: staged sources, check states, executed notebooks",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_EXECUTOR",
        default: Some("local"),
        meaning: "where notebooks run: local (papermill on this machine)",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "NBCI_JOBS",
        default: Some("the number of cores"),
        meaning: "notebooks the local executor runs at once",
        services: CHECKS,
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
        services: WEBHOOK,
        secret: false,
    },
    Variable {
        name: "NBCI_LOST_JOB_GRACE",
        default: Some("10m"),
        meaning: "how long past its timeout a job may run before it is cancelled and its check timed out",
        services: CHECKS,
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
        name: "NBCI_PYTHON",
        default: Some("a .venv above nbci or the working directory, else python3"),
        meaning: "the Python interpreter with papermill that runs notebooks locally",
        services: CHECKS,
        secret: false,
    },
    Variable {
        name: "RUST_LOG",
        default: Some("info"),
        meaning: "log filter (tracing's EnvFilter syntax)",
        services: ALL,
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
        meaning: "the project, for the trace field of log lines",
        services: ALL,
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
    /// papermill subprocesses on this machine.
    Local,
}

/// The GitHub App's settings.
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    pub app_id: String,
    /// The private key's PEM text (read from the file when a path was given).
    pub private_key: Secret,
    pub api_url: String,
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
    pub data_dir: PathBuf,
    pub executor: ExecutorKind,
    pub jobs: usize,
    pub max_notebooks: usize,
    pub job_timeout: Duration,
    pub lost_job_grace: Duration,
    pub retry_max: Duration,
    pub python: Option<PathBuf>,
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
        let required = |name: &'static str| -> Result<String, ConfigError> {
            value(name).ok_or_else(|| ConfigError::Missing {
                name,
                meaning: VARIABLES
                    .iter()
                    .find(|v| v.name == name)
                    .map_or("", |v| v.meaning),
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
                value("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into());
            let parsed = url::Url::parse(&api_url).map_err(|error| {
                invalid(
                    "GITHUB_API_URL",
                    format!("{api_url:?} is not a URL: {error}"),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
                return Err(invalid(
                    "GITHUB_API_URL",
                    format!("{api_url:?} must be an http(s) URL without a query"),
                ));
            }
            Some(GitHubSettings {
                app_id,
                private_key: Secret::new(private_key),
                api_url,
            })
        } else {
            None
        };
        let public_url = match value("NBCI_PUBLIC_URL") {
            None => None,
            Some(url) => {
                let trimmed = url.trim_end_matches('/').to_owned();
                match url::Url::parse(&trimmed) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(trimmed),
                    _ => {
                        return Err(invalid(
                            "NBCI_PUBLIC_URL",
                            format!("{url:?} is not an http(s) URL"),
                        ));
                    }
                }
            }
        };
        let executor = match value("NBCI_EXECUTOR").as_deref() {
            None | Some("local") => ExecutorKind::Local,
            Some(other) => {
                return Err(invalid(
                    "NBCI_EXECUTOR",
                    format!(
                        "{other:?}: this build runs notebooks with the local executor only (local)"
                    ),
                ));
            }
        };
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Self {
            service,
            port,
            webhook_secret,
            github,
            public_url,
            data_dir: value("NBCI_DATA_DIR")
                .map_or_else(|| PathBuf::from(".nbci-data"), PathBuf::from),
            executor,
            jobs: count("NBCI_JOBS", cores)?,
            max_notebooks: count("NBCI_MAX_NOTEBOOKS", 50)?,
            job_timeout: duration("NBCI_JOB_TIMEOUT", Duration::from_secs(3600))?,
            lost_job_grace: duration("NBCI_LOST_JOB_GRACE", Duration::from_secs(600))?,
            retry_max: duration("NBCI_RETRY_MAX", Duration::from_secs(300))?,
            python: value("NBCI_PYTHON").map(PathBuf::from),
        })
    }
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
        ];
        for (name, value) in [
            ("PORT", "http"),
            ("NBCI_JOBS", "0"),
            ("NBCI_MAX_NOTEBOOKS", "many"),
            ("NBCI_JOB_TIMEOUT", "soon"),
            ("NBCI_JOB_TIMEOUT", "1e30"),
            ("NBCI_EXECUTOR", "cloud"),
            ("GITHUB_API_URL", "ftp://x"),
            ("NBCI_PUBLIC_URL", "not a url"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, value));
            let error = Config::from_lookup(Service::GithubWebhook, lookup(&vars)).expect_err(name);
            assert!(error.to_string().starts_with(name), "{name}: {error}");
        }
        let config = Config::from_lookup(Service::GithubWebhook, lookup(&base)).expect("valid");
        assert_eq!(config.job_timeout, Duration::from_secs(3600));
        assert_eq!(config.port, 8080);
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "secrets never print"
        );
    }

    #[test]
    fn a_service_reads_only_its_variables() {
        // gcs-events receives no webhooks: it needs no webhook secret.
        let vars = [("NBCI_MAX_NOTEBOOKS", "x"), ("PORT", "9000")];
        let config = Config::from_lookup(Service::GcsEvents, lookup(&vars)).expect("valid");
        assert!(config.webhook_secret.is_none());
        assert_eq!(config.max_notebooks, 50, "not its variable: not read");
        assert_eq!(config.port, 9000);
    }
}
