//! Writing files so that a reader never sees half of one.

use std::io;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory, so
/// that readers see the old file or the whole new one, never a part; with
/// `sync` the data is flushed to disk first (durable across a power cut).
///
/// Only a regular file (or nothing) is replaced: a device, FIFO, socket or
/// directory at `path` is an error, so `--result /dev/full` fails instead of
/// replacing the device node with a JSON file.
pub fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it exists and is not a regular file",
            ));
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new().prefix(".tmp").tempfile_in(dir)?;
    io::Write::write_all(&mut file, bytes)?;
    if sync {
        file.as_file().sync_all()?;
    }
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// A new temporary directory (`prefix` + random) in `within` (created if
/// missing) or the system's temporary directory, readable by this user only
/// (0700): checkouts of private repositories and their executed notebooks go
/// there, and `/tmp` is shared with every user of the machine.
pub fn private_tempdir(prefix: &str, within: Option<&Path>) -> io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    match within {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            builder.tempdir_in(dir)
        }
        None => builder.tempdir(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_files_but_not_devices_or_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.json");
        write_atomically(&path, b"1", false).expect("new file");
        write_atomically(&path, b"2", true).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"2");
        assert!(write_atomically(dir.path(), b"x", false).is_err());
        assert!(write_atomically(Path::new("/dev/null"), b"x", false).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    #[cfg(unix)]
    fn private_tempdirs_are_for_their_user_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = private_tempdir("nbci-t-", Some(&parent.path().join("new"))).expect("made");
        let mode = std::fs::metadata(dir.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        assert!(
            dir.path()
                .file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with("nbci-t-")
        );
    }
}
