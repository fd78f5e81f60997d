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

/// A cgroup directory held open while several of its files are read. Each file is opened
/// relative to it (one path component for the kernel to look up, not the whole path) and read
/// into one buffer kept across files (and across directories, see [`Dir::reopen`]), with no
/// allocation per file: a scrape of a thousand containers reads over ten thousand files.
pub struct Dir {
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
    buf: Vec<u8>,
    /// Files and bytes read through this reader and those it was reopened from.
    files: u64,
    bytes: u64,
}

impl Dir {
    /// Opens the directory at `path` (`O_PATH`: nothing is read from the directory itself).
    pub fn open(path: &Path) -> Result<Self, FileError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(path)
            .map_err(|source| FileError::Read {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            fd: dir.into(),
            path: path.to_owned(),
            buf: Vec::new(),
            files: 0,
            bytes: 0,
        })
    }

    /// Moves to another directory, keeping the buffer and the counts; on failure this one
    /// stays as it was.
    pub fn reopen(&mut self, path: &Path) -> Result<(), FileError> {
        let next = Self::open(path)?;
        (self.fd, self.path) = (next.fd, next.path);
        Ok(())
    }

    /// Files and bytes read so far (through this reader and those it was reopened from).
    pub fn counted(&self) -> (u64, u64) {
        (self.files, self.bytes)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's inode number: for a cgroup, its id.
    pub fn ino(&self) -> std::io::Result<u64> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a zeroed stat is a valid out-buffer; the descriptor is open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; fstat writes within `st`.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st.st_ino)
    }

    /// Reads the file `name` of this directory, trimmed (valid until the next read).
    pub fn read(&mut self, name: &str) -> Result<&str, FileError> {
        let err = |source| FileError::Read {
            path: self.path.join(name),
            source,
        };
        let file = openat(&self.fd, name).map_err(err)?;
        let filled = fill(&file, &mut self.buf).map_err(err)?;
        self.files += 1;
        self.bytes += filled as u64;
        std::str::from_utf8(&self.buf[..filled])
            .map(str::trim)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }
}

/// Opens `name` below the directory `dir` read-only.
fn openat(dir: &std::os::fd::OwnedFd, name: &str) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let name = std::ffi::CString::new(name)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `name` is a valid C string and `dir` an open descriptor for the call's length.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Reads all of `file` into `buf` (grown as needed, never shrunk); returns the bytes read.
/// Until a read returns 0: a shorter read does not end a seq_file whose records span pages
/// (`cgroup.procs` of many processes returns a page at a time).
fn fill(mut file: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Read as _;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize((buf.len() * 2).max(4096), 0);
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The value of `key` in a flat-keyed file (`cpu.stat`, `memory.events`): `key value` lines.
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    let [v] = flat_keys(text, [key]);
    v
}

/// The values of `keys` in a flat-keyed file, in one pass over it (memory.stat has some forty
/// lines, read for every container at every scrape).
pub fn flat_keys<const N: usize>(text: &str, keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for l in text.lines() {
        let Some((k, v)) = l.split_once(' ') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|key| *key == k)
            && out[i].is_none()
        {
            out[i] = v.trim().parse().ok();
        }
    }
    out
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
    fn a_dir_reads_its_files_whole_with_one_buffer_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than the first buffer: read on until the end.
        let big = "x".repeat(10_000);
        std::fs::write(dir.path().join("memory.stat"), &big).unwrap();
        std::fs::write(dir.path().join("cpu.max"), "max 100000\n").unwrap();
        let mut d = Dir::open(dir.path()).unwrap();
        assert_eq!(d.read("memory.stat").unwrap(), big);
        assert_eq!(d.read("cpu.max").unwrap(), "max 100000");
        let err = d.read("pids.max").unwrap_err().to_string();
        assert!(
            err.contains("pids.max") && err.contains("pids controller"),
            "{err}"
        );
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("cpu.max"), "5000 100000").unwrap();
        d.reopen(other.path()).unwrap();
        assert_eq!(d.read("cpu.max").unwrap(), "5000 100000");
        // A directory that is gone leaves the reader where it was, counts kept.
        assert!(d.reopen(&dir.path().join("gone")).is_err());
        assert_eq!(d.read("cpu.max").unwrap(), "5000 100000");
        assert_eq!(d.counted().0, 4);
        assert!(Dir::open(&dir.path().join("gone")).is_err());
    }

    #[test]
    fn flat_keys_are_found_in_one_pass_whole_names_only() {
        let t = "usage_usec 12\nnr_throttled 3\nthrottled_usec 40\nfile x\nfile 7\n";
        assert_eq!(flat_key(t, "nr_throttled"), Some(3));
        assert_eq!(flat_key(t, "throttled"), None);
        assert_eq!(
            super::flat_keys(t, ["throttled_usec", "usage_usec", "file", "anon"]),
            [Some(40), Some(12), Some(7), None],
            "the first line whose value parses, as flat_key"
        );
    }
}
