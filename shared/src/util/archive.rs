//! Unpacking a repository tarball from GitHub, safely.
//!
//! GitHub's tarball of a commit holds one top-level directory
//! (`owner-repo-sha/`) with the repository inside; nbci strips it, so the
//! checkout is `dest` itself. The archive comes over the network and its
//! entry names come from whoever pushed, so nothing in it may write outside
//! `dest`:
//! - entries with an absolute path or a `..` component are refused;
//! - hard links must name a file already unpacked inside `dest`;
//! - symbolic links are created last (so no write can go through one), and
//!   only when their target, resolved from where they stand, stays inside
//!   `dest` without passing through another link of the archive; the others
//!   (`data -> /mnt/data`, `up -> ../..`) are *skipped*, not refused, and
//!   listed in [`UnpackSummary::skipped`]: one such link in a repository must
//!   not fail every notebook of the commit, only the notebooks that need it
//!   (see [`UnpackSummary::skipped_link_for`]);
//! - a directory on the way to an entry that is already a symbolic link (left
//!   in `dest` by someone else) is refused, not followed.
//!
//! Devices, FIFOs and other special entries are skipped: a repository has none.
//! The same rules serve `git archive` output (`nbci check`) through
//! [`unpack_tar_within`], which reads a plain tar stream.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// What was unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackSummary {
    /// The stripped top-level directory, such as `octo-org-hello-abc1234`.
    pub top_level: String,
    /// Regular files written.
    pub files: usize,
    /// Hard and symbolic links created.
    pub links: usize,
    /// Symbolic links left out because they would lead out of the checkout,
    /// in archive order.
    pub skipped: Vec<SkippedLink>,
}

/// A symbolic link of the archive that was not created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLink {
    /// Where the link would have been, relative to the checkout (`/`-separated).
    pub path: String,
    /// Its target, as stored in the archive.
    pub target: String,
    /// Why it was left out.
    pub reason: &'static str,
}

impl std::fmt::Display for SkippedLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {} ({})", self.path, self.target, self.reason)
    }
}

impl UnpackSummary {
    /// The skipped link that `path` (relative to the checkout) is, or lies
    /// under: a notebook there is missing from the checkout because of it.
    pub fn skipped_link_for(&self, path: &str) -> Option<&SkippedLink> {
        self.skipped.iter().find(|link| {
            path == link.path
                || path
                    .strip_prefix(link.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// One line naming the skipped links (at most `shown` of them), for a
    /// check's summary; `None` when nothing was skipped.
    pub fn skipped_note(&self, shown: usize) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let names: Vec<String> = self
            .skipped
            .iter()
            .take(shown)
            .map(|link| format!("`{}`", link.path))
            .collect();
        let more = self.skipped.len().saturating_sub(shown);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "{} symbolic link(s) leading out of the repository were not followed: {}{tail}",
            self.skipped.len(),
            names.join(", ")
        ))
    }
}

/// Why a tarball was not (completely) unpacked. What was written before the
/// error stays, inside `dest`; callers unpack into a fresh temporary directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// Occurs when an entry would write outside `dest`, or links out of it.
    #[error("refused archive entry {entry:?}: {reason}")]
    Unsafe {
        /// The entry's path as stored in the archive.
        entry: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Occurs when the files would take more than the limit on disk.
    #[error("the archive unpacks to more than {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },
    /// Occurs when the archive is not one top-level directory (GitHub's layout).
    #[error("unexpected archive layout: {0}")]
    Layout(String),
    /// Occurs when the archive cannot be read (not gzip, truncated) or a file
    /// cannot be written.
    #[error("cannot unpack the archive{}: {reason}", entry.as_ref().map(|e| format!(" at {e:?}")).unwrap_or_default())]
    Io {
        /// The entry being handled, if any.
        entry: Option<String>,
        /// The I/O error.
        reason: String,
    },
}

/// Unpacks a gzip tarball from GitHub's tarball API into `dest` (created if
/// missing), without its top-level directory. Blocking: call it from
/// `tokio::task::spawn_blocking`.
/// `gzip_tar` is read as a stream (a file on disk, or bytes in memory).
pub fn unpack_tarball(
    gzip_tar: impl std::io::Read,
    dest: &Path,
) -> Result<UnpackSummary, UnpackError> {
    unpack_tarball_within(gzip_tar, dest, MAX_UNPACKED_BYTES)
}

/// What a repository may unpack to: a few kilobytes of gzip can expand to
/// terabytes, and a checkout must not fill the machine's disk.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;

/// [`unpack_tarball`] with a limit on the bytes written.
pub fn unpack_tarball_within(
    gzip_tar: impl std::io::Read,
    dest: &Path,
    max_bytes: u64,
) -> Result<UnpackSummary, UnpackError> {
    unpack_tar_within(flate2::read::GzDecoder::new(gzip_tar), dest, max_bytes)
}

/// Unpacks a plain (not compressed) tar stream laid out as GitHub's, one
/// top-level directory, by the rules of this module (`git archive
/// --prefix=DIR/` writes that layout). Blocking.
pub fn unpack_tar_within(
    tar: impl std::io::Read,
    dest: &Path,
    max_bytes: u64,
) -> Result<UnpackSummary, UnpackError> {
    let io = |entry: Option<&str>| {
        let entry = entry.map(str::to_owned);
        move |error: std::io::Error| UnpackError::Io {
            entry,
            reason: error.to_string(),
        }
    };
    std::fs::create_dir_all(dest).map_err(io(None))?;
    let mut archive = tar::Archive::new(tar);
    archive.set_overwrite(true);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);

    let mut summary = UnpackSummary::default();
    let mut unpacked_bytes: u64 = 0;
    let mut top_level: Option<String> = None;
    let mut directories = DirectoryGuard {
        dest,
        verified: HashSet::new(),
    };
    let mut symlinks: Vec<(PathBuf, PathBuf, String)> = Vec::new();

    for entry in archive.entries().map_err(io(None))? {
        let mut entry = entry.map_err(io(None))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason| UnpackError::Unsafe {
            entry: name.clone(),
            reason,
        };
        let path = entry.path().map_err(io(Some(&name)))?.into_owned();
        let Some(relative) = strip_top_level(&path, &mut top_level).map_err(unsafe_entry)? else {
            continue; // the top-level directory itself
        };
        let target = dest.join(&relative);
        if kind.is_dir() {
            directories
                .ensure(&relative)
                .map_err(|e| e.or_entry(&name))?;
        } else if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(io(Some(&name)))?
                .ok_or_else(|| unsafe_entry("a link without a target"))?;
            symlinks.push((relative, link.into_owned(), name.clone()));
        } else if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(io(Some(&name)))?
                .ok_or_else(|| unsafe_entry("a link without a target"))?;
            let source = strip_top_level(&link, &mut top_level)
                .map_err(unsafe_entry)?
                .ok_or_else(|| unsafe_entry("a hard link to the top-level directory"))?;
            let source_path = dest.join(&source);
            let is_file = std::fs::symlink_metadata(&source_path)
                .map(|m| m.is_file())
                .unwrap_or(false);
            if !is_file {
                return Err(unsafe_entry(
                    "a hard link to something that is not a file unpacked before it",
                ));
            }
            directories
                .ensure_parent(&relative)
                .map_err(|e| e.or_entry(&name))?;
            remove_file_if_present(&target).map_err(io(Some(&name)))?;
            std::fs::hard_link(&source_path, &target).map_err(io(Some(&name)))?;
            summary.links += 1;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            // The header's size is exactly what unpacking writes.
            unpacked_bytes =
                unpacked_bytes.saturating_add(entry.header().size().unwrap_or(u64::MAX));
            if unpacked_bytes > max_bytes {
                return Err(UnpackError::TooLarge { max_bytes });
            }
            directories
                .ensure_parent(&relative)
                .map_err(|e| e.or_entry(&name))?;
            entry.unpack(&target).map_err(io(Some(&name)))?;
            summary.files += 1;
        } else {
            // tar skips the entry's data when the next one is read.
            tracing::debug!(entry = %name, "skipping a special archive entry");
        }
    }

    let links: HashSet<PathBuf> = symlinks.iter().map(|(path, _, _)| path.clone()).collect();
    for (relative, target, name) in &symlinks {
        if let Err(reason) = check_symlink(relative, target, &links) {
            // Left out, not refused: the notebooks that do not need it still run.
            summary.skipped.push(SkippedLink {
                path: relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
                target: target.to_string_lossy().into_owned(),
                reason,
            });
            continue;
        }
        directories
            .ensure_parent(relative)
            .map_err(|e| e.or_entry(name))?;
        let path = dest.join(relative);
        remove_file_if_present(&path).map_err(io(Some(name)))?;
        create_symlink(target, &path).map_err(io(Some(name)))?;
        summary.links += 1;
    }
    summary.top_level =
        top_level.ok_or_else(|| UnpackError::Layout("the archive is empty".into()))?;
    Ok(summary)
}

/// Reads the regular files named in `wanted` (paths inside the repository)
/// out of a gzip tarball from GitHub, without unpacking anything else: at
/// most `max_file_bytes` each (larger ones are left out). Blocking.
pub fn read_files(
    gzip_tar: impl std::io::Read,
    wanted: &HashSet<String>,
    max_file_bytes: u64,
) -> Result<std::collections::HashMap<String, Vec<u8>>, UnpackError> {
    let io = |error: std::io::Error| UnpackError::Io {
        entry: None,
        reason: error.to_string(),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gzip_tar));
    let mut found = std::collections::HashMap::new();
    let mut top_level: Option<String> = None;
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let path = entry.path().map_err(io)?.into_owned();
        let Ok(Some(relative)) = strip_top_level(&path, &mut top_level) else {
            continue;
        };
        let Some(name) = relative.to_str().map(|n| n.replace('\\', "/")) else {
            continue;
        };
        if kind.is_file()
            && wanted.contains(&name)
            && entry.header().size().unwrap_or(u64::MAX) <= max_file_bytes
        {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(io)?;
            found.insert(name, bytes);
            if found.len() == wanted.len() {
                break;
            }
        }
    }
    Ok(found)
}

/// The paths of every regular file in a gzip tarball from GitHub (inside its
/// top-level directory). Blocking.
pub fn file_names(gzip_tar: impl std::io::Read) -> Result<HashSet<String>, UnpackError> {
    let io = |error: std::io::Error| UnpackError::Io {
        entry: None,
        reason: error.to_string(),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gzip_tar));
    let mut names = HashSet::new();
    let mut top_level: Option<String> = None;
    for entry in archive.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let path = entry.path().map_err(io)?.into_owned();
        if let Ok(Some(relative)) = strip_top_level(&path, &mut top_level)
            && kind.is_file()
            && let Some(name) = relative.to_str()
        {
            names.insert(name.to_owned());
        }
    }
    Ok(names)
}

/// The entry's path inside the top-level directory; `None` for that
/// directory itself. The first entry sets the top-level name.
fn strip_top_level(
    path: &Path,
    top_level: &mut Option<String>,
) -> Result<Option<PathBuf>, &'static str> {
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err("an absolute path"),
            Component::ParentDir => return Err("a `..` component"),
            Component::CurDir => {}
            Component::Normal(part) => components.push(part),
        }
    }
    let Some((first, rest)) = components.split_first() else {
        return Err("an empty path");
    };
    let first = first.to_string_lossy();
    match top_level {
        None => *top_level = Some(first.into_owned()),
        Some(expected) if *expected == first => {}
        Some(_) => return Err("outside the archive's single top-level directory"),
    }
    Ok((!rest.is_empty()).then(|| rest.iter().collect()))
}

/// A symbolic link at `relative` pointing to `target` is allowed when the
/// target is relative, resolves (from the link's directory) inside `dest`,
/// and neither the link's own directory nor the way to its target passes
/// through another link of the archive (whose target could move the rest).
fn check_symlink(
    relative: &Path,
    target: &Path,
    links: &HashSet<PathBuf>,
) -> Result<(), &'static str> {
    let mut at = PathBuf::new();
    if let Some(parent) = relative.parent() {
        for component in parent.components() {
            at.push(component);
            if links.contains(&at) {
                return Err("a link inside another link");
            }
        }
    }
    let components: Vec<Component> = target.components().collect();
    for (index, component) in components.iter().enumerate() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err("a symbolic link to an absolute path");
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return Err("a symbolic link pointing outside the checkout");
                }
            }
            Component::Normal(part) => {
                at.push(part);
                let more = components[index + 1..]
                    .iter()
                    .any(|c| !matches!(c, Component::CurDir));
                if more && links.contains(&at) {
                    return Err("a symbolic link through another symbolic link");
                }
            }
        }
    }
    if target.as_os_str().is_empty() {
        return Err("a symbolic link without a target");
    }
    Ok(())
}

/// Creates directories inside `dest`, refusing to go through a symbolic link.
struct DirectoryGuard<'a> {
    dest: &'a Path,
    /// Relative directories known to be real directories.
    verified: HashSet<PathBuf>,
}

/// A directory problem, before the entry name is known.
enum DirectoryError {
    Unsafe(&'static str),
    Io(std::io::Error),
}

impl DirectoryError {
    fn or_entry(self, name: &str) -> UnpackError {
        match self {
            Self::Unsafe(reason) => UnpackError::Unsafe {
                entry: name.to_owned(),
                reason,
            },
            Self::Io(error) => UnpackError::Io {
                entry: Some(name.to_owned()),
                reason: error.to_string(),
            },
        }
    }
}

impl DirectoryGuard<'_> {
    fn ensure_parent(&mut self, relative: &Path) -> Result<(), DirectoryError> {
        match relative.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => self.ensure(parent),
            _ => Ok(()),
        }
    }

    fn ensure(&mut self, relative: &Path) -> Result<(), DirectoryError> {
        let mut at = PathBuf::new();
        for component in relative.components() {
            at.push(component);
            if self.verified.contains(&at) {
                continue;
            }
            let path = self.dest.join(&at);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(DirectoryError::Unsafe("a path through a symbolic link"));
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(DirectoryError::Unsafe("a path through a file")),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&path).map_err(DirectoryError::Io)?;
                }
                Err(error) => return Err(DirectoryError::Io(error)),
            }
            self.verified.insert(at.clone());
        }
        Ok(())
    }
}

fn remove_file_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(unix)]
fn create_symlink(target: &Path, path: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, path)
}

#[cfg(not(unix))]
fn create_symlink(_target: &Path, _path: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "symbolic links are only unpacked on Unix",
    ))
}

#[cfg(test)]
mod tests {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use tar::{EntryType, Header};

    use super::*;

    const TOP: &str = "octo-org-hello-abc1234";

    /// Builds a gzip tarball from raw entries: (kind, path, link target, data).
    /// Paths are written into the header as bytes, unchecked, so that
    /// malicious names can be made.
    fn tarball(entries: &[(EntryType, &str, &str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        // GitHub's tarballs start with a pax global header holding the commit.
        let comment = b"52 comment=abc1234abc1234abc1234abc1234abc1234abc12\n";
        let mut global = Header::new_ustar();
        set_name(&mut global, "pax_global_header");
        global.set_entry_type(EntryType::XGlobalHeader);
        global.set_size(comment.len() as u64);
        global.set_cksum();
        builder.append(&global, &comment[..]).expect("append");
        for (kind, path, link, data) in entries {
            let mut header = Header::new_gnu();
            set_name(&mut header, path);
            header.set_entry_type(*kind);
            header.set_mode(if *kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_size(data.len() as u64);
            if !link.is_empty() {
                header.set_link_name_literal(link).expect("link name");
            }
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        let encoder = builder.into_inner().expect("finish tar");
        encoder.finish().expect("finish gzip")
    }

    #[test]
    fn archives_past_the_size_limit_are_refused() {
        let data = vec![b'x'; 1000];
        let archive = tarball(&[
            (EntryType::Directory, &format!("{TOP}/"), "", b""),
            (EntryType::Regular, &format!("{TOP}/a.bin"), "", &data),
            (EntryType::Regular, &format!("{TOP}/b.bin"), "", &data),
        ]);
        let dest = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            unpack_tarball_within(archive.as_slice(), dest.path(), 1500),
            Err(UnpackError::TooLarge { max_bytes: 1500 })
        ));
        let dest = tempfile::tempdir().expect("tempdir");
        assert!(unpack_tarball_within(archive.as_slice(), dest.path(), 2000).is_ok());
    }

    fn set_name(header: &mut Header, path: &str) {
        let name = &mut header.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
    }

    fn github_like() -> Vec<u8> {
        tarball(&[
            (EntryType::Directory, &format!("{TOP}/"), "", b""),
            (
                EntryType::Regular,
                &format!("{TOP}/README.md"),
                "",
                b"# hello\n",
            ),
            (EntryType::Directory, &format!("{TOP}/notebooks/"), "", b""),
            (
                EntryType::Regular,
                &format!("{TOP}/notebooks/demo.ipynb"),
                "",
                b"{\"cells\": []}",
            ),
            (
                EntryType::Regular,
                &format!("{TOP}/deep/er/file.txt"),
                "",
                b"implicit directories",
            ),
            (
                EntryType::Symlink,
                &format!("{TOP}/notebooks/link.ipynb"),
                "demo.ipynb",
                b"",
            ),
            (EntryType::Symlink, &format!("{TOP}/docs"), "notebooks", b""),
            (
                EntryType::Link,
                &format!("{TOP}/copy.md"),
                &format!("{TOP}/README.md"),
                b"",
            ),
        ])
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<UnpackSummary, UnpackError>) {
        let root = tempfile::tempdir().expect("tempdir");
        let result = unpack_tarball(bytes, &root.path().join("checkout"));
        (root, result)
    }

    fn refused(entries: &[(EntryType, &str, &str, &[u8])]) -> String {
        let (root, result) = unpack(&tarball(entries));
        let error = result.expect_err("must be refused");
        // Nothing may appear next to the checkout.
        let outside: Vec<_> = std::fs::read_dir(root.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(outside, ["checkout"], "something was written outside dest");
        error.to_string()
    }

    #[test]
    fn unpacks_githubs_layout_without_the_top_level_directory() {
        let (root, result) = unpack(&github_like());
        let summary = result.expect("unpacks");
        let dest = root.path().join("checkout");
        assert_eq!(
            summary,
            UnpackSummary {
                top_level: TOP.into(),
                files: 3,
                links: 3,
                skipped: Vec::new(),
            }
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("README.md")).expect("readme"),
            "# hello\n"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("notebooks/link.ipynb")).expect("via link"),
            "{\"cells\": []}"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("docs/demo.ipynb")).expect("via dir link"),
            "{\"cells\": []}"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("copy.md")).expect("hard link"),
            "# hello\n"
        );
        assert!(dest.join("deep/er/file.txt").is_file());
        assert!(!dest.join("pax_global_header").exists() && !dest.join(TOP).exists());
    }

    #[test]
    fn refuses_absolute_and_parent_paths() {
        assert!(refused(&[(EntryType::Regular, "/tmp/evil", "", b"x")]).contains("absolute"));
        assert!(
            refused(&[(EntryType::Regular, &format!("{TOP}/../evil"), "", b"x")]).contains("`..`")
        );
        assert!(refused(&[(EntryType::Regular, "../evil", "", b"x")]).contains("`..`"));
        assert!(
            refused(&[(EntryType::Directory, &format!("{TOP}/a/../../b/"), "", b"")])
                .contains("`..`")
        );
    }

    #[test]
    fn refuses_a_second_top_level_directory() {
        let error = refused(&[
            (EntryType::Regular, &format!("{TOP}/a"), "", b"x"),
            (EntryType::Regular, "other/b", "", b"x"),
        ]);
        assert!(error.contains("top-level"), "{error}");
    }

    /// Unpacks and returns the summary, checking that nothing was written
    /// beside the checkout.
    fn unpacked(entries: &[(EntryType, &str, &str, &[u8])]) -> (tempfile::TempDir, UnpackSummary) {
        let (root, result) = unpack(&tarball(entries));
        let summary = result.expect("unpacks");
        let outside: Vec<_> = std::fs::read_dir(root.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(outside, ["checkout"], "something was written outside dest");
        (root, summary)
    }

    #[test]
    fn symlinks_that_escape_are_skipped_and_named() {
        for target in [
            "../outside",
            "/etc/passwd",
            "/dev/zero",
            "a/../../outside",
            "../../checkout-sibling",
        ] {
            let (root, summary) = unpacked(&[
                (EntryType::Regular, &format!("{TOP}/ok.ipynb"), "", b"{}"),
                (EntryType::Symlink, &format!("{TOP}/link"), target, b""),
            ]);
            assert_eq!(summary.files, 1, "{target}");
            assert_eq!(summary.links, 0, "{target}");
            assert_eq!(summary.skipped.len(), 1, "{target}");
            assert_eq!(summary.skipped[0].path, "link");
            assert_eq!(summary.skipped[0].target, target);
            assert!(
                summary.skipped[0].reason.contains("symbolic link"),
                "{target}"
            );
            let link = root.path().join("checkout/link");
            assert!(
                std::fs::symlink_metadata(&link).is_err(),
                "{target}: created"
            );
            assert!(root.path().join("checkout/ok.ipynb").is_file());
        }
        // Inside a directory, one `..` is fine but two are not.
        let (root, summary) = unpacked(&[
            (EntryType::Regular, &format!("{TOP}/README.md"), "", b"x"),
            (
                EntryType::Symlink,
                &format!("{TOP}/sub/ok"),
                "../README.md",
                b"",
            ),
            (
                EntryType::Symlink,
                &format!("{TOP}/sub/bad"),
                "../../x",
                b"",
            ),
        ]);
        assert_eq!(summary.links, 1);
        assert_eq!(summary.skipped.len(), 1);
        assert_eq!(summary.skipped[0].path, "sub/bad");
        assert!(summary.skipped[0].reason.contains("outside"));
        assert!(root.path().join("checkout/sub/ok").is_file());
    }

    #[test]
    fn symlink_chains_that_could_escape_are_skipped() {
        // a/up -> .. is the checkout root; a/esc -> up/../x would then be
        // outside, although it looks like a/x on paper.
        let (_root, summary) = unpacked(&[
            (EntryType::Symlink, &format!("{TOP}/a/up"), "..", b""),
            (EntryType::Symlink, &format!("{TOP}/a/esc"), "up/../x", b""),
        ]);
        assert_eq!(summary.links, 1);
        assert_eq!(summary.skipped.len(), 1);
        assert!(
            summary.skipped[0]
                .reason
                .contains("through another symbolic link"),
            "{:?}",
            summary.skipped
        );
        let (_root, summary) = unpacked(&[
            (EntryType::Symlink, &format!("{TOP}/l"), "sub", b""),
            (EntryType::Symlink, &format!("{TOP}/l/inner"), "x", b""),
        ]);
        assert_eq!(summary.skipped.len(), 1);
        assert!(
            summary.skipped[0]
                .reason
                .contains("link inside another link")
        );
    }

    #[test]
    fn a_notebook_behind_a_skipped_link_is_found_and_the_note_names_the_links() {
        let (_root, summary) = unpacked(&[
            (
                EntryType::Symlink,
                &format!("{TOP}/evil.ipynb"),
                "/dev/zero",
                b"",
            ),
            (EntryType::Symlink, &format!("{TOP}/data"), "/mnt/data", b""),
            (
                EntryType::Symlink,
                &format!("{TOP}/ok.ipynb"),
                "nb/x.ipynb",
                b"",
            ),
        ]);
        assert_eq!(
            summary
                .skipped_link_for("evil.ipynb")
                .map(|l| l.target.as_str()),
            Some("/dev/zero")
        );
        assert_eq!(
            summary
                .skipped_link_for("data/deep/n.ipynb")
                .map(|l| l.path.as_str()),
            Some("data")
        );
        assert!(summary.skipped_link_for("database.ipynb").is_none());
        assert!(summary.skipped_link_for("ok.ipynb").is_none());
        let note = summary.skipped_note(1).expect("a note");
        assert!(note.starts_with("2 symbolic link(s)"), "{note}");
        assert!(
            note.contains("`evil.ipynb`") && note.contains("1 more"),
            "{note}"
        );
        assert_eq!(UnpackSummary::default().skipped_note(5), None);
    }

    #[test]
    fn plain_tar_streams_unpack_by_the_same_rules() {
        let gz = tarball(&[
            (EntryType::Regular, &format!("{TOP}/a.ipynb"), "", b"{}"),
            (
                EntryType::Symlink,
                &format!("{TOP}/b.ipynb"),
                "/dev/zero",
                b"",
            ),
        ]);
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut tar)
            .expect("gunzip");
        let dest = tempfile::tempdir().expect("tempdir");
        let summary = unpack_tar_within(tar.as_slice(), dest.path(), 1 << 20).expect("unpacks");
        assert_eq!((summary.files, summary.skipped.len()), (1, 1));
    }

    #[test]
    fn writes_never_go_through_a_symlink_of_the_archive() {
        // The link is created after the file, so `l/file` lands in a real
        // directory `l`, and the link then cannot replace it.
        let (root, result) = unpack(&tarball(&[
            (EntryType::Symlink, &format!("{TOP}/l"), "sub", b""),
            (EntryType::Regular, &format!("{TOP}/l/file"), "", b"x"),
        ]));
        assert!(result.is_err());
        assert!(!root.path().join("checkout/l").is_symlink());
    }

    #[test]
    fn refuses_hard_links_out_of_the_checkout() {
        for link in [
            "/etc/passwd",
            "../x",
            &format!("{TOP}/../x"),
            &format!("{TOP}/missing"),
        ] {
            let error = refused(&[(EntryType::Link, &format!("{TOP}/h"), link, b"")]);
            assert!(error.contains("refused"), "{link}: {error}");
        }
    }

    #[test]
    fn refuses_to_follow_a_symlink_already_in_dest() {
        let root = tempfile::tempdir().expect("tempdir");
        let dest = root.path().join("checkout");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&dest).expect("dest");
        std::fs::create_dir_all(&outside).expect("outside");
        std::os::unix::fs::symlink(&outside, dest.join("notebooks")).expect("planted link");
        let error = unpack_tarball(github_like().as_slice(), &dest).expect_err("refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_dir(&outside).expect("read").count(), 0);
    }

    #[test]
    fn not_a_tarball_is_an_io_error() {
        let (_root, result) = unpack(b"this is not gzip");
        assert!(matches!(result, Err(UnpackError::Io { .. })), "{result:?}");
        let mut truncated = github_like();
        truncated.truncate(truncated.len() / 2);
        let (_root, result) = unpack(&truncated);
        assert!(result.is_err());
        let (_root, result) = unpack(&tarball(&[]));
        assert!(matches!(result, Err(UnpackError::Layout(_))), "{result:?}");
    }

    #[test]
    fn special_entries_are_skipped() {
        let (root, result) = unpack(&tarball(&[
            (EntryType::Regular, &format!("{TOP}/a"), "", b"x"),
            (EntryType::Fifo, &format!("{TOP}/fifo"), "", b""),
        ]));
        assert_eq!(result.expect("unpacks").files, 1);
        assert!(!root.path().join("checkout/fifo").exists());
    }
}
