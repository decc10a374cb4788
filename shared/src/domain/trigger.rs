//! What a webhook delivery asks for: run the changed notebooks of a commit, or
//! run one notebook again. It travels from the webhook to the dispatcher over
//! the event bus (in-process, or Pub/Sub in the cloud), so it is serializable.

use serde::{Deserialize, Serialize};

use super::repo::{CommitRef, CommitSha, InstallationId, RepoRef};

/// A request to check notebooks of one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `X-GitHub-Delivery`: logs, and what makes a re-run idempotent.
    pub delivery: String,
    pub installation: InstallationId,
    pub repo: RepoRef,
    pub head_sha: CommitSha,
    /// What to compare against (a SHA or a branch); `None` when only `only` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Run just this notebook (a re-run of one check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
    /// An explicit re-run: run again even what already ran for this commit.
    #[serde(default)]
    pub rerun: bool,
    /// The branch ref a push moved (`refs/heads/main`): pipelines of that
    /// branch start a run. `None` for other events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

impl Trigger {
    /// The commit the checks belong to.
    pub fn commit(&self) -> CommitRef {
        CommitRef {
            installation: self.installation,
            repo: self.repo.clone(),
            sha: self.head_sha.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let trigger = Trigger {
            delivery: "d-1".into(),
            installation: InstallationId(7),
            repo: RepoRef::parse("o/r").expect("repo"),
            head_sha: CommitSha::try_from("a".repeat(40)).expect("sha"),
            base: Some("main".into()),
            only: None,
            rerun: false,
            git_ref: None,
        };
        let json = serde_json::to_string(&trigger).expect("json");
        assert_eq!(
            serde_json::from_str::<Trigger>(&json).expect("back"),
            trigger
        );
        assert!(serde_json::from_str::<Trigger>(&json.replace("o/r", "../r")).is_err());
    }
}
