//! The pipeline spec `nbci.yaml` at the repository root (**contract**).
//!
//! ```yaml
//! pipelines:
//!   train-and-deploy:                # lowercase letters, digits, hyphens
//!     branch: main                   # a push to it starts a run
//!     schedule: "0 3 * * *"          # Cloud Scheduler's 5-field cron, UTC
//!     steps:
//!       - notebook: notebooks/prepare.ipynb
//!         parameters: {rows: 10000}
//!       - notebook: notebooks/train.ipynb
//!         timeout: 2h
//!         accelerator: {type: NVIDIA_TESLA_T4, count: 1}
//!         machine_type: n1-standard-8  # optional, as are `image`
//!       - notebook: notebooks/evaluate.ipynb
//!     gate:
//!       metrics: {accuracy: ">= 0.9"}
//!       better_than_deployed: accuracy # or {metric: rmse, direction: lower}
//!     deploy:
//!       target: ai-platform          # or vertex, or local
//!       model: demo_model
//!       framework: SCIKIT_LEARN
//!       runtime_version: "2.11"
//!       python_version: "3.7"
//!       set_default: true            # default true: a deployed model serves
//!       model_dir: model             # optional: below artifacts_dir
//! ```
//!
//! The spec is read when a run starts and again on every push, by people who
//! only see the error text, so validation reports every problem at once, each
//! with the YAML path of the field (`pipelines.train-and-deploy.steps[1].timeout`),
//! and a spec with any problem runs nothing. Unknown keys are refused: a typo
//! such as `timout` would otherwise silently run a step without its limit.
//!
//! A schedule is read as Cloud Scheduler reads it (Terraform hands it over
//! verbatim): five fields, in UTC, a day-of-month and a day-of-week both
//! restricted match when either does; the extensions Cloud Scheduler refuses
//! (`L`, `W`, `#`, `?`, `@daily`, seconds) are refused here too, so a spec
//! that passes here also deploys.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::gate::{BetterThan, Comparison, Direction, GateSpec, Threshold};
use crate::domain::notebook::{is_notebook_path, parse_duration_value};
use crate::domain::params::{Parameters, is_identifier};

/// The spec's file name, at the repository root.
pub const SPEC_FILE: &str = "nbci.yaml";

/// Parameters nbci gives every step; a step may not set them itself.
pub const RESERVED_PARAMETERS: [&str; 2] = ["run_id", "artifacts_dir"];

/// The longest pipeline name: a GCP label value's limit (runs are labelled
/// with their pipeline).
pub const MAX_PIPELINE_NAME: usize = 63;

/// The most accelerators a step may ask for (Vertex AI's largest machines
/// have 16 GPUs; TPU pods count cores, up to 32 here).
pub const MAX_ACCELERATORS: u64 = 64;

const TOP_KEYS: &[&str] = &["pipelines"];
const PIPELINE_KEYS: &[&str] = &["branch", "schedule", "steps", "gate", "deploy"];
const STEP_KEYS: &[&str] = &[
    "notebook",
    "parameters",
    "timeout",
    "accelerator",
    "machine_type",
    "image",
];
const ACCELERATOR_KEYS: &[&str] = &["type", "count"];
const GATE_KEYS: &[&str] = &["metrics", "better_than_deployed"];
const BETTER_THAN_KEYS: &[&str] = &["metric", "direction"];
const DEPLOY_KEYS: &[&str] = &[
    "target",
    "model",
    "framework",
    "runtime_version",
    "python_version",
    "machine_type",
    "image",
    "set_default",
    "model_dir",
];

/// One problem of a spec, named by the YAML path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Occurs when the file is not YAML, or is empty.
    #[error("{SPEC_FILE}: {reason}")]
    Syntax { reason: String },
    /// Occurs when a mapping has a key the spec does not define (a typo such as `timout`).
    #[error("{path}: unknown key (expected one of: {expected})")]
    UnknownKey { path: String, expected: String },
    /// Occurs when a required field is absent or empty.
    #[error("{path}: missing (required)")]
    Missing { path: String },
    /// Occurs when a value has the wrong YAML type (a list where a mapping goes).
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    /// Occurs when a pipeline's name cannot be a bucket key segment and a
    /// Cloud Scheduler job name.
    #[error("{path}: {name:?} is not a valid pipeline name: {reason}")]
    BadName {
        path: String,
        name: String,
        reason: String,
    },
    /// Occurs when a step's notebook path is not a repository path of a notebook.
    #[error("{path}: {notebook:?} {reason}")]
    BadNotebookPath {
        path: String,
        notebook: String,
        reason: &'static str,
    },
    /// Occurs when a step's notebook is not in the repository.
    #[error("{path}: {notebook} does not exist in the repository")]
    MissingNotebook { path: String, notebook: String },
    /// Occurs when two steps run the same notebook (their folders and
    /// results could not be told apart).
    #[error("{path}: {notebook} is already steps[{first}]: a notebook is one step of a pipeline")]
    DuplicateStep {
        path: String,
        notebook: String,
        first: usize,
    },
    /// Occurs when a schedule is not a cron expression Cloud Scheduler accepts.
    #[error("{path}: {value:?} is not a cron schedule: {reason}")]
    BadCron {
        path: String,
        value: String,
        reason: String,
    },
    /// Occurs when a step's timeout is not a positive duration.
    #[error("{path}: {reason}")]
    BadDuration { path: String, reason: String },
    /// Occurs when a step's accelerator type or count is not one a job can ask for.
    #[error("{path}: {reason}")]
    BadAccelerator { path: String, reason: String },
    /// Occurs when a gate threshold is not an operator and a finite number.
    #[error("{path}: {value:?} is not a threshold: {reason} (write e.g. \">= 0.9\")")]
    BadThreshold {
        path: String,
        value: String,
        reason: String,
    },
    /// Occurs when the deploy target is not ai-platform, vertex or local.
    #[error("{path}: unknown deploy target {value:?} (expected ai-platform, vertex or local)")]
    UnknownTarget { path: String, value: String },
    /// Occurs when the deploy target needs a field of the model that is absent.
    #[error("{path}: missing: the {target} target needs it{hint}")]
    MissingModelField {
        path: String,
        target: &'static str,
        hint: &'static str,
    },
    /// Occurs when a value breaks a rule not covered above: a branch git
    /// refuses, a reserved parameter, an unknown framework, a model name the
    /// target refuses, a gate that checks nothing.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl SpecError {
    /// The YAML path of the field the problem is about (`nbci.yaml` for the file).
    pub fn path(&self) -> &str {
        match self {
            Self::Syntax { .. } => SPEC_FILE,
            Self::UnknownKey { path, .. }
            | Self::Missing { path }
            | Self::WrongType { path, .. }
            | Self::BadName { path, .. }
            | Self::BadNotebookPath { path, .. }
            | Self::MissingNotebook { path, .. }
            | Self::DuplicateStep { path, .. }
            | Self::BadCron { path, .. }
            | Self::BadDuration { path, .. }
            | Self::BadAccelerator { path, .. }
            | Self::BadThreshold { path, .. }
            | Self::UnknownTarget { path, .. }
            | Self::MissingModelField { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Every problem of a spec, in the order of the file (pipelines by name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", list_problems(.0))]
pub struct SpecErrors(pub Vec<SpecError>);

fn list_problems(errors: &[SpecError]) -> String {
    let mut text = match errors.len() {
        1 => format!("{SPEC_FILE} has 1 problem:"),
        n => format!("{SPEC_FILE} has {n} problems:"),
    };
    for error in errors {
        text.push_str("\n  ");
        text.push_str(&error.to_string());
    }
    text
}

/// The parsed, validated `nbci.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSpec {
    /// By name.
    pub pipelines: BTreeMap<String, Pipeline>,
}

/// One pipeline: notebooks run in order, then the gate, then the deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Lowercase letters, digits and hyphens: a bucket key segment, a Cloud
    /// Scheduler job name and a label value as it is.
    pub name: String,
    /// A push to this branch starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// At least one.
    pub steps: Vec<StepSpec>,
    /// Absent: the run goes from its last step straight to the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
    /// Absent: the run ends when its steps (and gate) pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySpec>,
}

/// One notebook of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Path in the repository.
    pub notebook: String,
    /// The step's own parameters; `run_id` and `artifacts_dir` are added.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Parameters,
    /// Whole-notebook limit in seconds (the job record's unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<Accelerator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    /// The container image, over the notebook's metadata and the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl StepSpec {
    /// The step's timeout, if it sets one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_s
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
    }
}

/// The accelerators a step asks for (Vertex AI `acceleratorType` and
/// `acceleratorCount`, AI Platform `acceleratorConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accelerator {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u32,
}

/// Where a model is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployTarget {
    /// AI Platform `projects.models.versions.create` (legacy; what the seeds used).
    AiPlatform,
    /// Vertex AI `models.upload` + `endpoints.deployModel`.
    Vertex,
    /// A registry folder on this machine.
    Local,
}

impl DeployTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AiPlatform => "ai-platform",
            Self::Vertex => "vertex",
            Self::Local => "local",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "ai-platform" => Some(Self::AiPlatform),
            "vertex" => Some(Self::Vertex),
            "local" => Some(Self::Local),
            _ => None,
        }
    }
}

/// The framework a model was trained with: AI Platform's `Version.framework`,
/// and for Vertex AI the family of the pre-built serving container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Framework {
    ScikitLearn,
    Tensorflow,
    Xgboost,
    /// Vertex AI only: AI Platform's `framework` has no PyTorch.
    Pytorch,
}

impl Framework {
    const ALL: [Self; 4] = [
        Self::ScikitLearn,
        Self::Tensorflow,
        Self::Xgboost,
        Self::Pytorch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScikitLearn => "SCIKIT_LEARN",
            Self::Tensorflow => "TENSORFLOW",
            Self::Xgboost => "XGBOOST",
            Self::Pytorch => "PYTORCH",
        }
    }
}

/// The `deploy` section of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub target: DeployTarget,
    /// The model's name (AI Platform model, Vertex AI display name, local folder).
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<Framework>,
    /// AI Platform's runtime version (`"2.11"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    /// Vertex AI: the serving container image, instead of a pre-built one
    /// chosen by `framework`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Make the new version the one that serves. Default true: a CD pipeline
    /// that deploys a version nobody reaches would surprise.
    pub set_default: bool,
    /// Where the model's files are below `artifacts_dir`; absent: `artifacts_dir` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<String>,
}

/// A cron schedule as Cloud Scheduler reads it, in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: croner::Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

impl Schedule {
    /// Parses a 5-field cron expression; the reason says what is wrong.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if fields.len() != FIELDS.len() {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        for (index, field) in fields.iter().enumerate() {
            check_cron_field(index, field)?;
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser
            .parse(&fields.join(" "))
            .map_err(|error| error.to_string())?;
        // A pattern that names no real date (`0 0 30 2 *`) would never run.
        let start = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
        if cron.find_next_occurrence(&start, false).is_err() {
            return Err("it never matches a real date".into());
        }
        Ok(Self {
            expression: fields.join(" "),
            cron,
        })
    }

    /// The expression, fields separated by one space.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The latest scheduled instant in `(after, until]`, or `None` when
    /// nothing was due. A tick that finds one starts one run however many
    /// instants it missed (a scheduler down for a day starts one run, not a
    /// burst), and the instant itself names the run, so two ticks racing for
    /// the same instant start it once.
    pub fn latest_due(&self, after: Timestamp, until: Timestamp) -> Option<Timestamp> {
        if until <= after {
            return None;
        }
        let until = until.to_zoned(TimeZone::UTC);
        let due = self.cron.find_previous_occurrence(&until, true).ok()?;
        let due = due.timestamp();
        (due > after).then_some(due)
    }
}

/// One field of a cron expression: numbers, `*`, `,`, `-`, `/`, and the
/// three-letter names of months and weekdays in their fields.
fn check_cron_field(index: usize, field: &str) -> Result<(), String> {
    let name = FIELDS[index];
    for token in field.split([',', '-', '/']) {
        let upper = token.to_ascii_uppercase();
        let named = (index == 3 && MONTHS.contains(&upper.as_str()))
            || (index == 4 && WEEKDAYS.contains(&upper.as_str()));
        if token == "*" || named || (!token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        return Err(format!(
            "the {name} field {field:?} is not made of numbers, `*`, `,`, `-` and `/`{}",
            match index {
                3 => " (or JAN to DEC)",
                4 => " (or SUN to SAT)",
                _ => "",
            }
        ));
    }
    Ok(())
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.expression)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl PipelineSpec {
    /// Parses and validates `nbci.yaml`. `notebook_exists` tells whether a
    /// repository path is a file of the commit being read. Every problem is
    /// reported, not just the first.
    pub fn parse(text: &str, notebook_exists: impl Fn(&str) -> bool) -> Result<Self, SpecErrors> {
        let value =
            read_yaml(text).map_err(|reason| SpecErrors(vec![SpecError::Syntax { reason }]))?;
        let mut reader = Reader {
            errors: Vec::new(),
            notebook_exists: &notebook_exists,
        };
        let spec = reader.spec(&value);
        match spec {
            Some(spec) if reader.errors.is_empty() => Ok(spec),
            _ => Err(SpecErrors(reader.errors)),
        }
    }

    /// The pipeline called `name`.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.get(name)
    }

    /// The pipelines whose schedule is due in `(after, until]`, each with the
    /// scheduled instant (see [`Schedule::latest_due`]).
    pub fn due(&self, after: Timestamp, until: Timestamp) -> Vec<(&Pipeline, Timestamp)> {
        self.pipelines
            .values()
            .filter_map(|pipeline| Some((pipeline, pipeline.due(after, until)?)))
            .collect()
    }

    /// The pipelines a push to `git_ref` starts (`refs/heads/main` or `main`;
    /// tags and other refs start none).
    pub fn started_by_push(&self, git_ref: &str) -> Vec<&Pipeline> {
        self.pipelines
            .values()
            .filter(|pipeline| pipeline.runs_on_push(git_ref))
            .collect()
    }
}

impl Pipeline {
    /// The scheduled instant due in `(after, until]`, if any.
    pub fn due(&self, after: Timestamp, until: Timestamp) -> Option<Timestamp> {
        self.schedule.as_ref()?.latest_due(after, until)
    }

    /// Whether a push to `git_ref` (`refs/heads/main` or `main`) starts a run.
    pub fn runs_on_push(&self, git_ref: &str) -> bool {
        let branch = match git_ref.strip_prefix("refs/") {
            Some(rest) => match rest.strip_prefix("heads/") {
                Some(branch) => branch,
                None => return false,
            },
            None => git_ref,
        };
        self.branch.as_deref() == Some(branch)
    }

    /// The last step: the one that writes `metrics.json`.
    pub fn last_step(&self) -> Option<&StepSpec> {
        self.steps.last()
    }
}

/// Whether `name` can name a pipeline (lowercase letters, digits, hyphens;
/// a letter first, no hyphen last, at most 63 characters).
pub fn validate_pipeline_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_PIPELINE_NAME {
        return Err(format!("longer than {MAX_PIPELINE_NAME} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("use only lowercase letters, digits and hyphens".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("it must start with a letter".into());
    }
    if name.ends_with('-') {
        return Err("it must not end with a hyphen".into());
    }
    Ok(())
}

/// Whether `branch` is a branch name git accepts (the rules of
/// `git check-ref-format --branch` that matter here).
fn validate_branch(branch: &str) -> Result<(), String> {
    if branch.starts_with("refs/") {
        return Err(format!(
            "write the branch name without refs/heads/ (e.g. {:?})",
            branch.trim_start_matches("refs/heads/")
        ));
    }
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with('.')
        || branch.ends_with(".lock")
        || branch == "@"
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch.contains("/.")
        || branch.starts_with('.')
        || branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        return Err(format!("{branch:?} is not a valid git branch name"));
    }
    Ok(())
}

/// YAML text as a JSON value, merge keys (`<<: *defaults`) applied.
/// The largest `nbci.yaml` read: a spec is a few kilobytes.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// How deep flow collections (`[...]`, `{...}`) may nest. A spec needs two
/// or three levels; the YAML parser's time grows with the square of this
/// depth (50,000 levels in 100 KB took over a minute), so a hostile spec is
/// refused before it is parsed.
pub const MAX_FLOW_DEPTH: usize = 64;

/// The deepest nesting of flow collections in `text`, counting brackets
/// outside quoted scalars and comments (a rough count that can only err
/// towards less depth: a closing bracket in a block scalar lowers it).
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = ' ';
    for c in text.chars() {
        match (quote, c) {
            _ if comment => comment = c != '\n',
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth = depth.saturating_add(1);
                deepest = deepest.max(depth);
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == '\n' {
            // Quoted scalars rarely span lines in a spec; a stray quote must
            // not hide the rest of the file from the count.
            quote = None;
        }
        previous = c;
    }
    deepest
}

fn read_yaml(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Err("the file is empty: it must define `pipelines`".into());
    }
    if text.len() > MAX_SPEC_BYTES {
        return Err(format!(
            "the file is larger than {} KiB: a pipeline spec is a few kilobytes",
            MAX_SPEC_BYTES / 1024
        ));
    }
    if flow_depth(text) > MAX_FLOW_DEPTH {
        return Err(format!(
            "lists and mappings in [...] or {{...}} nest more than {MAX_FLOW_DEPTH} deep"
        ));
    }
    let mut yaml: serde_norway::Value =
        serde_norway::from_str(text).map_err(|error| format!("not valid YAML: {error}"))?;
    yaml.apply_merge()
        .map_err(|error| format!("not valid YAML: {error}"))?;
    serde_json::to_value(yaml).map_err(|error| format!("not a spec: {error}"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn at(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Collects the problems while walking the YAML.
struct Reader<'a> {
    errors: Vec<SpecError>,
    notebook_exists: &'a dyn Fn(&str) -> bool,
}

impl Reader<'_> {
    fn wrong_type(&mut self, path: String, expected: &'static str, found: &Value) {
        self.errors.push(SpecError::WrongType {
            path,
            expected,
            found: kind(found),
        });
    }

    fn invalid(&mut self, path: String, reason: impl Into<String>) {
        self.errors.push(SpecError::Invalid {
            path,
            reason: reason.into(),
        });
    }

    /// A mapping whose keys are all in `allowed`; unknown keys are reported.
    fn mapping<'v>(
        &mut self,
        path: &str,
        value: &'v Value,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.wrong_type(path.to_owned(), "a mapping", value);
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.errors.push(SpecError::UnknownKey {
                    path: at(path, key),
                    expected: allowed.join(", "),
                });
            }
        }
        Some(map)
    }

    /// A non-empty string; a number is refused, since YAML reads `2.10` as 2.1.
    fn string(&mut self, path: String, value: &Value) -> Option<String> {
        match value {
            Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
            Value::String(_) => {
                self.errors.push(SpecError::Missing { path });
                None
            }
            Value::Number(n) => {
                self.invalid(
                    path,
                    format!("expected a string, found the number {n} (quote it: \"{n}\")"),
                );
                None
            }
            other => {
                self.wrong_type(path, "a string", other);
                None
            }
        }
    }

    fn spec(&mut self, value: &Value) -> Option<PipelineSpec> {
        let Value::Object(_) = value else {
            self.errors.push(SpecError::Syntax {
                reason: format!(
                    "the top level must be a mapping with `pipelines`, found {}",
                    kind(value)
                ),
            });
            return None;
        };
        let top = self.mapping("", value, TOP_KEYS)?;
        let Some(pipelines) = field(top, "pipelines") else {
            self.errors.push(SpecError::Missing {
                path: "pipelines".into(),
            });
            return None;
        };
        let Value::Object(entries) = pipelines else {
            self.wrong_type("pipelines".into(), "a mapping of pipeline names", pipelines);
            return None;
        };
        if entries.is_empty() {
            self.invalid("pipelines".into(), "no pipeline is defined");
            return None;
        }
        let mut parsed = BTreeMap::new();
        for (name, value) in entries {
            if let Some(pipeline) = self.pipeline(name, value) {
                parsed.insert(name.clone(), pipeline);
            }
        }
        Some(PipelineSpec { pipelines: parsed })
    }

    fn pipeline(&mut self, name: &str, value: &Value) -> Option<Pipeline> {
        let path = format!("pipelines.{name}");
        if let Err(reason) = validate_pipeline_name(name) {
            self.errors.push(SpecError::BadName {
                path: path.clone(),
                name: name.to_owned(),
                reason,
            });
        }
        let map = self.mapping(&path, value, PIPELINE_KEYS)?;
        let branch = field(map, "branch").and_then(|value| {
            let branch_path = at(&path, "branch");
            let branch = self.string(branch_path.clone(), value)?;
            match validate_branch(&branch) {
                Ok(()) => Some(branch),
                Err(reason) => {
                    self.invalid(branch_path, reason);
                    None
                }
            }
        });
        let schedule = field(map, "schedule").and_then(|value| {
            let schedule_path = at(&path, "schedule");
            let text = self.string(schedule_path.clone(), value)?;
            match Schedule::parse(&text) {
                Ok(schedule) => Some(schedule),
                Err(reason) => {
                    self.errors.push(SpecError::BadCron {
                        path: schedule_path,
                        value: text,
                        reason,
                    });
                    None
                }
            }
        });
        let steps = self.steps(&path, field(map, "steps"));
        let gate = field(map, "gate").and_then(|value| self.gate(&at(&path, "gate"), value));
        let deploy =
            field(map, "deploy").and_then(|value| self.deploy(&at(&path, "deploy"), value));
        Some(Pipeline {
            name: name.to_owned(),
            branch,
            schedule,
            steps,
            gate,
            deploy,
        })
    }

    fn steps(&mut self, pipeline: &str, value: Option<&Value>) -> Vec<StepSpec> {
        let path = at(pipeline, "steps");
        let Some(value) = value else {
            self.errors.push(SpecError::Missing { path });
            return Vec::new();
        };
        let Value::Array(items) = value else {
            self.wrong_type(path, "a list of steps", value);
            return Vec::new();
        };
        if items.is_empty() {
            self.invalid(
                path,
                "no step is defined: a pipeline runs at least one notebook",
            );
            return Vec::new();
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut steps = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let step_path = format!("{path}[{index}]");
            let Some(step) = self.step(&step_path, item) else {
                continue;
            };
            if let Some(first) = seen.get(&step.notebook) {
                self.errors.push(SpecError::DuplicateStep {
                    path: at(&step_path, "notebook"),
                    notebook: step.notebook.clone(),
                    first: *first,
                });
            } else {
                seen.insert(step.notebook.clone(), index);
            }
            steps.push(step);
        }
        steps
    }

    fn step(&mut self, path: &str, value: &Value) -> Option<StepSpec> {
        let map = self.mapping(path, value, STEP_KEYS)?;
        let notebook_path = at(path, "notebook");
        let notebook = match field(map, "notebook") {
            None => {
                self.errors.push(SpecError::Missing {
                    path: notebook_path,
                });
                None
            }
            Some(value) => self
                .string(notebook_path.clone(), value)
                .and_then(|notebook| self.notebook(notebook_path, notebook)),
        };
        let parameters = field(map, "parameters")
            .map(|value| self.parameters(&at(path, "parameters"), value))
            .unwrap_or_default();
        let timeout_s = field(map, "timeout").and_then(|value| match parse_duration_value(value) {
            Ok(duration) => Some(duration.as_secs_f64()),
            Err(reason) => {
                self.errors.push(SpecError::BadDuration {
                    path: at(path, "timeout"),
                    reason,
                });
                None
            }
        });
        let accelerator = field(map, "accelerator")
            .and_then(|value| self.accelerator(&at(path, "accelerator"), value));
        let machine_type = field(map, "machine_type")
            .and_then(|value| self.machine_type(at(path, "machine_type"), value));
        let image = field(map, "image").and_then(|value| self.image(at(path, "image"), value));
        Some(StepSpec {
            notebook: notebook?,
            parameters,
            timeout_s,
            accelerator,
            machine_type,
            image,
        })
    }

    /// A notebook path of the repository that exists.
    fn notebook(&mut self, path: String, notebook: String) -> Option<String> {
        let reason = if notebook.starts_with('/') {
            Some("is absolute: write the path from the repository root")
        } else if notebook.contains('\\')
            || notebook
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            Some("is not a plain repository path (no `.`, `..`, `//` or backslashes)")
        } else if !is_notebook_path(&notebook) {
            Some("is not a notebook (an .ipynb file outside .ipynb_checkpoints)")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.errors.push(SpecError::BadNotebookPath {
                path,
                notebook,
                reason,
            });
            return None;
        }
        if !(self.notebook_exists)(&notebook) {
            self.errors
                .push(SpecError::MissingNotebook { path, notebook });
            return None;
        }
        Some(notebook)
    }

    fn parameters(&mut self, path: &str, value: &Value) -> Parameters {
        let Value::Object(map) = value else {
            self.wrong_type(
                path.to_owned(),
                "a mapping of parameter names to values",
                value,
            );
            return Parameters::new();
        };
        let mut parameters = Parameters::new();
        for (name, value) in map {
            if RESERVED_PARAMETERS.contains(&name.as_str()) {
                self.invalid(
                    at(path, name),
                    format!("`{name}` is set by nbci for every step and cannot be given"),
                );
            } else if !is_identifier(name) {
                self.invalid(
                    at(path, name),
                    format!("{name:?} is not a valid Python variable name"),
                );
            } else {
                parameters.insert(name.clone(), value.clone());
            }
        }
        parameters
    }

    fn accelerator(&mut self, path: &str, value: &Value) -> Option<Accelerator> {
        let map = self.mapping(path, value, ACCELERATOR_KEYS)?;
        let type_path = at(path, "type");
        let kind = match field(map, "type") {
            None => {
                self.errors.push(SpecError::Missing { path: type_path });
                None
            }
            Some(value) => self.string(type_path.clone(), value).and_then(|kind| {
                let shaped = kind.starts_with(|c: char| c.is_ascii_uppercase())
                    && kind
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if shaped && kind != "ACCELERATOR_TYPE_UNSPECIFIED" {
                    Some(kind)
                } else {
                    self.errors.push(SpecError::BadAccelerator {
                        path: type_path,
                        reason: format!(
                            "{kind:?} is not an accelerator type (write it as Vertex AI does, e.g. NVIDIA_TESLA_T4, TPU_V3)"
                        ),
                    });
                    None
                }
            }),
        };
        let count = match field(map, "count") {
            None => Some(1),
            Some(value) => match value.as_u64() {
                Some(count) if (1..=MAX_ACCELERATORS).contains(&count) => u32::try_from(count).ok(),
                _ => {
                    self.errors.push(SpecError::BadAccelerator {
                        path: at(path, "count"),
                        reason: format!(
                            "{value} is not a whole number from 1 to {MAX_ACCELERATORS}"
                        ),
                    });
                    None
                }
            },
        };
        Some(Accelerator {
            kind: kind?,
            count: count?,
        })
    }

    fn machine_type(&mut self, path: String, value: &Value) -> Option<String> {
        let machine = self.string(path.clone(), value)?;
        let shaped = machine.starts_with(|c: char| c.is_ascii_lowercase())
            && machine
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if shaped {
            Some(machine)
        } else {
            self.invalid(
                path,
                format!("{machine:?} is not a machine type (e.g. n1-standard-8)"),
            );
            None
        }
    }

    fn image(&mut self, path: String, value: &Value) -> Option<String> {
        let image = self.string(path.clone(), value)?;
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.invalid(path, format!("{image:?} is not a container image URI"));
            return None;
        }
        Some(image)
    }

    fn gate(&mut self, path: &str, value: &Value) -> Option<GateSpec> {
        let map = self.mapping(path, value, GATE_KEYS)?;
        let mut gate = GateSpec::default();
        let mut complete = true;
        if let Some(value) = field(map, "metrics") {
            let metrics_path = at(path, "metrics");
            match value {
                Value::Object(thresholds) => {
                    for (name, value) in thresholds {
                        let threshold_path = at(&metrics_path, name);
                        match self.threshold(threshold_path, value) {
                            Some(threshold) => {
                                gate.metrics.insert(name.clone(), threshold);
                            }
                            None => complete = false,
                        }
                    }
                }
                other => {
                    self.wrong_type(
                        metrics_path,
                        "a mapping of metric names to thresholds",
                        other,
                    );
                    complete = false;
                }
            }
        }
        if let Some(value) = field(map, "better_than_deployed") {
            match self.better_than(&at(path, "better_than_deployed"), value, &gate) {
                Some(better) => gate.better_than_deployed = Some(better),
                None => complete = false,
            }
        }
        if complete && gate.is_empty() {
            self.invalid(
                path.to_owned(),
                "the gate checks nothing: give `metrics` thresholds or `better_than_deployed`",
            );
            return None;
        }
        complete.then_some(gate)
    }

    fn threshold(&mut self, path: String, value: &Value) -> Option<Threshold> {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => {
                self.errors.push(SpecError::BadThreshold {
                    path,
                    value: n.to_string(),
                    reason: "a bare number says not how to compare".into(),
                });
                return None;
            }
            other => {
                self.wrong_type(path, "a threshold string", other);
                return None;
            }
        };
        match Threshold::parse(&text) {
            Ok(threshold) => Some(threshold),
            Err(reason) => {
                self.errors.push(SpecError::BadThreshold {
                    path,
                    value: text,
                    reason,
                });
                None
            }
        }
    }

    /// `better_than_deployed: accuracy` or `{metric: rmse, direction: lower}`.
    /// The short form compares higher-is-better, unless the same metric has a
    /// `<` or `<=` threshold: then lower is better, as that threshold says
    /// (a loss bounded above and then compared upwards would be a trap).
    fn better_than(&mut self, path: &str, value: &Value, gate: &GateSpec) -> Option<BetterThan> {
        let (metric, direction) = match value {
            Value::Object(_) => {
                let map = self.mapping(path, value, BETTER_THAN_KEYS)?;
                let metric = match field(map, "metric") {
                    Some(value) => self.string(at(path, "metric"), value),
                    None => {
                        self.errors.push(SpecError::Missing {
                            path: at(path, "metric"),
                        });
                        None
                    }
                };
                let direction = match field(map, "direction") {
                    None => None,
                    Some(Value::String(text)) if text == "higher" => Some(Direction::Higher),
                    Some(Value::String(text)) if text == "lower" => Some(Direction::Lower),
                    Some(other) => {
                        self.invalid(
                            at(path, "direction"),
                            format!("expected `higher` or `lower`, found {other}"),
                        );
                        return None;
                    }
                };
                (metric?, direction)
            }
            other => (self.string(path.to_owned(), other)?, None),
        };
        let direction =
            direction.unwrap_or_else(|| match gate.metrics.get(&metric).map(|t| t.comparison) {
                Some(Comparison::AtMost | Comparison::Below) => Direction::Lower,
                _ => Direction::Higher,
            });
        Some(BetterThan { metric, direction })
    }

    fn deploy(&mut self, path: &str, value: &Value) -> Option<DeploySpec> {
        let map = self.mapping(path, value, DEPLOY_KEYS)?;
        let target_path = at(path, "target");
        let target = match field(map, "target") {
            None => {
                self.errors.push(SpecError::Missing { path: target_path });
                None
            }
            Some(value) => self.string(target_path.clone(), value).and_then(|text| {
                let target = DeployTarget::parse(&text);
                if target.is_none() {
                    self.errors.push(SpecError::UnknownTarget {
                        path: target_path,
                        value: text,
                    });
                }
                target
            }),
        };
        let text = |reader: &mut Self, key: &str| {
            field(map, key).and_then(|value| reader.string(at(path, key), value))
        };
        let model = text(self, "model");
        let runtime_version = text(self, "runtime_version");
        let python_version = text(self, "python_version");
        let framework = text(self, "framework").and_then(|name| {
            let found = Framework::ALL.into_iter().find(|f| f.as_str() == name);
            if found.is_none() {
                self.invalid(
                    at(path, "framework"),
                    format!("unknown framework {name:?} (expected SCIKIT_LEARN, TENSORFLOW, XGBOOST or PYTORCH)"),
                );
            }
            found
        });
        let machine_type = field(map, "machine_type")
            .and_then(|value| self.machine_type(at(path, "machine_type"), value));
        let image = field(map, "image").and_then(|value| self.image(at(path, "image"), value));
        let set_default = match field(map, "set_default") {
            None => true,
            Some(Value::Bool(set)) => *set,
            Some(other) => {
                self.wrong_type(at(path, "set_default"), "true or false", other);
                true
            }
        };
        let model_dir = text(self, "model_dir").and_then(|dir| {
            let dir = dir.trim_matches('/').to_owned();
            let plain = !dir.contains('\\')
                && dir
                    .split('/')
                    .all(|part| !part.is_empty() && part != "." && part != "..");
            if plain {
                Some(dir)
            } else {
                self.invalid(
                    at(path, "model_dir"),
                    format!("{dir:?} is not a folder below artifacts_dir (no `.`, `..` or `//`)"),
                );
                None
            }
        });
        for (key, version) in [
            ("runtime_version", &runtime_version),
            ("python_version", &python_version),
        ] {
            if let Some(version) = version {
                let mut parts = version.split('.');
                let numeric = parts.clone().count() >= 2
                    && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                if !numeric {
                    self.invalid(
                        at(path, key),
                        format!("{version:?} is not a version such as \"2.11\""),
                    );
                }
            }
        }
        let target = target?;
        let missing = |reader: &mut Self, key: &str, hint: &'static str| {
            reader.errors.push(SpecError::MissingModelField {
                path: at(path, key),
                target: target.as_str(),
                hint,
            });
        };
        if field(map, "model").is_none() {
            missing(self, "model", "");
        }
        match target {
            DeployTarget::AiPlatform => {
                const WHY: &str = " (projects.models.versions.create)";
                for key in ["framework", "runtime_version", "python_version"] {
                    if field(map, key).is_none() {
                        missing(self, key, WHY);
                    }
                }
                if framework == Some(Framework::Pytorch) {
                    self.invalid(
                        at(path, "framework"),
                        "AI Platform has no PYTORCH framework (SCIKIT_LEARN, TENSORFLOW or XGBOOST)",
                    );
                }
            }
            DeployTarget::Vertex => {
                if field(map, "framework").is_none() && field(map, "image").is_none() {
                    missing(
                        self,
                        "framework",
                        " to pick a pre-built serving container, unless `image` names one (models.upload containerSpec.imageUri)",
                    );
                }
            }
            DeployTarget::Local => {}
        }
        if let Some(model) = &model
            && let Err(reason) = validate_model_name(target, model)
        {
            self.invalid(at(path, "model"), reason);
        }
        Some(DeploySpec {
            target,
            model: model?,
            framework,
            runtime_version,
            python_version,
            machine_type,
            image,
            set_default,
            model_dir,
        })
    }
}

/// Whether the target accepts `model` as a model's name: AI Platform wants
/// a letter, then letters, digits and underscores; Vertex AI's display name
/// is free text up to 128 characters; the local registry makes it a folder.
fn validate_model_name(target: DeployTarget, model: &str) -> Result<(), String> {
    let too_long = model.chars().count() > 128;
    match target {
        DeployTarget::AiPlatform => {
            let shaped = model.starts_with(|c: char| c.is_ascii_alphabetic())
                && model
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !shaped || too_long {
                return Err(format!(
                    "{model:?} is not an AI Platform model name (a letter, then letters, digits and underscores, at most 128)"
                ));
            }
        }
        DeployTarget::Vertex => {
            if too_long || model.chars().any(char::is_control) {
                return Err(format!(
                    "{model:?} is not a Vertex AI display name (at most 128 characters)"
                ));
            }
        }
        DeployTarget::Local => {
            let shaped = model.starts_with(|c: char| c.is_ascii_alphanumeric())
                && model
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !shaped || too_long {
                return Err(format!(
                    "{model:?} cannot name a folder of the local registry (letters, digits, `_`, `-`, `.`)"
                ));
            }
        }
    }
    Ok(())
}

/// A field's value; YAML's `key:` with nothing after it counts as absent.
fn field<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|value| !value.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = r#"
pipelines:
  train-and-deploy:
    branch: main
    schedule: "0 3 * * *"          # Terraform turns this into a Scheduler job
    steps:
      - notebook: notebooks/prepare.ipynb
        parameters: {rows: 10000}
      - notebook: notebooks/train.ipynb
        timeout: 2h
        accelerator: {type: NVIDIA_TESLA_T4, count: 1}
      - notebook: notebooks/evaluate.ipynb
    gate:                            # read from the last step's metrics.json
      metrics: {accuracy: ">= 0.9"}
      better_than_deployed: accuracy
    deploy:
      target: ai-platform            # or vertex, or local
      model: demo_model
      framework: SCIKIT_LEARN
      runtime_version: "2.11"
      python_version: "3.7"
      set_default: true
"#;

    fn all_exist(_: &str) -> bool {
        true
    }

    fn parse(text: &str) -> Result<PipelineSpec, SpecErrors> {
        PipelineSpec::parse(text, all_exist)
    }

    /// The problems of `text`, as (path, message) pairs.
    fn problems(text: &str) -> Vec<(String, String)> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(SpecErrors(errors)) => errors
                .iter()
                .map(|e| (e.path().to_owned(), e.to_string()))
                .collect(),
        }
    }

    /// The contract's example with one line replaced.
    fn contract_with(from: &str, to: &str) -> String {
        assert!(CONTRACT.contains(from), "{from}");
        CONTRACT.replacen(from, to, 1)
    }

    /// Asserts that `text` has exactly one problem, at `path`, whose message
    /// contains `words`.
    fn assert_one(text: &str, path: &str, words: &str) {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, path, "{found:#?}");
        assert!(
            found[0].1.starts_with(&format!("{path}: ")) && found[0].1.contains(words),
            "{:?} should name {path} and say {words:?}",
            found[0].1
        );
    }

    const P: &str = "pipelines.train-and-deploy";

    #[test]
    fn hostile_nesting_and_sizes_are_refused_before_parsing() {
        let deep = format!("pipelines: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
        let started = std::time::Instant::now();
        let errors = PipelineSpec::parse(&deep, |_| true).expect_err("too deep");
        assert!(errors.to_string().contains("nest more than"), "{errors}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let large = format!("pipelines: {{}}\n#{}\n", "x".repeat(MAX_SPEC_BYTES));
        let errors = PipelineSpec::parse(&large, |_| true).expect_err("too large");
        assert!(errors.to_string().contains("larger than"), "{errors}");
        // Brackets in quotes and comments do not count.
        let quoted = format!(
            "x: \"{}\" # {}\ny: '{}'\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(flow_depth(&quoted), 0);
        assert_eq!(flow_depth("a: {b: [1, {c: 2}]}\n"), 3);
    }

    #[test]
    fn the_contract_example_parses() {
        let spec = parse(CONTRACT).expect("valid");
        let pipeline = spec.pipeline("train-and-deploy").expect("pipeline");
        assert_eq!(pipeline.branch.as_deref(), Some("main"));
        assert_eq!(
            pipeline.schedule.as_ref().map(Schedule::expression),
            Some("0 3 * * *")
        );
        assert_eq!(pipeline.steps.len(), 3);
        assert_eq!(pipeline.steps[0].parameters["rows"], 10000);
        assert_eq!(pipeline.steps[1].timeout(), Some(Duration::from_secs(7200)));
        assert_eq!(
            pipeline.steps[1].accelerator,
            Some(Accelerator {
                kind: "NVIDIA_TESLA_T4".into(),
                count: 1
            })
        );
        let gate = pipeline.gate.as_ref().expect("gate");
        assert_eq!(gate.metrics["accuracy"].to_string(), ">= 0.9");
        assert_eq!(
            gate.better_than_deployed,
            Some(BetterThan {
                metric: "accuracy".into(),
                direction: Direction::Higher
            })
        );
        let deploy = pipeline.deploy.as_ref().expect("deploy");
        assert_eq!(deploy.target, DeployTarget::AiPlatform);
        assert_eq!(deploy.framework, Some(Framework::ScikitLearn));
        assert_eq!(deploy.runtime_version.as_deref(), Some("2.11"));
        assert!(deploy.set_default);
    }

    #[test]
    fn the_demo_spec_parses_with_its_notebooks() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-repo");
        let text = std::fs::read_to_string(root.join(SPEC_FILE)).expect("demo nbci.yaml");
        let spec = PipelineSpec::parse(&text, |path| root.join(path).is_file())
            .unwrap_or_else(|errors| panic!("{errors}"));
        let pipeline = spec.pipeline("train-and-deploy").expect("pipeline");
        assert_eq!(
            pipeline.deploy.as_ref().map(|d| d.target),
            Some(DeployTarget::Local)
        );
        assert_eq!(
            pipeline.last_step().map(|s| s.notebook.as_str()),
            Some("notebooks/evaluate.ipynb")
        );
    }

    #[test]
    fn a_spec_survives_json_for_the_runs_record() {
        let spec = parse(CONTRACT).expect("valid");
        let text = serde_json::to_string(&spec).expect("json");
        assert_eq!(
            serde_json::from_str::<PipelineSpec>(&text).expect("back"),
            spec
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
pipelines:
  Bad_Name:
    schedule: "every day"
    steps:
      - notebook: a.ipynb
        timout: 2h
      - notebook: a.ipynb
  ok:
    steps: []
"#;
        let found = problems(text);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pipelines.Bad_Name",
                "pipelines.Bad_Name.schedule",
                "pipelines.Bad_Name.steps[0].timout",
                "pipelines.Bad_Name.steps[1].notebook",
                "pipelines.ok.steps",
            ],
            "{found:#?}"
        );
        let message = parse(text).expect_err("invalid").to_string();
        assert!(
            message.starts_with("nbci.yaml has 5 problems:"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        assert_one(
            &contract_with("        timeout: 2h", "        timout: 2h"),
            &format!("{P}.steps[1].timout"),
            "unknown key (expected one of: notebook, parameters, timeout",
        );
        assert_one(
            &contract_with("    branch: main", "    branch: main\n    branches: [dev]"),
            &format!("{P}.branches"),
            "unknown key",
        );
        assert_one(
            &contract_with(
                "      set_default: true",
                "      set_default: true\n      region: us",
            ),
            &format!("{P}.deploy.region"),
            "unknown key",
        );
        assert_one(
            &contract_with(
                "      better_than_deployed: accuracy",
                "      better_than: accuracy",
            ),
            &format!("{P}.gate.better_than"),
            "unknown key",
        );
        assert_one(
            &contract_with(
                "{type: NVIDIA_TESLA_T4, count: 1}",
                "{type: NVIDIA_TESLA_T4, cnt: 1}",
            ),
            &format!("{P}.steps[1].accelerator.cnt"),
            "unknown key",
        );
        assert_one(&format!("{CONTRACT}version: 2\n"), "version", "unknown key");
    }

    #[test]
    fn missing_notebooks_are_named_with_their_step() {
        let result = PipelineSpec::parse(CONTRACT, |path| path != "notebooks/train.ipynb");
        let errors = result.expect_err("missing").0;
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{P}.steps[1].notebook: notebooks/train.ipynb does not exist in the repository"
            )
        );
        assert_one(
            &contract_with("notebooks/prepare.ipynb", "notebooks/prepare.py"),
            &format!("{P}.steps[0].notebook"),
            "is not a notebook",
        );
        assert_one(
            &contract_with("notebooks/prepare.ipynb", "/abs/prepare.ipynb"),
            &format!("{P}.steps[0].notebook"),
            "is absolute",
        );
        assert_one(
            &contract_with("notebooks/prepare.ipynb", "../prepare.ipynb"),
            &format!("{P}.steps[0].notebook"),
            "not a plain repository path",
        );
        assert_one(
            &contract_with(
                "      - notebook: notebooks/prepare.ipynb\n        parameters",
                "      - parameters",
            ),
            &format!("{P}.steps[0].notebook"),
            "missing (required)",
        );
    }

    #[test]
    fn duplicate_steps_are_refused() {
        assert_one(
            &contract_with("notebooks/evaluate.ipynb", "notebooks/prepare.ipynb"),
            &format!("{P}.steps[2].notebook"),
            "notebooks/prepare.ipynb is already steps[0]",
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for (schedule, words) in [
            ("0 3 * *", "expected 5 fields"),
            ("0 0 3 * * *", "expected 5 fields"),
            ("61 3 * * *", "not a cron schedule"),
            ("0 3 L * *", "day-of-month field"),
            ("0 3 * * MON#2", "day-of-week field"),
            ("0 3 ? * *", "day-of-month field"),
            ("@daily", "expected 5 fields"),
            ("0 0 30 2 *", "never matches"),
            ("0 3 * JAN FOO", "day-of-week field"),
        ] {
            assert_one(
                &contract_with("\"0 3 * * *\"", &format!("{schedule:?}")),
                &format!("{P}.schedule"),
                words,
            );
        }
        assert_one(
            &contract_with("\"0 3 * * *\"", "[1, 2]"),
            &format!("{P}.schedule"),
            "expected a string, found a list",
        );
        for good in [
            "*/15 * * * *",
            "0 9-17 * * MON-FRI",
            "0 0 1 JAN,JUL *",
            "0 3 * * 7",
        ] {
            assert!(Schedule::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_thresholds_are_refused() {
        for (threshold, words) in [
            ("\"=> 0.9\"", "does not start with one of"),
            ("\">= high\"", "\"high\" is not a number"),
            ("\">= .inf\"", "is not a number"),
            ("\">= 1e999\"", "not a finite number"),
            ("0.9", "a bare number"),
            ("\">=\"", "no number"),
        ] {
            assert_one(
                &contract_with("\">= 0.9\"", threshold),
                &format!("{P}.gate.metrics.accuracy"),
                words,
            );
        }
        assert_one(
            &contract_with(
                "      metrics: {accuracy: \">= 0.9\"}\n      better_than_deployed: accuracy\n",
                "      metrics: {}\n",
            ),
            &format!("{P}.gate"),
            "the gate checks nothing",
        );
    }

    #[test]
    fn better_than_deployed_follows_the_thresholds_direction() {
        let text = contract_with(
            "      metrics: {accuracy: \">= 0.9\"}\n      better_than_deployed: accuracy",
            "      metrics: {loss: \"< 0.5\"}\n      better_than_deployed: loss",
        );
        let spec = parse(&text).expect("valid");
        let gate = spec.pipelines[P.trim_start_matches("pipelines.")]
            .gate
            .clone()
            .expect("gate");
        assert_eq!(
            gate.better_than_deployed.map(|b| b.direction),
            Some(Direction::Lower)
        );
        let text = contract_with(
            "better_than_deployed: accuracy",
            "better_than_deployed: {metric: accuracy, direction: lower}",
        );
        let spec = parse(&text).expect("valid");
        let gate = spec.pipelines["train-and-deploy"]
            .gate
            .clone()
            .expect("gate");
        assert_eq!(
            gate.better_than_deployed.map(|b| b.direction),
            Some(Direction::Lower)
        );
        assert_one(
            &contract_with(
                "better_than_deployed: accuracy",
                "better_than_deployed: {metric: accuracy, direction: up}",
            ),
            &format!("{P}.gate.better_than_deployed.direction"),
            "expected `higher` or `lower`",
        );
    }

    #[test]
    fn unknown_deploy_targets_are_refused() {
        assert_one(
            &contract_with("target: ai-platform", "target: sagemaker"),
            &format!("{P}.deploy.target"),
            "unknown deploy target \"sagemaker\" (expected ai-platform, vertex or local)",
        );
        assert_one(
            &contract_with(
                "      target: ai-platform            # or vertex, or local\n",
                "",
            ),
            &format!("{P}.deploy.target"),
            "missing (required)",
        );
    }

    #[test]
    fn each_target_names_the_model_fields_it_misses() {
        let bare = |target: &str| {
            contract_with(
                "      target: ai-platform            # or vertex, or local\n      model: demo_model\n      framework: SCIKIT_LEARN\n      runtime_version: \"2.11\"\n      python_version: \"3.7\"\n",
                &format!("      target: {target}\n"),
            )
        };
        let found = problems(&bare("ai-platform"));
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                format!("{P}.deploy.model"),
                format!("{P}.deploy.framework"),
                format!("{P}.deploy.runtime_version"),
                format!("{P}.deploy.python_version"),
            ]
        );
        assert!(
            found
                .iter()
                .all(|(_, m)| m.contains("the ai-platform target needs it")),
            "{found:#?}"
        );
        let found = problems(&bare("vertex"));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].0, format!("{P}.deploy.model"));
        assert_eq!(found[1].0, format!("{P}.deploy.framework"));
        assert!(found[1].1.contains("unless `image`"), "{found:#?}");
        assert_one(
            &bare("local"),
            &format!("{P}.deploy.model"),
            "the local target needs it",
        );
        let vertex = bare("vertex").replace(
            "      target: vertex\n",
            "      target: vertex\n      model: demo model\n      image: us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest\n",
        );
        assert!(parse(&vertex).is_ok(), "{:?}", problems(&vertex));
        let local = bare("local").replace(
            "      target: local\n",
            "      target: local\n      model: demo_model\n",
        );
        let spec = parse(&local).expect("valid");
        assert_eq!(
            spec.pipelines["train-and-deploy"]
                .deploy
                .as_ref()
                .map(|d| d.framework),
            Some(None)
        );
    }

    #[test]
    fn model_fields_are_checked() {
        assert_one(
            &contract_with("model: demo_model", "model: demo-model"),
            &format!("{P}.deploy.model"),
            "not an AI Platform model name",
        );
        assert_one(
            &contract_with("framework: SCIKIT_LEARN", "framework: sklearn"),
            &format!("{P}.deploy.framework"),
            "unknown framework \"sklearn\"",
        );
        assert_one(
            &contract_with("framework: SCIKIT_LEARN", "framework: PYTORCH"),
            &format!("{P}.deploy.framework"),
            "no PYTORCH",
        );
        assert_one(
            &contract_with("runtime_version: \"2.11\"", "runtime_version: 2.10"),
            &format!("{P}.deploy.runtime_version"),
            "quote it",
        );
        assert_one(
            &contract_with("python_version: \"3.7\"", "python_version: \"three\""),
            &format!("{P}.deploy.python_version"),
            "not a version",
        );
        assert_one(
            &contract_with("set_default: true", "set_default: yes please"),
            &format!("{P}.deploy.set_default"),
            "expected true or false",
        );
        assert_one(
            &contract_with(
                "set_default: true",
                "set_default: true\n      model_dir: ../model",
            ),
            &format!("{P}.deploy.model_dir"),
            "not a folder below artifacts_dir",
        );
        let spec = parse(&contract_with("      set_default: true\n", "")).expect("valid");
        assert!(
            spec.pipelines["train-and-deploy"]
                .deploy
                .as_ref()
                .is_some_and(|d| d.set_default)
        );
    }

    #[test]
    fn pipeline_names_must_be_keys_and_scheduler_job_names() {
        for (name, words) in [
            ("Train", "only lowercase letters, digits and hyphens"),
            ("train_it", "only lowercase letters, digits and hyphens"),
            ("9train", "start with a letter"),
            ("train-", "not end with a hyphen"),
            ("a.b", "only lowercase"),
        ] {
            let text = CONTRACT.replace("train-and-deploy:", &format!("{name:?}:"));
            assert_one(&text, &format!("pipelines.{name}"), words);
        }
        let long = "a".repeat(64);
        assert_one(
            &CONTRACT.replace("train-and-deploy:", &format!("{long}:")),
            &format!("pipelines.{long}"),
            "longer than 63",
        );
    }

    #[test]
    fn timeouts_and_accelerators_are_checked() {
        assert_one(
            &contract_with("timeout: 2h", "timeout: \"2 hourz\""),
            &format!("{P}.steps[1].timeout"),
            "\"2 hourz\" is not a duration",
        );
        assert_one(
            &contract_with("timeout: 2h", "timeout: -5"),
            &format!("{P}.steps[1].timeout"),
            "not a positive number of seconds",
        );
        assert_one(
            &contract_with("timeout: 2h", "timeout: 0s"),
            &format!("{P}.steps[1].timeout"),
            "is zero",
        );
        let spec = parse(&contract_with("timeout: 2h", "timeout: 90")).expect("seconds");
        assert_eq!(
            spec.pipelines["train-and-deploy"].steps[1].timeout(),
            Some(Duration::from_secs(90))
        );
        assert_one(
            &contract_with("count: 1", "count: 0"),
            &format!("{P}.steps[1].accelerator.count"),
            "not a whole number from 1 to 64",
        );
        assert_one(
            &contract_with("count: 1", "count: 1.5"),
            &format!("{P}.steps[1].accelerator.count"),
            "not a whole number",
        );
        assert_one(
            &contract_with("type: NVIDIA_TESLA_T4", "type: nvidia-t4"),
            &format!("{P}.steps[1].accelerator.type"),
            "not an accelerator type",
        );
        assert_one(
            &contract_with("{type: NVIDIA_TESLA_T4, count: 1}", "{count: 2}"),
            &format!("{P}.steps[1].accelerator.type"),
            "missing (required)",
        );
        let spec = parse(&contract_with(
            "{type: NVIDIA_TESLA_T4, count: 1}",
            "{type: TPU_V3}",
        ))
        .expect("valid");
        assert_eq!(
            spec.pipelines["train-and-deploy"].steps[1]
                .accelerator
                .as_ref()
                .map(|a| a.count),
            Some(1)
        );
        assert_one(
            &contract_with(
                "timeout: 2h",
                "timeout: 2h\n        machine_type: N1 standard",
            ),
            &format!("{P}.steps[1].machine_type"),
            "not a machine type",
        );
    }

    #[test]
    fn parameters_are_names_and_not_reserved() {
        assert_one(
            &contract_with("{rows: 10000}", "{rows: 10000, run_id: x}"),
            &format!("{P}.steps[0].parameters.run_id"),
            "set by nbci",
        );
        assert_one(
            &contract_with("{rows: 10000}", "{\"1rows\": 10000}"),
            &format!("{P}.steps[0].parameters.1rows"),
            "not a valid Python variable name",
        );
        assert_one(
            &contract_with("{rows: 10000}", "[rows]"),
            &format!("{P}.steps[0].parameters"),
            "expected a mapping of parameter names to values, found a list",
        );
    }

    #[test]
    fn branches_and_structure_are_checked() {
        assert_one(
            &contract_with("branch: main", "branch: refs/heads/main"),
            &format!("{P}.branch"),
            "without refs/heads/",
        );
        assert_one(
            &contract_with("branch: main", "branch: \"a..b\""),
            &format!("{P}.branch"),
            "not a valid git branch name",
        );
        let found = problems(&contract_with("    steps:\n", "    stepz:\n"));
        assert_eq!(
            found,
            [
                (
                    format!("{P}.stepz"),
                    format!(
                        "{P}.stepz: unknown key (expected one of: branch, schedule, steps, gate, deploy)"
                    )
                ),
                (
                    format!("{P}.steps"),
                    format!("{P}.steps: missing (required)")
                ),
            ]
        );
        assert_one("pipelines: {}", "pipelines", "no pipeline is defined");
        assert_one(
            "pipelines: [a]",
            "pipelines",
            "expected a mapping of pipeline names",
        );
        let paths: Vec<String> = problems("other: 1").into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["other", "pipelines"]);
        for (text, words) in [
            ("", "the file is empty"),
            ("pipelines: [", "not valid YAML"),
            ("- a", "top level must be a mapping"),
        ] {
            assert_one(text, "nbci.yaml", words);
        }
    }

    #[test]
    fn merge_keys_share_step_settings() {
        let text = r#"
pipelines:
  p:
    steps:
      - &gpu
        notebook: a.ipynb
        accelerator: {type: NVIDIA_TESLA_T4}
      - <<: *gpu
        notebook: b.ipynb
"#;
        let spec = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(spec.pipelines["p"].steps[1].accelerator.is_some());
    }

    #[test]
    fn schedules_are_due_once_per_instant_in_utc() {
        let spec = parse(CONTRACT).expect("valid");
        let t = |text: &str| text.parse::<Timestamp>().expect("time");
        let pipeline = &spec.pipelines["train-and-deploy"];
        // A tick each minute: only the one covering 03:00 starts a run.
        assert_eq!(
            pipeline.due(t("2026-11-30T02:59:00Z"), t("2026-11-30T03:00:00Z")),
            Some(t("2026-11-30T03:00:00Z"))
        );
        assert_eq!(
            pipeline.due(t("2026-11-30T03:00:00Z"), t("2026-11-30T03:01:00Z")),
            None
        );
        assert_eq!(
            pipeline.due(t("2026-11-30T02:00:00Z"), t("2026-11-30T02:59:59Z")),
            None
        );
        // A scheduler down for three days starts one run, for the latest instant.
        assert_eq!(
            pipeline.due(t("2026-11-27T12:00:00Z"), t("2026-11-30T12:00:00Z")),
            Some(t("2026-11-30T03:00:00Z"))
        );
        assert_eq!(
            pipeline.due(t("2026-11-30T04:00:00Z"), t("2026-11-30T03:00:00Z")),
            None
        );
        assert_eq!(
            spec.due(t("2026-11-30T02:59:30Z"), t("2026-11-30T03:00:30Z"))
                .len(),
            1
        );
        // Day-of-month and day-of-week both restricted: either matches (as cron does).
        let either = Schedule::parse("0 0 1 * MON").expect("cron");
        // 2026-12-01 is a Tuesday, the first of the month.
        assert!(
            either
                .latest_due(t("2026-11-30T23:00:00Z"), t("2026-12-01T00:00:00Z"))
                .is_some()
        );
        // 2026-11-30 is a Monday.
        assert!(
            either
                .latest_due(t("2026-11-29T23:00:00Z"), t("2026-11-30T00:00:00Z"))
                .is_some()
        );
        assert!(
            either
                .latest_due(t("2026-12-01T23:00:00Z"), t("2026-12-02T00:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn pushes_start_the_pipelines_of_their_branch() {
        let spec = parse(CONTRACT).expect("valid");
        assert_eq!(spec.started_by_push("refs/heads/main").len(), 1);
        assert_eq!(spec.started_by_push("main").len(), 1);
        assert!(spec.started_by_push("refs/heads/dev").is_empty());
        assert!(spec.started_by_push("refs/tags/main").is_empty());
        let no_branch = parse(&contract_with("    branch: main\n", "")).expect("valid");
        assert!(no_branch.started_by_push("refs/heads/main").is_empty());
    }
}
