//! What both cloud executors derive from a [`Job`] the same way: the
//! runner's arguments (**contract**), the image and machine, the time limit
//! Google enforces, labels, and the settings all of it comes from.

use std::collections::BTreeMap;
use std::time::Duration;

use super::rest::{SetupError, check_segment};
use crate::domain::job::Job;
use crate::domain::layout;

/// The first argument of every cloud job: the runner image's entrypoint is
/// `nbci`, so the container runs `nbci runner gs://BUCKET/KEY/job.json`.
pub const RUNNER_SUBCOMMAND: &str = "runner";
/// The machine type when neither the job nor the settings name one.
pub const DEFAULT_MACHINE_TYPE: &str = "n1-standard-4";
/// The time Google's own limit leaves past the notebook's (see
/// [`JobSettings::timeout_margin`]).
pub const DEFAULT_TIMEOUT_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Labels Google accepts: lowercase letters, digits, `_` and `-`, at most 63
/// characters (keys must also start with a letter).
pub const MAX_LABEL_CHARS: usize = 63;
/// The label that names a job's folder (its [`layout::flat_id`]): how a
/// retried submit finds the job of the first, and how people find nbci's
/// jobs in the console (`labels.nbci_job=...`). An underscore rather than a
/// dash, so the key needs no quoting in a list filter.
pub const FOLDER_LABEL: &str = "nbci_job";
/// The label that says what kind of work a job does (`ci`, `pipelines`).
pub const KIND_LABEL: &str = "nbci_kind";
/// The label that says nbci made the job.
pub const CREATED_BY_LABEL: &str = "created_by";

/// Where and how cloud jobs run: one per service, from its configuration
/// (`GOOGLE_CLOUD_PROJECT`, `NBCI_REGION`, `NBCI_BUCKET`, `NBCI_RUNNER_IMAGE`,
/// `NBCI_RUNNER_SERVICE_ACCOUNT`, and `NBCI_VERTEX_ENDPOINT` or
/// `NBCI_ML_ENDPOINT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// The project jobs run in (its id, as in `projects/{project}/...`).
    pub project: String,
    /// The region jobs run in (`us-central1`); Vertex AI's default endpoint
    /// is regional, AI Platform takes it in the body.
    pub region: String,
    /// The bucket of the job records (a name; `gs://name` is read as name):
    /// the job's only argument points into it.
    pub bucket: String,
    /// The image for jobs whose notebook names none: it must be an `nbci`
    /// runner image (entrypoint `nbci`).
    pub runner_image: String,
    /// The machine for jobs whose notebook names none.
    pub machine_type: String,
    /// The identity jobs run as (`serviceAccount`); unset, Google's default
    /// for the service. It needs to read and write the bucket, nothing more.
    pub service_account: Option<String>,
    /// The API root instead of Google's (wiremock, an API-compatible
    /// service): `http(s)://host[:port][/path]`, without `/v1`.
    pub endpoint: Option<String>,
    /// Added to the notebook's limit for Google's: the runner enforces the
    /// notebook's limit itself and then still has to write a `timed_out`
    /// result and upload the executed notebook, which Google's hard stop
    /// would prevent.
    pub timeout_margin: Duration,
    /// Limit of one API call (not of the job).
    pub request_timeout: Duration,
}

impl JobSettings {
    /// Settings with the defaults for everything but what has none.
    pub fn new(
        project: impl Into<String>,
        region: impl Into<String>,
        bucket: impl Into<String>,
        runner_image: impl Into<String>,
    ) -> Self {
        Self {
            project: project.into(),
            region: region.into(),
            bucket: bucket.into(),
            runner_image: runner_image.into(),
            machine_type: DEFAULT_MACHINE_TYPE.into(),
            service_account: None,
            endpoint: None,
            timeout_margin: DEFAULT_TIMEOUT_MARGIN,
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Checks what would otherwise fail only at the first job: names that
    /// go into URLs, a bucket, an image.
    pub fn validate(&self) -> Result<(), SetupError> {
        check_segment("GOOGLE_CLOUD_PROJECT", &self.project)?;
        check_segment("NBCI_REGION", &self.region)?;
        let bucket = self.bucket_name();
        if bucket.is_empty() || bucket.contains('/') {
            return Err(SetupError::InvalidSetting {
                name: "NBCI_BUCKET",
                reason: format!("{:?} is not a bucket name", self.bucket),
            });
        }
        if self.runner_image.trim().is_empty() {
            return Err(SetupError::InvalidSetting {
                name: "NBCI_RUNNER_IMAGE",
                reason: "cloud jobs need a runner image".into(),
            });
        }
        Ok(())
    }

    /// The bucket's name, whether it was given as `name` or `gs://name/`.
    pub fn bucket_name(&self) -> &str {
        self.bucket
            .strip_prefix("gs://")
            .unwrap_or(&self.bucket)
            .trim_end_matches('/')
    }

    /// The job's arguments (**contract**): exactly
    /// `["runner", "gs://BUCKET/{prefix}/job.json"]`.
    pub fn runner_args(&self, job: &Job) -> Vec<String> {
        vec![
            RUNNER_SUBCOMMAND.to_owned(),
            format!("gs://{}/{}", self.bucket_name(), job.record_key()),
        ]
    }

    /// The job's image, else the runner image. `local` (what jobs meant for
    /// this machine record) is no image.
    pub fn image<'a>(&'a self, job: &'a Job) -> &'a str {
        let image = job.image.trim();
        if image.is_empty() || image == "local" {
            &self.runner_image
        } else {
            image
        }
    }

    /// The job's machine, else the default one.
    pub fn machine_type<'a>(&'a self, job: &'a Job) -> &'a str {
        job.machine
            .machine_type
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.machine_type)
    }

    /// Google's limit for the job: the notebook's plus the margin, whole
    /// seconds rounded up; none when the notebook has none (Google's default,
    /// seven days, applies).
    pub fn job_timeout(&self, job: &Job) -> Option<Duration> {
        job.timeout()
            .map(|timeout| round_up_to_seconds(timeout.saturating_add(self.timeout_margin)))
    }
}

/// The accelerator a job asks for, as Google's enum spells it, and how many;
/// none when the job names no type. `nvidia-tesla-t4` (gcloud's spelling) is
/// read as `NVIDIA_TESLA_T4`; a count of none means one.
pub fn accelerator(job: &Job) -> Option<(String, u32)> {
    let kind = job.machine.accelerator_type.as_deref()?.trim();
    if kind.is_empty() {
        return None;
    }
    let kind = kind.to_ascii_uppercase().replace('-', "_");
    Some((kind, job.machine.accelerator_count.unwrap_or(1)))
}

/// A duration as Google's JSON spells it (`google-duration`): seconds with
/// an `s`, such as `"3900s"`.
pub fn google_duration(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

fn round_up_to_seconds(duration: Duration) -> Duration {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        Duration::from_secs(seconds.saturating_add(1))
    } else {
        Duration::from_secs(seconds)
    }
}

/// The labels of a job: its folder's id, its kind, and that nbci made it;
/// every key and value valid for Google.
pub fn labels(job: &Job) -> BTreeMap<String, String> {
    let kind = job.prefix.split('/').next().unwrap_or_default();
    let mut labels = BTreeMap::new();
    labels.insert(FOLDER_LABEL.to_owned(), folder_label(&job.prefix));
    labels.insert(KIND_LABEL.to_owned(), label_value(kind));
    labels.insert(CREATED_BY_LABEL.to_owned(), "nbci".to_owned());
    labels
}

/// The [`FOLDER_LABEL`] value of a job folder: 32 hex digits.
pub fn folder_label(prefix: &str) -> String {
    layout::flat_id(prefix)
}

/// `text` as a label value: lowercase, every other character `-`, at most
/// [`MAX_LABEL_CHARS`].
pub fn label_value(text: &str) -> String {
    text.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL_CHARS)
        .collect()
}

/// Whether Google accepts `key: value` as a label.
pub fn is_valid_label(key: &str, value: &str) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key.chars().count() <= MAX_LABEL_CHARS
        && key.chars().all(allowed)
        && value.chars().count() <= MAX_LABEL_CHARS
        && value.chars().all(allowed)
}

/// A display name for people: `nbci {notebook}`, at most `max_chars`.
pub fn display_name(job: &Job, max_chars: usize) -> String {
    format!("nbci {}", job.notebook)
        .chars()
        .take(max_chars)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::job::Machine;
    use crate::domain::params::Parameters;

    pub(crate) fn job(prefix: &str) -> Job {
        Job {
            prefix: prefix.into(),
            source: "src/octo/demo/0123abc.tar.gz".into(),
            notebook: "notebooks/train.ipynb".into(),
            parameters: Parameters::new(),
            timeout_s: Some(3600.0),
            image: String::new(),
            machine: Machine::default(),
        }
    }

    pub(crate) fn settings(endpoint: &str) -> JobSettings {
        JobSettings {
            endpoint: Some(endpoint.into()),
            ..JobSettings::new(
                "demo-project",
                "us-central1",
                "gs://nbci-demo/",
                "us-docker.pkg.dev/demo-project/nbci/runner:1",
            )
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_up_front() {
        assert_eq!(settings("http://x").validate(), Ok(()));
        for (change, variable) in [
            (
                (|s: &mut JobSettings| s.project = "a/b".into()) as fn(&mut JobSettings),
                "GOOGLE_CLOUD_PROJECT",
            ),
            (|s| s.region = String::new(), "NBCI_REGION"),
            (|s| s.bucket = "gs://".into(), "NBCI_BUCKET"),
            (|s| s.bucket = "a/b".into(), "NBCI_BUCKET"),
            (|s| s.runner_image = " ".into(), "NBCI_RUNNER_IMAGE"),
        ] {
            let mut settings = settings("http://x");
            change(&mut settings);
            let error = settings.validate().expect_err(variable);
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn the_arguments_are_the_contract() {
        let job = job("ci/octo/demo/0123abc/notebooks/train.ipynb");
        assert_eq!(
            settings("http://x").runner_args(&job),
            [
                "runner",
                "gs://nbci-demo/ci/octo/demo/0123abc/notebooks/train.ipynb/job.json"
            ]
        );
    }

    #[test]
    fn the_job_s_image_and_machine_win_over_the_defaults() {
        let settings = settings("http://x");
        let mut job = job("ci/o/r/s/nb.ipynb");
        assert_eq!(settings.image(&job), settings.runner_image);
        job.image = "local".into();
        assert_eq!(settings.image(&job), settings.runner_image);
        job.image = "gcr.io/x/y:2".into();
        assert_eq!(settings.image(&job), "gcr.io/x/y:2");
        assert_eq!(settings.machine_type(&job), DEFAULT_MACHINE_TYPE);
        job.machine.machine_type = Some("n1-highmem-8".into());
        assert_eq!(settings.machine_type(&job), "n1-highmem-8");
    }

    #[test]
    fn google_s_limit_is_the_notebook_s_plus_a_margin_in_whole_seconds() {
        let settings = settings("http://x");
        let mut job = job("ci/o/r/s/nb.ipynb");
        assert_eq!(
            settings.job_timeout(&job).map(google_duration).as_deref(),
            Some("3900s")
        );
        job.timeout_s = Some(0.5);
        assert_eq!(settings.job_timeout(&job), Some(Duration::from_secs(301)));
        job.timeout_s = None;
        assert_eq!(settings.job_timeout(&job), None);
        job.timeout_s = Some(f64::INFINITY);
        assert!(settings.job_timeout(&job).is_some());
    }

    #[test]
    fn accelerators_take_google_s_spelling() {
        let mut job = job("ci/o/r/s/nb.ipynb");
        assert_eq!(accelerator(&job), None);
        job.machine.accelerator_count = Some(2);
        assert_eq!(accelerator(&job), None, "a count alone asks for nothing");
        job.machine.accelerator_type = Some("nvidia-tesla-t4".into());
        assert_eq!(accelerator(&job), Some(("NVIDIA_TESLA_T4".into(), 2)));
        job.machine.accelerator_count = None;
        assert_eq!(accelerator(&job), Some(("NVIDIA_TESLA_T4".into(), 1)));
    }

    #[test]
    fn labels_are_valid_for_google_whatever_the_folder() {
        for prefix in [
            "ci/Octo-Org/Hello.World/0123abc/notebooks/Ünïcode name.ipynb",
            "pipelines/train-and-deploy/runs/20261130T0300/1",
            &format!("{}/x", "A".repeat(300)),
        ] {
            let labels = labels(&job(prefix));
            assert_eq!(labels.len(), 3);
            for (key, value) in &labels {
                assert!(is_valid_label(key, value), "{key}={value}");
            }
            assert_eq!(labels[FOLDER_LABEL], layout::flat_id(prefix));
        }
        assert_ne!(folder_label("ci/a"), folder_label("ci/b"));
        assert!(!is_valid_label("Upper", "x"));
        assert!(!is_valid_label("9key", "x"));
        assert!(!is_valid_label("key", &"x".repeat(64)));
    }

    #[test]
    fn display_names_are_cut_on_characters() {
        let mut job = job("ci/o/r/s/nb.ipynb");
        job.notebook = "ü".repeat(200);
        let name = display_name(&job, 128);
        assert_eq!(name.chars().count(), 128);
        assert!(name.starts_with("nbci ü"));
    }
}
