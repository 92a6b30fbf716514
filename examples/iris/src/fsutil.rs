//! File helpers with error messages that name the file and its role.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Describes an I/O error briefly and in lowercase, without the `(os error N)` suffix.
pub fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = err.to_string();
            let text = match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            crate::error::lowercase_first(&text)
        }
    }
}

/// Reads a whole file as bytes; `what` names its role ("model file").
pub fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|err| {
        Error::new(format!(
            "cannot read {what} {}: {}",
            path.display(),
            io_reason(&err)
        ))
    })
}

/// Reads a whole UTF-8 file; `what` names its role ("data file").
pub fn read_string(path: &Path, what: &str) -> Result<String> {
    let bytes = read_bytes(path, what)?;
    String::from_utf8(bytes)
        .map_err(|_| Error::new(format!("{what} {} is not valid utf-8 text", path.display())))
}

/// Creates the parent directory of `path` if it has one and it is missing.
pub fn create_parent_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            fs::create_dir_all(parent).map_err(|err| {
                Error::new(format!(
                    "cannot create directory {}: {}",
                    parent.display(),
                    io_reason(&err)
                ))
            })
        }
        _ => Ok(()),
    }
}

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory is written and then renamed over the destination, so readers
/// never observe a partially written file. Missing parent directories are created.
pub fn write_atomic(path: &Path, contents: &[u8], what: &str) -> Result<()> {
    create_parent_dir(path)?;
    let temp = temp_path(path);
    let fail = |err: io::Error| {
        Error::new(format!(
            "cannot write {what} {}: {}",
            path.display(),
            io_reason(&err)
        ))
    };
    if let Err(err) = fs::write(&temp, contents) {
        return Err(fail(err));
    }
    fs::rename(&temp, path).map_err(|err| {
        let _ = fs::remove_file(&temp);
        fail(err)
    })
}

/// Removes a file, treating "already gone" as success. Returns whether a file was removed.
pub fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::new(format!(
            "cannot remove {}: {}",
            path.display(),
            io_reason(&err)
        ))),
    }
}

/// `path` with its extension replaced, e.g. `run/iris.pid` to `run/iris.port`.
pub fn sibling_with_extension(path: &Path, extension: &str) -> PathBuf {
    path.with_extension(extension)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_role_and_path() {
        let err = read_bytes(Path::new("does/not/exist.json"), "model file").unwrap_err();
        assert_eq!(
            err.message(),
            "cannot read model file does/not/exist.json: no such file or directory"
        );
    }

    #[test]
    fn sibling_extension() {
        assert_eq!(
            sibling_with_extension(Path::new("run/iris.pid"), "port"),
            PathBuf::from("run/iris.port")
        );
    }
}
