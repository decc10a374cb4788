//! `file://` URIs and URL paths, percent-encoded by the `url` crate's rules,
//! so that spaces and non-ASCII names survive in links.

use std::path::{Path, PathBuf};

/// `path` made absolute against the working directory (without resolving links).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A `file://` URI for a local path.
pub fn file_uri(path: &Path) -> String {
    let absolute = absolute(path);
    match url::Url::from_file_path(&absolute) {
        Ok(url) => url.to_string(),
        // Only relative paths are refused, and `absolute` made it absolute.
        Err(()) => format!("file://{}", absolute.display()),
    }
}

/// `base` followed by the slash-separated `path`, each segment percent-encoded;
/// `None` when `base` is not an absolute http(s) URL.
pub fn join_path(base: &str, path: &str) -> Option<url::Url> {
    let mut url = url::Url::parse(base).ok()?;
    {
        let mut segments = url.path_segments_mut().ok()?;
        segments.pop_if_empty();
        segments.extend(path.split('/'));
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_spaces_and_non_ascii() {
        assert_eq!(
            file_uri(Path::new("/tmp/a b/ü.ipynb")),
            "file:///tmp/a%20b/%C3%BC.ipynb"
        );
        assert_eq!(
            join_path("http://h:1/base/", "runs/ci/o/r/a b/ü.ipynb/output.html")
                .map(|u| u.to_string())
                .as_deref(),
            Some("http://h:1/base/runs/ci/o/r/a%20b/%C3%BC.ipynb/output.html")
        );
        assert!(join_path("not a url", "x").is_none());
    }
}
