//! Which notebooks a commit changed, and a clean copy of the commit to run them in.
//!
//! Everything goes through the `git` command line: it is on every CI machine,
//! understands every repository layout (worktrees, packed refs, partial
//! clones), and its plumbing output (`-z`) is stable.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::domain::notebook::is_notebook_path;

/// Why the repository could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// Occurs when `git` itself cannot be run.
    #[error("cannot run git: {0}")]
    NoGit(String),
    /// Occurs when git refuses (not a repository, unknown revision, ...).
    #[error("{0}")]
    Refused(String),
}

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|error| GitError::NoGit(error.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("git failed")
            .trim()
            .trim_start_matches("fatal: ")
            .to_owned();
        return Err(GitError::Refused(format!(
            "git {}: {reason}",
            args.join(" ")
        )));
    }
    Ok(output.stdout)
}

/// Whether `repo` is inside a git repository (a work tree or a bare one):
/// the question to ask first, so that a plain directory is named as such
/// rather than as a repository without a `HEAD`.
pub fn is_repository(repo: &Path) -> bool {
    git(repo, &["rev-parse", "--git-dir"]).is_ok()
}

/// The full commit id `rev` names in `repo`.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<String, GitError> {
    let spec = format!("{rev}^{{commit}}");
    let out = git(repo, &["rev-parse", "--verify", "--quiet", &spec])
        .map_err(|_| GitError::Refused(format!("{rev:?} is not a commit in {}", repo.display())))?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// The first parent of `commit`, or `None` for a root commit.
pub fn first_parent(repo: &Path, commit: &str) -> Result<Option<String>, GitError> {
    let spec = format!("{commit}^1");
    match resolve_commit(repo, &spec) {
        Ok(parent) => Ok(Some(parent)),
        Err(_) => Ok(None),
    }
}

/// The git directory of `repo` (where nbci keeps its check outputs by default).
pub fn git_dir(repo: &Path) -> Result<PathBuf, GitError> {
    let out = git(repo, &["rev-parse", "--absolute-git-dir"])?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out).trim()))
}

/// The `.ipynb` files added, modified, renamed (at their new path) or copied
/// between `base` and `commit`, sorted. With no base (a root commit) every
/// notebook in the commit counts as added.
pub fn changed_notebooks(
    repo: &Path,
    base: Option<&str>,
    commit: &str,
) -> Result<Vec<String>, GitError> {
    let mut paths = match base {
        Some(base) => {
            let out = git(
                repo,
                &[
                    "diff",
                    "--name-only",
                    "--no-renames",
                    "--diff-filter=AMCR",
                    "-z",
                    base,
                    commit,
                    "--",
                ],
            )?;
            split_nul(&out)
        }
        None => {
            let out = git(repo, &["ls-tree", "-r", "-z", "--name-only", commit])?;
            split_nul(&out)
        }
    };
    paths.retain(|path| is_notebook_path(path));
    paths.sort();
    paths.dedup();
    Ok(paths)
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// Writes the tree of `commit` into `dest` (which must exist), as `git archive` does.
pub fn export_commit(repo: &Path, commit: &str, dest: &Path) -> Result<(), GitError> {
    let tarball = git(repo, &["archive", "--format=tar", commit])?;
    let mut archive = tar::Archive::new(tarball.as_slice());
    archive
        .unpack(dest)
        .map_err(|error| GitError::Refused(format!("cannot unpack commit {commit}: {error}")))
}
