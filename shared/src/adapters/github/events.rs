//! The webhook events nbci acts on, parsed from signed deliveries.
//!
//! [`parse_event`] takes the `X-GitHub-Event` header and the raw body (after
//! the signature was verified) and says what to do:
//! - run the notebooks of a commit: `check_suite` requested|rerequested,
//!   `pull_request` opened|synchronize|reopened, `push` to a branch;
//! - run one notebook again: `check_run` rerequested, or requested_action
//!   with identifier [`RERUN_ACTION`];
//! - answer `ping`;
//! - ignore everything else ([`Event::Ignored`], answered 2xx), and skip
//!   deliveries without an `installation` ([`Event::Skipped`], answered 2xx:
//!   without one nbci cannot authenticate, and GitHub would retry an error).
//!
//! Payload types read only what nbci needs and ignore the rest, so GitHub
//! adding fields changes nothing. What is ignored is decided before the
//! strict parse, so that an event nbci does not handle can never be an error.
//! A malformed body or a missing field is an [`EventError`] naming the field,
//! never a panic: the body is untrusted even when signed.

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::checks::{RERUN_ACTION, notebook_path_of};
use crate::domain::notebook::is_notebook_path;
pub use crate::domain::repo::CommitSha;
use crate::domain::repo::{CheckRunId, InstallationId, RepoRef};
use crate::domain::trigger::Trigger;

/// The App installation a delivery is for: whose token to use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Installation {
    /// The installation's id.
    pub id: InstallationId,
}

/// The repository of a delivery, its name checked on parse.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRepository")]
pub struct Repository {
    /// `owner/name` as GitHub spells it.
    pub full_name: String,
    /// Owner and name, valid for REST paths.
    pub repo: RepoRef,
    /// The default branch, to compare against when a push creates a branch.
    pub default_branch: Option<String>,
}

#[derive(Deserialize)]
struct RawRepository {
    full_name: String,
    #[serde(default)]
    default_branch: Option<String>,
    name: String,
    owner: RawOwner,
}

#[derive(Deserialize)]
struct RawOwner {
    login: String,
}

impl TryFrom<RawRepository> for Repository {
    type Error = String;

    fn try_from(raw: RawRepository) -> Result<Self, Self::Error> {
        let repo = RepoRef::new(&raw.owner.login, &raw.name).ok_or_else(|| {
            format!(
                "{:?}/{:?} is not a valid repository name",
                raw.owner.login, raw.name
            )
        })?;
        if !raw.full_name.eq_ignore_ascii_case(&repo.to_string()) {
            return Err(format!(
                "full_name {:?} does not match owner.login/name {repo}",
                raw.full_name
            ));
        }
        Ok(Self {
            full_name: raw.full_name,
            repo,
            default_branch: raw.default_branch.filter(|b| !b.is_empty()),
        })
    }
}

/// A branch or commit end of a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GitRef {
    /// The branch name.
    #[serde(rename = "ref")]
    pub branch: String,
    /// Its commit.
    pub sha: CommitSha,
}

/// A pull request as check suites and check runs list them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequestRef {
    /// The pull request's number.
    pub number: u64,
    /// Its head.
    pub head: GitRef,
    /// Its base: what to compare against.
    pub base: GitRef,
}

/// `check_suite` actions nbci handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckSuiteAction {
    /// A push created the suite: run the commit's notebooks.
    Requested,
    /// Someone pressed "Re-run all checks".
    Rerequested,
}

/// `check_suite` requested|rerequested.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckSuiteEvent {
    /// What happened.
    pub action: CheckSuiteAction,
    /// The suite.
    pub check_suite: CheckSuite,
    /// Where.
    pub repository: Repository,
    /// Whose token.
    pub installation: Installation,
}

/// The `check_suite` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckSuite {
    /// The commit to run.
    pub head_sha: CommitSha,
    /// Its branch; null for suites of forks.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// The commit before the push, if any.
    #[serde(default)]
    pub before: Option<CommitSha>,
    /// The commit after the push, if any.
    #[serde(default)]
    pub after: Option<CommitSha>,
    /// Open pull requests with this head (their base is the better comparison).
    #[serde(default)]
    pub pull_requests: Vec<PullRequestRef>,
}

impl CheckSuite {
    /// What to compare the head with: the base of its first pull request,
    /// else the commit before the push (not when it is all zeros).
    pub fn base_sha(&self) -> Option<&CommitSha> {
        self.pull_requests
            .first()
            .map(|pr| &pr.base.sha)
            .or(self.before.as_ref().filter(|sha| !sha.is_zero()))
    }
}

/// `pull_request` actions nbci handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestAction {
    /// A new pull request.
    Opened,
    /// New commits on its head.
    Synchronize,
    /// Reopened after being closed.
    Reopened,
}

/// `pull_request` opened|synchronize|reopened.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequestEvent {
    /// What happened.
    pub action: PullRequestAction,
    /// The pull request.
    pub pull_request: PullRequest,
    /// Where.
    pub repository: Repository,
    /// Whose token.
    pub installation: Installation,
}

/// The `pull_request` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    /// The pull request's number.
    pub number: u64,
    /// Its head: the commit to run.
    pub head: GitRef,
    /// Its base: what to compare against.
    pub base: GitRef,
}

/// A `push` to a branch that was not deleted (tags and deletions are
/// [`Event::Ignored`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushEvent {
    /// The full ref, `refs/heads/<branch>`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The branch's commit before the push; all zeros for a new branch.
    pub before: CommitSha,
    /// The branch's commit after the push: the commit to run.
    pub after: CommitSha,
    /// True when the push created the branch.
    #[serde(default)]
    pub created: bool,
    /// True when the push deleted the branch (never in a parsed event).
    #[serde(default)]
    pub deleted: bool,
    /// Where.
    pub repository: Repository,
    /// Whose token.
    pub installation: Installation,
}

impl PushEvent {
    /// The branch name, without `refs/heads/`.
    pub fn branch(&self) -> &str {
        self.git_ref
            .strip_prefix(BRANCH_PREFIX)
            .unwrap_or(&self.git_ref)
    }

    /// What to compare `after` with: `before`, unless the branch is new.
    pub fn base_sha(&self) -> Option<&CommitSha> {
        (!self.before.is_zero()).then_some(&self.before)
    }
}

/// `check_run` actions nbci handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckRunAction {
    /// Someone pressed "Re-run" on the check.
    Rerequested,
    /// Someone pressed one of the check's buttons (nbci's "Re-run").
    RequestedAction,
}

/// `check_run` rerequested, or requested_action with identifier `rerun`:
/// run this one notebook again.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckRunEvent {
    /// What happened.
    pub action: CheckRunAction,
    /// The check run.
    pub check_run: CheckRun,
    /// The button pressed, for requested_action.
    #[serde(default)]
    pub requested_action: Option<RequestedAction>,
    /// Where.
    pub repository: Repository,
    /// Whose token.
    pub installation: Installation,
}

impl CheckRunEvent {
    /// The notebook the check run is for, from its name `nbci / <path>`;
    /// `None` for another app's check run.
    pub fn notebook_path(&self) -> Option<&str> {
        notebook_path_of(&self.check_run.name)
    }
}

/// The `check_run` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckRun {
    /// The check run to update.
    pub id: CheckRunId,
    /// `nbci / <notebook path>` for nbci's checks.
    pub name: String,
    /// The commit.
    pub head_sha: CommitSha,
    /// nbci's run key, as set when the check run was created (may be empty).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Its suite: its pull requests and `before` give the comparison base.
    #[serde(default)]
    pub check_suite: Option<CheckSuiteSummary>,
}

/// The `check_run.check_suite` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckSuiteSummary {
    /// The branch, if any.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// The commit before the push, if any.
    #[serde(default)]
    pub before: Option<CommitSha>,
    /// Open pull requests with this head.
    #[serde(default)]
    pub pull_requests: Vec<PullRequestRef>,
}

/// The `requested_action` object: which button.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RequestedAction {
    /// The button's identifier.
    pub identifier: String,
}

/// A parsed delivery: what nbci should do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// GitHub checks the hook works: answer 200.
    Ping {
        /// GitHub's zen line.
        zen: Option<String>,
        /// The hook's id.
        hook_id: Option<u64>,
    },
    /// Run the notebooks of a check suite's head commit.
    CheckSuite(CheckSuiteEvent),
    /// Run the notebooks of a pull request's head commit.
    PullRequest(PullRequestEvent),
    /// Run the notebooks of a pushed branch's new commit.
    Push(PushEvent),
    /// Run one notebook again.
    CheckRun(CheckRunEvent),
    /// An event or action nbci does not handle: answer 2xx, log, do nothing.
    Ignored {
        /// Why, for the log line.
        reason: String,
    },
    /// A handled event without an `installation`: answer 2xx, log, do nothing.
    Skipped {
        /// Why, for the log line.
        reason: String,
    },
}

impl Event {
    /// What an actionable event asks to run, or `None` for the others (and for
    /// a re-run of a check whose name is not a notebook's: the same filter as
    /// changed files).
    pub fn trigger(&self, delivery: &str) -> Option<Trigger> {
        let git_ref = match self {
            Event::Push(e) => Some(e.git_ref.clone()),
            _ => None,
        };
        let (installation, repository, head, base, only, rerun) = match self {
            Event::CheckSuite(e) => (
                e.installation.id,
                &e.repository,
                e.check_suite.head_sha.clone(),
                e.check_suite
                    .base_sha()
                    .map(|sha| sha.as_str().to_owned())
                    .or_else(|| e.repository.default_branch.clone()),
                None,
                e.action == CheckSuiteAction::Rerequested,
            ),
            Event::PullRequest(e) => (
                e.installation.id,
                &e.repository,
                e.pull_request.head.sha.clone(),
                Some(e.pull_request.base.sha.as_str().to_owned()),
                None,
                false,
            ),
            Event::Push(e) => (
                e.installation.id,
                &e.repository,
                e.after.clone(),
                e.base_sha()
                    .map(|sha| sha.as_str().to_owned())
                    .or_else(|| e.repository.default_branch.clone()),
                None,
                false,
            ),
            Event::CheckRun(e) => {
                let rerun = match e.action {
                    CheckRunAction::Rerequested => true,
                    CheckRunAction::RequestedAction => e
                        .requested_action
                        .as_ref()
                        .is_some_and(|a| a.identifier == RERUN_ACTION),
                };
                let path = e.notebook_path().filter(|path| is_notebook_path(path))?;
                if !rerun {
                    return None;
                }
                (
                    e.installation.id,
                    &e.repository,
                    e.check_run.head_sha.clone(),
                    None,
                    Some(path.to_owned()),
                    true,
                )
            }
            _ => return None,
        };
        Some(Trigger {
            delivery: delivery.to_owned(),
            installation,
            repo: repository.repo.clone(),
            head_sha: head,
            base,
            only,
            rerun,
            git_ref,
        })
    }

    /// The installation whose token to use, for events that do something.
    pub fn installation_id(&self) -> Option<InstallationId> {
        match self {
            Self::CheckSuite(e) => Some(e.installation.id),
            Self::PullRequest(e) => Some(e.installation.id),
            Self::Push(e) => Some(e.installation.id),
            Self::CheckRun(e) => Some(e.installation.id),
            Self::Ping { .. } | Self::Ignored { .. } | Self::Skipped { .. } => None,
        }
    }

    /// The repository, for events that do something.
    pub fn repository(&self) -> Option<&Repository> {
        match self {
            Self::CheckSuite(e) => Some(&e.repository),
            Self::PullRequest(e) => Some(&e.repository),
            Self::Push(e) => Some(&e.repository),
            Self::CheckRun(e) => Some(&e.repository),
            Self::Ping { .. } | Self::Ignored { .. } | Self::Skipped { .. } => None,
        }
    }

    /// The commit to run, for events that do something.
    pub fn head_sha(&self) -> Option<&CommitSha> {
        match self {
            Self::CheckSuite(e) => Some(&e.check_suite.head_sha),
            Self::PullRequest(e) => Some(&e.pull_request.head.sha),
            Self::Push(e) => Some(&e.after),
            Self::CheckRun(e) => Some(&e.check_run.head_sha),
            Self::Ping { .. } | Self::Ignored { .. } | Self::Skipped { .. } => None,
        }
    }
}

/// Why a delivery could not be parsed: the webhook answers 400 (GitHub does
/// not retry a 4xx, and retrying would not help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Occurs when the `X-GitHub-Event` header is missing or empty.
    #[error("the X-GitHub-Event header is missing")]
    MissingEventType,
    /// Occurs when the body is not JSON, or not a JSON object.
    #[error("the {event} payload is not a JSON object: {reason}")]
    Malformed {
        /// The event type.
        event: String,
        /// What the JSON parser said.
        reason: String,
    },
    /// Occurs when a field nbci needs is missing or has the wrong type.
    #[error("the {event} payload is invalid at `{field}`: {reason}")]
    Invalid {
        /// The event type.
        event: String,
        /// The JSON path, such as `check_suite.head_sha` (`.` for the top).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// The ref prefix of branches; pushes to anything else are ignored.
const BRANCH_PREFIX: &str = "refs/heads/";
const TAG_PREFIX: &str = "refs/tags/";

/// The fields that decide whether a delivery is acted on, read before the
/// strict parse.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    installation: Option<IgnoredAny>,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    requested_action: Option<EnvelopeAction>,
}

#[derive(Deserialize)]
struct EnvelopeAction {
    #[serde(default)]
    identifier: Option<String>,
}

#[derive(Deserialize)]
struct Ping {
    #[serde(default)]
    zen: Option<String>,
    #[serde(default)]
    hook_id: Option<u64>,
}

/// Parses a verified delivery: `event` is the `X-GitHub-Event` header,
/// `body` the raw body. Never panics, whatever the bytes.
pub fn parse_event(event: &str, body: &[u8]) -> Result<Event, EventError> {
    let event = event.trim();
    if event.is_empty() {
        return Err(EventError::MissingEventType);
    }
    if let Some(parsed) = parse_actionable(event, body) {
        return Ok(parsed);
    }
    let ignored = |reason: String| Ok(Event::Ignored { reason });
    match event {
        "ping" => {
            let ping: Ping = deserialize(event, body)?;
            return Ok(Event::Ping {
                zen: ping.zen,
                hook_id: ping.hook_id,
            });
        }
        "check_suite" | "pull_request" | "push" | "check_run" => {}
        other => return ignored(format!("`{other}` events are not handled")),
    }
    let envelope: Envelope = deserialize(event, body)?;
    let action = envelope.action.as_deref();
    let missing_action = || EventError::Invalid {
        event: event.to_owned(),
        field: "action".into(),
        reason: "missing field `action`".into(),
    };
    match event {
        "check_suite" => match action.ok_or_else(missing_action)? {
            "requested" | "rerequested" => {}
            other => return ignored(format!("check_suite `{other}` is not handled")),
        },
        "pull_request" => match action.ok_or_else(missing_action)? {
            "opened" | "synchronize" | "reopened" => {}
            other => return ignored(format!("pull_request `{other}` is not handled")),
        },
        "check_run" => match action.ok_or_else(missing_action)? {
            "rerequested" => {}
            "requested_action" => {
                let identifier = envelope
                    .requested_action
                    .as_ref()
                    .and_then(|a| a.identifier.as_deref());
                if identifier != Some(RERUN_ACTION) {
                    return ignored(format!(
                        "check_run requested_action {identifier:?} is not nbci's `{RERUN_ACTION}`"
                    ));
                }
            }
            other => return ignored(format!("check_run `{other}` is not handled")),
        },
        _push => {
            let git_ref = envelope.git_ref.as_deref().unwrap_or_default();
            if git_ref.starts_with(TAG_PREFIX) {
                return ignored(format!("push of tag {git_ref:?}"));
            }
            if !git_ref.is_empty() && !git_ref.starts_with(BRANCH_PREFIX) {
                return ignored(format!("push to {git_ref:?}, not a branch"));
            }
            let zero_after = envelope
                .after
                .as_deref()
                .is_some_and(|after| !after.is_empty() && after.bytes().all(|b| b == b'0'));
            if envelope.deleted == Some(true) || zero_after {
                return ignored(format!("deletion of {git_ref:?}"));
            }
        }
    }
    if envelope.installation.is_none() {
        return Ok(Event::Skipped {
            reason: format!(
                "{event} delivery without an `installation`: not for a GitHub App installation"
            ),
        });
    }
    Ok(match event {
        "check_suite" => Event::CheckSuite(deserialize(event, body)?),
        "pull_request" => Event::PullRequest(deserialize(event, body)?),
        "check_run" => Event::CheckRun(deserialize(event, body)?),
        _push => {
            let push: PushEvent = deserialize(event, body)?;
            if !push.git_ref.starts_with(BRANCH_PREFIX) {
                return Err(EventError::Invalid {
                    event: event.to_owned(),
                    field: "ref".into(),
                    reason: format!("{:?} is not a branch", push.git_ref),
                });
            }
            Event::Push(push)
        }
    })
}

/// The common case in one pass over the body: a well-formed delivery that
/// nbci acts on, read straight into its type. Each of these structs holds
/// the fields of [`Envelope`] (with its types) besides those of the event,
/// so a body it accepts is one the careful path below accepts too, with the
/// same outcome; anything else (an action nbci does not handle, no
/// installation, a deletion, a field of the wrong type, bytes that are not
/// JSON) gives `None`, and the careful path decides, and names the error,
/// exactly as before.
fn parse_actionable(event: &str, body: &[u8]) -> Option<Event> {
    // serde would read a struct from a JSON array too.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    match event {
        "check_suite" => {
            let fast: FastCheckSuite = serde_json::from_slice(body).ok()?;
            Some(Event::CheckSuite(CheckSuiteEvent {
                action: fast.action,
                check_suite: fast.check_suite,
                repository: fast.repository,
                installation: fast.installation,
            }))
        }
        "pull_request" => {
            let fast: FastPullRequest = serde_json::from_slice(body).ok()?;
            Some(Event::PullRequest(PullRequestEvent {
                action: fast.action,
                pull_request: fast.pull_request,
                repository: fast.repository,
                installation: fast.installation,
            }))
        }
        "check_run" => {
            let fast: FastCheckRun = serde_json::from_slice(body).ok()?;
            let identifier = fast
                .requested_action
                .as_ref()
                .map(|a| a.identifier.as_str());
            if fast.action == CheckRunAction::RequestedAction && identifier != Some(RERUN_ACTION) {
                return None;
            }
            Some(Event::CheckRun(CheckRunEvent {
                action: fast.action,
                check_run: fast.check_run,
                requested_action: fast.requested_action,
                repository: fast.repository,
                installation: fast.installation,
            }))
        }
        "push" => {
            let fast: FastPush = serde_json::from_slice(body).ok()?;
            if !fast.git_ref.starts_with(BRANCH_PREFIX) || fast.deleted || fast.after.is_zero() {
                return None;
            }
            Some(Event::Push(PushEvent {
                git_ref: fast.git_ref,
                before: fast.before,
                after: fast.after,
                created: fast.created,
                deleted: fast.deleted,
                repository: fast.repository,
                installation: fast.installation,
            }))
        }
        _ => None,
    }
}

/// [`CheckSuiteEvent`] and the [`Envelope`] fields it lacks.
#[derive(Deserialize)]
struct FastCheckSuite {
    action: CheckSuiteAction,
    check_suite: CheckSuite,
    repository: Repository,
    installation: Installation,
    #[serde(default, rename = "ref")]
    _git_ref: Option<String>,
    #[serde(default, rename = "after")]
    _after: Option<String>,
    #[serde(default, rename = "deleted")]
    _deleted: Option<bool>,
    #[serde(default, rename = "requested_action")]
    _requested_action: Option<EnvelopeAction>,
}

/// [`PullRequestEvent`] and the [`Envelope`] fields it lacks.
#[derive(Deserialize)]
struct FastPullRequest {
    action: PullRequestAction,
    pull_request: PullRequest,
    repository: Repository,
    installation: Installation,
    #[serde(default, rename = "ref")]
    _git_ref: Option<String>,
    #[serde(default, rename = "after")]
    _after: Option<String>,
    #[serde(default, rename = "deleted")]
    _deleted: Option<bool>,
    #[serde(default, rename = "requested_action")]
    _requested_action: Option<EnvelopeAction>,
}

/// [`CheckRunEvent`] and the [`Envelope`] fields it lacks.
#[derive(Deserialize)]
struct FastCheckRun {
    action: CheckRunAction,
    check_run: CheckRun,
    #[serde(default)]
    requested_action: Option<RequestedAction>,
    repository: Repository,
    installation: Installation,
    #[serde(default, rename = "ref")]
    _git_ref: Option<String>,
    #[serde(default, rename = "after")]
    _after: Option<String>,
    #[serde(default, rename = "deleted")]
    _deleted: Option<bool>,
}

/// [`PushEvent`] and the [`Envelope`] fields it lacks.
#[derive(Deserialize)]
struct FastPush {
    #[serde(rename = "ref")]
    git_ref: String,
    before: CommitSha,
    after: CommitSha,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
    installation: Installation,
    #[serde(default, rename = "action")]
    _action: Option<String>,
    #[serde(default, rename = "requested_action")]
    _requested_action: Option<EnvelopeAction>,
}

/// Deserializes `body`, telling a body that is not a JSON object from one
/// whose fields are wrong (with the JSON path of the field).
fn deserialize<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, EventError> {
    let malformed = |reason: String| EventError::Malformed {
        event: event.to_owned(),
        reason,
    };
    // Checked first: serde would read a struct from a JSON array too.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(malformed("expected a JSON object".into())),
        None => return Err(malformed("the body is empty".into())),
    }
    let classify = |path: String, error: serde_json::Error| {
        if error.is_data() {
            EventError::Invalid {
                event: event.to_owned(),
                field: path,
                reason: error.to_string(),
            }
        } else {
            malformed(error.to_string())
        }
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        classify(path, error.into_inner())
    })?;
    json.end().map_err(|error| classify(".".into(), error))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/github/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn fixture_json(name: &str) -> Value {
        serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
    }

    fn parse_json(event: &str, value: &Value) -> Result<Event, EventError> {
        parse_event(event, value.to_string().as_bytes())
    }

    const HEAD: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";

    #[test]
    fn check_suite_requested_and_rerequested() {
        for action in ["requested", "rerequested"] {
            let Ok(Event::CheckSuite(event)) = parse_event(
                "check_suite",
                &fixture(&format!("check_suite.{action}.json")),
            ) else {
                panic!("{action} not parsed as a check suite");
            };
            assert_eq!(event.installation.id, InstallationId(957387));
            assert_eq!(event.repository.full_name, "Codertocat/Hello-World");
            assert_eq!(
                (event.repository.repo.owner(), event.repository.repo.name()),
                ("Codertocat", "Hello-World")
            );
            assert_eq!(event.check_suite.head_sha.as_str(), HEAD);
            assert_eq!(event.check_suite.head_branch.as_deref(), Some("master"));
            assert_eq!(
                event.check_suite.after.as_ref().map(CommitSha::as_str),
                Some(HEAD)
            );
            assert_eq!(
                event.check_suite.base_sha().map(CommitSha::as_str),
                Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
            );
        }
    }

    #[test]
    fn pull_request_opened_synchronize_reopened() {
        for (action, expected) in [
            ("opened", PullRequestAction::Opened),
            ("synchronize", PullRequestAction::Synchronize),
            ("reopened", PullRequestAction::Reopened),
        ] {
            let event = parse_event(
                "pull_request",
                &fixture(&format!("pull_request.{action}.json")),
            )
            .expect("parses");
            let Event::PullRequest(pr) = &event else {
                panic!("{event:?}")
            };
            assert_eq!(pr.action, expected);
            assert_eq!(pr.pull_request.number, 2);
            assert_eq!(
                pr.pull_request.head.sha.as_str(),
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
            );
            assert_eq!(pr.pull_request.head.branch, "changes");
            assert_eq!(pr.pull_request.base.sha.as_str(), HEAD);
            assert_eq!(event.installation_id(), Some(InstallationId(957387)));
            assert_eq!(
                event.head_sha().map(CommitSha::as_str),
                Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821")
            );
        }
    }

    #[test]
    fn push_to_a_branch() {
        let Ok(Event::Push(push)) = parse_event("push", &fixture("push.branch.json")) else {
            panic!("not a push")
        };
        assert_eq!(push.branch(), "master");
        assert_eq!(push.after.as_str(), HEAD);
        assert_eq!(
            push.base_sha().map(CommitSha::as_str),
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
        );
        assert!(!push.created && !push.deleted);
        let Ok(Event::Push(push)) = parse_event("push", &fixture("push.new-branch.json")) else {
            panic!("not a push")
        };
        assert_eq!(push.branch(), "feature/notebooks");
        assert!(push.created);
        assert_eq!(push.base_sha(), None, "a new branch has no before");
    }

    #[test]
    fn tag_pushes_and_deletions_are_ignored() {
        for name in ["push.tag.json", "push.branch-deleted.json"] {
            let event = parse_event("push", &fixture(name)).expect("parses");
            assert!(matches!(event, Event::Ignored { .. }), "{name}: {event:?}");
        }
        // `after` all zeros is a deletion even if `deleted` is missing.
        let mut body = fixture_json("push.branch-deleted.json");
        body.as_object_mut().expect("object").remove("deleted");
        assert!(matches!(
            parse_json("push", &body),
            Ok(Event::Ignored { .. })
        ));
        let mut body = fixture_json("push.branch.json");
        body["ref"] = json!("refs/notes/commits");
        assert!(matches!(
            parse_json("push", &body),
            Ok(Event::Ignored { .. })
        ));
    }

    #[test]
    fn check_run_rerequested_and_rerun_action() {
        for (name, action) in [
            ("check_run.rerequested.json", CheckRunAction::Rerequested),
            (
                "check_run.requested_action.json",
                CheckRunAction::RequestedAction,
            ),
        ] {
            let Ok(Event::CheckRun(event)) = parse_event("check_run", &fixture(name)) else {
                panic!("{name}")
            };
            assert_eq!(event.action, action);
            assert_eq!(event.check_run.id, CheckRunId(128620228));
            assert_eq!(event.check_run.head_sha.as_str(), HEAD);
            assert_eq!(event.notebook_path(), Some("notebooks/broken.ipynb"));
            assert_eq!(
                event.check_run.external_id.as_deref(),
                Some(
                    "Codertocat/Hello-World/f95f852bd8fca8fcc58a9a2d6c842781e32a215e/notebooks/broken.ipynb"
                )
            );
            let suite = event.check_run.check_suite.as_ref().expect("suite");
            assert_eq!(
                suite.before.as_ref().map(CommitSha::as_str),
                Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
            );
        }
        let Ok(Event::CheckRun(event)) =
            parse_event("check_run", &fixture("check_run.requested_action.json"))
        else {
            panic!("requested_action")
        };
        assert_eq!(
            event.requested_action.map(|a| a.identifier).as_deref(),
            Some("rerun")
        );
    }

    #[test]
    fn other_requested_actions_are_ignored() {
        let mut body = fixture_json("check_run.requested_action.json");
        body["requested_action"]["identifier"] = json!("lgtm|26764");
        assert!(matches!(
            parse_json("check_run", &body),
            Ok(Event::Ignored { .. })
        ));
        body.as_object_mut()
            .expect("object")
            .remove("requested_action");
        assert!(matches!(
            parse_json("check_run", &body),
            Ok(Event::Ignored { .. })
        ));
    }

    #[test]
    fn unhandled_events_and_actions_are_ignored() {
        let mut body = fixture_json("pull_request.opened.json");
        for action in ["closed", "labeled", "edited"] {
            body["action"] = json!(action);
            assert!(
                matches!(parse_json("pull_request", &body), Ok(Event::Ignored { .. })),
                "{action}"
            );
        }
        let mut body = fixture_json("check_suite.requested.json");
        body["action"] = json!("completed");
        // Even with the fields nbci needs removed, an ignored action is no error.
        body["check_suite"]
            .as_object_mut()
            .expect("object")
            .remove("head_sha");
        assert!(matches!(
            parse_json("check_suite", &body),
            Ok(Event::Ignored { .. })
        ));
        let mut body = fixture_json("check_run.rerequested.json");
        body["action"] = json!("created");
        assert!(matches!(
            parse_json("check_run", &body),
            Ok(Event::Ignored { .. })
        ));
        for event in [
            "issues",
            "installation",
            "installation_repositories",
            "workflow_run",
            "star",
        ] {
            assert!(
                matches!(parse_event(event, b"{}"), Ok(Event::Ignored { .. })),
                "{event}"
            );
            assert!(
                matches!(
                    parse_event(event, b"not even json"),
                    Ok(Event::Ignored { .. })
                ),
                "{event}"
            );
        }
    }

    #[test]
    fn ping_is_answered() {
        let event = parse_event("ping", &fixture("ping.json")).expect("ping");
        assert_eq!(
            event,
            Event::Ping {
                zen: Some("Anything added dilutes everything else.".into()),
                hook_id: Some(109948940)
            }
        );
        assert!(matches!(
            parse_event("ping", b"{}"),
            Ok(Event::Ping {
                zen: None,
                hook_id: None
            })
        ));
    }

    #[test]
    fn no_installation_is_skipped() {
        let event = parse_event("push", &fixture("push.no-installation.json")).expect("parses");
        let Event::Skipped { reason } = event else {
            panic!("{event:?}")
        };
        assert!(reason.contains("installation"), "{reason}");
        let mut body = fixture_json("check_suite.requested.json");
        body["installation"] = Value::Null;
        assert!(matches!(
            parse_json("check_suite", &body),
            Ok(Event::Skipped { .. })
        ));
    }

    #[test]
    fn missing_fields_name_the_field() {
        let cases: [(&str, &str, &[&str], &str); 6] = [
            (
                "check_suite",
                "check_suite.requested.json",
                &["check_suite", "head_sha"],
                "check_suite",
            ),
            (
                "pull_request",
                "pull_request.opened.json",
                &["pull_request", "head"],
                "pull_request",
            ),
            ("push", "push.branch.json", &["after"], "."),
            (
                "check_run",
                "check_run.rerequested.json",
                &["check_run", "id"],
                "check_run",
            ),
            (
                "check_suite",
                "check_suite.requested.json",
                &["installation", "id"],
                "installation",
            ),
            (
                "pull_request",
                "pull_request.synchronize.json",
                &["repository", "owner"],
                "repository",
            ),
        ];
        for (event, name, remove, field) in cases {
            let mut body = fixture_json(name);
            let (last, parents) = remove.split_last().expect("path");
            let mut at = &mut body;
            for key in parents {
                at = &mut at[*key];
            }
            at.as_object_mut().expect("object").remove(*last);
            match parse_json(event, &body) {
                Err(EventError::Invalid {
                    field: got, reason, ..
                }) => {
                    assert_eq!(got, field, "{name} without {remove:?}: {reason}");
                    assert!(reason.contains(last), "{reason}");
                }
                other => panic!("{name} without {remove:?}: {other:?}"),
            }
        }
        let body = json!({"action": "requested", "installation": {"id": 1}});
        assert!(matches!(
            parse_json("check_suite", &body),
            Err(EventError::Invalid { .. })
        ));
        assert!(matches!(
            parse_event("check_suite", b"{}"),
            Err(EventError::Invalid { .. })
        ));
    }

    #[test]
    fn wrong_types_and_bad_values_are_invalid() {
        let mut body = fixture_json("check_suite.requested.json");
        body["check_suite"]["head_sha"] = json!("../../etc");
        let Err(EventError::Invalid { field, reason, .. }) = parse_json("check_suite", &body)
        else {
            panic!()
        };
        assert_eq!(field, "check_suite.head_sha");
        assert!(reason.contains("commit SHA"), "{reason}");
        let mut body = fixture_json("check_suite.requested.json");
        body["installation"]["id"] = json!("957387");
        assert!(
            matches!(parse_json("check_suite", &body), Err(EventError::Invalid { field, .. }) if field == "installation.id")
        );
        let mut body = fixture_json("pull_request.opened.json");
        body["repository"]["name"] = json!("../x");
        assert!(
            matches!(parse_json("pull_request", &body), Err(EventError::Invalid { field, .. }) if field == "repository")
        );
        let mut body = fixture_json("push.branch.json");
        body["ref"] = json!(42);
        assert!(matches!(
            parse_json("push", &body),
            Err(EventError::Invalid { .. })
        ));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            b"42",
            b"\"text\"",
            b"{\"action\": \"requested\"",
            b"\xff\xfe",
            b"{} trailing",
        ] {
            for event in ["check_suite", "pull_request", "push", "check_run", "ping"] {
                match parse_event(event, body) {
                    Err(EventError::Malformed { .. }) => {}
                    other => panic!("{event} {:?}: {other:?}", String::from_utf8_lossy(body)),
                }
            }
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        // Deep nesting ends in an answer, never a stack overflow.
        let deep_ignored = format!(
            "{{\"installation\": {{\"id\": 1}}, \"ref\": \"refs/heads/x\", \"x\": {deep}}}"
        );
        assert!(!matches!(
            parse_event("push", deep_ignored.as_bytes()),
            Ok(Event::Push(_))
        ));
        let deep_parsed = format!("{{\"installation\": {{\"id\": {deep}}}}}");
        assert!(parse_event("check_suite", deep_parsed.as_bytes()).is_err());
        assert_eq!(parse_event("  ", b"{}"), Err(EventError::MissingEventType));
    }

    #[test]
    fn every_fixture_byte_flip_is_handled_without_panic() {
        // A cheap fuzz: truncations and byte changes of every fixture.
        for name in [
            "check_suite.requested.json",
            "pull_request.opened.json",
            "push.branch.json",
            "check_run.requested_action.json",
            "ping.json",
        ] {
            let event = name.split('.').next().expect("event");
            let original = fixture(name);
            for cut in (0..original.len()).step_by(97) {
                let _ = parse_event(event, &original[..cut]);
                let mut flipped = original.clone();
                flipped[cut] ^= 0x20;
                let _ = parse_event(event, &flipped);
            }
        }
    }

    #[test]
    fn commit_shas_are_checked() {
        assert!(
            CommitSha::try_from("A".repeat(40)).is_ok_and(|sha| sha.as_str() == "a".repeat(40))
        );
        assert!(CommitSha::try_from("a".repeat(64)).is_ok());
        for bad in ["", "abc", &"g".repeat(40), &"a".repeat(41)] {
            assert!(CommitSha::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(CommitSha::try_from("0".repeat(40)).is_ok_and(|sha| sha.is_zero()));
    }

    // What each event asks to run (formerly in the CI flow).
    fn trigger(event: &str, file: &str) -> Option<Trigger> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/github")
            .join(file);
        let body = std::fs::read(path).expect("fixture");
        let event = parse_event(event, &body).expect("parses");
        event.trigger("delivery")
    }

    const TRIGGER_HEAD: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";
    const TRIGGER_BEFORE: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

    #[test]
    fn each_event_names_its_commit_and_base() {
        let suite = trigger("check_suite", "check_suite.requested.json").expect("runs");
        assert_eq!(
            (suite.head_sha.as_str(), suite.base.as_deref()),
            (TRIGGER_HEAD, Some(TRIGGER_BEFORE))
        );
        assert!(!suite.rerun && suite.only.is_none());
        assert_eq!(suite.repo.to_string(), "Codertocat/Hello-World");

        let again = trigger("check_suite", "check_suite.rerequested.json").expect("runs");
        assert!(again.rerun, "a re-requested suite runs its notebooks again");

        let pr = trigger("pull_request", "pull_request.opened.json").expect("runs");
        assert_eq!(
            pr.head_sha.as_str(),
            "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
        );
        assert_eq!(pr.base.as_deref(), Some(TRIGGER_HEAD));

        let push = trigger("push", "push.branch.json").expect("runs");
        assert_eq!(
            (push.head_sha.as_str(), push.base.as_deref()),
            (TRIGGER_HEAD, Some(TRIGGER_BEFORE))
        );

        let new_branch = trigger("push", "push.new-branch.json").expect("runs");
        assert_eq!(
            new_branch.base.as_deref(),
            Some("master"),
            "compared with the default branch"
        );
    }

    #[test]
    fn a_rerun_runs_only_its_notebook() {
        for file in [
            "check_run.rerequested.json",
            "check_run.requested_action.json",
        ] {
            let rerun = trigger("check_run", file).expect("runs");
            assert_eq!(
                rerun.only.as_deref(),
                Some("notebooks/broken.ipynb"),
                "{file}"
            );
            assert!(rerun.rerun && rerun.base.is_none(), "{file}");
        }
    }

    #[test]
    fn a_rerun_of_a_check_that_is_not_a_notebook_runs_nothing() {
        for file in [
            "check_run.rerequested.json",
            "check_run.requested_action.json",
        ] {
            for name in [
                "nbci / README.md",
                "nbci / nb/.ipynb_checkpoints/a-checkpoint.ipynb",
                "nbci / ",
                "nbci",
            ] {
                let mut body = fixture_json(file);
                body["check_run"]["name"] = json!(name);
                let event = parse_json("check_run", &body).expect("parses");
                assert_eq!(event.trigger("d-1"), None, "{file}: {name}");
            }
        }
    }
}
