//! One notebook execution as an executor sees it.
//!
//! Before a job is submitted its record is written beside its files as
//! `job.json` (**contract**): the source key, the notebook path, the
//! parameters, the timeout, the image and the machine; once submitted, also
//! the executor's handle. `nbci runner gs://BUCKET/{prefix}/job.json` reads it
//! and needs nothing else.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::layout;
use super::notebook::{EnvironmentSpec, MAX_DURATION};
use super::params::Parameters;

/// The machine a job asks for (Vertex AI `machineSpec`, AI Platform
/// `masterType` and `acceleratorConfig`); unset fields take the executor's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_count: Option<u32>,
}

/// What to run and where its files go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's folder: `ci/{owner}/{repo}/{sha}/{notebook}` (or a re-run's
    /// `attempts/{n}` below it), or a pipeline step's folder.
    pub prefix: String,
    /// Key of the gzip tarball of the repository at the commit.
    pub source: String,
    /// Path of the notebook inside the repository.
    pub notebook: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Whole-notebook limit in seconds: what the notebook's metadata (or the
    /// pipeline step) says, else the service's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// The container image (what the result records as `runtime.image`;
    /// `local` for jobs run on this machine).
    pub image: String,
    #[serde(default)]
    pub machine: Machine,
}

impl Job {
    pub fn input_key(&self) -> String {
        layout::job_file(&self.prefix, layout::INPUT_FILE)
    }
    pub fn output_key(&self) -> String {
        layout::job_file(&self.prefix, layout::OUTPUT_FILE)
    }
    pub fn html_key(&self) -> String {
        layout::job_file(&self.prefix, layout::HTML_FILE)
    }
    pub fn result_key(&self) -> String {
        layout::job_file(&self.prefix, layout::RESULT_FILE)
    }
    pub fn record_key(&self) -> String {
        layout::job_file(&self.prefix, layout::JOB_FILE)
    }

    /// The whole-notebook limit, if any; nonsense values (negative, NaN,
    /// past a century) are read as a century rather than a panic.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_s.map(|seconds| {
            Duration::try_from_secs_f64(seconds.max(0.0))
                .unwrap_or(MAX_DURATION)
                .min(MAX_DURATION)
        })
    }

    /// Applies what the notebook's metadata asks for: image, machine,
    /// timeout. `default_timeout` applies when the metadata sets none.
    pub fn apply_environment(&mut self, spec: &EnvironmentSpec, default_timeout: Option<Duration>) {
        if let Some(image) = &spec.image {
            self.image = image.clone();
        }
        if spec.machine_type.is_some() {
            self.machine.machine_type = spec.machine_type.clone();
        }
        if spec.accelerator_type.is_some() {
            self.machine.accelerator_type = spec.accelerator_type.clone();
            self.machine.accelerator_count = spec.accelerator_count.or(Some(1));
        }
        if let Some(timeout) = spec.timeout.or(default_timeout) {
            self.timeout_s = Some(timeout.as_secs_f64());
        }
    }
}

/// What an executor calls a submitted job: a Vertex AI CustomJob's resource
/// name as Google returned it, an AI Platform job name, a local job's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobHandle(pub String);

impl std::fmt::Display for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a submitted job is, as its executor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not running yet (queued, provisioning).
    Pending,
    Running,
    /// Ended by itself; its result.json says how the notebook did.
    Succeeded,
    /// Ended with an error of the job itself (image pull, quota, preemption).
    Failed {
        message: String,
    },
    /// Cancelled (by nbci or by someone else).
    Cancelled {
        message: String,
    },
    /// The executor does not know the handle (a local job of a process that
    /// has since restarted, or a job deleted from the cloud).
    Unknown,
}

impl JobState {
    /// Whether the job will not run any further.
    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed { .. } | Self::Cancelled { .. } | Self::Unknown
        )
    }
}

/// Who a job works for: what its result completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobOrigin {
    /// A CI check: the check's folder and which attempt this job is.
    Check { check: String, attempt: u32 },
    /// A step of a pipeline run.
    PipelineStep {
        pipeline: String,
        run_id: String,
        step: usize,
    },
}

/// `job.json`: the job, who it works for and, once submitted, its handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    #[serde(flatten)]
    pub job: Job,
    pub origin: JobOrigin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<JobHandle>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            prefix: "ci/o/r/s/nb.ipynb".into(),
            source: "src/o/r/s.tar.gz".into(),
            notebook: "nb.ipynb".into(),
            parameters: Parameters::new(),
            timeout_s: None,
            image: "local".into(),
            machine: Machine::default(),
        }
    }

    #[test]
    fn keys_sit_in_the_jobs_folder() {
        let job = job();
        assert_eq!(job.result_key(), "ci/o/r/s/nb.ipynb/result.json");
        assert_eq!(job.record_key(), "ci/o/r/s/nb.ipynb/job.json");
    }

    #[test]
    fn absurd_timeouts_do_not_panic() {
        for seconds in [1e30, f64::INFINITY, f64::NAN, -1.0, f64::MAX] {
            let job = Job {
                timeout_s: Some(seconds),
                ..job()
            };
            assert!(job.timeout().is_some_and(|t| t <= MAX_DURATION));
        }
    }

    #[test]
    fn the_record_is_the_job_flattened() {
        let record = JobRecord {
            job: job(),
            origin: JobOrigin::Check {
                check: "ci/o/r/s/nb.ipynb".into(),
                attempt: 1,
            },
            handle: Some(JobHandle("projects/1/locations/r/customJobs/2".into())),
        };
        let value = serde_json::to_value(&record).expect("json");
        assert_eq!(value["notebook"], "nb.ipynb");
        assert_eq!(value["origin"]["kind"], "check");
        assert_eq!(value["handle"], "projects/1/locations/r/customJobs/2");
        let back: JobRecord = serde_json::from_value(value).expect("back");
        assert_eq!(back, record);
    }

    #[test]
    fn metadata_sets_image_machine_and_timeout() {
        let mut job = job();
        let spec = EnvironmentSpec {
            image: Some("gcr.io/x".into()),
            machine_type: Some("n1-standard-8".into()),
            accelerator_type: Some("NVIDIA_TESLA_T4".into()),
            accelerator_count: None,
            timeout: None,
        };
        job.apply_environment(&spec, Some(Duration::from_secs(3600)));
        assert_eq!(job.image, "gcr.io/x");
        assert_eq!(job.machine.accelerator_count, Some(1));
        assert_eq!(job.timeout(), Some(Duration::from_secs(3600)));
    }
}
