//! Which notebooks a commit changed, and a clean copy of the commit to run them in.
//!
//! Everything goes through the `git` command line: it is on every CI machine,
//! understands every repository layout (worktrees, packed refs, partial
//! clones), and its plumbing output (`-z`) is stable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::domain::notebook::is_notebook_path;
use crate::util::archive::{MAX_UNPACKED_BYTES, UnpackError, UnpackSummary, unpack_tar_within};

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

/// The file at `path` in `commit`, or `None` when the commit has no such file.
pub fn read_file_at(repo: &Path, commit: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
    let listed = git(repo, &["ls-tree", "-z", "--name-only", commit, "--", path])?;
    if listed.is_empty() {
        return Ok(None);
    }
    git(repo, &["cat-file", "blob", &format!("{commit}:{path}")]).map(Some)
}

/// Every file path in `commit`.
pub fn files_at(repo: &Path, commit: &str) -> Result<std::collections::HashSet<String>, GitError> {
    let listed = git(repo, &["ls-tree", "-r", "-z", "--name-only", commit])?;
    Ok(split_nul(&listed).into_iter().collect())
}

/// Writes `commit` as a gzip tarball with one top-level directory, as
/// GitHub's tarball API lays it out, to the new file `dest`.
pub fn archive_commit(repo: &Path, commit: &str, dest: &Path) -> Result<(), GitError> {
    let short = commit.get(..7).unwrap_or(commit);
    let prefix = format!("--prefix=nbci-local-{short}/");
    let output = format!("--output={}", dest.display());
    git(
        repo,
        &["archive", "--format=tar.gz", &prefix, &output, commit],
    )
    .map(|_| ())
}

/// The top directory of the work tree `repo` is in.
pub fn top_level(repo: &Path) -> Result<PathBuf, GitError> {
    let out = git(repo, &["rev-parse", "--show-toplevel"])?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out).trim()))
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

/// The top-level directory `git archive` is asked to put the tree under, so
/// that its output has GitHub's tarball layout and one unpacker serves both.
const EXPORT_PREFIX: &str = "nbci-export";

/// Writes the tree of `commit` into `dest`, as `git archive` does, by the
/// rules of [`crate::util::archive`]: symbolic links that would lead out of
/// `dest` (`evil.ipynb -> /dev/zero`) are not created but listed in the
/// summary, so a notebook never reads through one; at most
/// [`MAX_UNPACKED_BYTES`] are written. The archive is streamed from `git`,
/// never held in memory.
pub fn export_commit(repo: &Path, commit: &str, dest: &Path) -> Result<UnpackSummary, GitError> {
    let prefix = format!("--prefix={EXPORT_PREFIX}/");
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", &prefix, commit])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| GitError::NoGit(error.to_string()))?;
    let unpacked = match child.stdout.take() {
        Some(stdout) => {
            let mut reader = std::io::BufReader::new(stdout);
            let unpacked = unpack_tar_within(&mut reader, dest, MAX_UNPACKED_BYTES);
            // The tar reader stops at the end-of-archive blocks; git still
            // writes the padding of its last record. Reading it to the end
            // keeps git from dying of SIGPIPE (a failed export, at random).
            if unpacked.is_ok() {
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            }
            unpacked
        }
        None => Err(UnpackError::Layout("git archive gave no output".into())),
    };
    if unpacked.is_err() {
        // Nothing more is read: a git still writing would block for good.
        let _ = child.kill();
    }
    let output = child
        .wait_with_output()
        .map_err(|error| GitError::NoGit(error.to_string()))?;
    if unpacked.is_ok() && !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("git failed")
            .trim()
            .trim_start_matches("fatal: ")
            .to_owned();
        return Err(GitError::Refused(format!("git archive {commit}: {reason}")));
    }
    unpacked.map_err(|error| GitError::Refused(format!("cannot unpack commit {commit}: {error}")))
}
