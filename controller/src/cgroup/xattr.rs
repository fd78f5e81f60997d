//! The extended attributes rein keeps on cgroup directories (cgroupfs supports `trusted.*`):
//! a container's priority class, its kind, creation intents and change journals.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use super::CgroupError;

/// Runs one xattr system call on `dir` with `key`; a non-zero return is the `op` error.
fn xattr_call(
    dir: &Path,
    key: &str,
    op: &'static str,
    call: impl FnOnce(&std::ffi::CStr, &std::ffi::CStr) -> libc::c_int,
) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Io {
        op,
        path: dir.to_owned(),
        source,
    };
    let invalid = || err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    let p = CString::new(dir.as_os_str().as_bytes()).map_err(|_| invalid())?;
    let k = CString::new(key).map_err(|_| invalid())?;
    if call(&p, &k) != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn set(dir: &Path, key: &str, value: &str) -> Result<(), CgroupError> {
    set_flags(dir, key, value, 0)
}

/// `setxattr(2)` with `flags` (`XATTR_CREATE`: fail with EEXIST if the key is set).
pub fn set_flags(dir: &Path, key: &str, value: &str, flags: i32) -> Result<(), CgroupError> {
    xattr_call(dir, key, "setting xattr on", |p, k| {
        // SAFETY: p and k are NUL-terminated; value points to value.len() readable bytes.
        unsafe {
            libc::setxattr(
                p.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    })
}

/// The names of the extended attributes on `dir` (empty when they cannot be read).
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(p) = CString::new(dir.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // Names are NUL-separated. Sized by asking first (most directories have none or a
    // few); a list that grew in between is read whole at the kernel's 64 KiB limit.
    // SAFETY: p is NUL-terminated; a NULL buffer of size 0 asks for the size.
    let size = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    let Ok(size) = usize::try_from(size) else {
        return Vec::new();
    };
    if size == 0 {
        return Vec::new();
    }
    let mut buf = vec![0u8; size];
    // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
    let mut n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) {
        buf = vec![0u8; 64 << 10];
        // SAFETY: as above.
        n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    }
    let Ok(n) = usize::try_from(n) else {
        return Vec::new();
    };
    buf[..n]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .filter_map(|k| String::from_utf8(k.to_vec()).ok())
        .collect()
}

pub fn remove(dir: &Path, key: &str) -> Result<(), CgroupError> {
    xattr_call(dir, key, "removing xattr from", |p, k| {
        // SAFETY: p and k are NUL-terminated strings that outlive the call.
        unsafe { libc::removexattr(p.as_ptr(), k.as_ptr()) }
    })
}

/// The value of `key` on `dir`, if set and UTF-8. Sized by asking the kernel first: a
/// change's journal may take up to the kernel's 64 KiB, and a read into a smaller buffer
/// fails (ERANGE) as if the journal were not there.
pub fn get(dir: &Path, key: &str) -> Option<String> {
    let p = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let k = CString::new(key).ok()?;
    // A value that grows between the two calls (another writer) is asked for again.
    for _ in 0..3 {
        // SAFETY: p and k are NUL-terminated; a NULL buffer of size 0 asks for the size.
        let size = unsafe { libc::getxattr(p.as_ptr(), k.as_ptr(), std::ptr::null_mut(), 0) };
        let mut buf = vec![0u8; usize::try_from(size).ok()?];
        // SAFETY: p and k are NUL-terminated; buf is writable for buf.len() bytes.
        let n =
            unsafe { libc::getxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(n) => {
                buf.truncate(n);
                return String::from_utf8(buf).ok();
            }
            Err(_) if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value larger than any fixed buffer rein once used (16 KiB) reads back whole. On
    /// tmpfs, which keeps `trusted.*` attributes of any size up to the kernel's limit
    /// (ext4 keeps only a block's worth); root only, as the agent.
    #[test]
    fn a_journal_of_up_to_64_kib_reads_back_whole() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let big = "x".repeat(60 << 10);
        set(dir.path(), "trusted.rein.test", &big).unwrap();
        assert_eq!(
            get(dir.path(), "trusted.rein.test").as_deref(),
            Some(big.as_str())
        );
        set(dir.path(), "trusted.rein.test", "").unwrap();
        assert_eq!(get(dir.path(), "trusted.rein.test").as_deref(), Some(""));
        assert_eq!(get(dir.path(), "trusted.rein.absent"), None);
    }
}
