//! Typed ids of the code host (GitHub): repositories, App installations,
//! check runs. They are domain words (a check belongs to a commit of a
//! repository), so flows use them without knowing GitHub's wire format.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A GitHub App installation (an account or organization that installed the App).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallationId(pub u64);

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A check run, as GitHub numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckRunId(pub u64);

impl fmt::Display for CheckRunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A repository, `owner/name`. Built only through [`RepoRef::new`] or
/// [`RepoRef::parse`] (serde too), which refuse names that could not be
/// GitHub's, so a name can never add a path segment to a request or a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoRef {
    owner: String,
    name: String,
}

impl RepoRef {
    /// A repository from its owner's login and its name; `None` if either is
    /// empty or has characters GitHub does not allow (only ASCII letters,
    /// digits, `-`, `_` and `.`; not `.` or `..`).
    pub fn new(owner: &str, name: &str) -> Option<Self> {
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 100
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        (valid(owner) && valid(name)).then(|| Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// A repository from its full name, `owner/name`.
    pub fn parse(full_name: &str) -> Option<Self> {
        let (owner, name) = full_name.split_once('/')?;
        Self::new(owner, name)
    }

    /// The owner's login.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl Serialize for RepoRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RepoRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RepoRef::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not owner/name")))
    }
}

/// A commit id: 40 hex digits (SHA-1) or 64 (SHA-256 repositories). Checked
/// on parse because it goes into URLs and storage paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitSha(String);

impl CommitSha {
    /// The SHA, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the all-zeros SHA GitHub uses for "no commit" (a branch
    /// created or deleted).
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl TryFrom<String> for CommitSha {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{text:?} is not a commit SHA (40 or 64 hex digits)"
            ))
        }
    }
}

impl From<CommitSha> for String {
    fn from(sha: CommitSha) -> Self {
        sha.0
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a check run lives: a commit of a repository, reached through an installation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommitRef {
    pub installation: InstallationId,
    pub repo: RepoRef,
    pub sha: CommitSha,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_validated_and_round_trip() {
        let repo = RepoRef::parse("octo-org/hello.world").expect("valid");
        assert_eq!((repo.owner(), repo.name()), ("octo-org", "hello.world"));
        let json = serde_json::to_string(&repo).expect("json");
        assert_eq!(json, "\"octo-org/hello.world\"");
        assert_eq!(serde_json::from_str::<RepoRef>(&json).expect("back"), repo);
        for bad in ["", "a", "a/", "/b", "a/b/c", "a/..", "a b/c", "a/b%2f"] {
            assert!(RepoRef::parse(bad).is_none(), "{bad:?}");
        }
        assert!(serde_json::from_str::<RepoRef>("\"../x\"").is_err());
    }

    #[test]
    fn commit_shas_are_lower_case_hex() {
        let sha = CommitSha::try_from("F95F852BD8FCA8FCC58A9A2D6C842781E32A215E".to_owned())
            .expect("valid");
        assert_eq!(sha.as_str(), "f95f852bd8fca8fcc58a9a2d6c842781e32a215e");
        assert!(CommitSha::try_from("main".to_owned()).is_err());
        assert!(
            CommitSha::try_from("0".repeat(40))
                .expect("valid")
                .is_zero()
        );
    }
}
