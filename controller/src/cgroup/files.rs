//! The single reader and writer of cgroup interface files.
//!
//! Files are opened without `O_CREAT`: a cgroup file that does not exist means a controller is
//! not enabled (or the kernel is too old), and that must be an error naming the file, never a
//! new regular file. Errors carry the controller file, the path, the value and the kernel's
//! own error, because "Invalid argument" alone helps nobody.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

/// A failed read or write of one cgroup file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("writing {value:?} to {path}: {source}{hint}", hint = hint(source, path))]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}{hint}", hint = hint(source, path))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A suggestion for the errors users actually meet.
fn hint(e: &std::io::Error, path: &Path) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            " (is the {} controller enabled in the parent's cgroup.subtree_control?)",
            controller_of(path)
        ),
        std::io::ErrorKind::PermissionDenied => " (rein must run as root)".into(),
        _ => String::new(),
    }
}

/// `cpu` for `.../cpu.max`.
fn controller_of(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("?")
}

/// Writes `value` to an existing cgroup file in one `write(2)`, as the kernel expects. An
/// empty value is written as a newline, as `echo > file` does: a write of no bytes never
/// reaches the file's handler, so it would leave a list (`cpuset.cpus`) as it was instead
/// of emptying it.
pub fn write(path: &Path, value: &str) -> Result<(), FileError> {
    let err = |source| FileError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    // O_TRUNC as a shell's `>` does: cgroupfs ignores it, plain files (tests) need it.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(false)
        .open(path)
        .map_err(err)?;
    let bytes = if value.is_empty() { "\n" } else { value };
    f.write_all(bytes.as_bytes()).map_err(err)
}

/// Reads a cgroup file, trimmed.
pub fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })
}

/// The value of `key` in a flat-keyed file (`cpu.stat`, `memory.events`): `key value` lines.
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_never_creates_a_file_and_names_the_controller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.max");
        let err = write(&path, "max 100000").unwrap_err().to_string();
        assert!(!path.exists());
        assert!(
            err.contains("cpu.max") && err.contains("\"max 100000\""),
            "{err}"
        );
        assert!(err.contains("is the cpu controller enabled"), "{err}");
        std::fs::write(&path, "").unwrap();
        write(&path, "150000 100000").unwrap();
        assert_eq!(read(&path).unwrap(), "150000 100000");
        // An empty value reaches the file as the newline that empties a list.
        write(&path, "").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "\n");
    }

    #[test]
    fn flat_keys() {
        let t = "usage_usec 12\nnr_throttled 3\nthrottled_usec 40\n";
        assert_eq!(flat_key(t, "nr_throttled"), Some(3));
        assert_eq!(flat_key(t, "throttled"), None);
    }
}
